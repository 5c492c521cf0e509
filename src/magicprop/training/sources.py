"""Where training clips come from: one list of `ClipSource`s for every kind of `--data`.

  * a folder of videos, searched recursively (.mp4 .mov .webm .mkv .gif); a subfolder written by `magicprop synth`
    (source.mp4 + depth.npz) is one clip whose exact depth replaces the depth model (two with `synthetic_edited`: its
    edited.mp4 moves the same);
  * a CSV or JSON-lines manifest with a `path` column (relative to the manifest's folder, or absolute) and an optional
    `caption` (WebVid's layout after download); entries whose file is missing are counted as skipped videos;
  * WebDataset shards of videos: `'shards/{000..009}.tar'`, one .tar, or a folder of them (each video is located once
    by its byte offset, so a clip is read without scanning its shard again).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError, first_line
from ..fileio import expand_user

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".webm", ".mkv", ".gif")


@dataclass(frozen=True)
class ClipSource:
    path: str  # the video file, the synthetic clip's folder, or the tar shard
    member: str | None = None  # the video's name inside a tar shard
    offset: int = 0  # where the member's bytes start in the shard (read without scanning the tar again)
    size: int = 0
    synthetic: bool = False  # a `magicprop synth` folder: frames from `video`, exact depth from depth.npz
    caption: str = ""
    video: str = "source.mp4"  # which of a synth folder's videos: source.mp4, or edited.mp4 (same motion and depth)

    def __str__(self) -> str:
        if self.synthetic and self.video != "source.mp4":
            return os.path.join(self.path, self.video)
        return f"{self.path}:{self.member}" if self.member else self.path


@dataclass
class Discovery:
    clips: list[ClipSource]
    missing: list[str]  # manifest entries or shards that do not exist: counted as skipped videos


def is_shard_pattern(data: str) -> bool:
    return "{" in data and ".tar" in data


def discover_clips(data: str | os.PathLike, *, synthetic_edited: bool = False) -> Discovery:
    """Every clip of a source, in a stable order; a one-line UsageError when there is nothing to train on."""
    data = str(data)
    if is_shard_pattern(data):
        from braceexpand import braceexpand

        shards = list(braceexpand(data))
        found = Discovery([], [s for s in shards if not Path(s).is_file()])
        for shard in shards:
            if Path(shard).is_file():
                found.clips.extend(_tar_clips(Path(shard)))
        return _nonempty(found, data)
    path = expand_user(data)
    if not path.exists():
        raise UsageError(f"--data {data} not found; pass a folder of videos, a manifest (.csv/.jsonl) or tar shards")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in (".csv", ".jsonl", ".json"):
            return _nonempty(_manifest_clips(path), data)
        if suffix == ".tar":
            return _nonempty(Discovery(_tar_clips(path), []), data)
        if suffix in VIDEO_EXTENSIONS:
            return Discovery([ClipSource(str(path))], [])
        raise UsageError(f"--data {data}: cannot read {suffix or 'extension-less'} files; pass a folder, a manifest or shards")
    return _nonempty(_folder_clips(path, synthetic_edited), data)


def _nonempty(found: Discovery, data: str) -> Discovery:
    if not found.clips and found.missing:
        raise UsageError(f"none of the {len(found.missing)} videos listed in {data} exist (first missing: {found.missing[0]})")
    if not found.clips:
        raise UsageError(f"no videos found in {data} (looked for {' '.join(VIDEO_EXTENSIONS)}, synth folders and .tar shards)")
    return found


def _folder_clips(root: Path, synthetic_edited: bool = False) -> Discovery:
    clips = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        if "source.mp4" in files and "depth.npz" in files:  # written by `magicprop synth`
            # edited.mp4 moves exactly like source.mp4 (same depth) with other textures: a second clip for free
            videos = ("source.mp4", "edited.mp4") if synthetic_edited else ("source.mp4",)
            clips.extend(ClipSource(folder, synthetic=True, video=v) for v in videos if v in files)
            dirs.clear()
            continue
        for name in sorted(files):
            suffix = Path(name).suffix.lower()
            if suffix in VIDEO_EXTENSIONS:
                clips.append(ClipSource(os.path.join(folder, name)))
            elif suffix == ".tar":
                clips.extend(_tar_clips(Path(folder) / name))
    return Discovery(clips, [])


def _manifest_clips(manifest: Path) -> Discovery:
    rows = []
    try:
        if manifest.suffix.lower() == ".csv":
            with open(manifest, newline="") as f:
                reader = csv.DictReader(f)
                if "path" not in (reader.fieldnames or []):
                    columns = ", ".join(reader.fieldnames or [])
                    raise UsageError(f"manifest {manifest} has no 'path' column (columns: {columns})")
                rows = list(reader)
        else:
            for i, line in enumerate(manifest.read_text().splitlines(), 1):
                if line.strip():
                    row = json.loads(line)
                    if not isinstance(row, dict) or "path" not in row:
                        raise UsageError(f"manifest {manifest} line {i} has no \"path\" field")
                    rows.append(row)
    except (UnicodeDecodeError, json.JSONDecodeError, csv.Error) as exc:
        raise UsageError(f"cannot parse manifest {manifest}: {first_line(exc)}") from None
    found = Discovery([], [])
    for i, row in enumerate(rows, 1):
        if not isinstance(row["path"], str):  # a short CSV row (None) or a JSON number/list: a bad entry, skipped
            found.missing.append(f"{manifest} entry {i} (path {json.dumps(row['path'], default=str)[:40]})")
            continue
        path = expand_user(row["path"])
        path = path if path.is_absolute() else manifest.parent / path
        caption = str(row.get("caption") or row.get("name") or "")  # WebVid calls the caption "name"
        if _is_file(path):
            found.clips.append(ClipSource(str(path), caption=caption))
        else:
            found.missing.append(str(path))
    if found.missing:
        logger.warning(
            "%d of %d videos in %s are missing (first: %s); they count as skipped",
            len(found.missing), len(rows), manifest, found.missing[0],
        )  # fmt: skip
    return found


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a name too long for the filesystem: as missing as a file can be
        return False


def _tar_clips(shard: Path) -> list[ClipSource]:
    """Videos in a WebDataset shard, located once by byte offset; a `KEY.txt` member beside `KEY.mp4` is its caption."""
    clips, captions = [], {}
    try:
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                key, suffix = os.path.splitext(m.name)
                if m.isfile() and suffix.lower() in VIDEO_EXTENSIONS:
                    clips.append(ClipSource(str(shard), member=m.name, offset=m.offset_data, size=m.size))
                elif m.isfile() and suffix in (".txt", ".caption") and m.size < 10_000:
                    captions[key] = tar.extractfile(m).read().decode("utf-8", "replace").strip()
    except (tarfile.TarError, OSError) as exc:
        logger.warning("skipped shard %s: %s", shard, exc)
        return []
    return [dataclasses.replace(c, caption=captions.get(os.path.splitext(c.member)[0], "")) for c in clips]
