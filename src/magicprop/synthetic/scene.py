"""What a synthetic clip shows: layers at distinct depths, how each moves, and how the camera moves over them.

A scene is pure data drawn from one random generator; `render.py` turns it into frames. Every layer owns a depth band
and bands never overlap, so drawing far to near is a z-buffer: the visible layer at a pixel is always the nearest one
covering it, and the depth map agrees with occlusion by construction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from .textures import apply_global_style, local_edit, make_texture, sample_global_style

OBJECT_SHAPES = ("ellipse", "rectangle", "blob")
FAR_BAND = (0.0, 0.2)  # the far backdrop: sky, wall, distant ground
MID_BAND = (0.25, 0.4)  # an optional nearer backdrop with a wavy top edge (hills, a counter, a riverbank)
OBJECT_RANGE = (0.45, 1.0)  # split evenly between the objects, nearest object up to 1


@dataclass
class Layer:
    name: str
    shape: str  # "plane" (covers everything), "band" (everything below a wavy edge) or one of OBJECT_SHAPES
    band: tuple[float, float]  # the depth range this layer keeps to (see the module docstring)
    depth: float  # depth at the layer's centre at scale 1; 1 = nearest
    tilt: tuple[float, float]  # depth change from the centre to the layer's edge along its local x and y
    radius: float  # the layer's half size in pixels: the unit of `tilt`
    parallax: float  # the share of the camera's pan and zoom this layer sees: far layers move less
    texture: np.ndarray  # (th, tw, 3) float32, centred on the layer's origin
    edited: np.ndarray  # the same surface after the edit (the very same array when the edit leaves it alone)
    geometry: dict[str, Any] = field(default_factory=dict)  # half sizes, corner radius, blob lobes, band profile
    motion: dict[str, Any] = field(default_factory=dict)  # path parameters, in pixels and frames
    info: dict[str, Any] = field(default_factory=dict)  # the texture's (and its edit's) description for meta.json

    def meta(self) -> dict[str, Any]:
        geometry = {k: v for k, v in self.geometry.items() if k != "profile"}
        return {
            "name": self.name, "shape": self.shape, "band": list(self.band), "depth": self.depth, "tilt": list(self.tilt),
            "radius": self.radius, "parallax": self.parallax, "geometry": geometry, "motion": self.motion, **self.info,
        }  # fmt: skip


@dataclass
class Scene:
    size: tuple[int, int]
    frames: int
    layers: list[Layer]  # far to near: the drawing order
    camera: dict[str, Any]
    edit: str
    edited_layer: int | None  # index into `layers` of the locally edited object
    style: dict[str, Any] | None  # the global edit's style


def _child(rng: np.random.Generator) -> np.random.Generator:
    """An independent generator for one texture. Textures draw as many numbers as they have pixels; giving each its own
    stream keeps every later draw (layout, motion, camera, edit) the same at any frame size, so a seed is one scene."""
    return np.random.Generator(np.random.PCG64(int(rng.integers(0, 2**63))))


def _wave(t: float, amp: float, freq: float, phase: float) -> float:
    """A sinusoid that is 0 at frame 0, so every clip starts from its sampled layout."""
    return amp * (math.sin(freq * t + phase) - math.sin(phase))


def _bounce(x: float, lo: float, hi: float) -> float:
    """Reflect a linear drift off [lo, hi]: objects wander for as many frames as asked without flying away."""
    span = hi - lo
    y = (x - lo) % (2 * span)
    return lo + (y if y <= span else 2 * span - y)


def camera_at(cam: dict[str, Any], t: float) -> tuple[float, float, float]:
    """(pan x, pan y, zoom) of the camera at frame t."""
    px = cam["pan_velocity"][0] * t + _wave(t, cam["shake"][0], cam["shake_freq"], cam["shake_phase"][0])
    py = cam["pan_velocity"][1] * t + _wave(t, cam["shake"][1], cam["shake_freq"], cam["shake_phase"][1])
    return px, py, 1.0 + _wave(t, cam["zoom_amp"], cam["zoom_freq"], cam["zoom_phase"])


def layer_pose(layer: Layer, scene: Scene, t: float) -> tuple[np.ndarray, np.ndarray, float, float]:
    """The layer's local -> screen map at frame t, p = A @ q + b, with its scale and current depth.

    Objects move along their own paths (centre, scale, rotation); then the camera pans and zooms about the frame
    centre, each layer feeling it in proportion to its parallax.
    """
    h, w = scene.size
    cx, cy = (w - 1) / 2, (h - 1) / 2
    pan_x, pan_y, zoom = camera_at(scene.camera, t)
    m = layer.motion
    if m:
        ox = _bounce(m["start"][0] + m["velocity"][0] * t, *m["bounds_x"]) + _wave(t, m["sway"][0], m["sway_freq"], m["sway_phase"][0])
        oy = _bounce(m["start"][1] + m["velocity"][1] * t, *m["bounds_y"]) + _wave(t, m["sway"][1], m["sway_freq"], m["sway_phase"][1])
        s = 1.0 + _wave(t, m["scale_amp"], m["scale_freq"], m["scale_phase"])
        rot = m["rotation"] + m["spin"] * t
    else:
        ox, oy, s, rot = cx, cy, 1.0, 0.0
    z = 1.0 + (zoom - 1.0) * layer.parallax
    c, sn = math.cos(rot), math.sin(rot)
    a = np.array([[c, -sn], [sn, c]]) * (z * s)
    b = np.array([cx + z * (ox - cx) - pan_x * layer.parallax, cy + z * (oy - cy) - pan_y * layer.parallax])
    # An object growing on screen is coming closer: its depth follows its own scale (not the camera's zoom).
    lo, hi = layer.band
    depth = min(max(layer.depth + (s - 1.0) * (hi - lo), lo), hi)
    return a, b, z * s, depth


# ---------------------------------------------------------------------------------------------------------------------
# Sampling a scene
# ---------------------------------------------------------------------------------------------------------------------
def _profile(rng: np.random.Generator, width: int, h: int) -> np.ndarray:
    """A wavy edge: y offsets (pixels, down is positive) at each texture column."""
    knots = rng.random(int(rng.integers(3, 9)), dtype=np.float32)[None]
    smooth = cv2.resize(knots, (width, 1), interpolation=cv2.INTER_CUBIC)[0]
    top, amp = rng.uniform(-0.05, 0.3) * h, rng.uniform(0.05, 0.25) * h
    return (top + amp * (smooth - 0.5)).astype(np.float32)


def _backdrops(rng: np.random.Generator, size: tuple[int, int], textures: str) -> list[Layer]:
    h, w = size
    # Twice the frame: pans, shakes and zoom-outs keep showing real texture (reflection beyond, for very long clips).
    th, tw = 2 * h, 2 * w
    tex, info = make_texture(_child(rng), th, tw, textures)
    depth = float(rng.uniform(0.08, 0.12))
    far = Layer("backdrop", "plane", FAR_BAND, depth, (0.0, float(rng.uniform(0.03, 0.08))), h / 2, 0.3 + 0.7 * depth,
                tex, tex, info={"texture": info})  # fmt: skip
    layers = [far]
    if rng.random() < 0.6:
        tex, info = make_texture(_child(rng), th, tw, textures)
        depth = float(rng.uniform(0.3, 0.35))
        geometry = {"profile": _profile(rng, tw, h)}
        layers.append(Layer("midground", "band", MID_BAND, depth, (0.0, float(rng.uniform(0.02, 0.05))), h / 2,
                            0.3 + 0.7 * depth, tex, tex, geometry, info={"texture": info}))  # fmt: skip
    return layers


def _object(rng: np.random.Generator, i: int, band: tuple[float, float], size: tuple[int, int], textures: str,
            keep_inside: bool) -> Layer:  # fmt: skip
    h, w = size
    unit = min(h, w)
    lo, hi = band
    depth = float(rng.uniform(lo + (hi - lo) / 3, hi - (hi - lo) / 3))
    shape = str(rng.choice(OBJECT_SHAPES))
    grow = 0.8 + 0.4 * depth  # perspective: nearer objects tend to look bigger
    rx, ry = (float(rng.uniform(0.1, 0.24) * unit * grow) for _ in range(2))
    geometry: dict[str, Any] = {"rx": rx, "ry": ry}
    if shape == "rectangle":
        geometry["corner"] = float(rng.uniform(0.0, 0.4) * min(rx, ry))
    elif shape == "blob":  # a smooth union of three discs
        r = min(rx, ry)
        geometry["lobes"] = [[float(rng.uniform(-0.45, 0.45) * rx), float(rng.uniform(-0.45, 0.45) * ry),
                              float(rng.uniform(0.45, 0.7) * r)] for _ in range(3)]  # fmt: skip
        geometry["smooth"] = 0.35 * r
    radius = max(rx, ry)
    side = int(math.ceil(2 * radius)) + 4  # square, so any rotation stays inside the texture
    tex, info = make_texture(_child(rng), side, side, textures)
    # Centres drift in straight lines (reflecting off the bounds) plus a sway; the locally edited object stays well inside
    # so that its mask is rarely empty, the others may leave the frame partly and come back.
    inner = 0.2 if keep_inside else -0.05
    bx, by = [inner * w, (1 - inner) * w], [inner * h, (1 - inner) * h]
    heading, speed = rng.uniform(0, 2 * math.pi), rng.uniform(0.005, 0.035) * unit
    motion = {
        "start": [float(rng.uniform(0.2, 0.8) * w), float(rng.uniform(0.2, 0.8) * h)],
        "velocity": [speed * math.cos(heading), speed * math.sin(heading)], "bounds_x": bx, "bounds_y": by,
        "sway": [float(rng.uniform(0, 0.06) * unit) for _ in range(2)], "sway_freq": float(rng.uniform(0.15, 0.5)),
        "sway_phase": [float(rng.uniform(0, 2 * math.pi)) for _ in range(2)],
        "scale_amp": float(rng.uniform(0, 0.08)), "scale_freq": float(rng.uniform(0.05, 0.25)),
        "scale_phase": float(rng.uniform(0, 2 * math.pi)),
        "rotation": float(rng.uniform(0, math.pi)) if shape != "blob" or rng.random() < 0.5 else 0.0,
        "spin": float(rng.uniform(-0.03, 0.03)),
    }  # fmt: skip
    tilt = (float(rng.uniform(-1, 1) * (hi - lo) / 4), float(rng.uniform(-1, 1) * (hi - lo) / 4))
    return Layer(f"object{i}", shape, band, depth, tilt, radius, 0.3 + 0.7 * depth, tex, tex, geometry, motion,
                 {"texture": info})  # fmt: skip


def sample_scene(rng: np.random.Generator, size: tuple[int, int], frames: int, edit: str, textures: str) -> Scene:
    """Draw backdrops, 2-4 objects, a camera path and an edit; the draws happen in a fixed order (reproducible)."""
    unit = min(size)
    layers = _backdrops(rng, size, textures)
    n = int(rng.integers(2, 5))
    edited_object = int(rng.integers(0, n)) if edit == "local" else None
    lo, hi = OBJECT_RANGE
    step = (hi - lo) / n
    for i in range(n):
        band = (lo + i * step + 0.015, lo + (i + 1) * step - (0.015 if i < n - 1 else 0.0))
        layers.append(_object(rng, i, band, size, textures, keep_inside=i == edited_object))
    camera = {
        "pan_velocity": [float(rng.uniform(-0.025, 0.025) * unit), float(rng.uniform(-0.008, 0.008) * unit)],
        "shake": [float(rng.uniform(0, 0.02) * unit) for _ in range(2)], "shake_freq": float(rng.uniform(0.2, 0.6)),
        "shake_phase": [float(rng.uniform(0, 2 * math.pi)) for _ in range(2)],
        "zoom_amp": float(rng.uniform(-0.15, 0.15)), "zoom_freq": float(rng.uniform(0.03, 0.08)),
        "zoom_phase": float(rng.uniform(-0.5, 0.5)),
    }  # fmt: skip
    style, edited_layer = None, None
    if edit in ("global", "pattern"):  # "pattern": always painted stripes or dots, which no colour filter reproduces
        style = sample_global_style(rng, unit, always_overlay=edit == "pattern")
        for layer in layers:
            layer.edited = apply_global_style(layer.texture, style)
    else:
        edited_layer = len(layers) - n + edited_object
        layer = layers[edited_layer]
        layer.edited, layer.info["edit"] = local_edit(_child(rng), layer.texture, textures)
    return Scene(size, frames, layers, camera, edit, edited_layer, style)
