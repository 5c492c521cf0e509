"""How an edit responds to its source, near each pixel: a local affine colour model learnt from the keyframe pair.

Warping the edited keyframe E_k to frame t reproduces the keyframe's appearance, not frame t's: where the source
itself changed between the keyframe and t (shading as a surface turns, lighting, sensor noise, the fine detail that
resampling softened, a fraction of a pixel of misregistration), the warp keeps the old look. If the edit is locally
affine in the source colour, E ~ A(x) S + b(x) near x, then the edit of frame t is, to first order,

    E_t(x) ~ E_k(m(x)) + A(m(x)) (S_t(x) - S_k(m(x)))          m: frame t's anchored map into the keyframe

so the change of the *source* is carried into the edit through the local gain A. A is fitted from the keyframe pair
alone by a colour guided filter (He et al. 2013, "Guided Image Filtering", section 3.5): a ridge regression of E on S in
every (2r + 1)^2 window, averaged over the windows covering a pixel. The ridge term eps makes A fall to 0 where the edit
does not follow the source (flat cartoon fills, a painted-over region, an unrelated object): there the warp is kept as
it is. Measured on real clips (256 px, 48 frames, keyframe 0), inside the pixels the keyframe explains: +5 to +8 dB on a
colour grade, +1.1 to +1.6 on a pencil sketch, +0.1 to +0.7 on cartoon and Kuwahara looks.

The edit's response to the source need not be the same at every scale: a pencil sketch normalises away a surface's
coarse brightness and amplifies its fine texture; a colour curve's local slope is steeper or flatter than the chord
over a window's range; a cartoon keeps a region's shading but drops its texture. So the warp carries the source's
change in two bands (`LocalAffine.bands`): A_c fitted on the pair's low-pass (a Gaussian of `detail_sigma`) and A_f
on what the low-pass leaves,

    E_t(x) ~ E_k(m) + A_c (L_t(x) - L_k(m)) + A_f (H_t(x) - H_k(m)),   S = L + H

measured on real clips at their own size (koolshooters 960x720 and bear 854x480, 12-16 frames, keyframe 0), against
one band: +1.6 to +4.7 dB on the colour grades of koolshooters (+0.1 to +0.7 on bear), +0.4 to +0.7 on the pencil
sketch, +1.3 / +0.3 on bright->cyan, +0.1 / +0.4 on the Kuwahara look, the cartoon within -0.06 dB, with less
flicker on nearly every case.

Patch synthesis uses the same model for the pixels it fills (`patches.synthesize(appearance=...)`): a patch copied
from keyframe position s to pixel x contributes E_k(s) + A(s) (S_t(x) - S_k(s)), so new content takes the edit's
response to *its* colours, not the colours of the keyframe patch it borrowed.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import cv2
import numpy as np
from numba import njit

from .maps import sample
from .resolution import enlarge, shrink


@dataclass(frozen=True)
class AppearanceSettings:
    """The local affine model's window and ridge term; both enter the work folder's fingerprint."""

    # Window radius in px at 256 px on the short side, scaled with the frame (a window covers the same content at any
    # size), never under 2 px (a 3x3 window of a smooth surface varies too little to fit anything). Measured on real
    # clips, 2/4/8/16: larger windows help global grades (+1 to +2 dB from 4 to 16) and cost sketches and water as much.
    radius: float = 4.0
    # Ridge term on the [0, 1] colour scale: a window whose source varies by less than ~sqrt(eps) (3 grey levels) gets
    # a gain pulled towards 0. Against 1e-3: +0.3 to +3.5 dB on grades and sketches, within 0.3 dB on the rest.
    eps: float = 1e-4
    # The warp's two bands (`LocalAffine.bands`): the Gaussian that splits them, px at 256 px on the short side, scaled
    # like the window (0: one band, the model above alone); and the detail band's ridge term, smaller since that band
    # varies less. Measured on koolshooters (960x720) and bear (854x480): sigma 1 / 1.5 / 2.5 gave the sketch 33.16 /
    # 33.23 / 33.32 and 26.60 / 26.74 / 27.10 dB, but bear's cartoon 22.60 / 22.50 / 22.43 and its grade 42.84 / 42.82
    # / 42.52; a ridge of 1e-5 instead of 1e-6 lost 0.8-1.6 dB on koolshooters' grades.
    detail_sigma: float = 1.5
    detail_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.radius <= 0 or self.eps <= 0 or self.detail_sigma < 0 or self.detail_eps <= 0:
            raise ValueError(f"AppearanceSettings: radius, eps and detail_eps must be > 0 and detail_sigma >= 0 (0: one "
                             f"band), got {self.radius}, {self.eps}, {self.detail_eps} and {self.detail_sigma}")  # fmt: skip

    def window(self, height: int, width: int) -> int:
        return max(2, int(round(self.radius * min(height, width) / 256.0)))

    def low_pass(self, image: np.ndarray) -> np.ndarray:
        """float32 image (any channels) blurred by `detail_sigma`, scaled with the image like the window."""
        sigma = self.detail_sigma * min(image.shape[:2]) / 256.0
        return cv2.GaussianBlur(image.astype(np.float32, copy=False), (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


class LocalAffine:
    """E ~ A(x) S + b(x) near every pixel x of a keyframe pair (colour guided filter): `gain` A and `base` E - A S.

    With `fit_size` smaller than the pair, the model is fitted on the pair shrunk to it (A is smooth: its window spans
    the same content at any size, and a 4K fit would hold ~2 GB of per-pixel 3x3 matrices): `gain` and `offset` are at
    `fit_size`, and `base` = E - A S at the pair's own size, with A enlarged, so the keyframe's full detail stays in it.
    """

    def __init__(self, source: np.ndarray, edited: np.ndarray, settings: AppearanceSettings = AppearanceSettings(), *,
                 fit_size: tuple[int, int] | None = None):  # fmt: skip
        size = source.shape[:2] if fit_size is None else (int(fit_size[0]), int(fit_size[1]))
        source_fit, edited_fit = shrink(source, size), shrink(edited, size)
        s = source_fit.astype(np.float32) / 255  # (h, w, 3), the regression runs on [0, 1] so eps has one meaning
        e = edited_fit.astype(np.float32) / 255
        self.settings = settings
        self.gain, offset = _local_gain(s, e, settings.eps, settings.window(*s.shape[:2]))  # (h, w, 9) at the fit size
        self.offset = offset * 255  # b, kept for inspection and tests (E ~ A S + b up to the residual)
        self._fit = (source_fit, edited_fit)
        self._pair = (source, edited)  # the pair at its own size: `base` and `bands` are built from it when first asked
        self._base: np.ndarray | None = None
        self._bands: Bands | None = None

    @property
    def base(self) -> np.ndarray:
        """E - A S in 0..255 at the pair's size, built once when first asked (a two-band render at full size never
        asks: at 4K it is 100 MB). With the gain, a voted patch is base(s) + A(s) S_t(x) (`patches.synthesize`)."""
        if self._base is None:
            self._base = _subtract_gain(self._pair[1], self.gain, self._pair[0])
        return self._base

    @property
    def fit_size(self) -> tuple[int, int]:
        return self.gain.shape[:2]

    def at_fit_size(self) -> "LocalAffine":
        """This model at its fit size (`base` there too): what patch synthesis at the measuring size reads."""
        if self._pair[0].shape[:2] == self.fit_size:
            return self
        if getattr(self, "_small", None) is None:  # built once: a scaled render asks for it every frame it fills
            small = object.__new__(LocalAffine)
            small.gain, small.offset, small._fit, small.settings = self.gain, self.offset, self._fit, self.settings
            small._pair, small._base, small._bands = self._fit, None, None
            self._small = small
        return self._small

    def bands(self) -> "Bands | None":
        """The model in two bands (`Bands`, fitted once, when first asked), or None with `detail_sigma` 0.

        A_c is fitted on the pair's low-pass L (`AppearanceSettings.low_pass`) and A_f on the rest H = S - L, both at
        the fit size. E_k's change with the source, A_c dL + A_f dH, is A_f dS - (A_f - A_c) dL, so a frame renders as
        base(m) + A_f(m) S_t - X(m) L_t with X = A_f - A_c and base = E_k - A_f S_k + X L_k: one sharp sample of base,
        plus the frame's own colour and its low-pass at the fit size, each through a gain that is smooth."""
        if self.settings.detail_sigma <= 0:
            return None
        if self._bands is None:
            s8, e8 = self._fit
            s, e = s8.astype(np.float32) / 255, e8.astype(np.float32) / 255
            low_s, low_e = self.settings.low_pass(s), self.settings.low_pass(e)
            r = self.settings.window(*s.shape[:2])
            coarse, _ = _local_gain(low_s, low_e, self.settings.eps, r)
            fine, _ = _local_gain(s - low_s, e - low_e, self.settings.detail_eps, r)
            excess = fine - coarse
            source, edited = self._pair
            base = _subtract_gain(edited, fine, source)
            _apply_enlarged(excess, enlarge(self.settings.low_pass(s8), source.shape[:2]), out=base)  # += X L_k
            self._bands = Bands(np.concatenate([fine, excess], axis=2), base)
        return self._bands

    def predict(self, source: np.ndarray) -> np.ndarray:
        """(H, W, 3) float32 A S + b at the keyframe's own pixels: the model's fit, without the residual detail."""
        size = source.shape[:2]
        return _apply(enlarge(self.gain, size), source.astype(np.float32)) + enlarge(self.offset, size)

    def gain_at(self, map_: np.ndarray) -> np.ndarray:
        """(h, w, 9) float32: A at the keyframe positions a frame's map points to, on the gain's own grid (smooth by
        construction: bilinear). A map of another size than the fit (the full-size one) is shrunk to it first."""
        return _sample_field(self.gain, map_)


@dataclass
class Bands:
    """`LocalAffine.bands`: the detail band's gain A_f and the excess X = A_f - A_c over the coarse band's, side by side
    in `gains` ((h, w, 18) at the fit size: one remap samples both), and base = E_k - A_f S_k + X L_k (0..255) at the
    pair's own size."""

    gains: np.ndarray
    base: np.ndarray

    @property
    def fine(self) -> np.ndarray:
        return self.gains[..., :9]

    @property
    def excess(self) -> np.ndarray:
        return self.gains[..., 9:]

    def at(self, map_: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(A_f, X) at the keyframe positions a frame's map points to, on their own grid (as `LocalAffine.gain_at`)."""
        both = _sample_field(self.gains, map_)
        return np.ascontiguousarray(both[..., :9]), np.ascontiguousarray(both[..., 9:])


def _sample_field(field: np.ndarray, map_: np.ndarray) -> np.ndarray:
    """A smooth per-pixel field at the fit size (gains), bilinear at the keyframe positions map_ points to; a map of
    another size (the full-size one) is shrunk to the field's first."""
    if map_.shape[:2] != field.shape[:2]:
        map_ = shrink_map(map_, field.shape[:2])
    return sample(field, map_, cv2.INTER_LINEAR)


def _local_gain(s: np.ndarray, e: np.ndarray, eps: float, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """((h, w, 9) gain A, (h, w, 3) offset b, both float32 on the [0, 1] scale): the ridge regression of e on s in every
    (2 radius + 1)^2 window, each averaged over the windows covering a pixel (the guided filter's second step)."""
    h, w = s.shape[:2]
    size = (2 * radius + 1,) * 2
    box = lambda a: cv2.boxFilter(a, -1, size, borderType=cv2.BORDER_REFLECT)  # noqa: E731 - window means
    mean_s, mean_e = box(s), box(e)
    cov = np.empty((h, w, 3, 3), np.float32)  # covariance of the source colour in each window
    cross = np.empty((h, w, 3, 3), np.float32)  # [..., out channel c, in channel i]: cov(E_c, S_i)
    for i in range(3):
        for j in range(i, 3):
            cov[..., i, j] = cov[..., j, i] = box(s[..., i] * s[..., j]) - mean_s[..., i] * mean_s[..., j]
        for c in range(3):
            cross[..., c, i] = box(s[..., i] * e[..., c]) - mean_s[..., i] * mean_e[..., c]
    gain = _matmul3(cross, _inverse3(cov + np.float32(eps) * np.eye(3, dtype=np.float32)))  # (h, w, 3, 3)
    offset = mean_e - _apply(gain.reshape(h, w, 9), mean_s)
    return box(gain.reshape(h, w, 9)), box(offset)  # row-major (out, in)


def _apply_enlarged(gain: np.ndarray, colours: np.ndarray, out: np.ndarray) -> None:
    """out += the gain (h, w, 9), enlarged to the colours' size one plane at a time, times the colours (float32, all
    (H, W, 3)): no full-size temporary but one plane (at 4K a whole product would be 100 MB)."""
    size = colours.shape[:2]
    for c in range(3):
        for i in range(3):
            out[..., c] += enlarge(np.ascontiguousarray(gain[..., 3 * c + i]), size) * colours[..., i]


def shrink_map(map_: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w, 2) float32: an absolute map between two frames of map_'s size, as a map between the frames shrunk to
    `size` (area-averaged, coordinates rescaled about the half-pixel centres)."""
    h, w = map_.shape[:2]
    out = shrink(map_, size).copy()
    out[..., 0] = (out[..., 0] + 0.5) * (size[1] / w) - 0.5
    out[..., 1] = (out[..., 1] + 0.5) * (size[0] / h) - 0.5
    return out


def _subtract_gain(edited: np.ndarray, gain: np.ndarray, source: np.ndarray) -> np.ndarray:
    """(H, W, 3) float32 E - A S at E's size, A enlarged one plane at a time (a 4K frame's 9 planes would be 300 MB)."""
    out = edited.astype(np.float32)
    _apply_enlarged(-gain, source, out)  # the same floats as subtracting: negation is exact
    return out


def _inverse3(m: np.ndarray) -> np.ndarray:
    """(..., 3, 3) inverses by cofactors: one vectorised expression, ~10x faster than np.linalg.inv on 512x512
    matrices (which pays a LAPACK call per matrix); the ridge keeps every matrix well conditioned."""
    a, b, c = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    d, e, f = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    g, h, i = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    cof = np.stack([e * i - f * h, c * h - b * i, b * f - c * e,
                    f * g - d * i, a * i - c * g, c * d - a * f,
                    d * h - e * g, b * g - a * h, a * e - b * d], axis=-1).reshape(m.shape)  # fmt: skip  (adjugate)
    det = a * cof[..., 0, 0] + b * cof[..., 1, 0] + c * cof[..., 2, 0]
    return cof / det[..., None, None]


def _matmul3(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(..., 3, 3) products, written out (numpy's batched matmul is slow for millions of 3x3 products)."""
    return np.stack([sum(x[..., r, k] * y[..., k, col] for k in range(3)) for r in range(3) for col in range(3)],
                    axis=-1).reshape(x.shape)  # fmt: skip


def _apply(gain: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """(H, W, 3) float32: the per-pixel 3x3 gain (H, W, 9) times colours (H, W, 3)."""
    out = np.empty(colours.shape, np.float32)
    for c in range(3):
        g = gain[..., 3 * c : 3 * c + 3]
        out[..., c] = g[..., 0] * colours[..., 0] + g[..., 1] * colours[..., 1] + g[..., 2] * colours[..., 2]
    return out


def render_keyframe(edited: np.ndarray, map_: np.ndarray, interpolation: int, *, model: LocalAffine | None = None,
                    frame: np.ndarray | None = None, measured_map: np.ndarray | None = None,
                    measured_frame: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """(H, W, 3) uint8: the edited keyframe sampled once through frame t's anchored map, plus, with a `model`, the
    change of the source between the keyframe and frame t carried into it: A(m) (S_t - S_k(m)).

    Computed as base(m) + A(m) S_t with base = E_k - A S_k (the same sum, since A is smooth over the kernel's
    footprint): one sharp-kernel sample of `base` instead of two of E_k and S_k, and the form patch synthesis votes in.
    The kernel softens base's detail, and A S_t, which is sharp, brings frame t's own detail back. A model fitted at a
    smaller size is sampled there (through `measured_map`, the map at that size, when given) and enlarged as it is
    applied; with two bands (`LocalAffine.bands`) the frame's low-pass is taken there too (from `measured_frame`, the
    frame at that size, when given)."""
    if model is None:
        return sample(edited, map_, interpolation)
    measured = measured_map if measured_map is not None and measured_map.shape[:2] == model.fit_size else map_
    bands = model.bands()
    if bands is None:
        base, gain, excess, low = model.base, model.gain_at(measured), _NO_GAIN, _NO_LOW
    else:  # base(m) + A_f(m) S_t - X(m) L_t, L_t the frame's low-pass at the fit size (`LocalAffine.bands`)
        (gain, excess), base = bands.at(measured), bands.base
        small = measured_frame if measured_frame is not None and measured_frame.shape[:2] == model.fit_size else frame
        low = model.settings.low_pass(shrink(small, model.fit_size))
    if interpolation == cv2.INTER_LANCZOS4:  # the default: the same numbers in one pass (`compose_lanczos`)
        return compose_lanczos(base, map_, gain, frame, excess, low)
    sampled = sample(base, map_, interpolation)  # float32: nothing saturates before the sum
    out = np.empty(sampled.shape, np.uint8)
    compose_gain(sampled, gain, frame, out, excess, low)
    return out


def compose_gain(base: np.ndarray, gain: np.ndarray, frame: np.ndarray, out: np.ndarray,
                 excess: np.ndarray | None = None, low: np.ndarray | None = None) -> None:  # fmt: skip
    """out = rint(base + A frame - X low) clipped to uint8, A (h, w, 9) bilinear at each pixel's position on its grid
    (half-pixel centres; the same grid gives A itself), and so are X (h, w, 9) and low (h, w, 3) when given (the
    detail band's excess gain and the frame's low-pass: `LocalAffine.bands`); base and frame (H, W, 3) at out's size
    (`_compose`)."""
    _compose(base, _NO_MAP, _NO_TABLE, gain, frame, *_terms(excess, low), out)


def _terms(excess: np.ndarray | None, low: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    if excess is None or low is None:
        return _NO_GAIN, _NO_LOW
    return np.ascontiguousarray(excess, np.float32), np.ascontiguousarray(low, np.float32)


_NO_MAP, _NO_TABLE = np.zeros((0, 0, 2), np.float32), np.zeros((0, 64), np.float32)
_NO_GAIN, _NO_LOW = np.zeros((0, 0, 9), np.float32), np.zeros((0, 0, 3), np.float32)


# ---------------------------------------------------------------------------------------------------------------------
# Lanczos sampling fused with the gain: `render_keyframe`'s default path at full size


@functools.cache
def lanczos_table() -> np.ndarray:
    """(32 * 32, 64) float32: OpenCV's Lanczos-4 weights for each 1/32-pixel (y, x) fraction, as `cv2.remap` builds
    them (`interpolateLanczos4` in double, each tap rounded to float, normalised in float; the 2D weight the float
    product of the two 1D ones), so that `compose_lanczos` samples exactly what `cv2.remap(..., INTER_LANCZOS4)` does."""
    s45 = 0.70710678118654752440084436210485
    cs = [(1, 0), (-s45, -s45), (0, 1), (s45, -s45), (-1, 0), (s45, s45), (0, -1), (-s45, s45)]
    one = np.zeros((32, 8), np.float32)
    for i in range(32):
        x = np.float32(i) / np.float32(32)
        if x < np.finfo(np.float32).eps:
            one[i, 3] = 1
            continue
        y0 = -float(x + np.float32(3)) * math.pi * 0.25
        s0, c0 = math.sin(y0), math.cos(y0)
        total = np.float32(0)
        for k in range(8):
            y = -float(x + np.float32(3) - np.float32(k)) * math.pi * 0.25
            one[i, k] = np.float32((cs[k][0] * s0 + cs[k][1] * c0) / (y * y))
            total = np.float32(total + one[i, k])
        one[i] *= np.float32(1) / total
    return (one[:, None, :, None] * one[None, :, None, :]).reshape(32 * 32, 64)  # [fy * 32 + fx, ky * 8 + kx]


def compose_lanczos(base: np.ndarray, map_: np.ndarray, gain: np.ndarray, frame: np.ndarray,
                    excess: np.ndarray | None = None, low: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """(H, W, 3) uint8 rint(Lanczos(base)(map) + A frame - X low) clipped: `compose_gain` of `sample(base, map_,
    cv2.INTER_LANCZOS4)` in one pass, without the (H, W, 3) float32 sample or the two map copies `cv2.remap` needs."""
    out = np.empty(frame.shape, np.uint8)
    _compose(base, map_, lanczos_table(), gain, frame, *_terms(excess, low), out)
    return out


@njit(cache=True, nogil=True)
def _lanczos_pixel(img, x, y, tab, value):  # pragma: no cover - compiled
    """value[c] = img (h, w, C) float32 at map position (x, y) as `cv2.remap(..., INTER_LANCZOS4, BORDER_REPLICATE)`
    computes it: the position rounded to 1/32 px (half to even), the 8x8 weights of that fraction, and the same float
    operations in the same order (a row's eight products summed left to right, then added to the total; tap by tap
    where the window crosses the border, each tap's index clamped)."""
    h, w, nc = img.shape
    ix = np.int64(np.rint(min(max(x * 32.0, -1073741824.0), 1073741824.0)))  # cvRound(x * INTER_TAB_SIZE)
    iy = np.int64(np.rint(min(max(y * 32.0, -1073741824.0), 1073741824.0)))
    sx = min(max(ix >> 5, -32768), 32767) - 3  # OpenCV stores the integer part as a short
    sy = min(max(iy >> 5, -32768), 32767) - 3
    wt = tab[(iy & 31) * 32 + (ix & 31)]
    if 0 <= sx < w - 7 and 0 <= sy < h - 7:
        for c in range(nc):
            total = np.float32(0)
            for r in range(8):
                k = 8 * r
                total += (img[sy + r, sx, c] * wt[k] + img[sy + r, sx + 1, c] * wt[k + 1]
                          + img[sy + r, sx + 2, c] * wt[k + 2] + img[sy + r, sx + 3, c] * wt[k + 3]
                          + img[sy + r, sx + 4, c] * wt[k + 4] + img[sy + r, sx + 5, c] * wt[k + 5]
                          + img[sy + r, sx + 6, c] * wt[k + 6] + img[sy + r, sx + 7, c] * wt[k + 7])  # fmt: skip
            value[c] = total
    else:
        for c in range(nc):
            total = np.float32(0)
            for r in range(8):
                yy = min(max(sy + r, 0), h - 1)
                for j in range(8):
                    total += img[yy, min(max(sx + j, 0), w - 1), c] * wt[8 * r + j]
            value[c] = total


@njit(cache=True, nogil=True)
def _compose(base, map_, tab, gain, frame, excess, low, out):  # pragma: no cover - compiled
    """out = rint(B + A frame - X low) clipped to uint8: B is base itself (an empty map_) or base Lanczos-sampled
    through map_ at each pixel (`_lanczos_pixel`, weights `tab`); X and low on gain's grid, or empty (no such term).
    One pass, row by row: each output row interpolates the two gain rows around it once, then each pixel only the two
    columns around it; the enlarged gain is never stored."""
    hg, wg = gain.shape[0], gain.shape[1]
    h, w = out.shape[0], out.shape[1]
    sampled = map_.shape[0] > 0
    banded = excess.shape[0] > 0
    xrow = np.zeros((wg if banded else 0, 12), np.float32)  # X's 9 then low's 3, interpolated to this row
    x0s, x1s, fxs = np.empty(w, np.int64), np.empty(w, np.int64), np.empty(w, np.float32)
    for x in range(w):
        gx = min(max((x + 0.5) * (wg / w) - 0.5, 0.0), wg - 1.0)
        x0s[x] = min(int(gx), max(wg - 2, 0))
        x1s[x] = min(x0s[x] + 1, wg - 1)
        fxs[x] = gx - x0s[x]
    row = np.empty((wg, 9), np.float32)
    value = np.empty(3, base.dtype)
    l0 = l1 = l2 = np.float32(0)
    for y in range(h):
        gy = min(max((y + 0.5) * (hg / h) - 0.5, 0.0), hg - 1.0)
        y0 = min(int(gy), max(hg - 2, 0))
        y1 = min(y0 + 1, hg - 1)
        fy = np.float32(gy - y0)
        for x in range(wg):
            for k in range(9):
                row[x, k] = gain[y0, x, k] + fy * (gain[y1, x, k] - gain[y0, x, k])
        if banded:
            for x in range(wg):
                for k in range(9):
                    xrow[x, k] = excess[y0, x, k] + fy * (excess[y1, x, k] - excess[y0, x, k])
                for k in range(3):
                    xrow[x, 9 + k] = low[y0, x, k] + fy * (low[y1, x, k] - low[y0, x, k])
        for x in range(w):
            if sampled:
                _lanczos_pixel(base, map_[y, x, 0], map_[y, x, 1], tab, value)
            else:
                value[0], value[1], value[2] = base[y, x, 0], base[y, x, 1], base[y, x, 2]
            x0, x1, fx = x0s[x], x1s[x], fxs[x]
            s0, s1, s2 = np.float32(frame[y, x, 0]), np.float32(frame[y, x, 1]), np.float32(frame[y, x, 2])
            if banded:
                l0 = xrow[x0, 9] + fx * (xrow[x1, 9] - xrow[x0, 9])
                l1 = xrow[x0, 10] + fx * (xrow[x1, 10] - xrow[x0, 10])
                l2 = xrow[x0, 11] + fx * (xrow[x1, 11] - xrow[x0, 11])
            for c in range(3):
                k = 3 * c
                a0 = row[x0, k] + fx * (row[x1, k] - row[x0, k])
                a1 = row[x0, k + 1] + fx * (row[x1, k + 1] - row[x0, k + 1])
                a2 = row[x0, k + 2] + fx * (row[x1, k + 2] - row[x0, k + 2])
                v = value[c] + a0 * s0 + a1 * s1 + a2 * s2
                if banded:
                    e0 = xrow[x0, k] + fx * (xrow[x1, k] - xrow[x0, k])
                    e1 = xrow[x0, k + 1] + fx * (xrow[x1, k + 1] - xrow[x0, k + 1])
                    e2 = xrow[x0, k + 2] + fx * (xrow[x1, k + 2] - xrow[x0, k + 2])
                    v -= e0 * l0 + e1 * l1 + e2 * l2
                out[y, x, c] = min(max(np.rint(v), np.float32(0)), np.float32(255))
