"""Frames in memory: resizing, working sizes, and the labelled side-by-side panels of comparison videos and contact
sheets."""

from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np


_INTERPOLATIONS = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC, "nearest": cv2.INTER_NEAREST}


def resize_frames(frames: np.ndarray, size: tuple[int, int], *, interpolation: str = "area") -> np.ndarray:
    """Resize (T, H, W, C) or (H, W, C) frames to `size` = (H, W), keeping the dtype (uint8 or float32).

    "area" averages when shrinking (no aliasing) and is bilinear when enlarging, where OpenCV's INTER_AREA would act
    like nearest neighbour.
    """
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {sorted(_INTERPOLATIONS)}, got {interpolation!r}")
    frames = np.asarray(frames)
    if frames.ndim not in (3, 4):
        raise ValueError(f"resize_frames expects (T, H, W, C) or (H, W, C), got shape {frames.shape}")
    h, w = (int(s) for s in size)
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive (H, W), got {size}")
    if frames.shape[-3:-1] == (h, w):
        return frames
    if frames.ndim == 3:
        return resize_frames(frames[None], (h, w), interpolation=interpolation)[0]
    flag = _INTERPOLATIONS[interpolation]
    if interpolation == "area" and (h > frames.shape[1] or w > frames.shape[2]):
        flag = cv2.INTER_LINEAR
    if frames.dtype in (np.float64, np.float16):
        frames = frames.astype(np.float32)  # OpenCV resizes float32 natively
    out = np.empty((frames.shape[0], h, w, frames.shape[3]), dtype=frames.dtype)
    for i, frame in enumerate(frames):
        out[i] = cv2.resize(frame, (w, h), interpolation=flag).reshape(h, w, -1)  # reshape: cv2 drops a channel of 1
    return out


def working_size(height: int, width: int, *, max_pixels: int = 512 * 512, multiple_of: int = 8) -> tuple[int, int]:
    """The largest (H, W), both multiples of `multiple_of`, with the source's aspect ratio and H * W <= max_pixels.

    Never larger than the source except for rounding up to the multiple: a 33x47 clip works at 40x48, not 512x512.
    """
    m = multiple_of
    if height < 1 or width < 1 or m < 1 or max_pixels < m * m:
        raise ValueError(f"working_size: bad arguments {height}x{width}, max_pixels={max_pixels}, multiple_of={m}")
    short, long_ = sorted((height, width))
    aspect = long_ / short
    cap_short, cap_long = math.ceil(short / m) * m, math.ceil(long_ / m) * m
    # From the largest allowed short side down; the long side follows the aspect ratio to the nearest multiple.
    for s in range(min(cap_short, math.isqrt(int(max_pixels / aspect)) // m * m + m), 0, -m):
        l = max(m, min(cap_long, math.floor(s * aspect / m + 0.5) * m))
        if s * l <= max_pixels:
            return (s, l) if height <= width else (l, s)
    return (m, m)


def _as_clip(clip: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) uint8 from a clip, a single (H, W, 3) image, grayscale (T, H, W), or float frames in [0, 1]."""
    clip = np.asarray(clip)
    if clip.ndim == 3 and clip.shape[-1] in (1, 3):
        clip = clip[None]
    if clip.ndim == 3:
        clip = clip[..., None]
    if clip.ndim != 4 or clip.shape[-1] not in (1, 3):
        raise ValueError(f"expected a clip (T, H, W, 3) or an image (H, W, 3), got shape {clip.shape}")
    if clip.dtype != np.uint8:
        clip = np.clip(np.rint(clip.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    return np.repeat(clip, 3, axis=3) if clip.shape[-1] == 1 else clip


def _label_bar(label: str, width: int, height: int) -> np.ndarray:
    bar = np.zeros((height, width, 3), dtype=np.uint8)
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, height / 30.0
    (tw, th), _ = cv2.getTextSize(label, font, scale, 1)
    if tw > width - 4:  # shrink a long label to fit its panel rather than cut it off
        scale *= (width - 4) / tw
        (tw, th), _ = cv2.getTextSize(label, font, scale, 1)
    cv2.putText(bar, label, ((width - tw) // 2, (height + th) // 2), font, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return bar


def _panels(clips: Sequence[np.ndarray], labels: Sequence[str] | None) -> list[np.ndarray]:
    """Each clip resized to the tallest clip's height, padded in time with its last frame, its label bar on top."""
    if len(clips) == 0:
        raise ValueError("need at least one clip")
    if labels is not None and len(labels) != len(clips):
        raise ValueError(f"got {len(labels)} labels for {len(clips)} clips")
    clips = [_as_clip(c) for c in clips]
    height = max(c.shape[1] for c in clips)
    length = max(c.shape[0] for c in clips)
    bar_h = 2 * max(6, round(height * 0.06))  # even, so that even-sized panels stay even for the mp4 writer
    panels = []
    for i, c in enumerate(clips):
        width = max(1, round(c.shape[2] * height / c.shape[1]))
        c = resize_frames(c, (height, width))
        if c.shape[0] < length:
            c = np.concatenate([c, np.repeat(c[-1:], length - c.shape[0], axis=0)])
        if labels is not None:
            bar = _label_bar(str(labels[i]), width, bar_h)
            c = np.concatenate([np.broadcast_to(bar, (length, *bar.shape)), c], axis=1)
        panels.append(c)
    return panels


def side_by_side(clips: Sequence[np.ndarray], labels: Sequence[str] | None = None) -> np.ndarray:
    """Clips next to each other as one (T, H', W', 3) uint8 clip: common height, longest length, optional labels."""
    return np.concatenate(_panels(clips, labels), axis=2)


def grid(clips: Sequence[np.ndarray], labels: Sequence[str] | None = None, cols: int | None = None) -> np.ndarray:
    """Clips in a grid of `cols` columns (default: about square), filled row by row; empty cells are black."""
    panels = _panels(clips, labels)
    cols = cols or math.ceil(math.sqrt(len(panels)))
    if cols < 1:
        raise ValueError(f"cols must be positive, got {cols}")
    t, h = panels[0].shape[:2]
    w = max(p.shape[2] for p in panels)
    rows = math.ceil(len(panels) / cols)
    out = np.zeros((t, rows * h, cols * w, 3), dtype=np.uint8)
    for i, p in enumerate(panels):
        r, c = divmod(i, cols)
        x = c * w + (w - p.shape[2]) // 2  # a narrower panel sits centred in its cell
        out[:, r * h : (r + 1) * h, x : x + p.shape[2]] = p
    return out
