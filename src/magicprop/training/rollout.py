"""Self-rollout training (beyond the paper): train on the previous frames inference will really give the model.

At inference every previous latent but the keyframe's is PropDPM's own sample, carrying its errors; the paper trains
on the true previous frame only, so the chain drifts into inputs it never saw (exposure bias). With `self_rollout` = f,
a fraction f of each batch gets, instead of the true previous latent, the model's own DDIM sample of it
(`self_rollout_steps` steps, `propagation.sampling.sample_latents`, the loop inference runs) from the frame before it,
pp, one more frame back in the chain's direction, with the same reference and conditions inference would give it:
the reference kept (inference renders every frame with it), pp's true latent as the previous one (a one-frame
rollout), pp noised to the model's inference context level if it has one. No gradient flows through the rollout: it
stands for what an earlier step of the chain produced, a fixed input, as in scheduled sampling (Bengio et al. 2015).
The rolled-out latent then enters the conditioning like any previous latent (`context_noise` noises it and tells the
model the level), except that `previous_noise`, a stand-in for exactly the error it carries, is not added on top.

The cost is `self_rollout_steps` more forwards for the rolled-out samples, without backward
(`benchmarks/training_speed.py --options` measures it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models.propdpm import PropDPM, assemble_conditioning
from ..propagation.propdpm.sampling import sample_latents


@dataclass
class RolloutInputs:
    """What PropDPM needs to render a triplet's previous frame itself, from the frame before it (pp)."""

    pp_latent: torch.Tensor  # (B, 4, h, w) posterior mean of pp, as inference encodes a keyframe
    pp_depth: torch.Tensor  # (B, 1, H, W) in [0, 1], any size
    pp_flow: torch.Tensor | None = None  # (B, 2, H, W) source flow previous -> pp, pixels (use_warped_previous)
    anchored_latent: torch.Tensor | None = None  # (B, 4, h, w) the reference warped to the previous frame (anchored)
    anchored_valid: torch.Tensor | None = None  # (B, 1, H, W) its validity in [0, 1]


@dataclass
class Rollout:
    """Which samples of a batch roll out, and every random number their rollout uses (drawn by the step generator)."""

    inputs: RolloutInputs
    chosen: torch.Tensor  # (B,) bool
    noise: torch.Tensor  # (B, 4, h, w): where the DDIM sampling of the previous latent starts
    context_noise: torch.Tensor  # (B, 4, h, w): pp's noise at the model's inference context level (read only then)
    num_steps: int


@torch.no_grad()
def rollout_previous(propdpm: PropDPM, scheduler, rollout: Rollout, previous_latent: torch.Tensor, previous_depth: torch.Tensor,
                     clip_tokens: torch.Tensor, reference_latent: torch.Tensor) -> torch.Tensor:
    """The batch's previous latents (B, 4, h, w), replaced where `rollout.chosen` by PropDPM's own sample of them."""
    rows = rollout.chosen.nonzero().squeeze(1)  # only the chosen samples are rendered
    if rows.numel() == 0:
        return previous_latent
    r, level = rollout.inputs, propdpm.inference_context_level
    pick = lambda x: None if x is None else x[rows]  # noqa: E731
    reference = propdpm.encode_reference(clip_tokens[rows], reference_latent[rows])  # (n, 1 + hw/4, C), never dropped
    cond = assemble_conditioning(
        previous_depth[rows], r.pp_latent[rows].to(previous_latent.dtype), r.pp_depth[rows], reference,
        previous_flow=pick(r.pp_flow), residual=propdpm.config.get("predict_residual", False),
        context_noise=pick(rollout.context_noise) if level > 0 else None,
        context_level=torch.full((len(rows),), level, device=rows.device) if level > 0 else None,
        anchored_latent=pick(r.anchored_latent), anchored_valid=pick(r.anchored_valid),
    )  # fmt: skip
    rolled = sample_latents(propdpm, scheduler, rollout.noise[rows].to(previous_latent.dtype), cond, rollout.num_steps)
    out = previous_latent.clone()
    out[rows] = rolled.to(out.dtype)
    return out
