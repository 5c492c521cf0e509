"""Synthetic clips with ground truth: the same scene rendered twice, once as the source and once after an edit.

A scene is 1-2 textured backdrops and 2-4 textured objects (ellipses, rounded rectangles, blobs) at distinct depths.
Objects drift, sway, turn and breathe in scale; the camera pans, shakes and zooms, each layer following it in proportion
to its nearness (parallax). Every pixel is rendered by mapping it back into a layer's texture, so an edit made to the
textures moves exactly with the surfaces: the edited clip is what a perfect propagation of the edited keyframe would
give. A global edit restyles every texture (colour grade or duotone, maybe a painted pattern; a "pattern" edit always
paints one, so no per-pixel colour filter can reproduce it); a local edit recolours or
retextures one object, and its per-frame masks mark every pixel it touches (outside them the two clips are equal).

Depth is exact: the visible layer's depth (1 = nearest), slightly planar within each layer. One seed gives the same
bytes on every run, and the same layout and motion at any frame size (scaled to it; a rare local-edit redraw aside):
numpy's PCG64, and no vectorised transcendental functions, BLAS or LAPACK on the pixel path, whose last bits vary between
machines. Thousands of seeds give thousands of distinct scenes.

    clip = render_clip(7, frames=16, size=(64, 64), edit="local")
    write_clip(clip, "outputs/synth/7")   # or: magicprop synth --out outputs/synth/7 --seed 7 --edit local
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import UsageError
from ..fileio import PathLike, atomic_write_json, ensure_writable_dir
from .render import Rendered, render_scene
from .scene import Scene, sample_scene

__all__ = ["SyntheticClip", "render_clip", "write_clip", "load_clip", "sample_scene", "render_scene", "Scene", "Rendered"]

FORMAT_VERSION = 1  # bump when the same seed starts giving different pixels
EDITS = ("global", "local", "pattern")  # pattern: a global edit that always paints stripes or dots on the textures
MAX_ATTEMPTS = 4  # scene draws per seed for a local edit whose object stays hidden (see render_clip)


@dataclass
class SyntheticClip:
    source: np.ndarray  # (T, H, W, 3) uint8
    edited: np.ndarray  # (T, H, W, 3) uint8: the same motion with the edited appearance
    depth: np.ndarray  # (T, H, W) float32 in [0, 1], 1 = nearest, exact
    masks: np.ndarray | None  # (T, H, W) bool: pixels the locally edited object touches; None for a global edit
    meta: dict[str, Any]  # seed, frames, size, edit, textures, layers (shape, depth, motion, texture), camera, style
    layer_ids: np.ndarray | None = None  # (T, H, W) int8 index into meta["layers"] of the visible layer; not saved


def render_clip(
    seed: int,
    *,
    frames: int = 16,
    size: tuple[int, int] = (64, 64),
    edit: Literal["local", "global", "pattern"] = "global",
    textures: Literal["procedural", "photo"] = "procedural",
) -> SyntheticClip:
    """Render the clip of `seed`: source, edited, exact depth and (local edits) masks."""
    # 1. Check inputs
    if edit not in EDITS:
        raise UsageError(f"unknown edit {edit!r}; choose {', '.join(map(repr, EDITS))}")
    if textures not in ("procedural", "photo"):
        raise UsageError(f"unknown textures {textures!r}; choose 'procedural' or 'photo'")
    if int(frames) < 1:
        raise UsageError(f"frames must be at least 1, got {frames}")
    h, w = (int(s) for s in size)
    if min(h, w) < 16 or max(h, w) > 4096:
        raise UsageError(f"size {h}x{w} is out of range; choose a height and width between 16 and 4096")
    if int(seed) < 0:
        raise UsageError(f"seed must be a non-negative integer, got {seed}")
    # 2. Sample the scene (all randomness happens here) and render it. About 1 local edit in 70 picks an object that a
    # nearer one hides most of the time: draw again from the same generator (still one result per seed).
    rng = np.random.Generator(np.random.PCG64(int(seed)))
    for attempt in range(MAX_ATTEMPTS):
        scene = sample_scene(rng, (h, w), int(frames), edit, textures)
        out = render_scene(scene)
        if out.masks is None or _edit_is_visible(out.masks):
            break
    # 3. Describe it
    meta = {
        "format_version": FORMAT_VERSION, "seed": int(seed), "frames": int(frames), "size": [h, w], "edit": edit,
        "textures": textures, "layers": [layer.meta() for layer in scene.layers], "camera": scene.camera,
        "edited_layer": scene.edited_layer, "style": scene.style, "attempt": attempt,
    }  # fmt: skip
    return SyntheticClip(out.source, out.edited, out.depth, out.masks, meta, out.layer_ids)


def _edit_is_visible(masks: np.ndarray) -> bool:
    """The edited object shows in at least 80% of the frames and covers at least 1% of the clip's pixels."""
    return float(masks.any(axis=(1, 2)).mean()) >= 0.8 and float(masks.mean()) >= 0.01


def write_clip(clip: SyntheticClip, out_dir: PathLike, *, fps: float = 8.0) -> Path:
    """Write source.mp4, edited.mp4, depth.npz, masks/00000.png ... (local edits) and meta.json; returns the folder.

    Every file is written atomically and meta.json last, so a folder with a meta.json is complete (stale masks from an
    earlier, longer clip are never read: `load_clip` reads exactly meta["frames"] of them).
    """
    from ..motion import save_depth
    from ..video import save_image, write_video

    if fps <= 0:
        raise UsageError(f"fps must be positive, got {fps}")
    out = ensure_writable_dir(out_dir)
    write_video(out / "source.mp4", clip.source, fps)
    write_video(out / "edited.mp4", clip.edited, fps)
    save_depth(out / "depth.npz", clip.depth, seed=clip.meta.get("seed"), source="synthetic")
    if clip.masks is not None:
        ensure_writable_dir(out / "masks")
        for t, mask in enumerate(clip.masks):
            save_image(out / "masks" / f"{t:05d}.png", mask)
    atomic_write_json(out / "meta.json", {**clip.meta, "fps": float(fps)})
    return out


def load_clip(out_dir: PathLike) -> SyntheticClip:
    """Read a folder written by `write_clip` (videos decoded from mp4, so pixels are close to, not equal to, the render)."""
    from ..motion import load_depth
    from ..video import load_mask, read_video

    out = Path(out_dir)
    meta_path = out / "meta.json"
    if not meta_path.is_file():
        raise UsageError(f"{out} has no meta.json, so it is not a synthetic clip folder; write one with `magicprop synth --out {out}`")
    try:
        meta = json.loads(meta_path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"{meta_path} is not valid JSON ({exc}); write the clip again with `magicprop synth`") from None
    frames = int(meta["frames"])
    source, _ = read_video(out / "source.mp4")
    edited, _ = read_video(out / "edited.mp4")
    if len(source) != frames or len(edited) != frames:
        raise UsageError(f"{out}: meta.json says {frames} frames but the videos have {len(source)} and {len(edited)}; write the clip again")
    depth = load_depth(out / "depth.npz", frames=frames)
    masks = None
    if meta.get("edit") == "local":
        masks = np.stack([load_mask(out / "masks" / f"{t:05d}.png") for t in range(frames)])
    return SyntheticClip(source, edited, depth, masks, meta)
