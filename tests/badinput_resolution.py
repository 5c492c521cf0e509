"""Builders of the bad-input table's resolution cases (listed in badinput_cases.py): what full-resolution work meets.

The weight-free propagators read clips at their own size (issue 23), so sizes that used to be shrunk to 512x512 first
now reach them: a keyframe of another shape, a clip over 8K, odd sizes, a thumbnail keyframe, a budget below the models'
smallest frame, an mp4 quality out of range. Each works in a documented way or ends in one line, writing nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from badinputs import FPS, SIZE, Setup, Workspace, frames_of

from magicprop.video import load_image, read_video, save_image, write_video


def _flow(ws: Workspace, video: Path, out: Path, key: Path, *extra: str) -> list:
    return ["propagate", video, "--keyframe-image", key, "--keyframe-index", "0", "--propagator", "flow", "--seed", "0", *extra, "-o", out]


def keyframe_other_aspect(t: Path, ws: Workspace) -> Setup:
    """A square keyframe for a 3:2 clip: stretched to the clip's shape with a warning saying so (documented)."""
    key = save_image(t / "square.png", frames_of(1, 48, 48, seed=3)[0])
    out = t / "out"

    def check() -> None:
        frames, _ = read_video(out)
        assert frames.shape == (6, *SIZE, 3), frames.shape

    return Setup(argv=_flow(ws, ws.clip, out, key), code=0, warns=("stretches",), inputs=[ws.clip, key], check=check)


def _blank_folder(folder: Path, n: int, h: int, w: int) -> Path:
    """n PNG frames of h x w: flat colour with a gradient band, fast to write even at 8K."""
    folder.mkdir()
    frame = np.zeros((h, w, 3), np.uint8)
    frame[: min(h, 64)] = np.linspace(0, 255, w, dtype=np.uint8)[None, :, None]
    for i in range(n):
        save_image(folder / f"{i:03d}.png", np.roll(frame, 8 * i, axis=1))
    return folder


def larger_than_8k(t: Path, ws: Workspace) -> Setup:
    """An 8200x4400 clip with no --max-pixels: too large to work on at its own size; refused before any decoding."""
    clip = _blank_folder(t / "8k", 2, 4400, 8200)
    key = save_image(t / "key.png", np.full((440, 820, 3), 200, np.uint8))
    return Setup(argv=_flow(ws, clip, t / "out.mp4", key), says=("larger than 8K", "--max-pixels"), inputs=[clip, key],
                 output=t / "out.mp4", max_seconds=30)  # fmt: skip


def larger_than_8k_capped(t: Path, ws: Workspace) -> Setup:
    """The same clip with the fix the error names: it works at the capped size and comes back at 8200x4400."""
    clip = _blank_folder(t / "8k", 2, 4400, 8200)
    key = save_image(t / "key.png", np.full((440, 820, 3), 200, np.uint8))
    out = t / "out"

    def check() -> None:
        record = json.loads((t / "out.json").read_text())
        h, w = record["propagation_size"]
        assert h * w <= 262144, record["propagation_size"]
        first = load_image(out / "00000.png")
        assert first.shape == (4400, 8200, 3), first.shape
        assert len(list(out.glob("*.png"))) == 2

    return Setup(argv=_flow(ws, clip, out, key, "--max-pixels", "262144"), code=0, inputs=[clip, key], check=check)


def odd_size_1081(t: Path, ws: Workspace) -> Setup:
    """1081x97 frames at full resolution: no rounding to a multiple of 8; the mp4 is padded by one row and column
    (warned), the keyframe's frame is the keyframe image exactly (no resample round trip)."""
    frames = frames_of(3, 1081, 97)
    clip = write_video(t / "odd", frames, FPS)  # a PNG folder: the odd size survives
    key = save_image(t / "key.png", 255 - frames[0])
    out = t / "out.mp4"

    def check() -> None:
        record = json.loads((t / "out.json").read_text())
        assert record["propagation_size"] == [1081, 97], record["propagation_size"]
        video, _ = read_video(out)
        assert video.shape == (3, 1082, 98, 3), video.shape  # H.264 needs even sizes

    return Setup(argv=_flow(ws, clip, out, key), code=0, warns=("even sizes",), inputs=[clip, key], check=check)


def keyframe_thumbnail(t: Path, ws: Workspace) -> Setup:
    """A 40x30 keyframe image for a 128x96 clip: under 64 px, refused (enlarging a thumbnail 3x is no edit)."""
    clip = write_video(t / "clip.mp4", frames_of(4, 96, 128), FPS)
    key = save_image(t / "thumb.png", frames_of(1, 30, 40)[0])
    return Setup(argv=_flow(ws, clip, t / "out.mp4", key), says=("under 64 px", "40x30"), inputs=[clip, key], output=t / "out.mp4")


def max_pixels_below_minimum(t: Path, ws: Workspace) -> Setup:
    return Setup(argv=_flow(ws, ws.clip, t / "out.mp4", ws.key, "--max-pixels", "10"), says=("--max-pixels", "below the minimum"),
                 inputs=[ws.clip, ws.key], output=t / "out.mp4")  # fmt: skip


def crf_out_of_range(t: Path, ws: Workspace) -> Setup:
    return Setup(argv=_flow(ws, ws.clip, t / "out.mp4", ws.key, "--crf", "60"), says=("--crf", "51"), inputs=[ws.clip, ws.key],
                 output=t / "out.mp4")  # fmt: skip


def api_huge_array(t: Path, ws: Workspace) -> Setup:
    """4K frames through the Python API: `copy` (full resolution) is given them at their own size by default; an
    explicit max_pixels caps `flow` to it; both come back at 3840x2160."""
    import pytest

    from magicprop.pipeline import MagicPropPipeline
    from magicprop.propagation import get_propagator

    frames = np.broadcast_to(frames_of(1, 2160, 3840), (2, 2160, 3840, 3)).copy()
    seen: dict[str, tuple] = {}
    result: list = []

    def call() -> None:
        with pytest.MonkeyPatch.context() as mp:
            for name in ("copy", "flow"):
                cls, real = type(get_propagator(name)), type(get_propagator(name)).render
                mp.setattr(cls, "render", lambda self, request, real=real, name=name: (seen.setdefault(name, request.keyframe.shape), real(self, request))[1])
            full = MagicPropPipeline(propagator="copy")(frames, keyframe_image=frames[0], keyframe_index=0)
            capped = MagicPropPipeline(propagator="flow")(frames, keyframe_image=frames[0], keyframe_index=0, max_pixels=512 * 512)
        assert full.frames.shape == capped.frames.shape == frames.shape
        assert seen["copy"][:2] == (2160, 3840) and seen["flow"][0] * seen["flow"][1] <= 512 * 512, seen
        result.append(True)

    def check() -> None:
        assert result == [True]

    return Setup(call=call, code=0, check=check)
