"""Guided upsampling: an edit made at a working size, brought to the source's size with the source's own detail.

Stage I paints at the diffusion models' working size (~0.26 Mpx), and a user may give a keyframe smaller than the
footage. Enlarging such an edit by itself gives a soft image. But where the edit *restyles* the source (a colour grade,
a sketch, a painterly look), it is locally a function of the source's colours, E ~ A(x) S + b(x) (the keyframe pair's
local affine model, `appearance.LocalAffine`), and the source is known at full size. So

    E_full = up(E_small) + A(x) (S_full - up(S_small))

the enlarged edit plus the source's detail that shrinking it lost, carried through the local gain A learnt at the
working size. For an edit that is an affine colour map, this is the edit of the full-size source exactly. Where the
edit painted something new (an object, a texture the source does not have), the local model explains the pair badly:
there the gain is faded out, by how much of the edit the model leaves unexplained in the window around each pixel,
and the result is the plain resample.
"""

from __future__ import annotations

import cv2
import numpy as np

from .appearance import AppearanceSettings, LocalAffine, compose_gain
from .resolution import shrink

# How far the local model is trusted to carry the source's detail, from two measures of its fit in each window: the
# residual's RMS (grey levels, 0..255: full trust up to TRUST_FULL, none from TRUST_NONE) and its R^2 (the share of
# the edit's local variance it explains: full from R2_FULL, none below R2_NONE; R2_FLOOR, in squared grey levels,
# keeps a flat edit's R^2 from being noise). Measured on 3 real clips x the 8 edits of `appearance_edits` (edit at 512
# px, truth at ~1 Mpx), mean PSNR: no fading 43.28 dB, residual only (6/18 .. 12/36) 43.0 .. 43.2, both with the
# window below 43.39. A smooth texture pasted over a grainy source (tests/test_upsample.py) fits spuriously in small
# windows (R^2 > 0.6 in 7x7): with the residual alone 2.5 levels RMS of the source's grain leak into it, with both
# and radius 4 1.7, with both and radius 8 under 1.
TRUST_FULL, TRUST_NONE = 12.0, 36.0
R2_FULL, R2_NONE, R2_FLOOR = 0.8, 0.4, 4.0
# Twice the propagator's window (`AppearanceSettings.radius`): fewer spurious fits, and global grades gain more than
# sketches lose (radius 4: 43.22 dB, 6: 43.32, 8: 43.39 on the set above)
UPSAMPLE_SETTINGS = AppearanceSettings(radius=8.0)


def guided_upsample(edited_small: np.ndarray, source_full: np.ndarray, *, source_small: np.ndarray | None = None,
                    settings: AppearanceSettings = UPSAMPLE_SETTINGS) -> np.ndarray:  # fmt: skip
    """(H, W, 3) uint8: `edited_small` ((h, w, 3) uint8, an edit of the source shrunk to (h, w)) at the size of
    `source_full` ((H, W, 3) uint8), the source's fine detail carried in through the edit's local relation to it.

    source_small: the source frame the edit was made from, when the caller has it (default: `source_full` shrunk by
    area averaging, which is how the pipeline shrinks frames). settings: the local model's window and ridge term.
    An edit already at the source's size is returned as it is; one larger than the source is shrunk (area).
    """
    edited_small, source_full = np.asarray(edited_small), np.asarray(source_full)
    for name, image in (("edited_small", edited_small), ("source_full", source_full)):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"guided_upsample: {name} must be an (H, W, 3) uint8 image, got {image.dtype} {image.shape}")
    size, small_size = source_full.shape[:2], edited_small.shape[:2]
    if small_size == size:
        return edited_small
    if size[0] < small_size[0] or size[1] < small_size[1]:  # nothing to bring up (a working size rounded up)
        return shrink(edited_small, size)
    small = shrink(source_full, small_size) if source_small is None else np.asarray(source_small)
    if small.shape != edited_small.shape:
        raise ValueError(f"guided_upsample: source_small {small.shape} and edited_small {edited_small.shape} differ")

    # 1. The edit's local relation to the source at the working size, and how well it explains the edit
    model = LocalAffine(small, edited_small, settings)
    residual = edited_small.astype(np.float32) - model.predict(small)  # (h, w, 3) what the model leaves unexplained
    window = (2 * settings.window(*small_size) + 1,) * 2
    box = lambda a: cv2.boxFilter(a, -1, window, borderType=cv2.BORDER_REFLECT)  # noqa: E731
    unexplained = box((residual**2).mean(axis=2))
    e = edited_small.astype(np.float32)
    variance = np.maximum(box((e**2).mean(axis=2)) - (box(e) ** 2).mean(axis=2), 0)
    explained = 1 - unexplained / (variance + R2_FLOOR)  # R^2 of the local fit (1 where the edit is flat)
    trust = np.clip((TRUST_NONE - np.sqrt(unexplained)) / (TRUST_NONE - TRUST_FULL), 0, 1)
    trust *= np.clip((explained - R2_NONE) / (R2_FULL - R2_NONE), 0, 1)
    trust = trust.astype(np.float32)
    gain = np.ascontiguousarray(model.gain * trust[..., None])  # (h, w, 9): no gain where the edit painted anew

    # 2. The enlarged edit, plus the source's lost detail through the gain (enlarged as it is applied: `compose_gain`)
    up = lambda image: cv2.resize(image.astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_CUBIC)  # noqa: E731
    detail = source_full.astype(np.float32) - up(small)  # (H, W, 3)
    out = np.empty(source_full.shape, np.uint8)
    compose_gain(up(edited_small), gain, detail, out)
    return out


def plain_upsample(edited_small: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8: the edit enlarged by itself (bicubic), what `guided_upsample` falls back to and is compared with."""
    return np.clip(np.rint(cv2.resize(edited_small.astype(np.float32), (size[1], size[0]),
                                      interpolation=cv2.INTER_CUBIC)), 0, 255).astype(np.uint8)  # fmt: skip
