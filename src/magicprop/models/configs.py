"""Named model sizes. One entry per size, never scattered literals.

`sd15` is Stable Diffusion 1.5's UNet (the paper initialises PropDPM from it); `tiny` is the size of the model embedded in
the package and used by the demo: it trains on CPU in minutes at 64x64 frames.
"""

from __future__ import annotations

from typing import Any

_SD15_BLOCKS = {
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "layers_per_block": 2,
    "attention_head_dim": 8,
    "cross_attention_dim": 768,
    "norm_num_groups": 32,
}

PROPDPM_CONFIGS: dict[str, dict[str, Any]] = {
    # 256x256 frames -> 32x32 latents, the paper's training resolution.
    "sd15": {"sample_size": 32, **_SD15_BLOCKS},
    "tiny": {
        "sample_size": 16,  # 64x64 frames through the tiny VAE (factor 4)
        "block_out_channels": (32, 64, 64),
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        "layers_per_block": 1,
        "attention_head_dim": 8,
        "cross_attention_dim": 64,
        "norm_num_groups": 8,
    },
}

# Companions of the tiny PropDPM: an AutoencoderKL with two downsamplings (factor 4) and a small CLIP vision tower whose
# projection width equals the tiny cross-attention width, as CLIP ViT-L/14's 768 equals SD 1.5's.
TINY_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 3,
    "up_block_types": ("UpDecoderBlock2D",) * 3,
    "block_out_channels": (32, 64, 64),
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 16,
    "sample_size": 64,
    "scaling_factor": 1.0,  # set after training from the latents' standard deviation, as SD's 0.18215 was
}

TINY_CLIP_VISION_CONFIG: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "image_size": 64,
    "patch_size": 8,
    "projection_dim": 64,
}

from ..hub import DEFAULT_IDS  # noqa: E402,F401  (kept importable from here)


def propdpm_config(name: str) -> dict[str, Any]:
    try:
        return dict(PROPDPM_CONFIGS[name])
    except KeyError:
        from ..errors import UsageError

        raise UsageError(f"unknown model config {name!r}; choose one of {sorted(PROPDPM_CONFIGS)}") from None
