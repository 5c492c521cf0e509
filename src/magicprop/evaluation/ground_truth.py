"""Scoring a propagated clip against its exact ground truth: one function for the demo and every benchmark.

Given keyframes are left out of the means (they are inputs, not results). PSNR is capped per frame at `PSNR_CAP_DB`
before averaging (an exact frame would otherwise make the mean infinite).
"""

from __future__ import annotations

from typing import Iterable

import cv2
import numpy as np

from .metrics import PSNR_CAP_DB, along_flow, color_shift, psnr, ssim


def sharpness(frames: np.ndarray) -> np.ndarray:
    """Per frame, (T,): variance of the Laplacian of the grey image, the usual focus measure (Pech-Pacheco et al. 2000).

    Only meaningful as a ratio between two clips of the same content: a result's over the truth's says how much detail
    survived (1 = all of it; resampling a frame again and again drives it towards 0)."""
    frames = np.asarray(frames)
    grey = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames]
    return np.array([cv2.Laplacian(g, cv2.CV_64F, ksize=3).var() for g in grey], dtype=np.float64)


def score_against_truth(frames: np.ndarray, truth: np.ndarray, source: np.ndarray, keyframes: int | Iterable[int]) -> dict:
    """Means over the frames that were not given, and per-frame curves, of a propagated clip against the truth.

    Returns {"psnr", "ssim", "color_shift", "sharpness_ratio", "warp_error", "flicker", "warp_excess",
    "per_frame": {"psnr", "ssim"}}. The warp error is measured along the source's motion (`warp_error`) and needs no
    truth. Two flicker figures say whether a result boils beyond what its truth does, both 0 for the truth itself:
    `flicker`, the mean `temporal_flicker` of the result against the truth (every pair, the keyframe's included: the
    jump from the exact keyframe to the first propagated frame is seen too), and `warp_excess`, the result's warp error
    minus the truth's (negative when a result is smoother along the flow than the true edit). All three figures along
    the flow share one pass of source flows.
    """
    given = np.atleast_1d(np.asarray(list(keyframes) if not np.isscalar(keyframes) else [keyframes]))
    keep = ~np.isin(np.arange(len(truth)), given % len(truth))
    p = np.minimum(psnr(frames, truth), PSNR_CAP_DB)
    s = ssim(frames, truth)
    sharp_truth = sharpness(truth[keep])
    ratio = sharpness(frames[keep]) / np.maximum(sharp_truth, 1e-6)
    mine, truths, flicker = along_flow([lambda t: frames[t].astype(np.float32), lambda t: truth[t].astype(np.float32),
                                        lambda t: frames[t].astype(np.float32) - truth[t]], source)  # fmt: skip
    return {
        "psnr": float(p[keep].mean()),
        "ssim": float(s[keep].mean()),
        "color_shift": float(color_shift(frames, truth)[keep].mean()),
        "sharpness_ratio": float(np.median(ratio)),
        "warp_error": float(np.nanmean(mine)),
        "flicker": float(np.nanmean(flicker)),
        "warp_excess": float(np.nanmean(mine - truths)),
        "per_frame": {"psnr": p.tolist(), "ssim": s.tolist()},
    }
