"""Rendering a scene: inverse-map every pixel into each layer's texture, composite far to near, keep the ground truth.

Source and edited frames come out of the same pass with the same arithmetic; only the textures differ. Compositing is
`C * (1 - a) + c * a`, which returns C exactly where a = 0 and c exactly where a = 1, so wherever the edited object does
not contribute, the edited frame equals the source bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .scene import Layer, Scene, layer_pose


@dataclass
class Rendered:
    source: np.ndarray  # (T, H, W, 3) uint8
    edited: np.ndarray  # (T, H, W, 3) uint8
    depth: np.ndarray  # (T, H, W) float32, the visible layer's depth
    layer_ids: np.ndarray  # (T, H, W) int8, index of the visible layer (coverage >= 1/2) into scene.layers
    masks: np.ndarray | None  # (T, H, W) bool, where the locally edited object contributes any colour at all
    coverage: np.ndarray | None = None  # (L, T, H, W) float32 alpha of every layer, only with debug=True
    layer_depth: np.ndarray | None = None  # (L, T, H, W) float32 depth of every layer, only with debug=True


def signed_distance(layer: Layer, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Distance (local pixels) from (u, v) to the layer's outline, negative inside; exact for discs and rounded boxes,
    the usual first-order estimate for ellipses."""
    g = layer.geometry
    if layer.shape == "ellipse":
        rx, ry = np.float32(g["rx"]), np.float32(g["ry"])
        k0 = np.sqrt((u / rx) ** 2 + (v / ry) ** 2)
        k1 = np.sqrt((u / (rx * rx)) ** 2 + (v / (ry * ry)) ** 2)
        return k0 * (k0 - 1.0) / np.maximum(k1, np.float32(1e-6))
    if layer.shape == "rectangle":
        rc = np.float32(g["corner"])
        dx = np.abs(u) - (np.float32(g["rx"]) - rc)
        dy = np.abs(v) - (np.float32(g["ry"]) - rc)
        outside = np.sqrt(np.maximum(dx, 0.0) ** 2 + np.maximum(dy, 0.0) ** 2)
        return outside + np.minimum(np.maximum(dx, dy), 0.0) - rc
    if layer.shape == "blob":  # polynomial smooth minimum of the lobes' disc distances
        k = np.float32(g["smooth"])
        d = None
        for x0, y0, r in g["lobes"]:
            di = np.sqrt((u - np.float32(x0)) ** 2 + (v - np.float32(y0)) ** 2) - np.float32(r)
            if d is None:
                d = di
            else:
                h = np.clip(0.5 + 0.5 * (di - d) / k, 0.0, 1.0)
                d = di * (1.0 - h) + d * h - k * h * (1.0 - h)
        return d
    if layer.shape == "band":  # measured vertically from the wavy top edge: close to the true distance for gentle waves
        profile = g["profile"]
        cols = np.arange(len(profile), dtype=np.float32) - np.float32((len(profile) - 1) / 2)
        return np.interp(u, cols, profile).astype(np.float32) - v
    raise ValueError(f"layer {layer.name} has no outline (shape {layer.shape!r})")


def render_scene(scene: Scene, *, debug: bool = False) -> Rendered:
    """Frames, exact depth, visible-layer ids and (local edits) the edited object's masks of `scene`."""
    h, w = scene.size
    n_layers, frames = len(scene.layers), scene.frames
    y_grid, x_grid = np.mgrid[0:h, 0:w].astype(np.float32)
    source = np.empty((frames, h, w, 3), np.uint8)
    edited = np.empty_like(source)
    depth = np.empty((frames, h, w), np.float32)
    ids = np.empty((frames, h, w), np.int8)
    masks = np.zeros((frames, h, w), bool) if scene.edited_layer is not None else None
    coverage = np.ones((n_layers, frames, h, w), np.float32) if debug else None
    layer_depth = np.zeros((n_layers, frames, h, w), np.float32) if debug else None
    for t in range(frames):
        comp_src = np.zeros((h, w, 3), np.float32)
        comp_edit = np.zeros((h, w, 3), np.float32)
        weight = None  # the edited object's share of each pixel's colour
        for i, layer in enumerate(scene.layers):
            a, b, scale, d0 = layer_pose(layer, scene, t)
            det = a[0, 0] * a[1, 1] - a[0, 1] * a[1, 0]  # screen -> local, by hand: no LAPACK rounding differences
            inv = np.array([[a[1, 1], -a[0, 1]], [-a[1, 0], a[0, 0]]]) / det
            shift = [-(inv[0, 0] * b[0] + inv[0, 1] * b[1]), -(inv[1, 0] * b[0] + inv[1, 1] * b[1])]
            # Local coordinates of every pixel centre (pixel centres at integers, as OpenCV's warps assume).
            u = np.float32(inv[0, 0]) * (x_grid - np.float32(b[0])) + np.float32(inv[0, 1]) * (y_grid - np.float32(b[1]))
            v = np.float32(inv[1, 0]) * (x_grid - np.float32(b[0])) + np.float32(inv[1, 1]) * (y_grid - np.float32(b[1]))
            th, tw = layer.texture.shape[:2]
            warp = np.array([[inv[0, 0], inv[0, 1], shift[0] + (tw - 1) / 2], [inv[1, 0], inv[1, 1], shift[1] + (th - 1) / 2]])
            sample = lambda tex: cv2.warpAffine(tex, warp, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,  # noqa: E731
                                                borderMode=cv2.BORDER_REFLECT_101)  # fmt: skip
            color = sample(layer.texture)
            color_edit = color if layer.edited is layer.texture else sample(layer.edited)
            if layer.shape == "plane":
                alpha = np.ones((h, w), np.float32)
            else:  # antialiased edge: coverage falls from 1 to 0 across one screen pixel
                alpha = np.clip(0.5 - signed_distance(layer, u, v) * np.float32(scale), 0.0, 1.0)
            a3 = alpha[..., None]
            comp_src = comp_src * (1.0 - a3) + color * a3
            comp_edit = comp_edit * (1.0 - a3) + color_edit * a3
            if weight is not None:
                weight *= 1.0 - alpha
            if i == scene.edited_layer:
                weight = alpha.copy()
            r = np.float32(layer.radius)
            d = np.float32(d0) + np.float32(layer.tilt[0]) * u / r + np.float32(layer.tilt[1]) * v / r
            d = np.clip(d, *layer.band)
            visible = alpha >= 0.5
            if i == 0:
                ids[t], depth[t] = 0, d
            else:
                ids[t][visible], depth[t][visible] = i, d[visible]
            if debug:
                coverage[i, t], layer_depth[i, t] = alpha, d
        # Round half up; identical floats give identical bytes.
        source[t] = np.clip(comp_src * 255.0 + 0.5, 0, 255).astype(np.uint8)
        edited[t] = np.clip(comp_edit * 255.0 + 0.5, 0, 255).astype(np.uint8)
        if masks is not None:
            masks[t] = weight > 0
    return Rendered(source, edited, depth, ids, masks, coverage, layer_depth)
