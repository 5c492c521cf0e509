"""Training recipes: one typed dataclass, two named entries, and small override files.

`sd15-256` is the paper's setting (section 3.3.3): PropDPM initialised from Stable Diffusion 1.5, frames centre-cropped to
256x256, at most 30 frames per clip with a stride of 4, zero-terminal-SNR v-prediction. `tiny-synthetic` trains the tiny
PropDPM from scratch at 64x64 on synthetic clips, on a CPU (about 32 triplets/s on 2 cores). An override file is a flat
JSON/YAML mapping of field -> value (`{"lr": 5e-5, "max_steps": 2000}`): what you see in it is what changes, nothing is
built by name.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..errors import UsageError, first_line
from ..hub import DEFAULT_IDS

MIXED_PRECISION = ("no", "fp16", "bf16")


@dataclass
class TrainRecipe:
    # --- model
    model_config: str = "sd15"  # PropDPM size in models/configs.py; only used when `pretrained` is None (from scratch)
    pretrained: str | None = DEFAULT_IDS["sd15"]  # SD 1.x id/folder whose unet/ (and vae/) initialise PropDPM; None = scratch
    vae: str | None = None  # VAE folder/id; None = `pretrained`'s vae/ subfolder (sd15) or the embedded tiny VAE
    image_encoder: str | None = DEFAULT_IDS["clip"]  # CLIP vision tower whose projection width = cross-attention width
    depth_model: str = DEFAULT_IDS["depth"]  # run on raw clips only; synthetic clips bring their exact depth.npz
    reference_mode: str = "clip+vae"  # "clip" is the paper's ablation: the adaptor sees no VAE latent of the reference
    zero_snr: bool = True  # False trains on SD's original schedule (terminal SNR > 0), for the ablation of section 3.3.2
    use_warped_previous: bool = False  # beyond the paper: also condition on the previous latent warped along the flow
    predict_residual: bool = False  # beyond the paper: diffuse target - warped previous latent (needs use_warped_previous)
    # beyond the paper: also condition on the reference warped to the target through its anchored map (the `flow`
    # propagator's maps, measured on the source frames) and the map's validity: 5 more input channels, zero-initialised
    anchored_reference: bool = False

    # --- data (paper, 3.3.3)
    resolution: int = 256  # frames are centre-cropped to squares and resized to resolution x resolution
    frames_per_clip: int = 30  # at most this many frames are sampled from each clip ...
    frame_stride: int = 4  # ... taking every 4th frame; previous/target are consecutive *sampled* frames (4 apart)
    synthetic_edited: bool = False  # `magicprop synth` folders also give their edited.mp4 as a clip (same motion)
    num_workers: int = 4  # DataLoader processes decoding clips (raw mode also runs depth there, on CPU)
    clip_cache: int = 0  # decoded clips (frames + depth) kept in memory per data process: for small datasets only

    # --- optimisation
    batch_size: int = 8  # triplets per process per micro-batch; effective batch = batch_size * grad_accum * processes
    grad_accum: int = 1
    lr: float = 1e-5
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    warmup_steps: int = 500  # linear warm-up from 0 to lr, then constant
    max_steps: int = 100_000  # optimizer steps (not micro-batches)
    mixed_precision: str = "bf16"  # "no" | "fp16" | "bf16"; master weights stay fp32 either way (accelerate autocast)
    gradient_checkpointing: bool = False  # recompute UNet activations in backward: 23% more FLOPs, 4.2 -> 0.2 GB at batch 8
    use_ema: bool = True
    ema_decay: float = 0.9999  # upper bound; diffusers' EMAModel warms it up as (1 + n) / (10 + n)

    # --- conditioning dropout: teaches the null reference (for classifier-free guidance) and first frames without a past
    drop_reference: float = 0.1  # probability that a sample's reference is replaced by the null reference
    drop_previous: float = 0.1  # independent probability that its previous frame (latent and depth) is zeroed
    # Beyond the paper, against drift: at inference the previous latent is the chain's own output, with the errors of
    # every frame before it, while training shows the true one. With a scale s > 0 each sample's previous latent gets a
    # per-channel offset (a colour cast) and per-element noise, both N(0, s^2), so the model learns to pull a drifted
    # previous frame back towards the reference. 0 = off (the paper).
    previous_noise: float = 0.0
    # Beyond the paper, after GameNGen: each sample's previous latent is noised to a level drawn uniformly from
    # [0, context_noise] (sqrt(1 - l^2) z + l eps) and PropDPM is told the level (an embedding added to the timestep
    # embedding, zero-initialised); sampling noises its own previous output to `context_noise_inference`. 0 = off.
    context_noise: float = 0.0
    context_noise_inference: float = 0.1
    # Beyond the paper, against the same gap: for this fraction of each batch the previous latent is the model's own
    # DDIM sample of it (`self_rollout_steps` steps, no gradient) from the frame before it, so training sees what the
    # chain feeds the model at inference. Costs self_rollout * self_rollout_steps forwards per sample. 0 = off.
    self_rollout: float = 0.0
    self_rollout_steps: int = 2  # few: the rollout only has to carry the model's typical error, not a finished frame

    # --- bookkeeping
    checkpoint_every: int = 1000  # optimizer steps between checkpoints (and at the last step)
    keep_checkpoints: int = 3  # older checkpoints are deleted once a newer one is complete
    log_every: int = 10  # optimizer steps between lines of logs/train_log.jsonl
    seed: int = 0  # fixes initialisation of new weights, the data order (a function of seed and epoch) and the noise

    def validate(self) -> "TrainRecipe":
        from ..models.configs import PROPDPM_CONFIGS
        from ..models.propdpm import REFERENCE_MODES

        problems = []
        if self.model_config not in PROPDPM_CONFIGS:
            problems.append(f"model_config must be one of {sorted(PROPDPM_CONFIGS)}, got {self.model_config!r}")
        if self.reference_mode not in REFERENCE_MODES:
            problems.append(f"reference_mode must be one of {REFERENCE_MODES}, got {self.reference_mode!r}")
        if self.mixed_precision not in MIXED_PRECISION:
            problems.append(f"mixed_precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}")
        if self.frames_per_clip < 3:
            problems.append(f"frames_per_clip must be at least 3 (reference, previous, target), got {self.frames_per_clip}")
        for name in ("resolution", "frame_stride", "batch_size", "grad_accum", "max_steps", "checkpoint_every",
                     "keep_checkpoints", "log_every"):  # fmt: skip
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.resolution % 16:
            problems.append(f"resolution must be a multiple of 16 (VAE factor 8 x the adaptor's 2), got {self.resolution}")
        for name in ("drop_reference", "drop_previous"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")
        if self.previous_noise < 0:
            problems.append(f"previous_noise must not be negative, got {self.previous_noise}")
        for name in ("context_noise", "context_noise_inference"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must be a noise level in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.self_rollout <= 1.0:
            problems.append(f"self_rollout must be a fraction of each batch in [0, 1], got {self.self_rollout}")
        if self.self_rollout_steps < 1:
            problems.append(f"self_rollout_steps must be at least 1 (DDIM steps of the rollout), got {self.self_rollout_steps}")
        if self.predict_residual and not self.use_warped_previous:
            problems.append("predict_residual needs use_warped_previous: true (the residual is taken from the warped previous latent)")
        if min(self.warmup_steps, self.num_workers, self.clip_cache) < 0:
            problems.append("warmup_steps, num_workers and clip_cache must not be negative")
        if problems:
            raise UsageError("bad recipe: " + "; ".join(problems))
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


RECIPES: dict[str, TrainRecipe] = {
    # The paper: SD 1.5 init, 256x256, 30 frames at stride 4. Memory, counted with fake tensors (benchmarks/real_size.py):
    # 871M trainable parameters hold 14.6 GB of fp32 weights, gradients and AdamW state, +3.2 GB for EMA, + 4.2 GB of
    # activations at batch 8 (0.2 with gradient_checkpointing): 18.9 GB, so 24 GB GPUs fit it (checkpointing if short).
    "sd15-256": TrainRecipe(),
    # From scratch at 64x64 with the tiny VAE/CLIP (factor 4 -> 16x16 latents). Measured on 2 CPU cores: about 2 steps of
    # 16 triplets per second, so 3000 steps take about 25 minutes.
    "tiny-synthetic": TrainRecipe(
        model_config="tiny",
        pretrained=None,
        vae=None,  # the embedded tiny model's VAE, or --vae DIR
        image_encoder=None,  # the embedded tiny model's CLIP tower, or --image-encoder DIR
        resolution=64,
        # synthetic clips are rendered at the motion per frame we propagate at, so consecutive frames, not every 4th
        frames_per_clip=16,
        frame_stride=1,
        synthetic_edited=True,
        num_workers=0,  # decoding a 64x64 clip is cheaper than starting worker processes
        clip_cache=1024,  # `make tiny-model`'s 800 clips fit in memory (0.2 MB each, ~4 MB with anchored maps kept)
        batch_size=16,
        lr=2e-4,  # from scratch: a much larger step than fine-tuning SD
        warmup_steps=100,
        max_steps=3000,
        mixed_precision="no",
        use_ema=False,
        checkpoint_every=500,
        log_every=10,
    ),
}


def load_recipe(name: str, overrides_file: str | Path | None = None, **overrides: Any) -> TrainRecipe:
    """The named recipe, with the fields of a JSON/YAML override file and then keyword overrides replaced."""
    if name not in RECIPES:
        raise UsageError(f"unknown recipe {name!r}; choose one of {sorted(RECIPES)}")
    values: dict[str, Any] = {}
    if overrides_file is not None:
        values.update(read_overrides(overrides_file))
    values.update({k: v for k, v in overrides.items() if v is not None})
    return apply_overrides(RECIPES[name], values, source=str(overrides_file or "overrides"))


def read_overrides(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"recipe file not found: {path}; pass a .json or .yaml file of field overrides")
    text = path.read_text()
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
    except Exception as exc:  # any parse error becomes one line naming the file
        first = first_line(exc)
        raise UsageError(f"cannot parse recipe file {path}: {first}") from None
    if not isinstance(data, dict):
        raise UsageError(f"recipe file {path} must hold a mapping of field: value, got {type(data).__name__}")
    return data


def apply_overrides(recipe: TrainRecipe, values: dict[str, Any], source: str = "overrides") -> TrainRecipe:
    """A copy of `recipe` with `values` replaced; unknown fields and wrong types are one-line UsageErrors."""
    known = {f.name: f for f in fields(TrainRecipe)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise UsageError(f"unknown recipe field {unknown[0]!r} in {source}; known fields: {', '.join(known)}")
    checked = {}
    for key, value in values.items():
        default = getattr(recipe, key)
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise UsageError(f"recipe field {key!r} in {source} must be true or false, got {value!r}")
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise UsageError(f"recipe field {key!r} in {source} must be an integer, got {value!r}")
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise UsageError(f"recipe field {key!r} in {source} must be a number, got {value!r}")
            value = float(value)
        elif value is not None and not isinstance(value, str):
            raise UsageError(f"recipe field {key!r} in {source} must be a string or null, got {value!r}")
        checked[key] = value
    return dataclasses.replace(recipe, **checked).validate()


def recipe_from_dict(values: dict[str, Any]) -> TrainRecipe:
    """Rebuild a recipe saved in a checkpoint or model card (fields added since are left at their defaults)."""
    known = {f.name for f in fields(TrainRecipe)}
    return TrainRecipe(**{k: v for k, v in values.items() if k in known})


__all__ = ["TrainRecipe", "RECIPES", "load_recipe", "apply_overrides", "recipe_from_dict"]
