"""Map geometry shared by the anchored maps and their resolution handling: absolute maps (H, W, 2) float32 of (x, y)
keyframe coordinates, composing them with flows, sampling images through them, and comparing two images' colours."""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np
from numba import njit


@lru_cache(maxsize=8)
def identity_map(h: int, w: int) -> np.ndarray:
    """(H, W, 2) float32 (x, y) of every pixel; read-only because it is shared."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    grid = np.stack([xs, ys], axis=2)
    grid.flags.writeable = False
    return grid


def compose(map_p: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """map_p sampled at x + flow(x), (H, W, 2) float32.

    The displacement map_p - x is what gets interpolated (bilinear, border replicated), not the map itself: where x +
    flow leaves the frame, the map goes on moving with its border's motion instead of sticking to the border, so
    content entering the frame correctly maps outside the keyframe.
    """
    h, w = flow.shape[:2]
    grid = identity_map(h, w)
    at = grid + flow
    disp = cv2.remap(map_p - grid, at[..., 0], at[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return at + disp


def sample(image: np.ndarray, map_: np.ndarray, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """image[map(x)]: a backward warp through an absolute map, border replicated, dtype kept (uint8 saturates)."""
    # the (H, W, 2) map as one two-channel map: the same numbers as two planes, without copying each plane out first
    out = cv2.remap(image, map_, None, interpolation, borderMode=cv2.BORDER_REPLICATE)
    return out[..., None] if image.ndim == 3 and out.ndim == 2 else out


def inside(map_: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """Bool (H, W): the map points into the keyframe."""
    h, w = map_.shape[:2]
    x, y = map_[..., 0], map_[..., 1]
    return (x >= margin) & (x <= w - 1 - margin) & (y >= margin) & (y <= h - 1 - margin)


def sample_points(image: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """(N, C) float32: image bilinearly sampled at the listed points, border replicated (remap on an (N/1024, 1024) map:
    OpenCV wants each side of a map under 32767)."""
    n = len(xs)
    rows = max(-(-n // 1024), 1)
    mx, my = np.zeros(rows * 1024, np.float32), np.zeros(rows * 1024, np.float32)
    mx[:n], my[:n] = xs, ys
    out = cv2.remap(image, mx.reshape(rows, 1024), my.reshape(rows, 1024), cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
    return out.reshape(rows * 1024, -1)[:n].astype(np.float32)


def colour_mismatch(a: np.ndarray, b: np.ndarray, threshold: float, blur: float, window: float) -> np.ndarray:
    """Bool (H, W): the two uint8 RGB images disagree: the local RMS (Gaussian window `window`) of the RGB distance
    between their slightly blurred versions (`blur`) is above `threshold`.

    The blur forgives codec noise and sub-pixel misregistration at edges; the local RMS, unlike a difference of more
    blurred images, does not let a wrong texture of the right mean colour pass (a grey checked square over a texture).
    """
    return local_distance(a, b, blur, window) > threshold**2


def local_distance(a: np.ndarray, b: np.ndarray, blur: float, window: float) -> np.ndarray:
    """(H, W) float32: the local mean (Gaussian window `window`) of the squared RGB distance between two uint8 RGB
    images blurred by `blur`, what `colour_mismatch` thresholds."""
    d2 = np.empty(a.shape[:2], np.float32)
    _squared_distance(cv2.GaussianBlur(a, (0, 0), blur), cv2.GaussianBlur(b, (0, 0), blur), d2)
    return cv2.GaussianBlur(d2, (0, 0), window)


@njit(cache=True, nogil=True)
def _squared_distance(a, b, out):  # pragma: no cover - compiled
    """out = |a - b|^2 summed over the channels, float32, of two (H, W, C) uint8 images: one pass instead of numpy's
    five full-size float temporaries (the sums are of integers below 2^24: exact in any order)."""
    for y in range(a.shape[0]):
        for x in range(a.shape[1]):
            s = np.float32(0)
            for c in range(a.shape[2]):
                d = np.float32(abs(np.int32(a[y, x, c]) - np.int32(b[y, x, c])))
                s += d * d
            out[y, x] = s
