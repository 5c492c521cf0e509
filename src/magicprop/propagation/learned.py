"""The propagators that run PropDPM: `propdpm` (the paper's stage II) and `hybrid` (PropDPM plus a fusion step)."""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from .base import PropagationRequest, Propagator
from .fusion import FlowFusion, FusionStep


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
    """PropDPM fused with flow (beyond the paper, after Rerender-A-Video): after every rendered frame, the previous
    output carried along the source's optical flow replaces PropDPM's pixels wherever the flow's forward-backward check
    passes (`fusion.FlowFusion`); PropDPM paints only what the flow cannot carry."""

    name = "hybrid"
    summary = "flow carries what it can, PropDPM paints the rest"

    def __init__(self) -> None:
        super().__init__(fusion=lambda request: FlowFusion(request.source))
