"""Propagators that need no weights: the floor any learned propagation has to beat.

- `propagate_copy` repeats the edited keyframe: perfect appearance, no motion at all.
- `propagate_flow` carries the keyframe along the source clip's optical flow, frame by frame, like a bare-bones EbSynth:
  right where flow is reliable, but it cannot invent content that the keyframe never showed (disocclusions, new objects
  entering the frame), and bilinear resampling softens the result a little more at every step.

Both take the *source* clip (T, H, W, 3) uint8, the edited keyframe (H, W, 3) uint8 and the keyframe's index, and
return the edited clip (T, H, W, 3) uint8 whose frame `keyframe_index` is the keyframe itself.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
from tqdm.auto import tqdm

from ..errors import UsageError
from ..motion.flow import FlowMethod, carry, optical_flow
from .base import PropagationRequest, Propagator


def propagate_copy(source: np.ndarray, keyframe: np.ndarray, keyframe_index: int) -> np.ndarray:
    """(T, H, W, 3) uint8: the keyframe repeated for every frame of `source`."""
    _check_inputs(source, keyframe, keyframe_index)
    return np.repeat(keyframe[None], len(source), axis=0).astype(np.uint8, copy=False)


def propagate_flow(
    source: np.ndarray,
    keyframe: np.ndarray,
    keyframe_index: int,
    *,
    method: FlowMethod = "dis",
    progress: bool = True,
) -> np.ndarray:
    """(T, H, W, 3) uint8: the keyframe warped along the source's flow, forward to the end and backward to the start.

    For each next frame t reached from its neighbour p (p = t - 1 going forward, t + 1 going backward), the flow from
    t to p is measured on the *source* frames (the edit may have destroyed the texture flow needs), and output[p] is
    backward-warped with it. Where the forward-backward check fails (t shows something p did not) or the flow points
    outside the frame, there is nothing to carry, so the pixel keeps output[p]'s value at the same place: a still patch
    is less jarring than a smear.
    """
    # 1. Check inputs
    keyframe_index = _check_inputs(source, keyframe, keyframe_index)
    num_frames = len(source)
    out = np.empty_like(source, dtype=np.uint8)
    out[keyframe_index] = keyframe

    # 2. Walk away from the keyframe in both directions; each step only needs the step before it.
    order = [(t, t - 1) for t in range(keyframe_index + 1, num_frames)]
    order += [(t, t + 1) for t in range(keyframe_index - 1, -1, -1)]
    for t, p in tqdm(order, desc="flow propagation", unit="frame", disable=not progress):
        flow_tp = optical_flow(source[t], source[p], method=method)  # source[t][y, x] ~ source[p][(y, x) + flow]
        flow_pt = optical_flow(source[p], source[t], method=method)
        carried, hole = carry(out[p], flow_tp, flow_pt)
        carried[hole] = out[p][hole]
        out[t] = carried
    return out


def _check_inputs(source: np.ndarray, keyframe: np.ndarray, keyframe_index: int) -> int:
    """Validate shapes and return the keyframe index made non-negative (negative counts from the end, like Python)."""
    if source.ndim != 4 or source.shape[-1] != 3:
        raise UsageError(
            f"source must be a (T, H, W, 3) clip, got shape {source.shape}; read it with magicprop.video.read_video"
        )
    if keyframe.shape != source.shape[1:]:
        raise UsageError(
            f"keyframe shape {keyframe.shape} differs from the source frames' {source.shape[1:]}; "
            "resize the keyframe to match"
        )
    if source.dtype != np.uint8 or keyframe.dtype != np.uint8:
        raise UsageError(
            f"source and keyframe must be uint8 (0..255), got {source.dtype} and {keyframe.dtype}; convert them first"
        )
    num_frames = len(source)
    if not -num_frames <= keyframe_index < num_frames:
        raise UsageError(
            f"keyframe index {keyframe_index} is out of range for a {num_frames}-frame clip; use 0..{num_frames - 1}"
        )
    return keyframe_index % num_frames


class CopyPropagator(Propagator):
    """The keyframe repeated for every frame: perfect appearance, no motion at all (the floor of every benchmark)."""

    name = "copy"
    summary = "repeat the keyframe (a baseline: no motion)"
    needs_source = False

    def render(self, request: PropagationRequest) -> Iterator[np.ndarray]:
        for t in range(request.num_frames):
            yield request.keyframe
            if t != request.keyframe_index:
                report(request, t + (t < request.keyframe_index), request.num_frames - 1)


class ChainPropagator(Propagator):
    """`propagate_flow`: the keyframe carried frame to frame along the source's optical flow, each frame resampling
    the one before it (the baseline the anchored `flow` propagator is measured against: blur and drift compound)."""

    name = "chain"
    summary = "carry the previous output frame to frame along the flow (a baseline: blur compounds)"

    def render(self, request: PropagationRequest) -> Iterator[np.ndarray]:
        k = request.keyframe_index
        frames = propagate_flow(request.source, request.keyframe, k, progress=request.progress)
        for t, frame in enumerate(frames):
            yield frame
            if t != k:
                report(request, t + (t < k), request.num_frames - 1)


def report(request: PropagationRequest, done: int, total: int) -> None:
    if request.callback is not None:
        request.callback(done, total)
