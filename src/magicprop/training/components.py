"""What a recipe trains and what it keeps frozen: PropDPM, the VAE and the CLIP image tower (and the depth model).

`--pretrained` must be Stable Diffusion 1.x shaped (a `unet/` and a `vae/` subfolder, as stable-diffusion-v1-5 on the hub):
its UNet initialises PropDPM (`PropDPM.from_stable_diffusion`: 4 -> 10 or more input channels, zeros for the new ones) and its VAE
is the frozen encoder. A folder exported by `magicprop train` (propdpm/, vae/, image_encoder/) is accepted too, to
continue from it. Without `--pretrained` PropDPM starts from scratch at the recipe's named size.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import UsageError
from ..fileio import expand_user
from ..hub import check_sd1, load_component
from ..models.bundle import EMBEDDED_TINY
from ..models.encoders import vae_scale_factor
from ..models.propdpm import PropDPM
from .recipes import TrainRecipe

logger = logging.getLogger(__name__)


@dataclass
class Components:
    propdpm: PropDPM
    vae: Any  # diffusers AutoencoderKL, frozen
    image_encoder: Any  # transformers CLIPVisionModelWithProjection, frozen
    # For the export: components named by a hub id are referenced in magicprop.json instead of copied (GBs for SD).
    references: dict[str, dict[str, str]]


def pretrained_kind(pretrained: str) -> str:
    """'sd' for an SD-1.x-shaped folder, 'magicprop' for an exported model, 'hub' for an id; else a one-line UsageError."""
    path = expand_user(pretrained)
    if not path.exists():
        if str(pretrained).startswith((".", "/", "~")):
            raise UsageError(f"--pretrained folder not found: {pretrained}; check the path")
        return "hub"
    if (path / "propdpm" / "config.json").is_file():
        return "magicprop"
    unet_config = path / "unet" / "config.json"
    if not unet_config.is_file() or not (path / "vae").is_dir():
        raise UsageError(
            f"--pretrained {pretrained} is not a Stable Diffusion 1.x folder (needs unet/config.json and vae/, as "
            "stable-diffusion-v1-5/stable-diffusion-v1-5 has)"
        )
    config = json.loads(unet_config.read_text())
    check_sd1(config, f"--pretrained {pretrained}", "--pretrained")  # SD 2.x / SDXL: named before gigabytes are read
    if config.get("_class_name") != "UNet2DConditionModel" or config.get("in_channels") != 4:
        raise UsageError(
            f"--pretrained {pretrained}: unet/ holds a {config.get('_class_name')} with {config.get('in_channels')} input "
            "channels, not SD 1.x's 4-channel UNet2DConditionModel"
        )
    return "sd"


def _is_hub_id(name: str) -> bool:
    return not expand_user(name).exists()


def load_components(recipe: TrainRecipe) -> Components:
    """Build PropDPM (pretrained or from scratch) and load its frozen VAE and CLIP tower, checking they fit together."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPVisionModelWithProjection

    from ..models.bundle import PropagationModels

    overrides = {"reference_mode": recipe.reference_mode, "use_warped_previous": recipe.use_warped_previous,
                 "predict_residual": recipe.predict_residual, "context_level_embedding": recipe.context_noise > 0,
                 "inference_context_level": recipe.context_noise_inference if recipe.context_noise > 0 else 0.0,
                 "use_anchored_reference": recipe.anchored_reference}  # fmt: skip
    references: dict[str, dict[str, str]] = {}
    kind = pretrained_kind(recipe.pretrained) if recipe.pretrained else "scratch"
    vae = image_encoder = None

    # 1. PropDPM: SD's UNet grown to 10 input channels, an exported model, or a fresh one of the recipe's size
    torch.manual_seed(recipe.seed)  # the new weights (adaptor, or everything from scratch) depend on the seed only
    if kind == "magicprop":
        models = PropagationModels.from_pretrained(recipe.pretrained)
        propdpm, vae, image_encoder = models.propdpm, models.vae, models.image_encoder
        references = dict(models.card.get("components", {}))
        for field, value in overrides.items():
            if propdpm.config.get(field, False) != value:
                raise UsageError(
                    f"--pretrained {recipe.pretrained} has {field} {propdpm.config.get(field, False)!r}, the recipe {value!r}; "
                    "set the same in the recipe"
                )
    elif kind in ("sd", "hub"):
        unet = load_component(
            UNet2DConditionModel, recipe.pretrained, subfolder="unet", what="Stable Diffusion UNet", flag="--pretrained"
        )
        propdpm = PropDPM.from_stable_diffusion(unet, **overrides)
        del unet
    else:
        propdpm = PropDPM.from_config_name(recipe.model_config, **overrides)

    # 2. Frozen encoders: --vae/--image-encoder, else the pretrained model's, else the embedded tiny model's
    vae_source = recipe.vae or (recipe.pretrained if kind in ("sd", "hub") else None)
    if recipe.vae or vae is None:
        if vae_source is None:
            vae_source = _embedded("vae", "--vae")
        subfolder = "vae" if (vae_source == recipe.pretrained and not recipe.vae) else None
        vae = load_component(AutoencoderKL, vae_source, subfolder=subfolder, what="VAE", flag="--vae")
        references.pop("vae", None)
        if _is_hub_id(vae_source):
            references["vae"] = {"id": vae_source, **({"subfolder": subfolder} if subfolder else {})}
    if recipe.image_encoder or image_encoder is None:
        clip_source = recipe.image_encoder or _embedded("image_encoder", "--image-encoder")
        image_encoder = load_component(
            CLIPVisionModelWithProjection, clip_source, what="CLIP image encoder", flag="--image-encoder"
        )
        references.pop("image_encoder", None)
        if _is_hub_id(clip_source):
            references["image_encoder"] = {"id": clip_source}
    for module in (vae, image_encoder):
        module.requires_grad_(False).eval()  # frozen, as in the paper: only the UNet and the adaptor learn
    propdpm.requires_grad_(True).train()  # a loaded model comes frozen, in eval mode

    # 3. They must fit together: CLIP's projection width is the cross-attention width, and the latent channels agree
    width = image_encoder.config.projection_dim
    if width != propdpm.config.cross_attention_dim:
        raise UsageError(
            f"the CLIP image encoder projects to {width} channels but PropDPM's cross-attention is "
            f"{propdpm.config.cross_attention_dim} wide; pass a matching --image-encoder"
        )
    if vae.config.latent_channels != propdpm.config.latent_channels:
        raise UsageError(
            f"the VAE has {vae.config.latent_channels} latent channels, PropDPM expects "
            f"{propdpm.config.latent_channels}; pass a matching --vae"
        )
    factor = vae_scale_factor(vae)
    if recipe.resolution % (2 * factor):
        raise UsageError(
            f"resolution {recipe.resolution} must be a multiple of {2 * factor} (the VAE's {factor}x, then the adaptor's 2x)"
        )
    logger.info(
        "PropDPM %s (%s trainable parameters); frozen VAE and CLIP from %s and %s",
        f"from {recipe.pretrained}" if recipe.pretrained else f"from scratch ({recipe.model_config})",
        f"{sum(p.numel() for p in propdpm.parameters()):,}",
        vae_source or recipe.pretrained,
        recipe.image_encoder or "the embedded tiny model",
    )  # fmt: skip
    return Components(propdpm, vae, image_encoder, references)


def load_encoders(recipe: TrainRecipe):
    """Only the frozen VAE and CLIP tower (for `magicprop precompute`): the same choice as `load_components` makes."""
    from diffusers import AutoencoderKL
    from transformers import CLIPVisionModelWithProjection

    kind = pretrained_kind(recipe.pretrained) if recipe.pretrained else "scratch"
    if kind == "magicprop" and not (recipe.vae and recipe.image_encoder):
        from ..models.bundle import PropagationModels

        models = PropagationModels.from_pretrained(recipe.pretrained)
        return models.vae, models.image_encoder
    if recipe.vae:
        vae = load_component(AutoencoderKL, recipe.vae, what="VAE", flag="--vae")
    elif kind in ("sd", "hub"):
        vae = load_component(AutoencoderKL, recipe.pretrained, subfolder="vae", what="VAE", flag="--vae")
    else:
        vae = load_component(AutoencoderKL, _embedded("vae", "--vae"), what="VAE", flag="--vae")
    clip_source = recipe.image_encoder or _embedded("image_encoder", "--image-encoder")
    image_encoder = load_component(
        CLIPVisionModelWithProjection, clip_source, what="CLIP image encoder", flag="--image-encoder"
    )
    return vae.requires_grad_(False).eval(), image_encoder.requires_grad_(False).eval()


def encoder_names(recipe: TrainRecipe) -> dict[str, str]:
    """What the VAE and CLIP are, as a cache records them (a cache made with other encoders must not be trained on)."""
    vae = recipe.vae or (f"{recipe.pretrained}/vae" if recipe.pretrained else "embedded-tiny/vae")
    clip = recipe.image_encoder or (str(recipe.pretrained) if recipe.pretrained else "embedded-tiny/image_encoder")
    return {"vae": str(vae), "image_encoder": str(clip)}


def _embedded(name: str, flag: str) -> str:
    folder = EMBEDDED_TINY / name
    if not (folder / "config.json").is_file():
        raise UsageError(f"no {name} given and the package embeds none; pass {flag} DIR (a diffusers/transformers folder)")
    return str(folder)


def load_depth_estimator(depth_model: str, device: str | torch.device = "cpu"):
    """motion.DepthEstimator for raw clips (synthetic clips bring their exact depth and never need it)."""
    from ..motion import DepthEstimator

    return DepthEstimator.from_pretrained(depth_model, device=str(device))
