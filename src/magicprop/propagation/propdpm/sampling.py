"""Stage II: motion-aware appearance propagation (paper, section 3.2, Eqn 6).

From the edited keyframe at index k, PropDPM renders frame k+1 from frame k, k+2 from k+1, ... to the end (the forward
chain) and k-1, k-2, ... to the start (the backward chain). Both chains advance together in one batch. Latents pass from
frame to frame without being decoded and re-encoded (each round trip through the VAE would lose detail and accumulate
colour shift); frames are decoded only at the end, in batches, and streamed to the caller in order.

With a fusion step (`fusion.FlowFusion`: the `hybrid` propagator), every rendered frame is handed to the step, which
returns the frame the user sees; it is encoded again as the next step's previous latent, so the chain continues from
what the user sees, and kept in pixels with the step, so a resumed run gives identical frames.

Every finished step is saved to a work folder, so a run killed at any moment and restarted with `resume=True` redoes
only the unfinished frames and ends bit-identical: the noise of frame t is drawn from a generator seeded by (seed, t),
so it does not depend on which frames were computed before.

A PropDPM built with `use_anchored_reference` also reads, for every frame, the edited keyframe sampled through the
frame's anchored map (`keyframe_warp.KeyframeWarp`, one chain per direction walked over the source frames). A resumed
run replays the chains up to its first unfinished frame, so its conditions, and its frames, are the uninterrupted run's.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from ...errors import UsageError
from ...models.bundle import PropagationModels
from ...models.encoders import clip_image_tokens, images_to_tensor, tensor_to_images, vae_decode, vae_encode, vae_scale_factor
from ...models.attention import ReferenceKV
from ...models.propdpm import PropConditioning, PropDPM, assemble_conditioning
from ...motion.flow import optical_flow
from ...schedulers import scheduler_from_config
from ...video import clip_digest
from ...video import resize_frames
from ..base import PropagationSettings
from ..flow.keyframe_warp import KeyframeWarp
from ..store import LatentStore
from .fusion import FusionStep

logger = logging.getLogger(__name__)


def frame_generator(seed: int, frame_index: int) -> torch.Generator:
    """The noise of a frame depends only on (seed, frame index): resumed and batched runs draw the same noise."""
    return torch.Generator("cpu").manual_seed((seed * 1_000_003 + frame_index) % (2**63))


def fingerprint(models: PropagationModels, depth: np.ndarray, keyframe: np.ndarray, k: int, s: PropagationSettings,
                video: np.ndarray | None = None, fusion: FusionStep | None = None) -> dict:  # fmt: skip
    """What a run depends on; a resumed run must match it exactly."""
    digest = lambda a: hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]  # noqa: E731
    return {
        **({"video": clip_digest(video)[:16]} if video is not None else {}),  # a lazy clip is not read whole to hash it
        "model": models.source,
        "propdpm": digest(np.frombuffer(json.dumps(models.propdpm.config, sort_keys=True, default=str).encode(), np.uint8)),
        "depth": digest(depth.astype(np.float32)),
        "depth_shape": list(depth.shape),
        "keyframe": digest(keyframe),
        "keyframe_index": k,
        "num_inference_steps": s.num_inference_steps,
        "guidance_scale": s.guidance_scale,
        "scheduler": s.scheduler,
        "seed": s.seed,
        "fusion": None if fusion is None else fusion.name,
        "dtype": str(models.dtype),
    }


def check_inputs(depth: np.ndarray, keyframe: np.ndarray, keyframe_index: int, factor: int, video: np.ndarray | None) -> None:
    if depth.ndim != 3:
        raise UsageError(f"depth must be (frames, height, width), got shape {depth.shape}")
    t = depth.shape[0]
    if video is not None and (video.ndim != 4 or video.shape[0] != t or video.shape[1:3] != keyframe.shape[:2]):
        raise UsageError(
            f"video must be the source frames (T, H, W, 3) with T = {t} and the keyframe's size {keyframe.shape[:2]}, "
            f"got shape {video.shape}"
        )
    if not -t <= keyframe_index < t:
        raise UsageError(f"keyframe index {keyframe_index} is outside the clip (0..{t - 1}); pick a frame inside it")
    if keyframe.ndim != 3 or keyframe.shape[2] != 3 or keyframe.dtype != np.uint8:
        raise UsageError(f"keyframe must be a uint8 RGB image (H, W, 3), got {keyframe.dtype} {keyframe.shape}")
    h, w = keyframe.shape[:2]
    if h % (2 * factor) or w % (2 * factor):
        raise UsageError(f"keyframe size {w}x{h} must be a multiple of {2 * factor}; resize with magicprop.video.working_size")


@torch.no_grad()
def propagate_latents(
    models: PropagationModels,
    depth: np.ndarray,
    keyframe: np.ndarray,
    keyframe_index: int,
    settings: PropagationSettings = PropagationSettings(),
    *,
    work_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    callback: Callable[[int, int], None] | None = None,
    video: np.ndarray | None = None,
    fusion: FusionStep | None = None,
) -> tuple[LatentStore, dict[int, int]]:
    """Run both chains; return the store and, for every frame but the keyframe, the step that holds its latent.

    Args:
        depth: (T, H, W) in [0, 1], 1 = nearest, any size (resized to the latent grid once).
        keyframe: (H, W, 3) uint8 edited keyframe at the working size.
        keyframe_index: k; negative counts from the end.
        callback: called as callback(frames_done, total) after every step (both chains); raising from it stops the
            run cleanly (finished steps stay saved for `resume`), which is how the web UI cancels.
        video: (T, H, W, 3) uint8 source frames at the keyframe's size; needed by (and only read for) models built with
            `use_warped_previous`, which also see the previous latent warped along the source's optical flow, or with
            `use_anchored_reference`, which see the keyframe warped through each frame's anchored map.
        fusion: called after every step with PropDPM's rendering of its frames; what it returns is the output and the
            next step's previous frame (`fusion.FlowFusion`: the `hybrid` propagator).
    """
    # 1. Check inputs
    factor = vae_scale_factor(models.vae)
    warped = bool(models.propdpm.config.get("use_warped_previous", False))
    anchored = bool(models.propdpm.config.get("use_anchored_reference", False))
    residual = bool(models.propdpm.config.get("predict_residual", False))
    # exposure-bias models see their own previous output noised to a small fixed level (see models.propdpm)
    context_level = models.propdpm.inference_context_level
    if warped and video is None:
        raise UsageError("this PropDPM conditions on optical flow (use_warped_previous): pass the source frames as `video`")
    if anchored and video is None:
        raise UsageError(
            "this PropDPM conditions on the keyframe's anchored maps (use_anchored_reference): pass the source frames as `video`"
        )
    video = video if warped or anchored else None
    check_inputs(depth, keyframe, keyframe_index, factor, video)
    num_frames = depth.shape[0]
    k = keyframe_index % num_frames
    device, dtype = models.device, models.dtype
    store = LatentStore(work_dir, fingerprint(models, depth, keyframe, k, settings, video, fusion), resume)
    where = {t: abs(t - k) for t in range(num_frames) if t != k}
    num_steps = max(k, num_frames - 1 - k)
    done = store.completed_steps()
    if done >= num_steps:
        return store, where

    # 2. Encode the reference once per clip: its latent, CLIP tokens and the adaptor's tokens (and the null reference's)
    key_image = images_to_tensor(keyframe, device, dtype)  # (1, 3, H, W)
    key_latent = vae_encode(models.vae, key_image)  # (1, 4, h, w)
    latent_size = tuple(key_latent.shape[-2:])
    clip_tokens = clip_image_tokens(models.image_encoder, key_image)  # (1, 1 + gh * gw, C)
    reference = models.propdpm.encode_reference(clip_tokens, key_latent)  # (1, 1 + h/2 * w/2, C)
    do_cfg = settings.guidance_scale != 1.0
    null = None
    if do_cfg:  # the unconditional branch reads the null reference that training drops to
        null = models.propdpm.encode_reference(clip_tokens, key_latent, drop=torch.ones(1, dtype=torch.bool, device=device))
    # the reference's keys and values in every cross-attention layer, once per clip (not at every step of every frame)
    reference_kv = models.propdpm.cache_reference(reference if null is None else torch.cat([reference, null]))
    depth_grid = torch.nn.functional.interpolate(
        torch.from_numpy(depth.astype(np.float32))[:, None], size=latent_size, mode="area"
    ).to(device, dtype)  # (T, 1, h, w): resized once, every step reads it

    # 3. Pick up where a previous run stopped
    previous = {+1: key_latent[0], -1: key_latent[0]}  # chain direction -> latent of its last finished frame
    shown = {+1: keyframe, -1: keyframe}  # chain direction -> its last output frame, in pixels (read by fusion)
    if done:
        saved, saved_frames = store.load_step(done)
        for direction in (+1, -1):
            t = k + direction * done
            if t in saved:
                previous[direction] = saved[t].to(device, dtype)
            if t in saved_frames:
                shown[direction] = saved_frames[t].numpy()
        logger.info("resuming: %d of %d steps already done", done, num_steps)

    # 4. Propagate, both chains in one batch
    scheduler = scheduler_from_config(models.scheduler_config, settings.scheduler)
    # the keyframe carried along each direction's anchored maps; a resumed run replays the chains to its first frame
    keyframe_warp = None
    if anchored:  # the `hybrid` fusion warps the same keyframe through the same maps: walk them once for both
        shared = getattr(fusion, "keyframe_warp", None)
        same = isinstance(shared, KeyframeWarp) and shared.video is video and shared.keyframe is keyframe and shared.k == k
        keyframe_warp = shared if same else KeyframeWarp(video, keyframe, k)
    # closed also when a step fails (disk full, a cancelling callback): the error line then starts on a line of its own
    finished = sum(1 for s in where.values() if s <= done)  # counted here: a disabled tqdm bar does not count
    bar = tqdm(total=num_frames - 1, initial=finished, desc="propagating", unit="frame", disable=not progress)
    with bar:
        for step in range(done + 1, num_steps + 1):
            chains = [d for d in (+1, -1) if 0 <= k + d * step < num_frames]
            targets = [k + d * step for d in chains]  # frame indices rendered in this step
            prev_idx = [k + d * (step - 1) for d in chains]
            # the source's motion from each target back to its previous frame, in pixels: (H, W, 2) numpy per target
            flows = [optical_flow(video[t], video[p]) for t, p in zip(targets, prev_idx)] if video is not None else None
            # frame t's noise (and, after it, the noise its previous latent gets) depends on (seed, t) only
            generators = [frame_generator(settings.seed, t) for t in targets]
            noise = torch.stack([torch.randn(key_latent.shape[1:], generator=g) for g in generators]).to(device, dtype)
            context = None
            if context_level > 0:
                context = torch.stack([torch.randn(key_latent.shape[1:], generator=g) for g in generators]).to(device, dtype)
            anchored_latent = anchored_valid = None
            if keyframe_warp is not None:  # the edited keyframe through each target's map: (B, 4, h, w), (B, 1, H, W)
                warps = [keyframe_warp.warp(t) for t in targets]
                anchored_latent = vae_encode(models.vae, images_to_tensor(np.stack([w for w, _ in warps]), device, dtype))
                anchored_valid = torch.from_numpy(np.stack([v for _, v in warps]))[:, None].to(device, dtype)
            inputs = dict(
                target_depth=depth_grid[targets],
                previous_latent=torch.stack([previous[d] for d in chains]),
                previous_depth=depth_grid[prev_idx],
                previous_flow=torch.from_numpy(np.stack(flows)).permute(0, 3, 1, 2).to(device, dtype) if warped else None,
                residual=residual,
                context_noise=context,
                context_level=None if context is None else torch.full((len(targets),), context_level, device=device),
                anchored_latent=anchored_latent,
                anchored_valid=anchored_valid,
            )
            cond = assemble_conditioning(reference_tokens=reference, **inputs)
            null_cond = None
            if do_cfg:  # the unconditional branch: the null reference's tokens and no anchored keyframe, as in training
                drop = torch.ones(len(targets), dtype=torch.bool, device=device)
                null_cond = assemble_conditioning(reference_tokens=null, drop_reference=drop, **inputs)
            latents = denoise(models, scheduler, noise, cond, settings, null_cond, reference_kv)
            fused = None
            if fusion is not None:
                fused = fusion(tensor_to_images(vae_decode(models.vae, latents)), [shown[d] for d in chains], targets,
                               prev_idx, flows)  # fmt: skip
                # a full-resolution fusion (`hybrid`) returns frames at the source's size: re-encoded at the model's
                latents = vae_encode(models.vae, images_to_tensor(resize_frames(fused, keyframe.shape[:2]), device, dtype))
                shown.update(zip(chains, fused))
            for d, t, z in zip(chains, targets, latents):
                previous[d] = z
            if fused is None:
                store.save_step(step, dict(zip(targets, latents)))
            else:
                store.save_step(step, dict(zip(targets, latents)), dict(zip(targets, fused)))
            bar.update(len(targets))
            finished += len(targets)
            if callback is not None:
                callback(finished, num_frames - 1)
    return store, where


def denoise(models, scheduler, latents, cond: PropConditioning, settings: PropagationSettings,
            null_cond: PropConditioning | None = None, reference_kv: ReferenceKV | None = None) -> torch.Tensor:  # fmt: skip
    """The sampling loop for one batch of frames (`sample_latents` with the run's settings)."""
    return sample_latents(models.propdpm, scheduler, latents, cond, settings.num_inference_steps, settings.guidance_scale,
                          null_cond, reference_kv)  # fmt: skip


def sample_latents(propdpm: PropDPM, scheduler, latents: torch.Tensor, cond: PropConditioning, num_inference_steps: int,
                   guidance_scale: float = 1.0, null_cond: PropConditioning | None = None,
                   reference_kv: ReferenceKV | None = None) -> torch.Tensor:  # fmt: skip
    """The scheduler's reverse process from the noise `latents` (Ho et al. 2020 / Song et al. 2021, v-prediction), with
    classifier-free guidance on the reference (Ho & Salimans 2022, pred = null + s (cond - null)) in one batched forward
    when `null_cond` (the conditioning with the reference dropped) is given. Returns the frames' latents (for residual
    models: the sample added to the warped previous latent). Sampling and self-rollout training both run it.
    `reference_kv`: `PropDPM.cache_reference` of the reference tokens (and, with guidance, the null reference's after
    them), so no step projects them again."""
    scheduler.set_timesteps(num_inference_steps, device=latents.device)
    latents = latents * scheduler.init_noise_sigma
    model_cond = cond
    if null_cond is not None:
        b = latents.shape[0]
        levels = None if cond.context_level is None else torch.cat([cond.context_level, null_cond.context_level])
        model_cond = PropConditioning(
            spatial=torch.cat([cond.spatial, null_cond.spatial]),
            reference_tokens=torch.cat([cond.reference_tokens.expand(b, -1, -1), null_cond.reference_tokens.expand(b, -1, -1)]),
            context_level=levels,
        )
    if reference_kv is not None:  # which cached row each sample reads: the reference, then the null reference
        b = latents.shape[0]
        reference_kv = reference_kv.select(None if null_cond is None else [0] * b + [1] * b)
    for t in scheduler.timesteps:
        x = torch.cat([latents, latents]) if null_cond is not None else latents
        x = scheduler.scale_model_input(x, t)
        pred = propdpm(x, t, model_cond, reference_kv)
        if null_cond is not None:
            pred_cond, pred_null = pred.chunk(2)
            pred = pred_null + guidance_scale * (pred_cond - pred_null)
        latents = scheduler.step(pred, t, latents).prev_sample
    return cond.to_latent(latents)  # residual models sampled the correction to the warped previous latent


@torch.no_grad()
def decode_steps(
    models: PropagationModels,
    store: LatentStore,
    where: dict[int, int],
    keyframe: np.ndarray,
    keyframe_index: int,
    *,
    batch_size: int | None = None,
) -> Iterator[np.ndarray]:
    """Yield every frame in order, uint8 (H, W, 3): the keyframe itself at its index, fused frames as they were kept,
    the rest decoded in batches (of `decode_batch_size` frames unless `batch_size` is given)."""
    num_frames = len(where) + 1
    k = keyframe_index % num_frames
    batch_size = batch_size or decode_batch_size(*keyframe.shape[:2])
    for start in range(0, num_frames, batch_size):
        indices = list(range(start, min(start + batch_size, num_frames)))
        steps: dict[int, list[int]] = {}
        for t in indices:  # group by step file so each file is read once per batch
            if t != k:
                steps.setdefault(where[t], []).append(t)
        decoded, latents = {}, {}
        for step, ts in steps.items():
            saved, kept = store.load_step(step)
            for t in ts:  # a fused frame is the output itself; any other frame's latent is decoded
                if t in kept:
                    decoded[t] = kept[t].numpy()
                else:
                    latents[t] = saved[t]
        if latents:
            todo = list(latents)
            z = torch.stack([latents[t] for t in todo]).to(models.device, models.dtype)
            decoded.update(zip(todo, tensor_to_images(vae_decode(models.vae, z))))
        for t in indices:
            yield keyframe if t == k else decoded[t]


def decode_batch_size(height: int, width: int, pixels: int = 8 * 256 * 256) -> int:
    """Frames decoded at once: 8 up to 256x256, fewer above, so a batch holds at most `pixels`. SD's VAE decoder keeps
    about 0.38 GB of activations per 256x256 frame in bf16 (fake-tensor measurement, benchmarks/real_size.py): a
    batch of 8 frames at 512x512 held 3.0 GB of activations, more than PropDPM's weights, for no gain in FLOPs."""
    return max(1, min(8, pixels // (height * width)))


def propagate(
    models: PropagationModels,
    depth: np.ndarray,
    keyframe: np.ndarray,
    keyframe_index: int,
    settings: PropagationSettings = PropagationSettings(),
    *,
    work_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    batch_size: int | None = None,
    callback: Callable[[int, int], None] | None = None,
    video: np.ndarray | None = None,
    fusion: FusionStep | None = None,
) -> np.ndarray:
    """Propagate and return all frames (T, H, W, 3) uint8. For long clips, stream with propagate_latents + decode_steps."""
    store, where = propagate_latents(
        models, depth, keyframe, keyframe_index, settings, work_dir=work_dir, resume=resume, progress=progress,
        callback=callback, video=video, fusion=fusion,
    )  # fmt: skip
    return np.stack(list(decode_steps(models, store, where, keyframe, keyframe_index, batch_size=batch_size)))


