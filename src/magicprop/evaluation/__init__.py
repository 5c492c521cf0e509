"""How good an edit is: the metrics papers report (`metrics`), ground-truth scoring shared by the demo and the
benchmarks (`ground_truth`), and CLIP scores (`clip_score`, which loads torch and transformers only when used)."""

from .clip_score import DEFAULT_CLIP_MODEL, ClipScorer
from .ground_truth import score_against_truth, sharpness
from .metrics import (PER_FRAME_KEYS, PSNR_CAP_DB, color_shift, evaluate_clip, format_metrics, psnr, ssim,
                      temporal_flicker, warp_error, warp_errors)

__all__ = [
    "ClipScorer", "DEFAULT_CLIP_MODEL", "PER_FRAME_KEYS", "PSNR_CAP_DB", "color_shift", "evaluate_clip", "format_metrics",
    "psnr", "score_against_truth", "sharpness", "ssim", "temporal_flicker", "warp_error", "warp_errors",
]  # fmt: skip
