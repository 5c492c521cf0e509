"""Stage II: motion-aware appearance propagation. Every propagator has one call signature (`base.Propagator`):

    from magicprop.propagation import PROPAGATORS, PropagationRequest
    frames = list(PROPAGATORS["propdpm"](PropagationRequest(source=clip, keyframes={0: edited}, depth=depth, models=models)))

- `learned`: `propdpm` (the paper's PropDPM sampling loop, `sampling`, with its step store, `store`) and `hybrid`
  (PropDPM plus a fusion step, `fusion`); import `sampling` for the loop itself (`propagate_latents`, `decode_steps`);
- `classical`: the weight-free propagators (`flow`, `copy`);
- `blend`: several keyframes, each propagated to its neighbours and crossfaded between them.

`PROPAGATORS` maps each name to its propagator; the CLI, the pipeline, the web UI, the demo and the benchmarks take
their choices and each propagator's needs (`needs_model`, `needs_depth`, `needs_source`) from it. A new propagator is a
`Propagator` subclass plus one `register` call.
"""

from __future__ import annotations

from ..errors import UsageError
from .base import PropagationRequest, PropagationSettings, Propagator, resolve_keyframes
from .blend import blend_keyframes, keyframe_spans
from .classical import CopyPropagator, FlowPropagator, propagate_copy, propagate_flow
from .fusion import FlowFusion, FusionStep
from .learned import HybridPropagator, PropDPMPropagator

PROPAGATORS: dict[str, Propagator] = {}


def register(propagator: Propagator) -> Propagator:
    """Add a propagator to the registry under its name (replacing one of the same name)."""
    if not propagator.name:
        raise ValueError(f"{type(propagator).__name__} has no name")
    PROPAGATORS[propagator.name] = propagator
    return propagator


def get_propagator(name: str) -> Propagator:
    """The registered propagator called `name`, or one line naming the choices."""
    if name not in PROPAGATORS:
        raise UsageError(f"unknown propagator {name!r}; choose one of {', '.join(PROPAGATORS)}")
    return PROPAGATORS[name]


for _p in (PropDPMPropagator(), HybridPropagator(), FlowPropagator(), CopyPropagator()):
    register(_p)

# The sampling loop (`sampling`) and the step store (`store`) load torch: import them from their modules.
__all__ = [
    "PROPAGATORS", "CopyPropagator", "FlowFusion", "FlowPropagator", "FusionStep", "HybridPropagator", "PropDPMPropagator",
    "PropagationRequest", "PropagationSettings", "Propagator", "blend_keyframes", "get_propagator", "keyframe_spans",
    "propagate_copy", "propagate_flow", "register", "resolve_keyframes",
]  # fmt: skip
