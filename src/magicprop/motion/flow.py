"""Dense optical flow, backward warping and the forward-backward occlusion check.

Shared by the warp-error metric (`evaluation.warp_error`), the flow-propagation baseline (`baselines.propagate_flow`) and
PropDPM's flow fusion (`propagation.fuse_with_flow`), so that all use exactly the same motion estimate.

Conventions (OpenCV's): a flow field is (H, W, 2) float32 with channel 0 = dx (columns) and channel 1 = dy (rows).
`optical_flow(a, b)` returns the flow *from a to b*: a[y, x] ~ b[y + dy, x + dx]. `warp(b, optical_flow(a, b))` is then
a re-rendering of `a` from the pixels of `b` (a backward warp), which is what every caller needs: for each output pixel
we look up where it came from, so the result has no holes.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

from ..errors import UsageError

FlowMethod = Literal["dis", "farneback"]
FLOW_METHODS: tuple[str, ...] = ("dis", "farneback")


def optical_flow(a: np.ndarray, b: np.ndarray, *, method: FlowMethod = "dis") -> np.ndarray:
    """Flow from `a` to `b` (uint8 RGB (H, W, 3) or grey (H, W)) as (H, W, 2) float32: a[y, x] ~ b[y + fy, x + fx].

    "dis" is OpenCV's Dense Inverse Search (Kroeger et al. 2016) with the MEDIUM preset: fast on CPU and accurate to a
    fraction of a pixel on textured content. "farneback" (polynomial expansion) is smoother and slower; it is offered
    for comparison and for content where DIS's patch matching fails (large flat regions).
    """
    if a.shape != b.shape:
        raise UsageError(f"optical_flow needs two frames of the same shape, got {a.shape} and {b.shape}; resize one first")
    ga, gb = _grey(a), _grey(b)
    if method == "dis":
        # A fresh instance per call: DIS objects keep state between calls and are not safe to share across threads.
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        flow = dis.calc(ga, gb, None)
    elif method == "farneback":
        flow = cv2.calcOpticalFlowFarneback(
            ga, gb, None, pyr_scale=0.5, levels=4, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0
        )
    else:
        raise UsageError(f"unknown optical flow method {method!r}; choose one of {', '.join(FLOW_METHODS)}")
    return np.ascontiguousarray(flow, dtype=np.float32)


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Backward warp: out[y, x] = image[y + fy, x + fx], bilinear, replicating the border.

    Works for uint8 or float images, (H, W) or (H, W, C) (any C, including flow fields themselves); the output keeps
    the input's dtype and shape. Pixels whose source lies outside the frame get the nearest border pixel: callers that
    care (the baseline, the metric) mask them with `outside_frame`.
    """
    h, w = image.shape[:2]
    if flow.shape != (h, w, 2):
        raise UsageError(f"warp needs a (H, W, 2) flow matching the image's {h}x{w}, got {flow.shape}")
    map_x, map_y = _sample_grid(flow)
    if image.ndim == 3 and image.shape[2] > 4:
        # cv2.remap handles at most 4 channels; warp wider stacks in slices of 4.
        parts = [warp(image[..., i : i + 4], flow) for i in range(0, image.shape[2], 4)]
        return np.concatenate(parts, axis=2)
    src = image.astype(np.float32) if image.dtype not in (np.uint8, np.float32) else image
    out = cv2.remap(src, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if image.ndim == 3 and out.ndim == 2:  # OpenCV drops a trailing channel axis of size 1
        out = out[..., None]
    return out.astype(image.dtype, copy=False)


def occlusion_mask(
    flow_ab: np.ndarray, flow_ba: np.ndarray, *, alpha1: float = 0.01, alpha2: float = 0.5
) -> np.ndarray:
    """Bool (H, W): True where following `flow_ab` and then `flow_ba` does not return to the start pixel.

    The forward-backward consistency check of Sundaram, Brox and Keutzer (ECCV 2010), Eq. 5: with w = flow_ab(x) and
    w_hat = flow_ba(x + w), a pixel of `a` is occluded in `b` (or its flow is unreliable) when
        |w + w_hat|^2 > alpha1 * (|w|^2 + |w_hat|^2) + alpha2.
    The tolerance grows with the motion because flow errors do. Their second test (motion boundaries) is left out: it
    flags thin structures that are visible in both frames, which would hide real warp errors from the metric.
    """
    if flow_ab.shape != flow_ba.shape or flow_ab.ndim != 3 or flow_ab.shape[2] != 2:
        raise UsageError(f"occlusion_mask needs two (H, W, 2) flows of one shape, got {flow_ab.shape} and {flow_ba.shape}")
    back = warp(flow_ba, flow_ab)  # flow_ba sampled where each pixel of a lands in b
    loop = flow_ab + back
    lhs = np.sum(loop**2, axis=2)
    rhs = alpha1 * (np.sum(flow_ab**2, axis=2) + np.sum(back**2, axis=2)) + alpha2
    return lhs > rhs


def outside_frame(flow: np.ndarray) -> np.ndarray:
    """Bool (H, W): True where x + flow(x) falls outside the frame, so a backward warp has nothing to sample there."""
    map_x, map_y = _sample_grid(flow)
    h, w = flow.shape[:2]
    return (map_x < 0) | (map_x > w - 1) | (map_y < 0) | (map_y > h - 1)


def carry(previous: np.ndarray, flow_tp: np.ndarray, flow_pt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`previous` (an edited frame p) re-rendered at frame t along the source's flow, and where that cannot be trusted.

    Returns (carried, hole): carried = warp(previous, flow_tp), a new array the caller may fill in; hole, bool (H, W), is
    True where the forward-backward check fails (t shows something p did not) or the flow leaves the frame. The flow
    baseline fills holes with stale pixels, flow fusion with PropDPM's rendering: one test, so the two compare fairly.
    """
    carried = warp(previous, flow_tp)
    hole = occlusion_mask(flow_tp, flow_pt) | outside_frame(flow_tp)
    return carried, hole


def _sample_grid(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = flow.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return xs + flow[..., 0].astype(np.float32), ys + flow[..., 1].astype(np.float32)


def _grey(frame: np.ndarray) -> np.ndarray:
    if frame.dtype != np.uint8:
        raise UsageError(
            f"optical_flow needs uint8 frames, got {frame.dtype}; convert with np.clip(x, 0, 255).astype(np.uint8)"
        )
    if frame.ndim == 2:
        return np.ascontiguousarray(frame)
    if frame.ndim == 3 and frame.shape[2] == 3:
        return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
    raise UsageError(f"optical_flow needs (H, W, 3) RGB or (H, W) grey frames, got shape {frame.shape}")
