"""Textures and the edits applied to them, all in texture space so that an edit sticks to the surface it paints.

Every function takes a `numpy.random.Generator` and returns float32 RGB in [0, 1]. Only elementwise arithmetic, `sqrt`,
`np.interp`, min/max and OpenCV's fixed-point resampling touch pixels: vectorised transcendental functions (and BLAS
matrix products) can differ in the last bit between CPUs and libraries, and a flipped bit can flip a rounded byte. The
few sines and cosines we need are scalars computed once with `math`.
"""

from __future__ import annotations

import colorsys
import functools
import math
from typing import Any

import cv2
import numpy as np

PROCEDURAL_KINDS = ("noise", "stripes", "checkers", "gradient", "spots")
# PNGs that ship inside scikit-image (no download). JPEGs (rocket, retina, hubble) are left out on purpose: JPEG decoders
# differ slightly between libjpeg builds, and the same seed must give the same bytes everywhere.
COLOR_PHOTOS = ("astronaut", "coffee", "chelsea", "immunohistochemistry")
GRAY_PHOTOS = ("camera", "brick", "grass", "gravel", "moon", "coins")  # tinted with a random palette


# ---------------------------------------------------------------------------------------------------------------------
# Colours
# ---------------------------------------------------------------------------------------------------------------------
def random_color(rng: np.random.Generator, *, hue: float | None = None) -> np.ndarray:
    h = rng.random() if hue is None else hue % 1.0
    s, v = rng.uniform(0.35, 0.95), rng.uniform(0.3, 0.95)
    return np.array(colorsys.hsv_to_rgb(h, s, v), dtype=np.float32)


def random_palette(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 3) colours that differ more in lightness than in hue, as the colours of real surfaces mostly do (analogous
    schemes); sometimes a contrasting hue. Fine hue detail is also what 4:2:0 video coding throws away."""
    base = rng.random()
    spread = rng.uniform(0.02, 0.08) if rng.random() < 0.65 else rng.uniform(0.15, 0.5)
    sat = rng.uniform(0.35, 0.9)
    values = np.sort(rng.uniform(0.25, 0.95, n))[:: 1 if rng.random() < 0.5 else -1]
    colors = []
    for i in range(n):
        s = min(max(sat + rng.normal(0, 0.08), 0.1), 1.0)
        colors.append(colorsys.hsv_to_rgb((base + spread * i + rng.normal(0, 0.01)) % 1.0, s, float(values[i])))
    return np.array(colors, dtype=np.float32)


def gradient_map(t: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Map scalars t in [0, 1] through a piecewise-linear palette: (h, w) -> (h, w, 3)."""
    stops = np.linspace(0.0, 1.0, len(palette))
    return np.stack([np.interp(t, stops, palette[:, c]) for c in range(3)], axis=-1).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------------
# Procedural textures
# ---------------------------------------------------------------------------------------------------------------------
def value_noise(rng: np.random.Generator, h: int, w: int, cell: float, octaves: int = 4) -> np.ndarray:
    """Smooth multi-scale noise in [0, 1]: random grids upsampled bicubically, each octave half the cell and amplitude."""
    out = np.zeros((h, w), np.float32)
    amp = 1.0
    for _ in range(octaves):
        gh, gw = max(2, math.ceil(h / cell) + 1), max(2, math.ceil(w / cell) + 1)
        grid = rng.random((gh, gw), dtype=np.float32)
        up = cv2.resize(grid, (round((gw - 1) * cell) + 1, round((gh - 1) * cell) + 1), interpolation=cv2.INTER_CUBIC)
        out += amp * up[:h, :w]
        amp, cell = amp * 0.5, max(cell / 2, 1.5)
    lo, hi = out.min(), out.max()
    return (out - lo) / max(hi - lo, 1e-6)


def _coords(h: int, w: int, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates rotated by `angle` (radians): the two axes of a stripe or checker pattern."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    c, s = math.cos(angle), math.sin(angle)
    return np.float32(c) * x + np.float32(s) * y, np.float32(-s) * x + np.float32(c) * y


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _mix(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Blend two colours (3,) or images (h, w, 3) by t (h, w)."""
    return a + (b - a) * t[..., None]


def procedural_texture(rng: np.random.Generator, h: int, w: int, kind: str | None = None) -> tuple[np.ndarray, dict]:
    """A (h, w, 3) texture of `kind` (random when None) with random colours and scales, and its description."""
    kind = kind or str(rng.choice(PROCEDURAL_KINDS))
    scale = min(h, w)
    palette = random_palette(rng, 3)
    shade = value_noise(rng, h, w, cell=rng.uniform(0.15, 0.5) * scale)  # low-frequency shading for every kind
    if kind == "noise":  # colour from the coarse octaves, fine detail as lightness only
        tex = gradient_map(value_noise(rng, h, w, cell=rng.uniform(0.15, 0.4) * scale, octaves=2), palette)
        detail = value_noise(rng, h, w, cell=rng.uniform(0.03, 0.1) * scale, octaves=3)
        tex = tex * (0.7 + 0.6 * detail[..., None])
    elif kind == "stripes":
        x, _ = _coords(h, w, rng.uniform(0, math.pi))
        period = rng.uniform(0.06, 0.25) * scale
        wobble = (shade - 0.5) * rng.uniform(0, 0.6) * period  # hand-drawn, not ruler-straight
        tri = np.abs(np.mod((x + wobble) / period, 1.0) - 0.5) * 2.0
        soft = rng.uniform(0.02, 0.25)
        tex = _mix(palette[0], palette[1], _smoothstep(0.5 - soft, 0.5 + soft, tri))
    elif kind == "checkers":
        x, y = _coords(h, w, rng.uniform(0, math.pi / 2))
        period = rng.uniform(0.08, 0.3) * scale
        parity = np.mod(np.floor(x / period) + np.floor(y / period), 2.0).astype(np.float32)
        tex = _mix(palette[0], palette[2], parity)
    elif kind == "gradient":
        x, _ = _coords(h, w, rng.uniform(0, 2 * math.pi))
        t = (x - x.min()) / max(float(x.max() - x.min()), 1e-6)
        tex = gradient_map(np.clip(t + (shade - 0.5) * 0.3, 0.0, 1.0), palette)
    elif kind == "spots":
        tex = np.broadcast_to(palette[0], (h, w, 3)).copy()
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        r0 = rng.uniform(0.04, 0.12) * scale
        for _ in range(int(rng.integers(6, 20))):
            cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), r0 * rng.uniform(0.5, 1.5)
            d = np.sqrt((x - np.float32(cx)) ** 2 + (y - np.float32(cy)) ** 2)
            tex = _mix(tex, palette[1 + int(rng.integers(0, 2))], np.clip(r - d, 0.0, 1.0))
    else:
        raise ValueError(f"unknown procedural texture kind {kind!r}; choose one of {PROCEDURAL_KINDS}")
    # Shading and a fine grain give flat regions something a depth or flow network (and an eye) can follow.
    tex = tex * (0.75 + 0.5 * shade[..., None]) + (rng.random((h, w, 1), dtype=np.float32) - 0.5) * 0.06
    info = {"kind": kind, "palette": np.round(palette, 4).tolist()}
    return np.clip(tex, 0.0, 1.0).astype(np.float32), info


# ---------------------------------------------------------------------------------------------------------------------
# Photo textures (out of distribution for models trained on the procedural ones)
# ---------------------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, name)()
    img.setflags(write=False)
    return img


def photo_texture(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, dict]:
    """A random crop of a photo bundled with scikit-image, resized to (h, w); grey photos get a random colour map."""
    names = COLOR_PHOTOS + GRAY_PHOTOS
    name = names[int(rng.integers(0, len(names)))]
    img = _photo(name)
    ih, iw = img.shape[:2]
    # The largest crop with the texture's aspect ratio, shrunk by a random zoom: from whole scenes to close-ups.
    zoom = rng.uniform(0.35, 1.0)
    ch = int(min(ih, iw * h / w) * zoom)
    cw = max(1, int(ch * w / h))
    ch = max(1, ch)
    top, left = int(rng.integers(0, ih - ch + 1)), int(rng.integers(0, iw - cw + 1))
    crop = img[top : top + ch, left : left + cw]
    interp = cv2.INTER_AREA if ch >= h else cv2.INTER_LINEAR
    crop = cv2.resize(np.ascontiguousarray(crop), (w, h), interpolation=interp).astype(np.float32) / 255.0
    if crop.ndim == 2:
        crop = gradient_map(crop, np.sort(random_palette(rng, 3), axis=0))  # sorted: dark stays dark, as in the photo
    flip = bool(rng.integers(0, 2))
    if flip:
        crop = crop[:, ::-1]
    info = {"kind": "photo", "photo": name, "crop": [top, left, ch, cw], "flip": flip}
    return np.ascontiguousarray(crop, dtype=np.float32), info


def make_texture(rng: np.random.Generator, h: int, w: int, source: str) -> tuple[np.ndarray, dict]:
    return photo_texture(rng, h, w) if source == "photo" else procedural_texture(rng, h, w)


# ---------------------------------------------------------------------------------------------------------------------
# Edits
# ---------------------------------------------------------------------------------------------------------------------
def _hue_matrix(degrees: float) -> list[list[float]]:
    """Rotation about the grey axis of RGB (Rodrigues), so greys stay grey and hues turn by `degrees`."""
    a = math.radians(degrees)
    c, s, k = math.cos(a), math.sin(a), 1 / math.sqrt(3)
    t = (1 - c) * k * k
    return [[c + t, t - s * k, t + s * k], [t + s * k, c + t, t - s * k], [t - s * k, t + s * k, c + t]]


def color_grade(tex: np.ndarray, p: dict[str, Any]) -> np.ndarray:
    """Hue rotation, saturation, contrast and a tint: the colour side of a style edit."""
    m = _hue_matrix(p["hue"])
    r, g, b = tex[..., 0], tex[..., 1], tex[..., 2]
    # Written out channel by channel instead of `tex @ m.T`: BLAS products may round differently across machines.
    out = np.stack([np.float32(m[i][0]) * r + np.float32(m[i][1]) * g + np.float32(m[i][2]) * b for i in range(3)], -1)
    lum = (np.float32(0.299) * out[..., 0] + np.float32(0.587) * out[..., 1] + np.float32(0.114) * out[..., 2])[..., None]
    out = lum + (out - lum) * np.float32(p["saturation"])
    out = (out - 0.5) * np.float32(p["contrast"]) + 0.5 + np.asarray(p["tint"], np.float32)
    return np.clip(out, 0.0, 1.0)


def duotone(tex: np.ndarray, p: dict[str, Any]) -> np.ndarray:
    """Luminance mapped between two new colours, a little of the original kept: a poster-like restyle."""
    lum = np.float32(0.299) * tex[..., 0] + np.float32(0.587) * tex[..., 1] + np.float32(0.114) * tex[..., 2]
    mapped = gradient_map(np.clip(lum, 0.0, 1.0), np.asarray(p["colors"], np.float32))
    return mapped * np.float32(1 - p["keep"]) + tex * np.float32(p["keep"])


def overlay_pattern(tex: np.ndarray, p: dict[str, Any]) -> np.ndarray:
    """Fine stripes or dots painted on the texture: content a per-frame colour filter could not reproduce."""
    h, w = tex.shape[:2]
    x, y = _coords(h, w, p["angle"])
    if p["pattern"] == "stripes":
        t = _smoothstep(0.35, 0.65, np.abs(np.mod(x / np.float32(p["period"]), 1.0) - 0.5) * 2.0)
    else:  # dots on a grid
        fx = np.mod(x / np.float32(p["period"]), 1.0) - 0.5
        fy = np.mod(y / np.float32(p["period"]), 1.0) - 0.5
        t = np.clip((0.3 - np.sqrt(fx * fx + fy * fy)) * 8.0, 0.0, 1.0)
    return _mix(tex, np.asarray(p["color"], np.float32), t * np.float32(p["opacity"]))


def sample_global_style(rng: np.random.Generator, scale: int, *, always_overlay: bool = False) -> dict[str, Any]:
    """One style for the whole clip: a colour grade or duotone, sometimes (or, with always_overlay, always) with a
    pattern overlay. The same draws happen either way, so a seed gives the same grade with or without the pattern."""
    family = str(rng.choice(["grade", "duotone"], p=[0.65, 0.35]))
    style: dict[str, Any] = {"family": family}
    if family == "grade":
        style.update(hue=float(rng.uniform(60, 300)), saturation=float(rng.uniform(0.6, 1.7)),
                     contrast=float(rng.uniform(0.75, 1.35)), tint=np.round(rng.uniform(-0.12, 0.12, 3), 4).tolist())  # fmt: skip
    else:
        dark, light = random_color(rng) * 0.35, 0.55 + random_color(rng) * 0.45
        style.update(colors=np.round(np.stack([dark, light]), 4).tolist(), keep=float(rng.uniform(0.1, 0.35)))
    if rng.random() < 0.5 or always_overlay:
        style["overlay"] = {
            "pattern": str(rng.choice(["stripes", "dots"])), "angle": float(rng.uniform(0, math.pi)),
            "period": float(rng.uniform(0.04, 0.1) * scale), "color": random_color(rng).round(4).tolist(),
            "opacity": float(rng.uniform(0.25, 0.5)),
        }  # fmt: skip
        if always_overlay:  # a bold pattern (twice the period, nearly opaque): most of the edit is not a colour map
            style["overlay"].update(period=style["overlay"]["period"] * 2, opacity=0.5 + style["overlay"]["opacity"])
    return style


def apply_global_style(tex: np.ndarray, style: dict[str, Any]) -> np.ndarray:
    out = color_grade(tex, style) if style["family"] == "grade" else duotone(tex, style)
    if "overlay" in style:
        out = overlay_pattern(out, style["overlay"])
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def local_edit(rng: np.random.Generator, tex: np.ndarray, source: str) -> tuple[np.ndarray, dict]:
    """One object's new look: a strong recolour (same pattern) or a different texture altogether."""
    if rng.random() < 0.5:
        # A tint of fixed strength on top of the hue turn: a near-grey surface barely changes under rotation alone.
        tint = rng.normal(size=3)
        tint *= rng.uniform(0.08, 0.15) / max(math.hypot(*tint), 1e-6)
        params = {"mode": "recolor", "hue": float(rng.uniform(100, 260)), "saturation": float(rng.uniform(1.2, 1.8)),
                  "contrast": float(rng.uniform(0.9, 1.3)), "tint": np.round(tint, 4).tolist()}  # fmt: skip
        return color_grade(tex, params).astype(np.float32), params
    new, info = make_texture(rng, tex.shape[0], tex.shape[1], source)
    return new, {"mode": "retexture", "texture": info}
