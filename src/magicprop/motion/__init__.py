"""Motion signals read from the source clip: depth (`depth`: a transformers model, normalised over the whole clip) and
optical flow with its warps and forward-backward checks (`flow`)."""

from .depth import (
    DEFAULT_DEPTH_MODEL, DepthEstimator, colorize_depth, depth_cache_key, estimate_clip_depth, given_depth, load_depth,
    normalize_clip_depth, resize_depth, save_depth,
)  # fmt: skip
from .flow import FLOW_METHODS, FlowMethod, carry, occlusion_mask, optical_flow, outside_frame, warp

__all__ = [
    "DEFAULT_DEPTH_MODEL", "DepthEstimator", "FLOW_METHODS", "FlowMethod", "carry", "colorize_depth", "depth_cache_key",
    "estimate_clip_depth", "given_depth", "load_depth", "normalize_clip_depth", "occlusion_mask", "optical_flow", "outside_frame",
    "resize_depth", "save_depth", "warp",
]  # fmt: skip
