"""Tiny components for tests, built from configs in code (no hub, no weights).

Every builder seeds torch before constructing a module, so two calls give identical weights. `save_*` helpers write a
component with `save_pretrained` into a folder so tests exercise the real loading code, exactly as a hub id would.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SEED = 0


# --------------------------------------------------------------------------------------------------------------------
# Depth (transformers)
# --------------------------------------------------------------------------------------------------------------------
def get_tiny_depth_model():
    """A Depth Anything model with a 4-layer, 16-wide DINOv2 backbone (about 38k parameters)."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    torch.manual_seed(SEED)
    backbone = Dinov2Config(
        image_size=28,
        patch_size=14,
        hidden_size=16,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=32,
        out_features=["stage1", "stage2", "stage3", "stage4"],
        reshape_hidden_states=False,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone,
        neck_hidden_sizes=[8, 8, 8, 8],
        fusion_hidden_size=8,
        head_hidden_size=4,
        reassemble_hidden_size=16,
        patch_size=14,
    )
    return DepthAnythingForDepthEstimation(config).eval()


def save_tiny_depth_model(folder: str | Path) -> Path:
    """Save the tiny depth model and a matching image processor (42 px inputs) as a hub-style folder."""
    from transformers import DPTImageProcessor

    folder = Path(folder)
    get_tiny_depth_model().save_pretrained(folder)
    processor = DPTImageProcessor(
        do_resize=True,
        size={"height": 42, "width": 42},
        keep_aspect_ratio=True,
        ensure_multiple_of=14,
        do_rescale=True,
        do_normalize=True,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    processor.save_pretrained(folder)
    return folder


# --------------------------------------------------------------------------------------------------------------------
# Stage II: PropDPM, VAE, CLIP image tower (the dummy components of every model/propagation/training test)
# --------------------------------------------------------------------------------------------------------------------
DUMMY_PROPDPM = {
    "sample_size": 8,
    "block_out_channels": (8, 8),
    "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
    "layers_per_block": 1,
    "attention_head_dim": 2,
    "cross_attention_dim": 16,
    "norm_num_groups": 2,
}


def get_dummy_unet():
    """A 4-channel SD-shaped UNet with the dummy PropDPM's blocks (for the zero-init equivalence test)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(SEED)
    cfg = {k: v for k, v in DUMMY_PROPDPM.items()}
    return UNet2DConditionModel(in_channels=4, out_channels=4, **cfg).eval()


def get_dummy_propdpm(**overrides):
    from magicprop.models import PropDPM

    torch.manual_seed(SEED)
    return PropDPM(**{**DUMMY_PROPDPM, **overrides}).eval()


def get_dummy_vae():
    """AutoencoderKL with one downsampling: 32x32 frames -> 4x16x16 latents."""
    from diffusers import AutoencoderKL

    torch.manual_seed(SEED)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 8),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=2,
        sample_size=32,
    ).eval()


def get_dummy_image_encoder():
    """CLIP vision tower whose projection width (16) equals the dummy cross-attention width, as 768 does for SD 1.5."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(SEED)
    config = CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8,
        projection_dim=16,
    )  # fmt: skip
    return CLIPVisionModelWithProjection(config).eval()


def get_dummy_propagation_models(**propdpm_overrides):
    from magicprop.models import PropagationModels
    from magicprop.schedulers import make_scheduler

    return PropagationModels(
        propdpm=get_dummy_propdpm(**propdpm_overrides),
        vae=get_dummy_vae(),
        image_encoder=get_dummy_image_encoder(),
        scheduler_config=dict(make_scheduler("ddim").config),
        source="dummy",
    ).eval()


def save_dummy_propagation_models(folder: str | Path, **propdpm_overrides) -> Path:
    folder = Path(folder)
    get_dummy_propagation_models(**propdpm_overrides).save_pretrained(folder, card={"config": "dummy"})
    return folder
