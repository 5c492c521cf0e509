"""Per-frame appearance edits of real footage: exact ground truth for propagation on real motion.

Applying one deterministic image edit to every source frame gives an edited clip that moves exactly like the footage,
so a propagator given only `edit(source[k])` can be scored frame by frame against `edit(source)`. The edits come in
three families, because each kind of propagator is expected to win a different one:

- `pointwise`: the output colour depends only on the pixel's colour (a tone curve with a split tint; one hue range
  moved to another). A colour lookup learned from the keyframe can reproduce these exactly;
- `stylisation`: local filters (an edge-preserving cartoon, a pencil sketch, a Kuwahara oil look): one colour maps to
  different colours depending on its neighbourhood, so only carrying the keyframe along the motion can work;
- `local`: an edit inside a region only, the region defined by the content itself (bright surfaces, vivid colours),
  so that it moves with the content rather than staying put in image coordinates.

Every edit is `(H, W, 3) uint8 -> (H, W, 3) uint8`, without randomness, vectorised (each well under 50 ms at 512x512),
and with its spatial parameters scaled to the frame size so that it looks the same at 256 and 512 px.

    from magicprop.evaluation.appearance_edits import EDITS
    truth = EDITS["cartoon"].clip(source)  # (T, H, W, 3) uint8
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Literal

import cv2
import numpy as np

Family = Literal["pointwise", "stylisation", "local"]
FAMILIES: tuple[Family, ...] = ("pointwise", "stylisation", "local")
_LUMA = np.array([0.299, 0.587, 0.114])  # Rec. 601, the weights OpenCV's RGB2GRAY uses


@dataclass(frozen=True)
class Edit:
    """A named per-frame edit and the family it belongs to."""

    name: str
    family: Family
    fn: Callable[[np.ndarray], np.ndarray]
    summary: str  # one line for tables and --help

    def __call__(self, image: np.ndarray) -> np.ndarray:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"edit {self.name!r} takes an (H, W, 3) uint8 image, got {image.dtype} {image.shape}")
        return self.fn(np.ascontiguousarray(image))

    def clip(self, frames: np.ndarray) -> np.ndarray:
        """(T, H, W, 3) uint8: the edit applied to every frame, the ground truth of a perfect propagation."""
        return np.stack([self(f) for f in frames])


def _scale(image: np.ndarray) -> float:
    """Spatial parameters are tuned at 256 px on the short side and scaled from there."""
    return min(image.shape[:2]) / 256.0


def _odd(x: float) -> int:
    return max(3, int(round(x)) // 2 * 2 + 1)


# --------------------------------------------------------------------------------------------------------------------
# pointwise
# --------------------------------------------------------------------------------------------------------------------
def _grade_curve() -> np.ndarray:
    """(256,) uint8: an S-shaped tone curve, the identity blended 70% towards smoothstep (more contrast, ends fixed)."""
    x = np.arange(256, dtype=np.float64) / 255.0
    return np.clip(np.rint(255.0 * (x + 0.7 * (x * x * (3.0 - 2.0 * x) - x))), 0, 255).astype(np.uint8)


def _grade_tint() -> np.ndarray:
    """(3, 4) affine colour matrix: shadows pushed teal and highlights orange, weighted by the pixel's grey level.

    out = c + shadows * (1 - l) + highlights * l with l = luma . c / 255 is affine in c, so one cv2.transform does it."""
    shadows, highlights = np.array([-0.06, 0.05, 0.10]), np.array([0.12, 0.04, -0.08])
    m = np.eye(3) + np.outer(highlights - shadows, _LUMA)  # the luma weights are per 255, as are the tints
    return np.concatenate([m, 255.0 * shadows[:, None]], axis=1).astype(np.float32)


_CURVE, _TINT = _grade_curve(), _grade_tint()


def grade(image: np.ndarray) -> np.ndarray:
    """A "teal and orange" grade: an S-shaped tone curve per channel, then shadows tinted teal and highlights orange."""
    return cv2.transform(cv2.LUT(image, _CURVE), _TINT)  # saturating, rounded


@lru_cache(maxsize=None)
def _hue_tables(centre: float, width: float, target: float, min_saturation: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lookup tables over (hue, saturation) in OpenCV's 8-bit full-range HSV (hue 0..255 for 0..360 degrees), indexed
    by hue * 256 + saturation: the new hue, the new saturation, and whether the pixel changes at all."""
    h, s = np.meshgrid(np.arange(256) * 360.0 / 256.0, np.arange(256) / 255.0, indexing="ij")
    dist = np.abs((h - centre + 180.0) % 360.0 - 180.0)
    weight = np.where(dist < width, 0.5 + 0.5 * np.cos(np.pi * dist / width), 0.0)  # cosine window: no hard colour edge
    weight *= np.clip((s - min_saturation) / min_saturation, 0.0, 1.0)  # faint colour -> faint change; greys unchanged
    new_h = (h + weight * ((target - centre + 180.0) % 360.0 - 180.0)) % 360.0
    new_s = np.minimum(1.0, s * (1.0 + 0.3 * weight))
    hue8 = np.rint(new_h * 256.0 / 360.0).astype(np.int64) % 256  # 360 degrees wraps to 0
    sat8 = np.clip(np.rint(new_s * 255.0), 0, 255)
    return hue8.astype(np.uint8).ravel(), sat8.astype(np.uint8).ravel(), (weight > 0).astype(np.uint8).ravel()


def _move_hue(image: np.ndarray, centre: float, width: float, target: float, min_saturation: float = 0.15) -> np.ndarray:
    """Hues within `width` degrees of `centre` moved to `target`, fully at the centre and fading out at the range's
    ends; every other pixel is returned exactly (8-bit HSV does not round-trip, so only changed pixels go through it)."""
    new_h, new_s, changes = _hue_tables(centre, width, target, min_saturation)
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV_FULL)
    index = (hsv[..., 0].astype(np.uint16) << 8) | hsv[..., 1]
    moved = cv2.cvtColor(np.dstack([new_h.take(index), new_s.take(index), hsv[..., 2]]), cv2.COLOR_HSV2RGB_FULL)
    return cv2.copyTo(moved, changes.take(index), image.copy())  # the copy is the destination: image stays as it is


def greens_to_purple(image: np.ndarray) -> np.ndarray:
    """Greens (hue 120 +- 60 degrees) turned purple (280)."""
    return _move_hue(image, centre=120.0, width=60.0, target=280.0)


def warm_to_blue(image: np.ndarray) -> np.ndarray:
    """Reds, oranges and skin (hue 25 +- 45 degrees) turned blue (215): most of these clips' subjects are warm."""
    return _move_hue(image, centre=25.0, width=45.0, target=215.0)


# --------------------------------------------------------------------------------------------------------------------
# stylisation (local filters: not functions of the pixel's colour alone)
# --------------------------------------------------------------------------------------------------------------------
_POSTERISE = np.minimum(np.arange(256) // 43 * 43 + 21, 255).astype(np.uint8)  # 6 levels per channel


def cartoon(image: np.ndarray) -> np.ndarray:
    """Edge-preserving smoothing (bilateral), colours quantised to 6 levels per channel, dark lines at grey-level edges."""
    s = _scale(image)
    smooth = cv2.bilateralFilter(image, d=_odd(3.5 * s), sigmaColor=60, sigmaSpace=3 * s)  # 5 px at 256, 7 at 512
    flat = cv2.LUT(smooth, _POSTERISE)
    grey = cv2.GaussianBlur(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), (0, 0), 1.2 * s)  # no lines from grain
    # 255 away from edges, 0 on them: a pixel darker than its neighbourhood mean by more than 8 levels is a line
    lines = cv2.adaptiveThreshold(grey, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, _odd(9 * s), 8)
    return cv2.bitwise_and(flat, flat, mask=lines)


def sketch(image: np.ndarray) -> np.ndarray:
    """A pencil sketch: the grey image colour-dodged by its blurred inverse (flat areas go white, edges stay dark)."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    blurred = cv2.GaussianBlur(255 - grey, (0, 0), 4.0 * _scale(image))
    dodge = cv2.divide(grey, 255 - blurred, scale=256)  # saturates at 255
    return cv2.cvtColor(dodge, cv2.COLOR_GRAY2RGB)


def kuwahara(image: np.ndarray, radius: int | None = None) -> np.ndarray:
    """Kuwahara filter (an oil-paint look): each pixel takes the mean colour of whichever of its four overlapping
    (r+1)x(r+1) quadrants has the lowest grey-level variance, so edges stay sharp while flat areas smear into strokes.

    Box means and variances come from one box filter each; quadrant (dy, dx) of pixel (y, x) is the box centred at
    (y + dy * r/2, x + dx * r/2), i.e. the box-filtered map shifted by r/2 (r even, so the shift is whole pixels)."""
    r = radius if radius is not None else max(2, int(round(2 * _scale(image))) * 2)
    k, half = r + 1, r // 2
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    box = dict(ksize=(k, k), borderType=cv2.BORDER_REFLECT)
    mean = cv2.boxFilter(image, -1, **box)  # uint8, rounded
    var = cv2.sqrBoxFilter(grey, -1, **box) - cv2.boxFilter(grey, -1, **box) ** 2
    mean_p = cv2.copyMakeBorder(mean, half, half, half, half, cv2.BORDER_REPLICATE)
    var_p = cv2.copyMakeBorder(var, half, half, half, half, cv2.BORDER_REPLICATE)
    h, w = grey.shape
    quadrants = [(dy, dx) for dy in (0, r) for dx in (0, r)]  # offsets -r/2 and +r/2, in the padded frame
    out, best = mean_p[:h, :w].copy(), var_p[:h, :w].copy()
    for dy, dx in quadrants[1:]:
        v = var_p[dy : dy + h, dx : dx + w]
        lower = v < best  # strict: ties keep the earlier quadrant, as argmin would
        out = cv2.copyTo(mean_p[dy : dy + h, dx : dx + w], lower.view(np.uint8), out)
        np.minimum(best, v, out=best)
    return out


# --------------------------------------------------------------------------------------------------------------------
# local (inside a region defined by the content, so it moves with it)
# --------------------------------------------------------------------------------------------------------------------
def _region(selected: np.ndarray, image: np.ndarray) -> np.ndarray:
    """(H, W) float32 in [0, 1]: a per-pixel selection cleaned into regions (opening drops specks such as glints on
    water, closing fills pinholes) and feathered, so the edit has soft borders like a real masked edit."""
    s = _scale(image)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (_odd(7 * s),) * 2)
    m = cv2.morphologyEx(selected.view(np.uint8) * np.uint8(255), cv2.MORPH_OPEN, kernel)
    m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, kernel)
    return cv2.GaussianBlur(m, (0, 0), 2.0 * s).astype(np.float32) / 255.0


def bright_regions(image: np.ndarray) -> np.ndarray:
    """Bright surfaces (grey level above 150): the dog, the flamingos, the cat, faces."""
    return _region(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) > 150, image)


def vivid_regions(image: np.ndarray) -> np.ndarray:
    """Strongly coloured surfaces (HSV saturation above 0.4 and value above 0.25): clothes, hair, paint, leaves."""
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)  # uint8: S and V in 0..255
    return _region((hsv[..., 1] > 102) & (hsv[..., 2] > 64), image)


def _inside(image: np.ndarray, edited: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """edited where mask = 1, image where mask = 0, mixed in between."""
    return cv2.blendLinear(edited, image, mask, 1.0 - mask)


_CYAN = (np.array([0.45, 0.95, 1.15])[:, None] * _LUMA[None]).astype(np.float32)  # grey level times a cyan tint


def bright_to_cyan(image: np.ndarray) -> np.ndarray:
    """Bright regions painted cyan, their shading kept (a strong recolour a colour lookup can only partly learn: the
    soft region border mixes colours that depend on where the pixel is)."""
    return _inside(image, cv2.transform(image, _CYAN), bright_regions(image))


def vivid_cartoon(image: np.ndarray) -> np.ndarray:
    """`cartoon` inside the strongly coloured regions only; everything else untouched."""
    return _inside(image, cartoon(image), vivid_regions(image))


EDITS: dict[str, Edit] = {
    e.name: e
    for e in (
        Edit("grade", "pointwise", grade, "teal-and-orange tone curve and split tint"),
        Edit("greens_to_purple", "pointwise", greens_to_purple, "green hues moved to purple"),
        Edit("warm_to_blue", "pointwise", warm_to_blue, "red/orange/skin hues moved to blue"),
        Edit("cartoon", "stylisation", cartoon, "bilateral smoothing, quantised colours, dark edges"),
        Edit("sketch", "stylisation", sketch, "pencil sketch (grey dodged by its blurred inverse)"),
        Edit("kuwahara", "stylisation", kuwahara, "Kuwahara oil-paint filter"),
        Edit("bright_to_cyan", "local", bright_to_cyan, "bright regions painted cyan"),
        Edit("vivid_cartoon", "local", vivid_cartoon, "cartoon inside strongly coloured regions"),
    )
}
