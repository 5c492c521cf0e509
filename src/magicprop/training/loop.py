"""Training PropDPM (paper, section 3.3.3): one readable loop on `accelerate`.

Each sample is a triplet (reference r, previous p, target t) of one clip. The target latent is noised at a uniform
timestep of the zero-terminal-SNR schedule and PropDPM predicts v from it, the target depth, the previous latent and
depth, and the adaptor's tokens of the reference; the loss is the MSE to the true v. The reference and, independently,
the previous frame are dropped at random so that the null reference (classifier-free guidance) and a chain's first
frame are learnt too. Conditioning is put together only by `PropDPM.encode_reference` and `assemble_conditioning`, the
two functions inference calls.

Beyond the paper: `anchored_reference` adds the reference warped to the target through its anchored map (read from
the batch, computed by the dataset), and `self_rollout` replaces a fraction of the previous latents by the model's own
sample of them (`rollout.py`).

Only the UNet and the adaptor learn; the VAE and CLIP are frozen. Every random draw of a step (VAE sample, noise,
timesteps, drops) comes from a generator seeded by (seed, step, micro-batch, process), and the data order is a function
of (seed, sample index), so a resumed run ends with the very weights an uninterrupted one would have.
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import gather_object
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from torch import nn
from tqdm.auto import tqdm

from ..errors import UsageError
from ..fileio import atomic_write_json
from ..models.propdpm import PropDPM, assemble_conditioning
from ..models.encoders import clip_image_tokens, vae_encode
from ..schedulers import make_scheduler, scheduler_from_config
from .checkpoint import export_final, list_checkpoints, load_checkpoint, parameter_checksum, resolve_resume, save_checkpoint
from .components import load_components
from .data import FrameSampling, RawTripletDataset, make_dataloader
from .logs import TrainLog, plot_loss
from .precompute import CachedTripletDataset, is_cache
from .recipes import TrainRecipe
from .rollout import Rollout, RolloutInputs, rollout_previous
from .sources import discover_clips

logger = logging.getLogger(__name__)


class PropDPMTraining(nn.Module):
    """PropDPM's training forward, one module so that DDP sees the adaptor and the UNet in a single call.

    It also noises the target, because what is noised depends on the conditioning: the target latent, or for residual
    models its difference from the warped previous latent (`PropConditioning.to_sample`)."""

    def __init__(self, propdpm: PropDPM, noise_scheduler):
        super().__init__()
        self.propdpm = propdpm
        self.noise_scheduler = noise_scheduler
        # self-rollout samples with DDIM on the training schedule, as inference does with the exported one
        self.rollout_scheduler = scheduler_from_config(dict(noise_scheduler.config), "ddim")

    def forward(self, target_latent, noise, timesteps, target_depth, previous_latent, previous_depth, clip_tokens,
                reference_latent, drop_reference, drop_previous, previous_flow=None, context_noise=None, context_level=None,
                anchored_latent=None, anchored_valid=None, rollout: Rollout | None = None):  # fmt: skip
        if rollout is not None:  # here, so it runs under the same autocast as the model; no gradient flows through it
            previous_latent = rollout_previous(self.propdpm, self.rollout_scheduler, rollout, previous_latent, previous_depth,
                                               clip_tokens, reference_latent)  # fmt: skip
        reference = self.propdpm.encode_reference(clip_tokens, reference_latent, drop=drop_reference)  # (B, 1 + hw/4, C)
        cond = assemble_conditioning(target_depth, previous_latent, previous_depth, reference, previous_flow=previous_flow,
                                     drop_previous=drop_previous, residual=self.propdpm.config.get("predict_residual", False),
                                     context_noise=context_noise, context_level=context_level, anchored_latent=anchored_latent,
                                     anchored_valid=anchored_valid, drop_reference=drop_reference)  # fmt: skip
        x0 = cond.to_sample(target_latent)  # (B, 4, h, w)
        noisy = self.noise_scheduler.add_noise(x0, noise, timesteps)
        target_v = self.noise_scheduler.get_velocity(x0, noise, timesteps)  # alpha_t * eps - sigma_t * x0
        return self.propdpm(noisy, timesteps, cond), target_v  # (B, 4, h, w) each: predicted and true v


@dataclass
class EncodedBatch:
    target_latent: torch.Tensor  # (B, 4, h, w), sampled from the VAE posterior (scaled)
    previous_latent: torch.Tensor  # (B, 4, h, w), posterior mean, as inference encodes a keyframe
    reference_latent: torch.Tensor  # (B, 4, h, w), posterior mean
    clip_tokens: torch.Tensor  # (B, 1 + g, C) of the reference
    target_depth: torch.Tensor  # (B, 1, H, W) in [0, 1], any size
    previous_depth: torch.Tensor
    previous_flow: torch.Tensor | None = None  # (B, 2, H, W) target -> previous, pixels (use_warped_previous only)
    anchored_latent: torch.Tensor | None = None  # (B, 4, h, w) reference warped to the target, posterior mean (anchored)
    anchored_valid: torch.Tensor | None = None  # (B, 1, H, W) in [0, 1]: where the anchored map explains the target
    rollout: RolloutInputs | None = None  # what rendering the previous frame from the one before needs (self_rollout)


def step_generator(seed: int, step: int, micro: int, rank: int) -> torch.Generator:
    """Every random draw of a micro-batch depends on these four numbers only (so resuming is exact)."""
    state = np.random.SeedSequence([seed, step, micro, rank]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator("cpu").manual_seed(int(state) % (2**63))


@torch.no_grad()
def encode_batch(batch: dict, vae, image_encoder, device, generator: torch.Generator) -> EncodedBatch:
    """Latents and tokens of a batch from raw frames (VAE + CLIP now) or from the cache (already encoded)."""
    to = lambda k: batch[k].to(device, non_blocking=True)  # noqa: E731
    get = lambda k: to(k) if k in batch else None  # noqa: E731  (what only some options put in a batch)
    if "target_mean" in batch:  # from `magicprop precompute`: sample the target from the cached posterior
        eps = torch.randn(batch["target_mean"].shape, generator=generator).to(device)
        target = to("target_mean") + to("target_std") * eps
        rollout = RolloutInputs(to("pp_latent"), to("pp_depth")) if "pp_latent" in batch else None
        return EncodedBatch(target, to("previous_latent"), to("reference_latent"), to("clip_tokens"), to("target_depth"),
                            to("previous_depth"), rollout=rollout)  # fmt: skip
    target = vae_encode(vae, to("target"), generator=generator, sample=True).float()  # (B, 4, h, w)
    # every image read through its posterior mean, in one VAE call: previous, reference [, anchored ones, pp]
    names = ["previous", "reference", *(k for k in ("target_anchored", "pp", "previous_anchored") if k in batch)]
    means = dict(zip(names, vae_encode(vae, torch.cat([to(k) for k in names])).float().chunk(len(names))))
    tokens = clip_image_tokens(image_encoder, to("reference")).float()  # (B, 1 + g, C)
    rollout = None
    if "pp" in batch:
        rollout = RolloutInputs(means["pp"], to("pp_depth"), get("pp_flow"), means.get("previous_anchored"),
                                get("previous_anchored_valid"))  # fmt: skip
    return EncodedBatch(target, means["previous"], means["reference"], tokens, to("target_depth"), to("previous_depth"),
                        get("previous_flow"), means.get("target_anchored"), get("target_anchored_valid"), rollout)  # fmt: skip


def diffusion_loss(model: nn.Module, noise_scheduler, enc: EncodedBatch, recipe: TrainRecipe, generator) -> torch.Tensor:
    """MSE between PropDPM's v and the true v of a randomly noised target (zero-terminal-SNR schedule); `model` is a
    `PropDPMTraining` (possibly wrapped by accelerate), which noises with the same `noise_scheduler`."""
    b, device = enc.target_latent.shape[0], enc.target_latent.device
    noise = torch.randn(enc.target_latent.shape, generator=generator).to(device)
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (b,), generator=generator).to(device)
    drop_reference = (torch.rand(b, generator=generator) < recipe.drop_reference).to(device)
    drop_previous = (torch.rand(b, generator=generator) < recipe.drop_previous).to(device)
    previous = enc.previous_latent
    if recipe.previous_noise > 0:  # drawn after the others, so runs without it keep their random stream
        shape = previous.shape
        offset = torch.randn(shape[0], shape[1], 1, 1, generator=generator)  # (B, C, 1, 1): a colour cast
        jitter = torch.randn(shape, generator=generator)  # (B, C, h, w)
        previous = previous + (recipe.previous_noise * (offset + jitter)).to(device, previous.dtype)
    context_noise = context_level = None
    if recipe.context_noise > 0:  # exposure bias: the previous latent noised to a random level the model is told
        context_level = (torch.rand(b, generator=generator) * recipe.context_noise).to(device)
        context_noise = torch.randn(previous.shape, generator=generator).to(device, previous.dtype)
    # what only some options add is passed by name, so a plain run calls the model as it always did
    extra = {"anchored_latent": enc.anchored_latent, "anchored_valid": enc.anchored_valid}
    if recipe.self_rollout > 0:  # drawn last, like the options above; a sample whose previous frame is dropped needs none
        if enc.rollout is None:
            raise UsageError("self_rollout needs the frame before each previous one (a dataset made with_pp)")
        chosen = torch.rand(b, generator=generator) < recipe.self_rollout
        start = torch.randn(previous.shape, generator=generator)
        pp_noise = torch.randn(previous.shape, generator=generator)
        extra["rollout"] = Rollout(enc.rollout, chosen.to(device) & ~drop_previous, start.to(device, previous.dtype),
                                   pp_noise.to(device, previous.dtype), recipe.self_rollout_steps)  # fmt: skip
    extra = {k: v for k, v in extra.items() if v is not None}
    pred, target_v = model(enc.target_latent, noise, timesteps, enc.target_depth, previous, enc.previous_depth,
                           enc.clip_tokens, enc.reference_latent, drop_reference, drop_previous, enc.previous_flow,
                           context_noise, context_level, **extra)  # fmt: skip
    return F.mse_loss(pred.float(), target_v.float())


def build_dataset(data: str, recipe: TrainRecipe, depth_device: str):
    """The raw-clip or cached triplet dataset for `--data`, checked to hold at least one usable clip."""
    with_pp = recipe.self_rollout > 0
    if is_cache(data):
        if recipe.use_warped_previous:
            raise UsageError("use_warped_previous needs optical flow, which a precompute cache does not hold; train on the clips")
        if recipe.anchored_reference:
            raise UsageError("anchored_reference needs the source frames' anchored maps, which a precompute cache does not hold; "
                             "train on the clips")  # fmt: skip
        dataset = CachedTripletDataset(data, recipe.seed, with_pp=with_pp)
        dataset.check_recipe(recipe)
    else:
        found = discover_clips(data, synthetic_edited=recipe.synthetic_edited)
        dataset = RawTripletDataset(found.clips, FrameSampling.from_recipe(recipe), recipe.seed, recipe.depth_model,
                                    found.missing, depth_device, clip_cache=recipe.clip_cache,
                                    with_flow=recipe.use_warped_previous, with_anchor=recipe.anchored_reference,
                                    with_pp=with_pp)  # fmt: skip
    first = dataset.check_usable()
    if isinstance(dataset, RawTripletDataset) and first is not None and not dataset.clips[first].synthetic:
        dataset.load_depth_model()  # now, in the main process: a missing model fails at once, with one line
    return dataset


def check_output_dir(out: Path, resume: str | None) -> Path | None:
    """The checkpoint to resume from; a fresh run refuses a folder that already holds a run (nothing is overwritten)."""
    if resume:
        return resolve_resume(out, resume)
    if list_checkpoints(out) or (out / "final").exists() or (out / "logs" / "train_log.jsonl").exists():
        raise UsageError(
            f"{out} already holds a training run; pass --resume latest to continue it, or choose a new --output-dir"
        )
    return None


def train(recipe: TrainRecipe, data: str, output_dir: str | Path, *, resume: str | None = None, recipe_name: str = "",
          command: str = "", progress: bool = True) -> dict | None:  # fmt: skip
    """Train, checkpoint, export `output_dir/final`. Returns the summary (the log's last line) on the main process."""
    # 1. Check the output folder, then start accelerate (one process per device under `accelerate launch`)
    out = Path(output_dir)
    ckpt = check_output_dir(out, resume)
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # it logs every file of every checkpoint
    accelerator = Accelerator(mixed_precision=recipe.mixed_precision, gradient_accumulation_steps=recipe.grad_accum,
                              step_scheduler_with_optimizer=False)  # fmt: skip  (we step the LR once per optimizer step)
    world, rank, device = accelerator.num_processes, accelerator.process_index, accelerator.device

    # 2. Data: raw clips (decode + depth + VAE + CLIP at every step) or a cache from `magicprop precompute`
    dataset = build_dataset(data, recipe, depth_device="cpu" if recipe.num_workers > 0 else str(device))
    cached = isinstance(dataset, CachedTripletDataset)

    # 3. Models: PropDPM learns; VAE and CLIP are frozen (and stay on the CPU when the cache already holds their output)
    parts = load_components(recipe)
    propdpm = parts.propdpm.train()
    if recipe.gradient_checkpointing:
        propdpm.enable_gradient_checkpointing()
    if not cached:
        parts.vae.to(device)
        parts.image_encoder.to(device)
    noise_scheduler = make_scheduler("ddpm", zero_snr=recipe.zero_snr)  # v-prediction; SNR(T) = 0 unless the ablation

    # 4. AdamW with linear warm-up, EMA; accelerate wraps the model (DDP across processes) and the optimizer
    optimizer = torch.optim.AdamW(propdpm.parameters(), lr=recipe.lr, betas=(recipe.adam_beta1, recipe.adam_beta2),
                                  weight_decay=recipe.weight_decay)  # fmt: skip
    lr_scheduler = get_scheduler("constant_with_warmup", optimizer, num_warmup_steps=recipe.warmup_steps)
    model, optimizer, lr_scheduler = accelerator.prepare(PropDPMTraining(propdpm, noise_scheduler), optimizer, lr_scheduler)
    ema = None
    if recipe.use_ema:
        ema = EMAModel(propdpm.parameters(), decay=recipe.ema_decay, model_cls=PropDPM, model_config=propdpm.config)
        ema.to(device)

    # 5. Resume weights, optimizer, LR schedule, EMA and RNG; the data continues from the step count alone
    step = 0
    log = TrainLog(out / "logs" / "train_log.jsonl", enabled=accelerator.is_main_process)
    if ckpt is not None:
        state = load_checkpoint(accelerator, ckpt, ema)
        step = state["step"]
        if (state["world_size"], state["batch_size"]) != (world, recipe.batch_size):
            logger.warning("resuming with %d processes x batch %d (was %d x %d): the data order differs from here on",
                           world, recipe.batch_size, state["world_size"], state["batch_size"])  # fmt: skip
        log.write({"event": "resume", "step": step, "checkpoint": str(ckpt), "world_size": world, "command": command})
        logger.info("resumed from %s (step %d)", ckpt, step)
    else:
        if accelerator.is_main_process:
            atomic_write_json(out / "recipe.json", {"name": recipe_name, **recipe.to_dict()})
        log.write({"event": "start", "world_size": world, "recipe": recipe.to_dict(), "recipe_name": recipe_name,
                   "data": str(data), "cached": cached, "clips": dataset.num_clips, "command": command})  # fmt: skip
    loader = iter(make_dataloader(dataset, recipe, world, rank, start_step=step))  # this process's samples from `step` on

    # 6. Train
    samples_per_step = recipe.batch_size * recipe.grad_accum * world
    bad = set(dataset.bad)  # clips found unusable so far (this process; united across processes when logging)
    window, window_start, t_start = [], time.perf_counter(), time.perf_counter()
    loss_value, speed = None, 0.0  # None until a step is logged (a resumed run may have nothing left to do)
    if step >= recipe.max_steps:
        logger.warning("the checkpoint is at step %d, max_steps is %d: nothing to train, exporting it", step, recipe.max_steps)
    show = progress and accelerator.is_main_process
    # closed also when a step fails, so the error line starts on a line of its own
    with tqdm(total=recipe.max_steps, initial=step, desc="training", unit="step", disable=not show) as bar:
        while step < recipe.max_steps:
            lr = lr_scheduler.get_last_lr()[0]  # the rate this step uses
            step_loss = 0.0
            for micro in range(recipe.grad_accum):
                batch = next(loader)
                bad.update(batch["skipped"])
                generator = step_generator(recipe.seed, step, micro, rank)
                with accelerator.autocast():
                    enc = encode_batch(batch, parts.vae, parts.image_encoder, device, generator)
                with accelerator.accumulate(model):  # DDP syncs gradients only on the last micro-batch
                    loss = diffusion_loss(model, noise_scheduler, enc, recipe, generator)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        accelerator.clip_grad_norm_(model.parameters(), recipe.max_grad_norm)
                    optimizer.step()  # a no-op until the last micro-batch
                    optimizer.zero_grad(set_to_none=True)
                step_loss += loss.item() / recipe.grad_accum
            lr_scheduler.step()
            if ema is not None:
                ema.step(propdpm.parameters())
            step += 1
            window.append(step_loss)
            bar.update(1)

            if step % recipe.log_every == 0 or step == recipe.max_steps:  # collective: every process reaches it together
                loss_value = accelerator.reduce(torch.tensor(sum(window) / len(window), device=device), "mean").item()
                bad = set().union(*gather_object([sorted(bad)]))
                speed = len(window) * samples_per_step / (time.perf_counter() - window_start)
                skipped = len(dataset.missing) + len(bad)
                log.write({"step": step, "epoch": step * samples_per_step // dataset.num_clips, "loss": loss_value, "lr": lr,
                           "samples_per_s": speed, "skipped_videos": skipped})  # fmt: skip
                bar.set_postfix(loss=f"{loss_value:.4f}", samples_s=f"{speed:.1f}", skipped=skipped)
                window, window_start = [], time.perf_counter()
            if step % recipe.checkpoint_every == 0 or step == recipe.max_steps:
                seen = step * samples_per_step
                state = {"step": step, "epoch": seen // dataset.num_clips, "samples_seen": seen, "world_size": world,
                         "batch_size": recipe.batch_size, "recipe": recipe.to_dict()}  # fmt: skip
                save_checkpoint(accelerator, out, step, state, ema, keep=recipe.keep_checkpoints)

    # 7. Export final/ (the EMA weights when EMA is on), the summary and the loss plot
    unwrapped = accelerator.unwrap_model(model).propdpm
    checksums = gather_object([parameter_checksum(unwrapped)])  # equal on every process, or DDP went wrong
    bad = set().union(*gather_object([sorted(bad)]))
    summary = {"event": "end", "steps": step, "final_loss": loss_value, "samples_per_s": speed, "world_size": world,
               "skipped_videos": len(dataset.missing) + len(bad), "param_checksums": checksums, "ema": ema is not None,
               "seconds": time.perf_counter() - t_start, "final": str(out / "final")}  # fmt: skip
    if accelerator.is_main_process:
        card = {"config": recipe_name, "recipe": recipe.to_dict(), "command": command, "steps": step,
                "final_loss": loss_value, "skipped_videos": summary["skipped_videos"], "world_size": world,
                "data": str(data), "ema": ema is not None}  # fmt: skip
        export_final(out / "final", unwrapped, parts, noise_scheduler, card, ema)
        log.write(summary)
        plot_loss(log.path, out / "logs" / "loss.png")
    # Drop the DDP wrapper while the process group is still alive. Freed after end_training(), its Reducer is the gloo
    # group's last owner, and the group's destructor (main thread, GIL held) waits for a gloo thread that waits for the
    # GIL to free a gradient tensor: a deadlock that hung 1 exit in 3 under CPU load.
    model = optimizer = lr_scheduler = None
    accelerator.free_memory()
    gc.collect()
    accelerator.wait_for_everyone()
    accelerator.end_training()
    AcceleratorState._reset_state()  # another run in this process (a notebook, tests) may pick another precision
    return summary if accelerator.is_main_process else None
