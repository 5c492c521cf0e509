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
