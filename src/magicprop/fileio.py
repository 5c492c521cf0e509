"""Writing files so that nothing is ever half-written, and reading paths with clear errors.

Every output goes to a temporary name in the destination folder and is renamed into place when complete: a crash leaves
either the old file or the new one. Renames within one folder are atomic on POSIX and Windows.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .errors import MagicPropError, UsageError

PathLike = str | os.PathLike


@contextlib.contextmanager
def atomic_path(path: PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed to `path`, on any error it is removed.

    The temporary name keeps the destination's suffix so that writers choosing a format by extension (PyAV, PIL, numpy)
    behave the same.
    """
    path = Path(path)
    ensure_writable_dir(path.parent)
    suffix = path.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs get the user's usual permissions
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        raise disk_error(exc, path) from exc
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def disk_error(exc: OSError, path: PathLike) -> MagicPropError:
    """Turn an OSError from writing `path` into a one-line error with the fix."""
    if exc.errno == errno.ENOSPC:
        return MagicPropError(f"disk full while writing {path}: free some space and run again (with --resume where offered)")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return UsageError(f"cannot write {path}: permission denied; choose an output folder you can write to")
    return MagicPropError(f"cannot write {path}: {exc.strerror or exc}")


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def atomic_save_npz(path: PathLike, **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # a file object stops numpy from appending a second ".npz"
            np.savez_compressed(f, **arrays)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def ensure_writable_dir(folder: PathLike) -> Path:
    """Create `folder` if needed and check we can write there, or raise a UsageError naming it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create output folder {folder}: {exc.strerror}; choose a folder you can write to") from exc
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"output folder {folder} is not writable; choose a folder you can write to")
    return folder


def expand_user(path: PathLike) -> Path:
    """`~` and `~user` expanded as a shell does: left as typed when that home folder is unknown (pathlib would raise)."""
    try:
        return Path(path).expanduser()
    except RuntimeError:
        return Path(path)


def require_file(path: PathLike, what: str = "input") -> Path:
    """Return `path` as a Path if it is an existing, non-empty file, else raise a UsageError naming it."""
    path = Path(path)
    try:
        exists = path.exists()
    except OSError as exc:  # a name too long for the filesystem, a path through a file, ...
        raise UsageError(f"{what} path cannot be used ({exc.strerror}): {str(path)[:200]}; check the path") from None
    if not exists:
        raise UsageError(f"{what} not found: {path}; check the path")
    if path.is_file() and path.stat().st_size == 0:
        raise UsageError(f"{what} is an empty file (0 bytes): {path}; re-export or re-download it")
    return path


def check_output_path(output: PathLike, *inputs: PathLike | None) -> Path:
    """Refuse an output that would overwrite an input; make sure its folder is writable."""
    out = Path(output)
    for inp in inputs:
        if inp is not None and out.resolve() == Path(inp).resolve():
            raise UsageError(f"output path {out} is the same as the input; choose another output name (inputs are never overwritten)")
    ensure_writable_dir(out.parent if out.parent != Path("") else Path("."))
    return out


def natural_key(path: PathLike) -> list:
    """Sort key for file names in natural order: 2.png before 10.png (numbers compare as numbers)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", Path(path).name)]


def remove_stale_temporaries(path: PathLike) -> list[Path]:
    """Delete what a killed writer of `path` left beside it: `atomic_path`'s `.STEM.XXXXXXXX.tmpSUFFIX` files and the
    frame-folder writer's `.NAME.XXXXXXXX.tmp` / `.old` folders (XXXXXXXX: tempfile's 8 random characters, so another
    output's temporaries never match). A SIGKILL runs no cleanup, so the next run of the same job does it."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    names = (re.compile(rf"^\.{re.escape(path.stem)}\.[a-z0-9_]{{8}}\.tmp{re.escape(path.suffix)}$"),
             re.compile(rf"^\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.(tmp|old)$"))  # fmt: skip
    stale = sorted(p for p in path.parent.iterdir() if any(n.match(p.name) for n in names))
    for p in stale:
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    return stale
