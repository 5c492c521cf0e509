"""Work folders and checkpoints that check themselves before a resumed run trusts them.

A killed run, a full disk or a copy interrupted halfway can leave a piece of saved work cut short, empty or garbled;
resuming from it must neither crash nor silently produce something else. So every piece records what it must be:

- A *piece* of a work folder (a propagation step, a frame, a chain's state) is one safetensors file whose header
  metadata holds the size and the blake2b digest of its data section. The record travels inside the piece, renamed into
  place with it, so there is no moment at which a piece exists without its record (or a record without its piece), and
  no manifest to rewrite after every step. `read_piece` re-reads the bytes and checks both before anything is used.
- `job.json` of a work folder carries `"format": FORMAT`; a folder of another format, or an unreadable `job.json`, is
  refused in one line (`open_work_folder`).
- A folder written by someone else's code (a training checkpoint is mostly `accelerate.save_state`) gets
  `checksums.json`: size and digest of every file, written after them and before the marker of completion.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
from pathlib import Path

import numpy as np

from .errors import UsageError, first_line
from .fileio import atomic_write_bytes, atomic_write_json

logger = logging.getLogger(__name__)

FORMAT = 1  # of work folders: job.json, and pieces carrying their size and digest; bump when either changes
CHECKSUMS = "checksums.json"
_CHUNK = 1 << 22


class Damaged(Exception):
    """A piece that is missing, cut short, or not what was written; the message says which, in a few words."""


def digest(data: bytes | memoryview) -> str:
    """blake2b (128 bits): about as fast as reading the bytes, and no accidental damage goes unnoticed."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def file_record(path: Path) -> dict:
    """{"size", "blake2b"} of a file, read in chunks (checkpoint files can be gigabytes)."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return {"size": path.stat().st_size, "blake2b": h.hexdigest()}


# ---------------------------------------------------------------------------------------------------------------------
# Pieces: safetensors files that carry their own record
# ---------------------------------------------------------------------------------------------------------------------
def write_piece(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write `arrays` atomically as one safetensors file whose metadata records its data section's size and digest.
    Pieces hold numpy arrays (a CPU tensor is read through `np.asarray`; `read_piece` gives arrays back): a weight-free
    run keeps its frames without importing torch."""
    from safetensors.numpy import save as save_bytes

    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    # One serialisation: the data section's size is known beforehand (the arrays' bytes, unpadded), and the digest,
    # of fixed width, is written over a placeholder in the header once the data section is there to hash.
    size = sum(a.nbytes for a in arrays.values())
    placeholder = "0" * 32
    full = bytearray(save_bytes(arrays, metadata={"size": str(size), "blake2b": placeholder}))
    start = 8 + int.from_bytes(full[:8], "little")
    quoted = f'"{placeholder}"'.encode()
    at = full.find(quoted, 8, start)
    if len(full) - start != size or at < 0 or full.find(quoted, at + 1, start) >= 0:
        raise RuntimeError(f"safetensors laid out {path.name} unlike its format: {len(full) - start} data bytes of {size}")
    with memoryview(full) as view:
        full[at + 1 : at + 33] = digest(view[start:]).encode()
    atomic_write_bytes(path, full)


# safetensors' dtype names of what pieces hold (numpy has no bfloat16: latents are kept as float32)
_DTYPES = {"BOOL": np.bool_, "U8": np.uint8, "I8": np.int8, "U16": np.uint16, "I16": np.int16, "F16": np.float16,
           "U32": np.uint32, "I32": np.int32, "F32": np.float32, "U64": np.uint64, "I64": np.int64, "F64": np.float64}  # fmt: skip


def read_piece(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a piece, after checking its size and digest; `Damaged` saying what is wrong otherwise. The arrays
    are writable views of the one buffer the file was read into (a resumed chain continues its state in place)."""
    try:
        with open(path, "rb") as f:
            raw = bytearray(os.fstat(f.fileno()).st_size)
            del raw[f.readinto(raw) :]
    except FileNotFoundError:
        raise Damaged("missing") from None
    except OSError as exc:
        raise Damaged(f"unreadable: {exc.strerror or exc}") from None
    header, record = _piece_record(raw)
    start = len(raw) - record["size"]
    if digest(memoryview(raw)[start:]) != record["blake2b"]:
        raise Damaged("its bytes are not the ones written")
    arrays = {}
    try:
        for name, entry in header.items():
            dtype, (begin, end) = np.dtype(_DTYPES[entry["dtype"]]), entry["data_offsets"]
            count = math.prod(entry["shape"])
            if not 0 <= begin <= end <= record["size"] or end - begin != count * dtype.itemsize:
                raise ValueError(f"{name}'s offsets do not fit its shape")
            arrays[name] = np.frombuffer(raw, dtype, count, start + begin).reshape(entry["shape"])
    except (KeyError, TypeError, ValueError) as exc:  # a header that parses and a digest that matches, yet no array
        raise Damaged(f"unreadable: {first_line(exc, 80)}") from None
    return arrays


def _piece_record(raw: bytes | bytearray) -> tuple[dict, dict]:
    """(the header's entries by array name, the record: {"size", "blake2b"} of the data section)."""
    if not raw:
        raise Damaged("empty (0 bytes)")
    n = int.from_bytes(raw[:8], "little") if len(raw) >= 8 else -1
    if n < 2 or 8 + n > len(raw):
        raise Damaged(f"cut short or garbled ({len(raw)} bytes)")
    try:
        header = json.loads(raw[8 : 8 + n])
        meta = header.pop("__metadata__", None) or {}
        record = {"size": int(meta["size"]), "blake2b": str(meta["blake2b"])}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise Damaged("its header is garbled or has no record of its contents") from None
    if 8 + n + record["size"] != len(raw):
        raise Damaged(f"cut short ({len(raw)} of {8 + n + record['size']} bytes)")
    return header, record


# ---------------------------------------------------------------------------------------------------------------------
# job.json: what a run depends on, and the format of the folder
# ---------------------------------------------------------------------------------------------------------------------
def check_fingerprint(saved: dict, fingerprint: dict, where: Path) -> None:
    """Refuse to resume from a work folder that belongs to a run with other settings, naming what changed."""
    if saved != fingerprint:
        changed = sorted(k for k in set(saved) | set(fingerprint) if saved.get(k) != fingerprint.get(k))
        raise UsageError(
            f"the work folder {where} belongs to a run with other settings ({', '.join(changed)}); "
            "run without --resume to start over"
        )


def read_job(work_dir: Path) -> dict:
    """The fingerprint saved in `work_dir/job.json`; a one-line UsageError if it is unreadable or of another format."""
    fix = "run without --resume to start over"
    try:
        saved = json.loads((work_dir / "job.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        saved = None
    if not isinstance(saved, dict):
        raise UsageError(f"--resume: the work folder {work_dir} is damaged (its job.json is unreadable); {fix}")
    found = saved.pop("format", None)
    if found != FORMAT:
        what = "an older version, before work folders were versioned" if found is None else f"format {found!r}"
        raise UsageError(
            f"--resume: the work folder {work_dir} was written by another version of magicprop ({what}; this one "
            f"reads format {FORMAT}); {fix}"
        )
    return saved


def open_work_folder(work_dir: Path, fingerprint: dict, resume: bool, subfolders: tuple[str, ...]) -> bool:
    """Resume from `work_dir` (True) after checking its job.json against `fingerprint`, or start it afresh (False)."""
    if "format" in fingerprint:
        raise ValueError("'format' is job.json's own key; name that part of the fingerprint otherwise")
    job = work_dir / "job.json"
    if resume and job.exists():
        check_fingerprint(read_job(work_dir), fingerprint, work_dir)
        logger.info("resuming from %s", work_dir)
        return True
    if resume and work_dir.exists():
        logger.info("%s has no job.json (killed as it started): starting over", work_dir)
    if work_dir.exists():
        shutil.rmtree(work_dir)
    for name in subfolders:
        (work_dir / name).mkdir(parents=True, exist_ok=True)
    work_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(job, {"format": FORMAT, **fingerprint})
    return False


def recorded_seed(work_dir: Path) -> int | None:
    """The seed a killed run drew, from the records of its seeded work (PropDPM's job.json files, stage I's
    keyframe.json); None when nothing it saved depends on a seed (a weight-free propagator of a keyframe you gave)."""
    records = [work_dir / "keyframe.json", *sorted(work_dir.rglob("job.json"))] if work_dir.is_dir() else []
    for record in records:
        try:
            seed = json.loads(record.read_text(encoding="utf-8")).get("seed")
        except (OSError, UnicodeDecodeError, ValueError, AttributeError):
            continue  # a damaged record: the resumed run reports it where it reads it
        if isinstance(seed, int) and not isinstance(seed, bool):
            return seed
    return None


# ---------------------------------------------------------------------------------------------------------------------
# Folders of files written by other code (training checkpoints)
# ---------------------------------------------------------------------------------------------------------------------
def write_checksums(folder: Path, exclude: tuple[str, ...] = ()) -> None:
    """Record size and digest of every file under `folder` in `folder/checksums.json`."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != CHECKSUMS and p.name not in exclude)
    atomic_write_json(folder / CHECKSUMS, {"format": FORMAT, "files": {p.relative_to(folder).as_posix(): file_record(p) for p in files}})


def check_folder(folder: Path) -> str | None:
    """None when every file recorded in checksums.json is there, whole and unchanged; else what is wrong, in a few
    words. A folder from before checksums (no checksums.json) gets the structural check of its safetensors files."""
    try:
        recorded = json.loads((folder / CHECKSUMS).read_text(encoding="utf-8"))["files"]
    except FileNotFoundError:
        return _check_safetensors_structure(folder)
    except (OSError, ValueError, KeyError, TypeError):
        return f"{CHECKSUMS} is unreadable"
    for name, want in recorded.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != want["size"]:
            return f"{name} is {size} bytes, {want['size']} were written"
        if file_record(path)["blake2b"] != want["blake2b"]:
            return f"{name}: its bytes are not the ones written"
    return None


def _check_safetensors_structure(folder: Path) -> str | None:
    """Without recorded digests: each safetensors file's header parses and its size is what the header declares."""
    for path in sorted(folder.rglob("*.safetensors")):
        try:
            with open(path, "rb") as f:
                n = int.from_bytes(f.read(8), "little")
                header = json.loads(f.read(n)) if 2 <= n <= path.stat().st_size else None
            end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return f"{path.relative_to(folder)} is unreadable"
        if 8 + n + end != path.stat().st_size:
            return f"{path.relative_to(folder)} is cut short"
    return None
