"""Full resolution: what the `flow` propagator measures at a reduced size, and how it is brought back up.

A frame's anchored map is motion, and motion is smooth: the frame-to-frame flows, the chained maps and their
correction against the keyframe are measured on the clip shrunk to at most `MapSettings.measure_pixels` (a 1080p clip at
~0.35 Mpx: a twentieth of the work), and each map is brought up to the source's size. What is *seen* stays at full
resolution: the keyframe is sampled through the full-size map, and whether it explains a pixel (its colours agree with
the frame's) is checked there, so the validity mask is as sharp as the footage.

Maps are upsampled as displacements (bilinear, half-pixel centres, scaled by the size ratio), except at motion
boundaries: where the four measured neighbours of a pixel disagree by more than two pixels, a blend of two motions is
right for neither, so the pixel takes whichever of the four makes the keyframe look most like the frame over its 3x3
neighbourhood (`_upsample_map`). The occlusion mask is upsampled the same careful way: fully occluded or
fully visible neighbourhoods keep their label, and in between (the boundary band) the full-size colour check decides.
"""

from __future__ import annotations

import math
import threading

import cv2
import numpy as np
from numba import njit

from .geometry import identity_map, sample_points


MIN_MEASURE_SIDE = 32  # a measured side is never shrunk below this (DIS needs room for its pyramid)
# neighbours whose displacements (in full-size px) spread by more than this are a motion boundary (`_upsample_map`):
# flat regions, where the flow is noise, spread by a pixel or so (16% of the cells of a 1080p clip measured at 0.35 Mpx;
# 3% spread by more than 2 px), and a blend there is wrong by half the spread at most
BOUNDARY_SPREAD = 2.0


def measure_size(height: int, width: int, pixels: int) -> tuple[int, int]:
    """(h, w) at which a (height, width) clip's maps are measured: the clip's own size when it holds at most `pixels`
    pixels (or `pixels` is 0), else the aspect kept at `pixels`, no side under `MIN_MEASURE_SIDE`."""
    if pixels <= 0 or height * width <= pixels:
        return height, width
    s = math.sqrt(pixels / (height * width))
    return min(height, max(MIN_MEASURE_SIDE, round(height * s))), min(width, max(MIN_MEASURE_SIDE, round(width * s)))


def shrink(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An image (uint8 or float, any channels) at (h, w), area-averaged (the anti-aliased way down); the same array
    when it is already that size."""
    if image.shape[:2] == tuple(size):
        return image
    out = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return out.reshape(size + image.shape[2:])


def enlarge(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An image at (h, w), bilinear (half-pixel centres): for smooth fields (displacements, gains, masks as floats)."""
    if image.shape[:2] == tuple(size):
        return image
    out = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return out.reshape(size + image.shape[2:])


class Resized:
    """A clip's frames at another size, resized when read (`shrink`), read-only: what `AnchoredChain` measures on.
    Behaves like a (T, h, w, 3) uint8 array for indexing one frame at a time (the contract of a lazy clip); the last
    `keep` frames read are kept, as a chain reads each frame two or three times (flows, correction, checks), from two
    threads (a lock guards the cache; a frame resized twice is the same frame)."""

    def __init__(self, clip, size: tuple[int, int], keep: int = 6):
        self.clip, self.size, self.keep = clip, (int(size[0]), int(size[1])), keep
        self.shape = (len(clip), *self.size, *clip.shape[3:])
        self.dtype, self.ndim = clip.dtype, len(self.shape)
        self._cache: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, t):
        if not isinstance(t, (int, np.integer)):
            raise TypeError(f"a resized clip is read one frame at a time (an integer index), got {type(t).__name__}")
        if not -len(self) <= t < len(self):  # as an array does: iterating a clip ends here
            raise IndexError(f"frame {t} is outside the clip's {len(self)} frames")
        t = int(t) % len(self)
        with self._lock:
            frame = self._cache.get(t)
        if frame is None:
            frame = shrink(np.asarray(self.clip[t]), self.size)
            frame.flags.writeable = False  # shared between readers
            with self._lock:
                self._cache[t] = frame
                while len(self._cache) > self.keep:
                    self._cache.pop(next(iter(self._cache)))
        return frame


def upsample_map(map_small: np.ndarray, size: tuple[int, int], key_grey: np.ndarray, frame_grey: np.ndarray
                 ) -> np.ndarray:  # fmt: skip
    """(H, W, 2) float32 absolute map into the full-size keyframe, from one measured at a smaller size into the keyframe
    at that size. key_grey / frame_grey: (H, W) uint8 grey source keyframe and frame, read at motion boundaries only."""
    hs, ws = map_small.shape[:2]
    h, w = size
    if (hs, ws) == (h, w):
        return map_small
    disp = np.ascontiguousarray(map_small - identity_map(hs, ws))
    disp[..., 0] *= w / ws  # small px -> full px
    disp[..., 1] *= h / hs
    out = np.empty((h, w, 2), np.float32)
    _upsample_map(disp, np.float32(hs / h), np.float32(ws / w), key_grey, frame_grey, np.float32(BOUNDARY_SPREAD), out)
    return out


@njit(cache=True, nogil=True)
def _grey_at(img, x, y):  # pragma: no cover - compiled
    """img (H, W) uint8 bilinear at (x, y), border replicated."""
    h, w = img.shape
    x = min(max(x, 0.0), w - 1.0)
    y = min(max(y, 0.0), h - 1.0)
    x0, y0 = min(int(x), max(w - 2, 0)), min(int(y), max(h - 2, 0))
    x1, y1 = min(x0 + 1, w - 1), min(y0 + 1, h - 1)
    fx, fy = x - x0, y - y0
    top = img[y0, x0] + fx * (float(img[y0, x1]) - img[y0, x0])
    bottom = img[y1, x0] + fx * (float(img[y1, x1]) - img[y1, x0])
    return top + fy * (bottom - top)


@njit(cache=True, nogil=True)
def _sad(key, frame, x, y, dx, dy):  # pragma: no cover - compiled
    """|key(x + d) - frame(x)|, grey, summed over the 3x3 neighbourhood of pixel (x, y) with weights [1, 2, 1] x [1, 2,
    1]: the pixel itself counts most (next to a boundary, a neighbour may well move the other way)."""
    h, w = frame.shape
    s = 0.0
    for v in range(-1, 2):
        yy = min(max(y + v, 0), h - 1)
        for u in range(-1, 2):
            xx = min(max(x + u, 0), w - 1)
            s += (2 - abs(u)) * (2 - abs(v)) * abs(_grey_at(key, xx + dx, yy + dy) - float(frame[yy, xx]))
    return s


@njit(cache=True, nogil=True)
def _upsample_map(disp, sy, sx, key, frame, spread, out):  # pragma: no cover - compiled
    """out (H, W, 2): x + disp bilinear at the pixel's position on the measured grid (disp already in full-size px).
    Where the four measured neighbours spread by more than `spread` px, the neighbour whose motion makes the keyframe
    match the frame best over 3x3 replaces the blend: a smooth motion never strains that much between two measured
    pixels, so this is a motion boundary (or a flat region, where any of them will do). Column positions are computed
    once; each row reads its two measured rows."""
    hs, ws = disp.shape[0], disp.shape[1]
    h, w = out.shape[0], out.shape[1]
    x0s, x1s, fxs = np.empty(w, np.int64), np.empty(w, np.int64), np.empty(w, np.float32)
    for x in range(w):
        xs = min(max((x + 0.5) * sx - 0.5, 0.0), ws - 1.0)
        x0s[x] = min(int(xs), max(ws - 2, 0))
        x1s[x] = min(x0s[x] + 1, ws - 1)
        fxs[x] = xs - x0s[x]
    cand = np.empty((4, 2), np.float32)
    for y in range(h):
        ys = min(max((y + 0.5) * sy - 0.5, 0.0), hs - 1.0)
        y0 = min(int(ys), max(hs - 2, 0))
        y1 = min(y0 + 1, hs - 1)
        fy = np.float32(ys - y0)
        for x in range(w):
            x0, x1, fx = x0s[x], x1s[x], fxs[x]
            cand[0, 0], cand[0, 1] = disp[y0, x0, 0], disp[y0, x0, 1]
            cand[1, 0], cand[1, 1] = disp[y0, x1, 0], disp[y0, x1, 1]
            cand[2, 0], cand[2, 1] = disp[y1, x0, 0], disp[y1, x0, 1]
            cand[3, 0], cand[3, 1] = disp[y1, x1, 0], disp[y1, x1, 1]
            bx = (1 - fy) * ((1 - fx) * cand[0, 0] + fx * cand[1, 0]) + fy * ((1 - fx) * cand[2, 0] + fx * cand[3, 0])
            by = (1 - fy) * ((1 - fx) * cand[0, 1] + fx * cand[1, 1]) + fy * ((1 - fx) * cand[2, 1] + fx * cand[3, 1])
            lo_x = min(min(cand[0, 0], cand[1, 0]), min(cand[2, 0], cand[3, 0]))
            hi_x = max(max(cand[0, 0], cand[1, 0]), max(cand[2, 0], cand[3, 0]))
            lo_y = min(min(cand[0, 1], cand[1, 1]), min(cand[2, 1], cand[3, 1]))
            hi_y = max(max(cand[0, 1], cand[1, 1]), max(cand[2, 1], cand[3, 1]))
            if hi_x - lo_x > spread or hi_y - lo_y > spread:
                cost = np.inf
                for c in range(4):
                    d = _sad(key, frame, x, y, cand[c, 0], cand[c, 1])
                    if d < cost:
                        cost, bx, by = d, cand[c, 0], cand[c, 1]
            out[y, x, 0] = x + bx
            out[y, x, 1] = y + by


def detail_fill(rendered: np.ndarray, valid: np.ndarray, filled: np.ndarray, frame: np.ndarray, frame_small: np.ndarray,
                gain: np.ndarray | None, feather: float) -> np.ndarray:  # fmt: skip
    """(H, W, 3) uint8: `rendered` where valid; elsewhere the frame filled at the measuring size (`filled`) enlarged,
    plus the detail of source frame t that shrinking it lost, carried into the edit through the local gain A of the
    keyframe pair (`gain`, at the measuring size, sampled at each pixel's map): up(F) + A (S_t - up(shrink(S_t))). So
    the fill's edit is the one patch synthesis chose, and its fine detail is the footage's. Rendered pixels fade into
    it over `feather` px inside the valid region, as in `fill.fallback_estimate`."""
    weight = cv2.distanceTransform(valid.astype(np.uint8), cv2.DIST_L2, 3)
    weight /= np.float32(feather + 1)  # in place, >= 0: only the pixels below 1 are read, so none needs clipping
    ys, xs = np.nonzero(weight < 1)
    hs, ws = filled.shape[:2]
    # each full-size pixel's position on the measured grid (half-pixel centres)
    px = (xs + 0.5) * np.float32(ws / valid.shape[1]) - 0.5
    py = (ys + 0.5) * np.float32(hs / valid.shape[0]) - 0.5
    out_pixels = sample_points(filled, px, py)  # (N, 3) float32
    if gain is not None:
        detail = frame[ys, xs].astype(np.float32) - sample_points(frame_small, px, py)  # (N, 3)
        a = sample_points(gain, px, py).reshape(-1, 3, 3)  # (N, out, in)
        out_pixels += np.einsum("nci,ni->nc", a, detail)
    w = weight[ys, xs][:, None]
    out = rendered.copy()
    out[ys, xs] = np.clip(np.rint(w * rendered[ys, xs] + (1 - w) * out_pixels), 0, 255).astype(np.uint8)
    return out
