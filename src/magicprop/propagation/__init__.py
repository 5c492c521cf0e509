"""Stage II: motion-aware appearance propagation. Every propagator has one call signature (`base.Propagator`):

    from magicprop.propagation import PROPAGATORS, PropagationRequest
    frames = list(PROPAGATORS["propdpm"](PropagationRequest(source=clip, keyframes={0: edited}, depth=depth, models=models)))

- `propdpm/` (the learned family): `propdpm` (the paper's PropDPM sampling loop, `propdpm.sampling`, with its step
  store, `store`) and `hybrid` (PropDPM plus a fusion step, `propdpm.fusion`); import `propdpm.sampling` for the loop
  itself (`propagate_latents`, `decode_steps`);
- `flow/` (the weight-free family): `flow`, the keyframe warped through anchored coordinate maps (`flow.maps`), with
  guided patch synthesis (`flow.fill`, `flow.patches`) for what it cannot explain (no weights);
- `baselines`: `chain` (chained warping), `lut` (a colour lookup, no motion) and `copy`;
- `blend`: several keyframes, each propagated to its neighbours and crossfaded between them.

`PROPAGATORS` maps each name to its propagator; the CLI, the pipeline, the web UI, the demo and the benchmarks take
their choices and each propagator's needs (`needs_model`, `needs_depth`, `needs_source`) from it. A new propagator is a
`Propagator` subclass plus one `register` call.
"""

from __future__ import annotations

import logging

from ..errors import UsageError
from .base import PropagationRequest, PropagationSettings, Propagator, resolve_keyframes
from .blend import blend_keyframes, keyframe_spans
from .baselines import ChainPropagator, CopyPropagator, LutPropagator, propagate_copy, propagate_flow
from .flow.propagator import AnchoredFlowPropagator
from .propdpm.fusion import AnchoredFusion, FlowFusion, FusionStep
from .propdpm.propagators import HybridPropagator, PropDPMPropagator

PROPAGATORS: dict[str, Propagator] = {}
AUTO = "auto"  # the default choice everywhere: see `resolve`
# What "auto" picks: the model when the user gave one; otherwise the best weight-free propagator. The embedded tiny
# PropDPM was trained on 64x64 synthetic clips: on real footage it cannot give a usable result, so it is never picked
# by default (the demo and the UI's synthetic examples use it by name).
AUTO_WITH_MODEL, AUTO_WITHOUT_MODEL = "propdpm", "flow"


def register(propagator: Propagator) -> Propagator:
    """Add a propagator to the registry under its name (replacing one of the same name)."""
    if not propagator.name:
        raise ValueError(f"{type(propagator).__name__} has no name")
    PROPAGATORS[propagator.name] = propagator
    return propagator


def get_propagator(name: str) -> Propagator:
    """The registered propagator called `name`, or one line naming the choices."""
    if name not in PROPAGATORS:
        raise UsageError(f"unknown propagator {name!r}; choose one of {', '.join(choices())}")
    return PROPAGATORS[name]


def choices() -> list[str]:
    """What a user may ask for: "auto" and every registered name."""
    return [AUTO, *PROPAGATORS]


def resolve(name: str | Propagator, *, model_given: bool, announce: bool = False) -> Propagator:
    """The propagator a user's choice means. "auto": PropDPM when a propagation model was given (`--model`), else the
    weight-free `flow`; with `announce`, the choice of `flow` is said in one log line (the pipeline announces it once,
    when it is built; every other caller only asks)."""
    if isinstance(name, Propagator):
        return name
    if name != AUTO:
        return get_propagator(name)
    chosen = get_propagator(AUTO_WITH_MODEL if model_given else AUTO_WITHOUT_MODEL)
    if announce and not model_given:
        logging.getLogger(__name__).info(
            "propagator: %s (no propagation model given; pass --model DIR for PropDPM, or --propagator NAME)", chosen.name
        )
    return chosen


for _p in (PropDPMPropagator(), HybridPropagator(), AnchoredFlowPropagator(), ChainPropagator(), LutPropagator(), CopyPropagator()):
    register(_p)

# Import the sampling loop (`propdpm.sampling`, which loads torch) and the step store (`store`) from their modules.
__all__ = [
    "AUTO", "PROPAGATORS", "AnchoredFlowPropagator", "AnchoredFusion", "ChainPropagator", "CopyPropagator", "FlowFusion",
    "FusionStep", "HybridPropagator", "LutPropagator", "PropDPMPropagator", "PropagationRequest", "PropagationSettings",
    "Propagator", "blend_keyframes", "choices", "get_propagator", "keyframe_spans", "propagate_copy", "propagate_flow",
    "register", "resolve", "resolve_keyframes",
]  # fmt: skip
