"""Torch's global state a run touches (grad mode, the random generator), touched only when the run uses torch.

A weight-free run (`flow`, `chain`, `lut`, `copy` from a keyframe image; `magicprop keyframes`) needs no model, so it
does not import torch (about 230 MB of memory and 1.3 s of start-up): grad mode is set only where torch is loaded
already (before that no tensor exists to record gradients), and a seed nobody gave is drawn from torch only for a run
that uses it. Torch loads with the first model, depth estimate, PropDPM step, CLIP score or tensor a run makes.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from typing import TYPE_CHECKING, Callable, ContextManager, Iterator, TypeVar

import numpy as np

from .devices import on_device

if TYPE_CHECKING:
    import torch

F = TypeVar("F", bound=Callable)


def no_grad() -> ContextManager:
    """`torch.no_grad()` when torch is loaded; nothing otherwise. A model loaded inside the block runs under its own
    `no_grad` (the editor, SAM, the depth estimator and PropDPM's frames each enter one)."""
    torch = sys.modules.get("torch")
    return torch.no_grad() if torch is not None else contextlib.nullcontext()


def without_grad(method: F) -> F:
    """`@torch.no_grad()` for a method that may run without torch: grad mode is decided when it is called."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with no_grad():
            return method(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def frames_without_grad(frames: Iterator[np.ndarray], models, device: torch.device | None, offload: bool) -> Iterator[np.ndarray]:
    """Take the frames one by one without gradients, `models` (a PropagationModels bundle, or None for a weight-free
    propagator) on `device` meanwhile when `offload` (`devices.on_device`)."""
    with on_device(models, device, offload):
        while True:
            with no_grad():  # per frame: a suspended generator must not leave grad mode off for its caller
                frame = next(frames, None)
            if frame is None:
                return
            yield frame


def draw_seed(with_torch: bool) -> int:
    """A seed for a call given none. With torch (`with_torch`: the call runs a model; or torch is loaded, so the caller
    may have seeded it): from torch's global generator, as diffusers pipelines do, so `torch.manual_seed(s)` before the
    call reproduces it. Otherwise `entropy_seed()`: a weight-free output does not depend on the seed, and torch is not
    loaded to draw one."""
    if with_torch or "torch" in sys.modules:
        import torch

        return int(torch.randint(0, 2**31 - 1, (1,)))
    return entropy_seed()


def entropy_seed() -> int:
    """A new seed in [0, 2**31) from the system's entropy (numpy), without torch."""
    return int(np.random.SeedSequence().generate_state(1)[0] >> 1)


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU `torch.Generator` seeded with `seed` (stage I and PropDPM draw their noise from it)."""
    import torch

    return torch.Generator().manual_seed(seed)
