"""Named model sizes. One entry per size, never scattered literals.

`sd15` is Stable Diffusion 1.5's UNet (the paper initialises PropDPM from it); `tiny` is the size of the model embedded in
the package and used by the demo: it trains on CPU in minutes at 64x64 frames. Below them, the real configurations of
the public models the defaults name (SD 1.5, CLIP ViT-L/14, the depth ControlNet, Depth Anything V2 Small).
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

# ---------------------------------------------------------------------------------------------------------------------
# Real sizes: the public models every default id names (hub.DEFAULT_IDS), as their config.json files describe them.
# `real_size.py` builds them with random weights (no download), for benchmarks/real_size.py and the CI shape test.
# ---------------------------------------------------------------------------------------------------------------------
SD15_UNET_CONFIG: dict[str, Any] = {  # stable-diffusion-v1-5 unet/: 860M parameters, 64x64 latents at 512x512
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    **_SD15_BLOCKS,
    "act_fn": "silu",
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-5,
}

SD15_VAE_CONFIG: dict[str, Any] = {  # stable-diffusion-v1-5 vae/: factor 8, 4 latent channels, 84M parameters
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "act_fn": "silu",
    "sample_size": 512,
    "scaling_factor": 0.18215,
}

# openai/clip-vit-large-patch14: SD 1.5's text encoder is its text tower; the paper's image tokens come from its vision
# tower (1024 wide, 24 layers, 16x16 patches of 14 px at 224) through the visual projection to 768, SD's width.
CLIP_VOCAB_SIZE = 49408  # 256 byte symbols, each also word-final, 48894 BPE merges, <|startoftext|> and <|endoftext|>
CLIP_VIT_L14_TEXT_CONFIG: dict[str, Any] = {
    "vocab_size": CLIP_VOCAB_SIZE,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
    "bos_token_id": CLIP_VOCAB_SIZE - 2,
    "eos_token_id": CLIP_VOCAB_SIZE - 1,
    "pad_token_id": CLIP_VOCAB_SIZE - 1,
}
CLIP_VIT_L14_VISION_CONFIG: dict[str, Any] = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "image_size": 224,
    "patch_size": 14,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
}

# lllyasviel/control_v11f1p_sd15_depth: a copy of SD 1.5's encoder half plus a 4-layer embedding of the depth image
SD15_CONTROLNET_EMBEDDING = (16, 32, 96, 256)  # conditioning_embedding_out_channels

# depth-anything/Depth-Anything-V2-Small-hf: a DINOv2-S backbone (518 px, 14 px patches) and a DPT head, 25M parameters
DEPTH_ANYTHING_V2_SMALL_CONFIG: dict[str, Any] = {
    "backbone_config": {
        "model_type": "dinov2",
        "hidden_size": 384,
        "num_attention_heads": 6,
        "image_size": 518,
        "patch_size": 14,
        "out_features": ["stage3", "stage6", "stage9", "stage12"],
        "reshape_hidden_states": False,
    },
    "fusion_hidden_size": 64,
    "head_hidden_size": 32,
    "neck_hidden_sizes": [48, 96, 192, 384],
    "reassemble_factors": [4, 2, 1, 0.5],
    "reassemble_hidden_size": 384,
    "patch_size": 14,
}
DEPTH_ANYTHING_INPUT = 518  # its processor resizes the short side to 518 (a multiple of 14), keeping the aspect

from ..hub import DEFAULT_IDS  # noqa: E402,F401  (kept importable from here)


def propdpm_config(name: str) -> dict[str, Any]:
    try:
        return dict(PROPDPM_CONFIGS[name])
    except KeyError:
        from ..errors import UsageError

        raise UsageError(f"unknown model config {name!r}; choose one of {sorted(PROPDPM_CONFIGS)}") from None
