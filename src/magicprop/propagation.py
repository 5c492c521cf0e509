"""Stage II: motion-aware appearance propagation (paper, section 3.2, Eqn 6).

From the edited keyframe at index k, PropDPM renders frame k+1 from frame k, k+2 from k+1, ... to the end (the forward
chain) and k-1, k-2, ... to the start (the backward chain). Both chains advance together in one batch. Latents pass from
frame to frame without being decoded and re-encoded (each round trip through the VAE would lose detail and accumulate
colour shift); frames are decoded only at the end, in batches, and streamed to the caller in order.

With `flow_fusion` (the `hybrid` propagator), every rendered frame is also fused with the previous output frame
carried along the source's optical flow, in pixels, the way Rerender-A-Video fuses: where the flow's forward-backward
check passes, the carried pixels are kept (sharp, and steady from frame to frame); PropDPM paints only what the flow
cannot carry (disocclusions, content entering the frame). The fused frame is encoded again as the next step's previous
latent, so the chain continues from what the user sees.

Every finished step is saved to a work folder, so a run killed at any moment and restarted with `resume=True` redoes
only the unfinished frames and ends bit-identical: the noise of frame t is drawn from a generator seeded by (seed, t),
so it does not depend on which frames were computed before.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .errors import UsageError
from .flow import carry, optical_flow
from .fileio import atomic_path, atomic_write_json
from .models.bundle import PropagationModels
from .models.propdpm import assemble_conditioning
from .models.reference import clip_image_tokens, images_to_tensor, tensor_to_images, vae_decode, vae_encode
from .schedulers import scheduler_from_config

logger = logging.getLogger(__name__)


@dataclass
class PropagationSettings:
    num_inference_steps: int = 25
    guidance_scale: float = 1.0  # on the reference; 1 = no classifier-free guidance (one forward per step)
    scheduler: str = "ddim"
    seed: int = 0
    # Keep the flow-carried previous output wherever the source's flow is reliable; PropDPM paints the rest. Needs the
    # source frames (`video`); costs one more VAE encode per frame and two optical flows per frame.
    flow_fusion: bool = False


def frame_generator(seed: int, frame_index: int) -> torch.Generator:
    """The noise of a frame depends only on (seed, frame index): resumed and batched runs draw the same noise."""
    return torch.Generator("cpu").manual_seed((seed * 1_000_003 + frame_index) % (2**63))


class LatentStore:
    """Latents of finished propagation steps, in memory or in a work folder (`steps/00003.safetensors` = both chains'
    frames of step 3, written atomically so a step is either fully saved or absent). With flow fusion a step also holds
    its fused frames as uint8 pixels (`frame/<t>`), which are the output: decoding their latent again would blur them."""

    def __init__(self, work_dir: str | Path | None, fingerprint: dict, resume: bool):
        self.work_dir = Path(work_dir) if work_dir is not None else None
        self._memory: dict[int, torch.Tensor] = {}
        self._frames: dict[int, torch.Tensor] = {}
        if self.work_dir is None:
            return
        job = self.work_dir / "job.json"
        if resume and job.is_file():
            saved = json.loads(job.read_text())
            if saved != fingerprint:
                changed = sorted(k for k in set(saved) | set(fingerprint) if saved.get(k) != fingerprint.get(k))
                raise UsageError(
                    f"the work folder {self.work_dir} belongs to a run with other settings ({', '.join(changed)}); "
                    "run without --resume to start over"
                )
            logger.info("resuming from %s", self.work_dir)
        else:
            if self.work_dir.exists():
                shutil.rmtree(self.work_dir)
            (self.work_dir / "steps").mkdir(parents=True)
            atomic_write_json(job, fingerprint)

    def completed_steps(self) -> int:
        """Number of consecutive steps 1, 2, ... saved."""
        n = 0
        while self.work_dir is not None and (self.work_dir / "steps" / f"{n + 1:05d}.safetensors").is_file():
            n += 1
        return n

    def save_step(self, step: int, latents: dict[int, torch.Tensor], frames: dict[int, np.ndarray] | None = None) -> None:
        cpu = {t: z.detach().to("cpu", torch.float32).contiguous() for t, z in latents.items()}
        pixels = {t: torch.from_numpy(np.ascontiguousarray(f)) for t, f in (frames or {}).items()}
        if self.work_dir is None:
            self._memory.update(cpu)
            self._frames.update(pixels)
            return
        with atomic_path(self.work_dir / "steps" / f"{step:05d}.safetensors") as tmp:
            save_file({**{str(t): z for t, z in cpu.items()}, **{f"frame/{t}": f for t, f in pixels.items()}}, str(tmp))

    def load_step(self, step: int) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
        """One read of a finished step: its latents and its fused frames (empty without fusion), by frame index."""
        if self.work_dir is None:
            return self._memory, self._frames  # every step's, which is a superset of this one's
        tensors = load_file(str(self.work_dir / "steps" / f"{step:05d}.safetensors"))
        latents = {int(name): z for name, z in tensors.items() if not name.startswith("frame/")}
        frames = {int(name[len("frame/") :]): f for name, f in tensors.items() if name.startswith("frame/")}
        return latents, frames

    def cleanup(self) -> None:
        if self.work_dir is not None and self.work_dir.exists():
            shutil.rmtree(self.work_dir)


def fingerprint(models: PropagationModels, depth: np.ndarray, keyframe: np.ndarray, k: int, s: PropagationSettings,
                video: np.ndarray | None = None) -> dict:  # fmt: skip
    """What a run depends on; a resumed run must match it exactly."""
    digest = lambda a: hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]  # noqa: E731
    return {
        **({"video": digest(video)} if video is not None else {}),
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
        "flow_fusion": s.flow_fusion,
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
) -> tuple[LatentStore, dict[int, int]]:
    """Run both chains; return the store and, for every frame but the keyframe, the step that holds its latent.

    Args:
        depth: (T, H, W) in [0, 1], 1 = nearest, any size (resized to the latent grid once).
        keyframe: (H, W, 3) uint8 edited keyframe at the working size.
        keyframe_index: k; negative counts from the end.
        callback: called as callback(frames_done, total) after every step (both chains); raising from it stops the
            run cleanly (finished steps stay saved for `resume`), which is how the web UI cancels.
        video: (T, H, W, 3) uint8 source frames at the keyframe's size; needed by (and only read for) models built with
            `use_warped_previous`, which also see the previous latent warped along the source's optical flow, and by
            `settings.flow_fusion`.
    """
    from .models.reference import vae_scale_factor

    # 1. Check inputs
    factor = vae_scale_factor(models.vae)
    warped = bool(models.propdpm.config.get("use_warped_previous", False))
    residual = bool(models.propdpm.config.get("predict_residual", False))
    if warped and video is None:
        raise UsageError("this PropDPM conditions on optical flow (use_warped_previous): pass the source frames as `video`")
    if settings.flow_fusion and video is None:
        raise UsageError("flow fusion carries pixels along the source's optical flow: pass the source frames as `video`")
    video = video if warped or settings.flow_fusion else None
    check_inputs(depth, keyframe, keyframe_index, factor, video)
    num_frames = depth.shape[0]
    k = keyframe_index % num_frames
    device, dtype = models.device, models.dtype
    store = LatentStore(work_dir, fingerprint(models, depth, keyframe, k, settings, video), resume)
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
    depth_grid = torch.nn.functional.interpolate(
        torch.from_numpy(depth.astype(np.float32))[:, None], size=latent_size, mode="area"
    ).to(device, dtype)  # (T, 1, h, w): resized once, every step reads it

    # 3. Pick up where a previous run stopped
    previous = {+1: key_latent[0], -1: key_latent[0]}  # chain direction -> latent of its last finished frame
    shown = {+1: keyframe, -1: keyframe}  # chain direction -> its last output frame, in pixels (read by flow fusion)
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
    # closed also when a step fails (disk full, a cancelling callback): the error line then starts on a line of its own
    bar = tqdm(total=num_frames - 1, initial=sum(1 for s in where.values() if s <= done), desc="propagating", unit="frame", disable=not progress)
    with bar:
        for step in range(done + 1, num_steps + 1):
            chains = [d for d in (+1, -1) if 0 <= k + d * step < num_frames]
            targets = [k + d * step for d in chains]  # frame indices rendered in this step
            prev_idx = [k + d * (step - 1) for d in chains]
            # the source's motion from each target back to its previous frame, in pixels: (H, W, 2) numpy per target
            flows = [optical_flow(video[t], video[p]) for t, p in zip(targets, prev_idx)] if video is not None else None
            cond = assemble_conditioning(
                target_depth=depth_grid[targets],
                previous_latent=torch.stack([previous[d] for d in chains]),
                previous_depth=depth_grid[prev_idx],
                reference_tokens=reference,
                previous_flow=torch.from_numpy(np.stack(flows)).permute(0, 3, 1, 2).to(device, dtype) if warped else None,
                residual=residual,
            )
            noise = torch.stack([
                torch.randn(key_latent.shape[1:], generator=frame_generator(settings.seed, t)) for t in targets
            ]).to(device, dtype)  # fmt: skip
            latents = denoise(models, scheduler, noise, cond, settings, null)
            fused = None
            if settings.flow_fusion:
                fused = fuse_with_flow(tensor_to_images(vae_decode(models.vae, latents)), [shown[d] for d in chains],
                                       video, targets, prev_idx, flows)  # fmt: skip
                latents = vae_encode(models.vae, images_to_tensor(fused, device, dtype))
                shown.update(zip(chains, fused))
            for d, t, z in zip(chains, targets, latents):
                previous[d] = z
            if fused is None:
                store.save_step(step, dict(zip(targets, latents)))
            else:
                store.save_step(step, dict(zip(targets, latents)), dict(zip(targets, fused)))
            bar.update(len(targets))
            if callback is not None:
                callback(bar.n, num_frames - 1)
    return store, where


def fuse_with_flow(
    rendered: np.ndarray, previous: Sequence[np.ndarray], video: np.ndarray, targets: Sequence[int], prev_idx: Sequence[int],
    flows: Sequence[np.ndarray],
) -> np.ndarray:
    """(B, H, W, 3) uint8: each previous output frame carried to its target along the source's flow where the flow's
    forward-backward check passes, PropDPM's rendering everywhere else (the same hole test as `baselines.propagate_flow`,
    which fills those pixels with stale ones instead)."""
    out = []
    for image, shown, t, p, flow_tp in zip(rendered, previous, targets, prev_idx, flows):
        carried, hole = carry(shown, flow_tp, optical_flow(video[p], video[t]))
        carried[hole] = image[hole]
        out.append(carried)
    return np.stack(out)


def denoise(models, scheduler, latents, cond, settings: PropagationSettings, null_tokens=None) -> torch.Tensor:
    """The sampling loop for one batch of frames; classifier-free guidance on the reference in one batched forward.
    Returns the frames' latents (for residual models: the sample added to the warped previous latent)."""
    scheduler.set_timesteps(settings.num_inference_steps, device=latents.device)
    latents = latents * scheduler.init_noise_sigma
    model_cond = cond
    if null_tokens is not None:
        b = latents.shape[0]
        model_cond = type(cond)(
            spatial=torch.cat([cond.spatial, cond.spatial]),
            reference_tokens=torch.cat([cond.reference_tokens.expand(b, -1, -1), null_tokens.expand(b, -1, -1)]),
        )
    for t in scheduler.timesteps:
        x = torch.cat([latents, latents]) if null_tokens is not None else latents
        x = scheduler.scale_model_input(x, t)
        pred = models.propdpm(x, t, model_cond)
        if null_tokens is not None:
            pred_cond, pred_null = pred.chunk(2)
            pred = pred_null + settings.guidance_scale * (pred_cond - pred_null)
        latents = scheduler.step(pred, t, latents).prev_sample
    return cond.to_latent(latents)  # residual models sampled the correction to the warped previous latent


@torch.no_grad()
def decode_frames(
    models: PropagationModels,
    store: LatentStore,
    where: dict[int, int],
    keyframe: np.ndarray,
    keyframe_index: int,
    *,
    batch_size: int = 8,
) -> Iterator[np.ndarray]:
    """Yield every frame in order, uint8 (H, W, 3): the keyframe itself at its index, fused frames as they were kept,
    the rest decoded in batches."""
    num_frames = len(where) + 1
    k = keyframe_index % num_frames
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
    batch_size: int = 8,
    callback: Callable[[int, int], None] | None = None,
    video: np.ndarray | None = None,
) -> np.ndarray:
    """Propagate and return all frames (T, H, W, 3) uint8. For long clips, stream with propagate_latents + decode_frames."""
    store, where = propagate_latents(
        models, depth, keyframe, keyframe_index, settings, work_dir=work_dir, resume=resume, progress=progress,
        callback=callback, video=video,
    )  # fmt: skip
    return np.stack(list(decode_frames(models, store, where, keyframe, keyframe_index, batch_size=batch_size)))


def keyframe_spans(keyframe_indices: Sequence[int], num_frames: int) -> list[tuple[int, int, int]]:
    """(keyframe, start, stop) for each keyframe, sorted: the frames it is propagated over, from just after the previous
    keyframe to just before the next one (or to the clip's ends). Neighbours share the frames between them."""
    ks = sorted(keyframe_indices)
    return [(k, ks[j - 1] + 1 if j else 0, ks[j + 1] if j + 1 < len(ks) else num_frames) for j, k in enumerate(ks)]


def blend_keyframes(
    render: Callable[[int, int, int], Iterable[np.ndarray]], keyframe_indices: Sequence[int], num_frames: int
) -> Iterator[np.ndarray]:
    """Several keyframes: yield every frame, in order, uint8 (H, W, 3).

    `render(k, start, stop)` yields frames start..stop-1 propagated from keyframe k (one call per keyframe, over its
    `keyframe_spans`). Between two keyframes both chains reach every frame; they are crossfaded linearly by distance,
    so each keyframe is kept exactly, a frame takes most from the keyframe nearest to it (whose chain has drifted
    least), and no seam appears where the ranges meet. At most two keyframes' frames are held at once.
    """
    tail: list[np.ndarray] = []  # frames k_prev..next_start-1 propagated from the previous keyframe
    prev = None
    for k, start, stop in keyframe_spans(keyframe_indices, num_frames):
        frames = list(render(k, start, stop))
        if len(frames) != stop - start:
            raise RuntimeError(f"rendering keyframe {k} gave {len(frames)} frames for {stop - start}")
        head = frames[: k - start]  # start..k-1, the backward chain of this keyframe
        if prev is None:
            yield from head
        else:
            gap = k - prev
            yield tail[0]  # the previous keyframe itself
            for i, (a, b) in enumerate(zip(tail[1:], head)):  # frame prev+1+i: weight of this keyframe grows with t
                w = (i + 1) / gap
                yield np.round(a.astype(np.float32) * (1 - w) + b.astype(np.float32) * w).astype(np.uint8)
        tail, prev = frames[k - start :], k
    yield from tail
