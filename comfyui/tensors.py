"""ComfyUI's tensors as magicprop's arrays, and the checks of what a node was given (one `UsageError` line each).

ComfyUI passes a clip as one `IMAGE` batch: float32 [B, H, W, 3] in 0..1 on the CPU, made by its loaders as
uint8 / 255. magicprop works on uint8 (T, H, W, 3) frames; rounding x * 255 gives back the loaders' bytes exactly, so a
clip loaded in ComfyUI reaches the pipeline as the same bytes `magicprop propagate` decodes from the same file. Frames
are converted one at a time: only one float frame of scratch, never a second float copy of the clip; the source clip is
read lazily (`to_clip`), and the result written into the IMAGE batch as it is made (`collect_image`).
"""

from __future__ import annotations

import math
import re
from typing import Iterator

import numpy as np
import torch

from magicprop.errors import UsageError
from magicprop.video import Frames

# fit_image (magicprop.video) warns when a keyframe's aspect ratio is more than 1% off the clip's: resizing would stretch
# it. In ComfyUI nobody reads that warning, so the node refuses such a keyframe; a same-shape keyframe of another size
# (an upscaled edit, or a VAE's crop to multiples of 8) is resized as the CLI resizes it.
ASPECT_TOLERANCE = 0.01
AUTO = "auto"
GREY_TOLERANCE = 2 / 255  # channels of a grey depth frame may differ by JPEG-like rounding, no more


def to_clip(image: torch.Tensor, what: str = "images") -> Frames:
    """An IMAGE batch [B, H, W, 3] in 0..1 as a lazy uint8 clip (`video.Frames`), read a frame at a time: the bytes
    `to_frames` gives, without a uint8 copy of the clip."""
    check_batch(image, what, channels=3)
    # Frames keeps only the last few converted frames (the propagator's working set): the clip is never held a second
    # time, as uint8 or as float. The default digest hashes the uint8 bytes frame by frame, as clip_digest does.
    return Frames.from_reader(lambda t: frame_uint8(image, t), len(image), (int(image.shape[1]), int(image.shape[2])))


def to_frames(image: torch.Tensor, what: str) -> np.ndarray:
    """An IMAGE batch [B, H, W, 3] in 0..1 -> (B, H, W, 3) uint8, rounded (the inverse of ComfyUI's x / 255)."""
    check_batch(image, what, channels=3)
    return _to_uint8(image)


def to_masks(mask: torch.Tensor, what: str = "masks") -> np.ndarray:
    """A MASK batch [B, H, W] in 0..1 -> (B, H, W) uint8. The pipeline thresholds uint8 masks at 127, as it does mask
    files, so x > 0.5 selects a pixel here exactly as a mask PNG does for `magicprop propagate --masks`."""
    check_batch(mask, what, channels=None)
    return _to_uint8(mask)


def _to_uint8(batch: torch.Tensor) -> np.ndarray:
    """round(x * 255) of a batch in 0..1, one item at a time: one float frame of scratch, not a float copy of the clip."""
    out = np.empty(tuple(batch.shape), np.uint8)
    for t in range(len(batch)):
        out[t] = frame_uint8(batch, t)
    return out


def frame_uint8(batch: torch.Tensor, t: int) -> np.ndarray:
    """Item t of a batch in 0..1 as uint8, round(x * 255): the bytes ComfyUI's loader divided by 255."""
    return batch[t].detach().to("cpu", torch.float32).mul(255).round_().clamp_(0, 255).to(torch.uint8).numpy()


def to_depth(image: torch.Tensor, what: str = "depth") -> np.ndarray:
    """A depth IMAGE batch (grey, white = near, as depth preprocessors draw it) -> (T, H, W) float32 in [0, 1]. A
    colour-mapped depth (a picture of depth, not its values) is refused."""
    check_batch(image, what, channels=3)
    depth = np.empty(tuple(image.shape[:3]), np.float32)
    for t in range(len(image)):
        frame = image[t].detach().to("cpu", torch.float32)
        if float((frame.amax(dim=-1) - frame.amin(dim=-1)).max()) > GREY_TOLERANCE:
            raise UsageError(f"{what} frame {t} is in colour; give grey depth frames (white = near), not a colour-mapped picture of depth")
        depth[t] = frame[..., 0].numpy()
    return depth


def to_image(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> an IMAGE batch, divided by 255 as ComfyUI's own loaders do (SaveImage writes it back
    byte for byte)."""
    return torch.from_numpy(np.ascontiguousarray(frames)).to(torch.float32).div_(255.0)


def collect_image(frames: Iterator[np.ndarray], shape: tuple[int, int, int, int]) -> torch.Tensor:
    """An IMAGE batch of `shape` (T, H, W, 3) filled from (H, W, 3) uint8 frames as they are made: each is written
    into the preallocated float32 batch, converted and divided in place (the same numbers as `to_image`), so nothing
    beside ComfyUI's batch holds the clip, neither as uint8 nor as float."""
    out = torch.empty(shape, dtype=torch.float32)
    count = 0
    for frame in frames:
        if count == len(out):
            raise RuntimeError(f"the pipeline made more than the {len(out)} frames of the clip")
        out[count].copy_(torch.from_numpy(np.ascontiguousarray(frame))).div_(255.0)
        count += 1
    if count != len(out):
        raise RuntimeError(f"the pipeline made {count} frames for a {len(out)}-frame clip")
    return out


def check_batch(tensor, what: str, *, channels: int | None) -> None:
    """A non-empty [B, H, W(, channels)] tensor."""
    expected = "[B, H, W, 3] IMAGE" if channels else "[B, H, W] MASK"
    if not isinstance(tensor, torch.Tensor):
        raise UsageError(f"{what} must be an {expected} tensor, got {type(tensor).__name__}; connect an {expected.split()[-1]} output")
    shape = tuple(tensor.shape)
    if len(shape) >= 1 and shape[0] == 0:  # first: an empty video's batch has no usable shape either, [0, 3, 0, 0]
        raise UsageError(f"{what} is an empty batch (0 images); connect a batch with at least one frame")
    if len(shape) != (4 if channels else 3) or (channels and shape[-1] != channels) or 0 in shape[1:]:
        raise UsageError(f"{what} must be an {expected} batch, got shape {list(shape)}")


def parse_indices(text: str, count: int) -> list[int] | None:
    """The keyframe_indices widget: "auto" (one keyframe; its frame is found as `magicprop propagate` finds it without
    --keyframe-index) or one frame index per keyframe image, comma-separated, negative from the end."""
    text = str(text).strip()
    if text.lower() == AUTO:
        if count != 1:
            raise UsageError(f"keyframe_indices is auto but {count} keyframe images were given; write their frame indices, one per image, e.g. 0, 40")
        return None
    indices = parse_index_list(text, hint=" (or auto)")
    if not indices:
        raise UsageError("keyframe_indices is empty; write the frame of each keyframe image, comma-separated, e.g. 0, 40 (or auto)")
    if len(indices) != count:
        raise UsageError(f"keyframe_indices names {len(indices)} frame(s) ({text}) but {count} keyframe image(s) were given; give one index per image, in the batch's order")
    return indices


def parse_index_list(text: str, *, hint: str = "") -> list[int]:
    """Frame indices written comma-separated (negative from the end), each once; [] for an empty text."""
    text = str(text).strip()
    parts = [p for p in re.split(r"[,\s]+", text) if p]
    if not all(re.fullmatch(r"[+-]?\d+", p) for p in parts):
        raise UsageError(f"keyframe_indices {text!r} is not a list of frame indices; write them comma-separated, e.g. 0, 40, -1{hint}")
    indices = [int(p) for p in parts]
    repeated = sorted({i for i in indices if indices.count(i) > 1})
    if repeated:  # {index: image} would silently keep one of them
        raise UsageError(f"keyframe_indices names frame {repeated[0]} more than once ({text}); give each frame once")
    return indices


def in_clip(indices: list[int], num_frames: int) -> list[int]:
    """Frame indices (negative from the end) as frames of a `num_frames` clip, each inside it and named once."""
    out = []
    for i in indices:
        if not -num_frames <= i < num_frames:
            raise UsageError(f"keyframe index {i} is outside the clip (0..{num_frames - 1}, or -{num_frames}..-1 from the end); pick frames inside it")
        if i % num_frames in out:
            raise UsageError(f"keyframe_indices names frame {i % num_frames} twice ({i} counts from the end); give each frame once")
        out.append(i % num_frames)
    return out


def from_image(picture: np.ndarray) -> torch.Tensor:
    """One (H, W, 3) uint8 picture as a one-image IMAGE batch."""
    return to_image(picture[None])


def check_keyframe_shape(keyframes: np.ndarray, frames: np.ndarray) -> None:
    """Refuse keyframes whose aspect ratio is not the clip's (resizing would stretch them)."""
    (h, w), (kh, kw) = frames.shape[1:3], keyframes.shape[1:3]
    if (kh, kw) != (h, w) and abs(math.log((kw / kh) / (w / h))) > ASPECT_TOLERANCE:
        raise UsageError(f"the keyframe is {kw}x{kh} but the clip's frames are {w}x{h}: resizing would stretch it; "
                         f"give it the clip's shape (e.g. an Upscale Image node to {w}x{h} with crop: center)")  # fmt: skip


def check_masks(masks: np.ndarray, frames: np.ndarray) -> None:
    """One mask per frame, at the frames' size."""
    (t, h, w), (mt, mh, mw) = frames.shape[:3], masks.shape
    if mt != t:
        raise UsageError(f"got {mt} mask(s) for a {t}-frame clip; give one mask per frame (a MASK batch of {t})")
    if (mh, mw) != (h, w):
        raise UsageError(f"the masks are {mw}x{mh} but the clip's frames are {w}x{h}; give masks of the frames' size")
