"""Building bad inputs and judging a run on them; the table itself is tests/badinput_cases.py.

Each `Case` builds its inputs in a fresh folder and says what a careful program does with them: the exit status (2 for
usage errors, 1 for runtime failures, 0 where the input is odd but valid and must simply work), words the one error line
must contain, and a check of the result. `run_case` runs it in-process through `magicprop.cli.main` (or a Python API
call) and lists every way it fell short: a traceback, more or fewer than one error line, a changed input, a damaged
earlier output, a temporary file left behind, or a wrong result. No real weights are needed: a dummy PropDPM folder, a
tiny depth model, and the weight-free `flow` propagator.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import re
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import av
import numpy as np
import pytest
import torch
from fixtures import save_dummy_propagation_models, save_tiny_depth_model

from magicprop.errors import MagicPropError
from magicprop.synthetic import render_clip
from magicprop.video import save_image, write_video

FPS = 8.0
SIZE = (32, 48)  # (H, W) of the good clip: multiples of 8, so the dummy PropDPM works at the source size
ERROR_LINE = re.compile(r"^magicprop [\w-]+: error: ")


# ---------------------------------------------------------------------------------------------------------------------
# The shared workspace: tiny models and one good clip, built once
# ---------------------------------------------------------------------------------------------------------------------
@dataclass
class Workspace:
    root: Path
    model: Path  # dummy PropDPM folder (propdpm/, vae/, image_encoder/, scheduler/)
    depth: Path  # tiny Depth Anything folder
    clip: Path  # 6 frames, 32x48, 8 fps
    key: Path  # an edited keyframe for it (PNG, 32x48)

    def stage2(self, *extra: str) -> list[str]:
        """Flags of a quick PropDPM run on dummy models."""
        return ["--model", str(self.model), "--depth-model", str(self.depth), "--steps", "2", "--seed", "0", *extra]


def make_workspace(root: str | Path) -> Workspace:
    root = Path(root)
    model = save_dummy_propagation_models(root / "models" / "propdpm")
    depth = save_tiny_depth_model(root / "models" / "depth")
    c = render_clip(3, frames=6, size=SIZE)
    clip = write_video(root / "clip.mp4", c.source, FPS)
    key = save_image(root / "key.png", c.edited[3])
    return Workspace(root, model, depth, clip, key)


# ---------------------------------------------------------------------------------------------------------------------
# Builders of bad files
# ---------------------------------------------------------------------------------------------------------------------
def frames_of(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth moving colour gradients (uint8 (n, h, w, 3)): cheap to encode at any size."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for t in range(n):
        r = 128 + 100 * np.sin((x + 3 * t + seed) / max(4.0, w / 6))
        g = 128 + 100 * np.cos((y + 2 * t) / max(4.0, h / 5))
        b = 128 + 60 * np.sin((x + y) / max(4.0, (h + w) / 8) + t / 4)
        out.append(np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8))
    return np.stack(out)


def truncated_mp4(path: Path, frames: int = 24, keep: float = 0.6) -> Path:
    """A clip cut short, as an interrupted download leaves it (random content: the cut lands inside the frames)."""
    rng = np.random.default_rng(0)
    full = write_video(path.with_name("full-" + path.name), rng.integers(0, 256, (frames, 32, 32, 3), np.uint8), FPS)
    data = full.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    full.unlink()
    return path


def headless_mp4(path: Path) -> Path:
    """An mp4 whose index survives but no frame does: it opens, and decodes to nothing."""
    full = write_video(path.with_name("full-" + path.name), frames_of(4, 32, 32), FPS)
    data = full.read_bytes()
    path.write_bytes(data[: data.find(b"mdat") + 20])
    full.unlink()
    return path


def bad_metadata_mp4(path: Path) -> Path:
    """A good clip whose title tag is not UTF-8 (found by fuzzing: PyAV raised UnicodeDecodeError on open)."""
    container = av.open(str(path), "w", format="mp4")
    container.metadata["title"] = "TITLETAG"
    stream = container.add_stream("libx264", rate=8)
    stream.pix_fmt, stream.height, stream.width = "yuv420p", 32, 32
    for i, f in enumerate(frames_of(3, 32, 32)):
        vf = av.VideoFrame.from_ndarray(f, format="rgb24")
        vf.pts = i
        container.mux(stream.encode(vf))
    container.mux(stream.encode(None))
    container.close()
    data = path.read_bytes()
    assert data.count(b"TITLETAG") == 1
    path.write_bytes(data.replace(b"TITLETAG", b"\xff\xfe\xdb\xc3(\xa0\xa1\x80"))
    return path


def pickle_only_model(src: Path, dst: Path) -> Path:
    """A copy of a model folder with every .safetensors file replaced by a torch.save'd state dict (.bin)."""
    from safetensors.torch import load_file

    shutil.copytree(src, dst)
    for f in dst.rglob("*.safetensors"):
        name = "pytorch_model.bin" if f.name == "model.safetensors" else "diffusion_pytorch_model.bin"
        torch.save(load_file(str(f)), f.with_name(name))
        f.unlink()
    return dst


def png_header_only(width: int, height: int) -> bytes:
    """A PNG signature, an IHDR chunk claiming width x height RGB pixels, one tiny IDAT and IEND (valid CRCs)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def tree_digest(path: Path) -> str | None:
    """sha256 of a file, or of a folder's relative names and bytes; None when absent."""
    if not path.exists():
        return None
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(str(f.relative_to(path.parent)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------------------------------
@dataclass
class Setup:
    """What one case runs and expects."""

    argv: list[str] | None = None  # magicprop CLI arguments, run in-process
    call: Callable[[], object] | None = None  # or a Python API call (MagicPropError -> its exit code, as the CLI does)
    code: int = 2
    says: tuple[str, ...] = ()  # words the error line must contain (case-insensitive)
    warns: tuple[str, ...] = ()  # words a logged warning must contain (successful runs with odd inputs)
    inputs: list[Path] = field(default_factory=list)  # must be byte-identical afterwards
    output: Path | None = None  # an earlier output written here before a failing run must survive it
    patch: Callable[[pytest.MonkeyPatch], None] | None = None  # simulated faults (full disk), offline mode
    check: Callable[[], None] | None = None  # asserts about a successful run's result
    error_line: re.Pattern = ERROR_LINE
    error_lines: int | None = None  # default: 1 for a failure, 0 for a success
    max_seconds: float | None = None


@dataclass(frozen=True)
class Case:
    name: str
    what: str  # one line for the README table
    build: Callable[[Path, Workspace], Setup]
    skip: Callable[[], str | None] = lambda: None  # a reason to skip here (e.g. running as root)


@dataclass
class Outcome:
    name: str
    code: int | None
    line: str  # the error line (or "" on success)
    problems: list[str]
    seconds: float

    @property
    def clean(self) -> bool:
        return not self.problems


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def run_case(case: Case, tmp: Path, ws: Workspace) -> Outcome:
    """Build the case in `tmp`, run it, and list everything that fell short of a clean failure (or success)."""
    tmp.mkdir(parents=True, exist_ok=True)
    s = case.build(tmp, ws)
    problems: list[str] = []
    if s.output is not None and s.code != 0:  # a real earlier result at the same name, and its record
        shutil.copyfile(ws.clip, s.output)
        s.output.with_suffix(".json").write_text('{"earlier": true}\n')
    watched = [*s.inputs, ws.model, ws.depth] + ([s.output, s.output.with_suffix(".json")] if s.output and s.code else [])
    before = {p: tree_digest(p) for p in watched}
    out_dir = s.output.parent if s.output is not None else tmp
    leftovers_before = set(out_dir.iterdir())
    err, out, records = io.StringIO(), io.StringIO(), _Records()
    code: int | None = None
    t0 = time.perf_counter()
    logging.getLogger().addHandler(records)
    try:
        with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            if s.patch is not None:
                s.patch(mp)
            try:
                if s.argv is not None:
                    from magicprop.cli import main

                    code = main([str(a) for a in s.argv])
                else:
                    s.call()
                    code = 0
            except SystemExit as exc:  # argparse's usage errors
                code = exc.code if isinstance(exc.code, int) else 1
            except MagicPropError as exc:
                if s.argv is not None:
                    raise
                code = exc.exit_code
                print(f"magicprop api: error: {exc}", file=sys.stderr)
            except Exception:  # noqa: BLE001 - anything else is the crash this table looks for
                problems.append("crashed: " + traceback.format_exc().strip().splitlines()[-1])
                print(traceback.format_exc(), file=sys.stderr)
    finally:
        logging.getLogger().removeHandler(records)
    seconds = time.perf_counter() - t0
    text = err.getvalue()
    lines = [line for line in text.splitlines() if s.error_line.match(line)]

    # 1. Exit status, one line, no traceback
    if code != s.code:
        problems.append(f"exit status {code}, expected {s.code}")
    expected_lines = s.error_lines if s.error_lines is not None else (1 if s.code else 0)
    if len(lines) != expected_lines:
        problems.append(f"{len(lines)} error lines, expected {expected_lines}: {lines[:3]}")
    if "Traceback" in text:
        problems.append("a traceback reached stderr")
    for word in s.says:
        if not any(word.lower() in line.lower() for line in lines):
            problems.append(f"error line does not say {word!r}: {lines[:1]}")
    for word in s.warns:
        if not any(word.lower() in m.lower() for m in records.messages):
            problems.append(f"no warning saying {word!r} (warnings: {records.messages[:3]})")
    # 2. Inputs and earlier outputs untouched, nothing half-written left behind
    for p, digest in before.items():
        if tree_digest(p) != digest:
            problems.append(f"{p.name} changed")
    new = [p.name for p in set(out_dir.iterdir()) - leftovers_before if ".tmp" in p.name]
    if new:
        problems.append(f"temporary files left behind: {new}")
    if s.max_seconds is not None and seconds > s.max_seconds:
        problems.append(f"took {seconds:.1f} s, more than {s.max_seconds:g} s")
    # 3. The result, where one is expected
    if s.check is not None and not problems:
        try:
            s.check()
        except AssertionError as exc:
            problems.append(f"wrong result: {str(exc).strip().splitlines()[0] if str(exc).strip() else 'assertion failed'}")
    return Outcome(case.name, code, lines[0] if lines else "", problems, seconds)
