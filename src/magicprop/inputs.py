"""What a pipeline call is given, checked and brought to the size each stage works at.

Sizes (`plan_sizes`). The diffusion models (stage I's Stable Diffusion and ControlNet, PropDPM, the depth model) run at
the *working size*: the largest size within `max_pixels` with the clip's aspect ratio, sides multiples of what the
models need. A propagator that declares `full_resolution` (`flow`, `chain`, `lut`, `copy`) reads and renders the clip
at its own size: no shrink-and-enlarge round trip. `max_pixels=None`, the default everywhere, means "512x512 for the
diffusion models, the source's own size for the full-resolution propagators"; a number is the diffusion models'
budget and also caps the full-resolution propagators (a clip within it keeps its own size). Frames always come back at
the source's size.

Keyframes (`fit_keyframe`). A keyframe image at the size the propagator reads is used as it is; a smaller one of the
same shape is brought up by `keyframe_to_source_size` (the function that also brings stage I's working-size keyframe to
full size); any other is resized (`video.fit_image`, which warns when that stretches it), said in one line.

Masks (`split_masks`). Per-frame masks are read one frame at a time (`FrameMasks`, `MaskFiles`): a 4K clip's masks are
never all in memory.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from .editing import composite, default_feather, feather_mask, prepare_mask
from .errors import UsageError
from .video import Frames, fit_image, load_image, load_mask, resize_frames

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 512 * 512  # the diffusion models' working-size budget when none is given
MAX_SOURCE_SIZE = (4320, 8192)  # (H, W) of DCI 8K: the largest clip worked on at its own size
MIN_KEYFRAME_SIDE = 64  # px: a keyframe image under this (on a clip that is not itself that small) is a thumbnail


def check_call_inputs(prompt, keyframe_image, mask, mask_points, strength) -> None:
    """The checks of a call that need no model and no frames (shared with the CLI, which runs them before loading)."""
    if keyframe_image is not None and prompt:
        raise UsageError("give either a prompt (stage I edits the keyframe) or a keyframe image, not both")
    if keyframe_image is None and not (prompt and str(prompt).strip()):
        raise UsageError("nothing to edit: give a prompt (--prompt), or an edited keyframe image (--keyframe-image)")
    if mask is not None and mask_points:
        raise UsageError("give either a mask or mask points (--mask-point), not both")
    if strength is not None and not 0 < strength <= 1:
        raise UsageError(f"strength must be in (0, 1], got {strength}")


@dataclass(frozen=True)
class Sizes:
    """(H, W) of each stage of one call."""

    source: tuple[int, int]  # the clip's frames; the output is written at this size
    working: tuple[int, int]  # where the diffusion models run (stage I, PropDPM, depth)
    propagation: tuple[int, int]  # what the propagator reads and renders


def check_max_pixels(max_pixels: int | None, minimum: int = 8 * 8) -> None:
    """One line for a budget no model can work in: `minimum` is one latent multiple squared (the models' smallest
    frame, 8x8 for SD's multiple of 8, 16x16 with a PropDPM whose VAE shrinks by 8)."""
    if max_pixels is None:
        return
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)) or max_pixels < minimum:
        side = math.isqrt(minimum)
        raise UsageError(f"max_pixels (--max-pixels) is {max_pixels!r}, below the minimum {minimum} ({side}x{side}, the smallest frame "
                         "the models work at); leave it out for 512x512 models and full-resolution weight-free propagators")  # fmt: skip


def plan_sizes(source: tuple[int, int], working_size: Callable[[int, int, int | None], tuple[int, int]], *,
               max_pixels: int | None, full_resolution: bool) -> Sizes:  # fmt: skip
    """The sizes of one call on frames of `source` = (H, W); `working_size(h, w, max_pixels)` is the models' rule (it
    takes None for `DEFAULT_MAX_PIXELS` and checks a budget against their smallest frame)."""
    height, width = (int(s) for s in source)
    working = working_size(height, width, max_pixels)
    if not full_resolution:
        return Sizes((height, width), working, working)
    if max_pixels is None or height * width <= max_pixels:
        big_h, big_w = MAX_SOURCE_SIZE
        if max_pixels is None and (max(height, width) > big_w or height * width > big_h * big_w):
            raise UsageError(f"the clip is {width}x{height}, larger than 8K ({big_w}x{big_h}): too large to work on at its own "
                             f"size; downscale it, or pass --max-pixels {big_h * big_w} (or less) to work at a reduced size")  # fmt: skip
        return Sizes((height, width), working, (height, width))
    return Sizes((height, width), working, working_size(height, width, max_pixels))


def open_clip(video: str | os.PathLike | np.ndarray | Frames) -> Frames:
    """A path (read lazily), an array (wrapped, not copied) or a `Frames` as a `Frames`."""
    if isinstance(video, Frames):
        return video
    if isinstance(video, (str, os.PathLike)):
        return Frames.open(video)
    return Frames.from_array(video)


# ---------------------------------------------------------------------------------------------------------------------
# Keyframes
# ---------------------------------------------------------------------------------------------------------------------
def load_keyframe(image) -> np.ndarray:
    """An image path read as uint8 RGB, or an array as given."""
    return load_image(image) if isinstance(image, (str, os.PathLike)) else np.asarray(image)


def fit_keyframe(image: np.ndarray, frame: np.ndarray, *, what: str = "keyframe image") -> np.ndarray:
    """A user's edited keyframe at `frame`'s size: as it is when it has that size; a smaller one of the same shape
    through `keyframe_to_source_size`; anything else resized (`video.fit_image`). A thumbnail is refused."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise UsageError(f"{what} must be uint8 RGB (H, W, 3), got {image.dtype} {image.shape}; load it with magicprop.video.load_image")
    (h, w), (th, tw) = image.shape[:2], frame.shape[:2]
    if (h, w) == (th, tw):
        return image
    if min(h, w) < MIN_KEYFRAME_SIDE <= min(th, tw):
        raise UsageError(f"{what} is {w}x{h} px, under {MIN_KEYFRAME_SIDE} px on a side, too small to edit {tw}x{th} frames; "
                         "export the edited keyframe at the clip's size")  # fmt: skip
    same_shape = abs(math.log((w / h) / (tw / th))) <= 0.01
    if same_shape and h < th and w < tw:
        logger.info(f"{what} is {w}x{h}, the frames {tw}x{th}: bringing it up to their size")
        return keyframe_to_source_size(image, frame)
    if same_shape:
        logger.info(f"{what} is {w}x{h}, the frames {tw}x{th}: resizing it to their size")
    return fit_image(image, (th, tw), what=what)


def keyframe_to_source_size(edited: np.ndarray, source_frame: np.ndarray) -> np.ndarray:
    """An edit made at a smaller size (stage I's working-size keyframe, a user's small keyframe), brought to the size
    of `source_frame`, the source keyframe it edits, by guided upsampling (`propagation.flow.upsample`): the edit's
    local relation to the source, learnt at the small size, applied to the full-resolution `source_frame`, so its fine
    detail carries through where the edit restyles it; a plain resample where the edit painted something new. One at
    `source_frame`'s size is returned as it is."""
    from .propagation.flow.upsample import guided_upsample

    return guided_upsample(edited, source_frame)


def keyframe_at(edited: np.ndarray, source_frame: np.ndarray, mask: np.ndarray | None, feather: int | None) -> np.ndarray:
    """Stage I's keyframe (painted at the working size) at the size of `source_frame`, the frame it edits: brought up
    by `keyframe_to_source_size`; with a keyframe mask, the frame itself outside it, as the editor keeps it."""
    if edited.shape == source_frame.shape:
        return edited
    up = keyframe_to_source_size(edited, source_frame)
    if mask is None:
        return up
    h, w = source_frame.shape[:2]
    radius = default_feather(h, w) if feather is None else round(feather * w / mask.shape[1])
    return composite(up, source_frame, feather_mask(resize_mask(mask, (h, w)), radius))


def to_source_size(edited: Iterator[np.ndarray], clip: Frames, sizes: Sizes, frame_masks=None, feather: int | None = None) -> Iterator[np.ndarray]:
    """The propagated frames at the source's size; with per-frame masks, the source outside them (feathered)."""
    radius = default_feather(*sizes.source) if feather is None else feather
    for t, frame in enumerate(edited):
        if frame.shape[:2] != sizes.source:
            frame = resize_frames(frame, sizes.source)
        yield frame if frame_masks is None else composite(frame, clip[t], feather_mask(frame_masks[t], radius))


# ---------------------------------------------------------------------------------------------------------------------
# Masks
# ---------------------------------------------------------------------------------------------------------------------
class MaskFiles(Sequence):
    """One mask image per frame, read (and resized to `size`, with a warning) when its frame asks for it."""

    ndim = 3  # T masks of (H, W): np.ndim answers without reading them all

    def __init__(self, files: Sequence[str | os.PathLike], size: tuple[int, int]) -> None:
        self.files, self.size = [Path(f) for f in files], size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, t: int) -> np.ndarray:
        return load_mask(self.files[t], self.size)


class FrameMasks:
    """Per-frame masks as bool (H, W) at the frames' size, prepared one at a time (`editing.prepare_mask`)."""

    def __init__(self, masks, size: tuple[int, int]) -> None:
        self.masks, self.size = masks, size

    def __len__(self) -> int:
        return len(self.masks)

    def __getitem__(self, t: int) -> np.ndarray:
        return prepare_mask(self.masks[t], self.size, what=f"mask of frame {t}", allow_empty=True)

    def areas(self) -> np.ndarray:
        """(T,) pixels inside each mask, in one pass; every mask empty is an error."""
        areas = np.array([int(self[t].sum()) for t in range(len(self))])
        if not areas.any():
            raise UsageError("every per-frame mask is empty; paint the region to edit, or leave the masks out for a global edit")
        return areas


def split_masks(mask, num_frames: int, size: tuple[int, int]) -> tuple[np.ndarray | None, FrameMasks | None]:
    """(keyframe mask, per-frame masks) at `size` from an (H, W) mask, or a (T, H, W) array or sequence of T masks."""
    if mask is None:
        return None, None
    if isinstance(mask, np.ndarray) and mask.ndim == 2:
        return prepare_mask(mask, size, what="keyframe mask"), None
    if (isinstance(mask, np.ndarray) and mask.ndim != 3) or len(mask) != num_frames:
        raise UsageError(f"got {len(mask)} masks for a {num_frames}-frame clip; give one mask per frame, or one keyframe mask")
    return None, FrameMasks(mask, size)


def resize_mask(mask: np.ndarray | None, size: tuple[int, int]) -> np.ndarray | None:
    """A bool (H, W) mask at another size (nearest neighbour: a mask stays a mask)."""
    if mask is None:
        return None
    return resize_frames(np.asarray(mask).astype(np.uint8)[..., None], size, interpolation="nearest")[..., 0] > 0
