"""The propagators that run PropDPM: `propdpm` (the paper's stage II) and `hybrid` (PropDPM plus a fusion step)."""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from ..base import PropagationRequest, Propagator
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

        models, k, keyframe = request.models, request.keyframe_index, request.keyframe
        store, where = propagate_latents(
            models, request.depth, keyframe, k, request.settings, work_dir=request.work_dir, resume=request.resume,
            progress=request.progress, callback=request.callback, video=request.source,
            fusion=None if self.fusion is None else self.fusion(request),
        )  # fmt: skip
        yield from decode_steps(models, store, where, keyframe, k)


class HybridPropagator(PropDPMPropagator):
    """PropDPM fused with the anchored warp (beyond the paper, in the manner of Rerender-A-Video's pixel fusion): after
    every rendered frame, the edited keyframe warped through the frame's anchored map replaces PropDPM's pixels
    wherever the keyframe explains the frame (`fusion.AnchoredFusion`); PropDPM paints only what no warp can carry.
    `fusion=FlowFusion` gives the older variant, which carries the previous output along the frame-to-frame flow."""

    name = "hybrid"
    summary = "the anchored warp keeps what the keyframe explains, PropDPM paints the rest"

    def __init__(self, fusion: Callable[[PropagationRequest], FusionStep] | None = None) -> None:
        super().__init__(fusion=fusion or (lambda r: AnchoredFusion(r.source, r.keyframe, r.keyframe_index)))
