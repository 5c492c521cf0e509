"""What `MagicPropPipeline` returns (`MagicPropOutput`, as diffusers' pipelines keep theirs in `pipeline_output.py`) and
the forms its frames come in (`output_type`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Literal

import numpy as np
from PIL import Image

from .errors import UsageError
from .inputs import Sizes
from .keyframes import KeyframeMatch

OutputType = Literal["np", "pil", "iterator"]


@dataclass
class MagicPropOutput:
    # (T, H, W, 3) uint8 at the source's size; a list of PIL images (output_type="pil"); or an iterator of (H, W, 3)
    # uint8 frames made as they are taken (output_type="iterator": the clip is never held, see `jobs.run_job`)
    frames: np.ndarray | list | Iterator[np.ndarray]
    keyframe: np.ndarray  # (H, W, 3) uint8: the edited keyframe, at the source's size
    keyframe_index: int
    depth: np.ndarray | None  # (T, h, w) float32 in [0, 1] at the working size; None when the run needed none
    fps: float | None = None  # the source's frame rate when `video` was a file; None for an array
    sizes: Sizes | None = None  # (H, W) of the source, the diffusion models' working size and the propagator's
    keyframe_indices: tuple[int, ...] = ()  # every keyframe of the run, in the order stage I edited them
    keyframe_match: KeyframeMatch | None = None  # how `keyframe_index` was found for a keyframe image given alone


def check_output_type(output_type: str) -> None:
    if output_type not in ("np", "pil", "iterator"):
        raise UsageError(f"output_type must be 'np', 'pil' or 'iterator', got {output_type!r}")


def collect_frames(frames: Iterator[np.ndarray], shape: tuple, output_type: str) -> np.ndarray | list | Iterator[np.ndarray]:
    """The frames in the form `output_type` names: the iterator itself, one array, or PIL images."""
    if output_type == "iterator":
        return frames
    out = np.empty(shape, np.uint8)
    for t, frame in enumerate(frames):
        out[t] = frame
    return out if output_type == "np" else [Image.fromarray(f) for f in out]
