"""The metrics video-editing papers report, per frame and averaged over a clip.

Against a ground-truth clip (`reference`, e.g. the synthetic clips of `magicprop.synthetic`):
  - `psnr`, `ssim`: fidelity per frame;
  - `color_shift`: distance between mean colours, the symptom the zero-terminal-SNR ablation is about;
  - `temporal_flicker`: how much the error changes from frame to frame along the motion (flicker beyond the truth's).
Against the source clip's motion (no ground truth needed):
  - `warp_error`: how much the edit flickers or drifts relative to where the source's optical flow says pixels went.
With a CLIP model (`magicprop.evaluation.clip_score.ClipScorer`):
  - CLIP-T (text alignment) and CLIP frame consistency.

Every clip is (T, H, W, 3) uint8. The first argument is always the edited clip; a second clip of another size is resized
to the edited clip's size (and we log it), because metrics must be computed on one pixel grid and the edited clip is the
thing being judged. Different frame counts are an error: there is no honest way to align them here.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from ..errors import UsageError
from ..motion.flow import FlowMethod, occlusion_mask, optical_flow, outside_frame, warp

if TYPE_CHECKING:
    from .clip_score import ClipScorer

logger = logging.getLogger(__name__)

# Identical frames have infinite PSNR. Means and JSON use this cap instead: 100 dB is an RMS error of 2.55e-3 grey levels,
# far below one quantisation step, so any capped frame is "identical" for every practical purpose.
PSNR_CAP_DB = 100.0

# Kept in step with the keys of `evaluate_clip`'s "per_frame" dict; the CLI relies on it.
PER_FRAME_KEYS = ("psnr", "ssim", "warp_error", "color_shift", "clip_consistency", "clip_text")


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """PSNR in dB per frame, (T,), over all pixels and channels with a peak of 255; identical frames give +inf.

    Averages over frames should cap each frame at `PSNR_CAP_DB` first (as `evaluate_clip` does): a mean of values that
    include inf is inf and says nothing about the other frames. Averaging per-frame dB (not pooling the MSE over the
    clip) is what video-editing papers report.
    """
    a, b = _match(a, b, "second clip")
    diff = a.astype(np.float64) - b.astype(np.float64)
    mse = np.mean(diff**2, axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        return (10.0 * np.log10(255.0**2 / mse)).astype(np.float64)


def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SSIM per frame, (T,), scikit-image's `structural_similarity` on RGB (7x7 windows, data_range 255)."""
    from skimage.metrics import structural_similarity

    a, b = _match(a, b, "second clip")
    if min(a.shape[1:3]) < 7:
        raise UsageError(f"SSIM needs frames of at least 7x7 pixels, got {a.shape[1]}x{a.shape[2]}; evaluate larger frames")
    return np.array([structural_similarity(x, y, channel_axis=-1, data_range=255) for x, y in zip(a, b)], dtype=np.float64)


def color_shift(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per frame, (T,): L2 distance between the mean RGB colours (0..255 scale) of `a` and `b`.

    A uniform +10 on every channel gives 10 * sqrt(3) = 17.32. Insensitive to structure by design: it isolates the
    global colour drift that models trained without zero terminal SNR show (Lin et al. 2024, "Common diffusion noise
    schedules and sample steps are flawed").
    """
    a, b = _match(a, b, "second clip")
    mean_a = a.astype(np.float64).mean(axis=(1, 2))  # (T, 3)
    mean_b = b.astype(np.float64).mean(axis=(1, 2))
    return np.linalg.norm(mean_a - mean_b, axis=1)


def warp_error(edited: np.ndarray, source: np.ndarray, *, method: FlowMethod = "dis") -> np.ndarray:
    """Per consecutive pair, (T - 1,): mean |edited[t+1] - warp(edited[t])| in [0, 1] units, flow taken from the SOURCE.

    The flow from source[t+1] to source[t] says where each pixel of frame t+1 was in frame t; an edit that follows the
    source's motion satisfies edited[t+1] ~ warp(edited[t], flow), so what is left is flicker or drift. Pixels failing
    the forward-backward check (occluded or disoccluded), or whose flow leaves the frame, are excluded: nothing there
    can be predicted from frame t. A pair with no valid pixel gives NaN. Measuring flow on the source (not on the edit)
    keeps the yardstick the same for every method being compared.
    """
    return warp_errors([edited], source, method=method)[0]


def warp_errors(clips: Sequence[np.ndarray], source: np.ndarray, *, method: FlowMethod = "dis") -> list[np.ndarray]:
    """`warp_error` of each clip, the source's flows computed once for all of them (a result and its ground truth)."""
    clips = [_match(c, source, "source")[0] for c in clips]
    source = _match(clips[0], source, "source")[1]
    return along_flow([lambda t, c=c: c[t].astype(np.float32) for c in clips], source, method=method)


def temporal_flicker(edited: np.ndarray, reference: np.ndarray, source: np.ndarray, *, method: FlowMethod = "dis"
                     ) -> np.ndarray:  # fmt: skip
    """Per consecutive pair, (T - 1,): how much the error e = edited - reference changes from frame to frame along the
    source's motion, mean |e[t+1] - warp(e[t])| in [0, 1] units over the pixels `warp_error` trusts.

    The flicker of a result *beyond* its ground truth's: 0 for the truth itself, and for any error that moves with
    the footage (a wrong colour or a misdrawn texture carried along steadily is wrong, not flickering); it grows with
    per-frame noise, a boiling texture or popping fill. Following the motion matters: without it, a sharp texture
    that moves correctly but differs from the truth's would count as flicker wherever the camera moves.
    """
    edited, reference = _match(edited, reference, "reference")
    source = _match(edited, source, "source")[1]
    return along_flow([lambda t: edited[t].astype(np.float32) - reference[t]], source, method=method)[0]


def along_flow(frames: Sequence[Callable[[int], np.ndarray]], source: np.ndarray, *, method: FlowMethod = "dis"
               ) -> list[np.ndarray]:  # fmt: skip
    """For each clip given as a function t -> (H, W, 3) float32 frame: per consecutive pair, (T - 1,), the mean
    |f(t+1) - warp(f(t))| / 255 over the pixels where the source's flow (t+1 -> t) is reliable (forward-backward
    check, inside the frame); NaN for a pair with none. One pass of flows serves every clip."""
    errors = [np.full(max(len(source) - 1, 0), np.nan, dtype=np.float64) for _ in frames]
    for t in range(len(source) - 1):
        flow_next_prev = optical_flow(source[t + 1], source[t], method=method)
        flow_prev_next = optical_flow(source[t], source[t + 1], method=method)
        valid = ~(occlusion_mask(flow_next_prev, flow_prev_next) | outside_frame(flow_next_prev))
        if not valid.any():
            continue
        for frame, out in zip(frames, errors):
            predicted = warp(frame(t), flow_next_prev)  # float: no rounding error added by the warp
            diff = np.abs(frame(t + 1) - predicted).mean(axis=2) / 255.0
            out[t] = float(diff[valid].mean())
    return errors


def evaluate_clip(
    edited: np.ndarray,
    source: np.ndarray | None = None,
    reference: np.ndarray | None = None,
    *,
    prompt: str | None = None,
    clip_scorer: ClipScorer | None = None,
) -> dict[str, Any]:
    """Every metric that the inputs allow, as a JSON-ready dict; a metric that cannot be computed is None.

    Returns {"psnr", "ssim", "color_shift" (means against `reference`), "warp_error" (mean along `source`'s flow),
    "clip_consistency" (mean CLIP cosine of consecutive frames), "clip_text" (mean CLIP-T, needs `prompt` too),
    "per_frame": {key: list or None for each of PER_FRAME_KEYS}, "frames": T}. Per-frame PSNR is capped at
    PSNR_CAP_DB before averaging and in the lists, so the output never holds inf; NaN (e.g. warp error of a pair with
    no reliable flow) is skipped by the means and written as None.
    """
    # 1. Check inputs; bring every other clip to the edited clip's grid once
    edited = _check_clip(edited, "edited clip")
    if reference is not None:
        _, reference = _match(edited, reference, "reference")
    if source is not None:
        _, source = _match(edited, source, "source")
    per_frame: dict[str, list | None] = {k: None for k in PER_FRAME_KEYS}
    result: dict[str, Any] = {}

    # 2. Fidelity to the ground truth
    if reference is not None:
        per_frame["psnr"] = np.minimum(psnr(edited, reference), PSNR_CAP_DB).tolist()
        per_frame["ssim"] = ssim(edited, reference).tolist()
        per_frame["color_shift"] = color_shift(edited, reference).tolist()

    # 3. Temporal consistency along the source's motion
    if source is not None:
        per_frame["warp_error"] = warp_error(edited, source).tolist()

    # 4. CLIP: frame consistency always (with a scorer), text alignment only with a prompt
    if clip_scorer is not None:
        per_frame["clip_consistency"] = clip_scorer.frame_consistency(edited)["per_frame"]
        if prompt:
            per_frame["clip_text"] = clip_scorer.text_alignment(edited, prompt).tolist()

    # 5. Means, with NaN skipped and non-finite values turned into None
    for key in PER_FRAME_KEYS:
        result[key] = _nanmean(per_frame[key])
    result["per_frame"] = {k: None if v is None else [_finite(x) for x in v] for k, v in per_frame.items()}
    result["frames"] = int(len(edited))
    return result


def format_metrics(metrics: dict[str, Any]) -> str:
    """A short two-column table of the mean metrics, "n/a" where a metric was not computed."""
    rows = [
        ("PSNR (dB)", "psnr", "{:.2f}"),
        ("SSIM", "ssim", "{:.4f}"),
        ("warp error", "warp_error", "{:.4f}"),
        ("colour shift", "color_shift", "{:.2f}"),
        ("CLIP consistency", "clip_consistency", "{:.4f}"),
        ("CLIP-T", "clip_text", "{:.2f}"),
    ]
    lines = [f"{'metric':<18} {'value':>10}"]
    for label, key, fmt in rows:
        if key in metrics:
            value = metrics[key]
            lines.append(f"{label:<18} {'n/a' if value is None else fmt.format(value):>10}")
    return "\n".join(lines)


def _nanmean(values: list | None) -> float | None:
    if values is None:
        return None
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def _check_clip(clip: np.ndarray, what: str) -> np.ndarray:
    clip = np.asarray(clip)
    if clip.ndim != 4 or clip.shape[-1] != 3:
        raise UsageError(f"{what} must be (T, H, W, 3), got shape {clip.shape}; read it with magicprop.video.read_video")
    if clip.dtype != np.uint8:
        raise UsageError(
            f"{what} must be uint8 (0..255), got {clip.dtype}; convert with np.clip(x, 0, 255).astype(np.uint8)"
        )
    if len(clip) == 0:
        raise UsageError(f"{what} has no frames; check the video file")
    return clip


def _match(edited: np.ndarray, other: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Check both clips; resize `other` to `edited`'s frame size if needed. Frame counts must already agree."""
    edited = _check_clip(edited, "edited clip")
    other = _check_clip(other, what)
    if len(edited) != len(other):
        raise UsageError(
            f"the edited clip has {len(edited)} frames but the {what} has {len(other)}; trim both to the same frames"
        )
    if edited.shape[1:3] != other.shape[1:3]:
        from ..video import resize_frames

        size = tuple(edited.shape[1:3])
        logger.info("resizing the %s from %dx%d to the edited clip's %dx%d", what, *other.shape[1:3], *size)
        other = resize_frames(other, size)
    return edited, other
