"""The propagators that run PropDPM: `propdpm` (the paper's stage II) and `hybrid` (PropDPM plus a fusion step)."""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from ...errors import UsageError
from ..base import PropagationRequest, Propagator
from ..flow.resolution import Resized, shrink
from .fusion import AnchoredFusion, FusionStep


class PropDPMPropagator(Propagator):
    """MagicProp's stage II (paper, section 3.2, Eqn 6): PropDPM renders every frame from the previous one, reading the
    edited keyframe through the appearance adaptor (`sampling.propagate_latents`). With `fusion`, the sampling loop
    hands every rendered frame to a fusion step built for the request, and what it returns is the output."""

    name = "propdpm"
    summary = "PropDPM renders every frame (the paper's model)"
    needs_model = needs_depth = needs_source = True

    def __init__(self, fusion: Callable[[PropagationRequest], FusionStep] | None = None):
        self.fusion = fusion

    def render(self, request: PropagationRequest) -> Iterator[np.ndarray]:
        # imported here so that listing the registry (`magicprop --help`) does not load torch
        from .sampling import decode_steps, propagate_latents

        models, k = request.models, request.keyframe_index
        video, keyframe = self.model_inputs(request)
        store, where = propagate_latents(
            models, request.depth, keyframe, k, request.settings, work_dir=request.work_dir, resume=request.resume,
            progress=request.progress, callback=request.callback, video=video,
            fusion=None if self.fusion is None else self.fusion(request),
        )  # fmt: skip
        yield from decode_steps(models, store, where, request.keyframe, k)

    def model_inputs(self, request: PropagationRequest) -> tuple[np.ndarray, np.ndarray]:
        """(source frames, keyframe) at the size PropDPM renders: the request's own."""
        return request.source, request.keyframe


class HybridPropagator(PropDPMPropagator):
    """PropDPM fused with the anchored warp (beyond the paper, in the manner of Rerender-A-Video's pixel fusion): after
    every rendered frame, the edited keyframe warped through the frame's anchored map replaces PropDPM's pixels
    wherever the keyframe explains the frame (`fusion.AnchoredFusion`); PropDPM paints only what no warp can carry.

    At full resolution: PropDPM renders at `request.working_size` (the source and keyframe shrunk to it, one frame at a
    time), the warp at the source's size, and PropDPM's frame is brought up with `upsample.guided_upsample` against the
    full-size source frame where it shows. `fusion=lambda r: FlowFusion(r.source)` gives the older variant, which
    carries the previous output along the frame-to-frame flow (at the source's size only: no working_size)."""

    name = "hybrid"
    summary = "the anchored warp keeps what the keyframe explains, PropDPM paints the rest"
    full_resolution = True

    def __init__(self, fusion: Callable[[PropagationRequest], FusionStep] | None = None) -> None:
        super().__init__(fusion=fusion or self.anchored_fusion)

    def model_inputs(self, request: PropagationRequest) -> tuple[np.ndarray, np.ndarray]:
        """(source frames, keyframe) at the working size: a lazily shrunk view of the source, the keyframe shrunk."""
        size = working_size(request)
        if size == tuple(request.source.shape[1:3]):
            return request.source, request.keyframe
        return Resized(request.source, size), shrink(request.keyframe, size)

    def anchored_fusion(self, request: PropagationRequest) -> AnchoredFusion:
        """The full-size anchored warp, PropDPM's working-size frames brought up where they show."""
        video, _ = self.model_inputs(request)
        working = None if video is request.source else video
        return AnchoredFusion(request.source, request.keyframe, request.keyframe_index, working=working)


def working_size(request: PropagationRequest) -> tuple[int, int]:
    """(h, w) at which the model runs: `request.working_size`, or the source's size; never larger than the source."""
    h, w = request.source.shape[1:3]
    if request.working_size is None:
        return h, w
    wh, ww = (int(v) for v in request.working_size)
    if wh > h or ww > w or wh < 1 or ww < 1:
        raise UsageError(f"working_size {wh}x{ww} must fit inside the source's {h}x{w}; pass a smaller one or None")
    return wh, ww
