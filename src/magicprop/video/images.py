"""Images and masks from files: keyframes, per-frame masks and image-folder frames, as uint8 RGB or bool arrays.

EXIF orientation is applied, grayscale, 16-bit, palette and RGBA images are converted, and a file PIL cannot read (or
one over its decompression-bomb limit) raises `UsageError` naming it. `fit_image` brings an image to a frame's size.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import UsageError
from ..fileio import PathLike, require_file
from .frames import resize_frames

logger = logging.getLogger(__name__)


def _open_image(path: PathLike, what: str) -> Image.Image:
    """A loaded PIL image with its EXIF orientation applied (phones store portrait photos sideways plus a tag)."""
    path = require_file(path, what)
    try:
        with Image.open(path) as im:
            return ImageOps.exif_transpose(im)
    except Image.DecompressionBombError:
        raise UsageError(f"{what} {path} has more pixels than PIL decodes safely (its decompression-bomb limit); downscale it") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise UsageError(f"{what} {path} is not a readable image; use a PNG or JPEG file") from None


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image file after EXIF orientation, reading only its header."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            return (w, h) if im.getexif().get(0x0112, 1) in (5, 6, 7, 8) else (h, w)  # 5-8 turn by 90 degrees
    except Image.DecompressionBombError:
        raise UsageError(f"{path} has more pixels than PIL decodes safely (its decompression-bomb limit); downscale it") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise UsageError(f"{path} is not a readable image; remove it or replace it with a PNG or JPEG file") from None


def load_image(path: PathLike) -> np.ndarray:
    """An image file as uint8 RGB (H, W, 3); grayscale, 16-bit, RGBA and palette images are converted."""
    im = _open_image(path, "image")
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit or float grayscale: PIL's convert("RGB") would clip it
        a = np.asarray(im, dtype=np.float64)
        gray = np.clip(np.rint(a if im.mode == "F" else a / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")  # via RGBA: PIL warns when palette transparency is dropped directly
    return np.array(_convert(im, "RGB", path, "image"), dtype=np.uint8)


def _convert(im: Image.Image, mode: str, path: PathLike, what: str) -> Image.Image:
    try:
        return im.convert(mode)
    except ValueError:  # e.g. LAB TIFFs: PIL has no direct conversion
        raise UsageError(f"{what} {path} is in PIL mode {im.mode}, which PIL cannot convert to {mode}; save it as an RGB PNG") from None


def load_mask(path: PathLike, size: tuple[int, int] | None = None) -> np.ndarray:
    """A mask file as bool (H, W): grayscale > 127 is inside. Resized (nearest, with a warning) to `size` = (H, W).

    A mask drawn as transparency (one colour, the shape in the alpha channel) is read from its alpha channel.
    """
    im = _open_image(path, "mask")
    gray = np.asarray(_convert(im, "L", path, "mask"))
    if "A" in im.mode or (im.mode == "P" and "transparency" in im.info):
        alpha = np.asarray(_convert(im, "RGBA", path, "mask"))[..., 3]
        if gray.min() == gray.max() and alpha.min() != alpha.max():
            gray = alpha
    mask = gray > 127
    if size is not None and mask.shape != tuple(size):
        h, w = size
        logger.warning(f"mask {path} is {mask.shape[1]}x{mask.shape[0]} but the video is {w}x{h}; resizing it (nearest)")
        mask = cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
    return mask


def fit_image(image: np.ndarray, size: tuple[int, int], *, what: str = "keyframe image") -> np.ndarray:
    """Resize an (H, W, C) image to `size` = (H, W); warns when that stretches it (aspect ratios differ by > 1%)."""
    image = np.asarray(image)
    h, w = image.shape[:2]
    th, tw = size
    if abs(math.log((w / h) / (tw / th))) > 0.01:
        logger.warning(f"{what} is {w}x{h} but the video is {tw}x{th}: resizing stretches it; crop it to the video's shape")
    return resize_frames(image, (th, tw))
