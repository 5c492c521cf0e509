"""How two keyframes share the frames between them (`flow`): who owns a frame, and how their renderings are mixed.

Both keyframes' chains reach every frame between them; per pixel the valid one nearer in time wins, with a short
crossfade around the midpoint (`keyframe_weight`'s handover) where both are valid, and feathered seams between the
regions each one owns. The fill and the temporal blend read the nearer keyframe (`nearer_keyframe`), and the fill's
colour transfers are crossfaded by time (`mix_colours`), so nothing jumps at the handover.
"""

from __future__ import annotations

import cv2
import numpy as np

from .fill import ColourTransfer


def nearer_keyframe(a: int, b: int, t: int) -> int:
    """Of keyframes a < b, the one whose fill and blend strength frame t (a < t < b) takes: a up to the middle."""
    return b if (t - a) / (b - a) > 0.5 else a


def mix_colours(first: ColourTransfer, second: ColourTransfer, alpha: float):
    """The two keyframes' colour transfers crossfaded by time, so the fill does not jump at the handover."""
    return lambda pixels: (1 - alpha) * first(pixels) + alpha * second(pixels)


def keyframe_weight(valid_a: np.ndarray, valid_b: np.ndarray, alpha: float, handover: float, feather: float
                    ) -> np.ndarray:  # fmt: skip
    """(H, W) float32 weight of keyframe b in a frame at fraction `alpha` of the way from keyframe a to b.

    Where only one keyframe is valid it wins (1 or 0: no invalid pixel is ever read). Where both are, the nearer in
    time wins, handing over smoothly across the middle `handover` fraction of the gap; within `feather` px of a region
    that only one of them explains, the weight ramps towards that one, so the seam between the two regions is blended
    over the pixels both explain instead of cut.
    """
    if handover > 0:
        s = float(np.clip((alpha - 0.5) / handover + 0.5, 0, 1))
        s = s * s * (3 - 2 * s)  # smoothstep: no kink where the handover starts and ends
    else:
        s = float(alpha > 0.5)
    only_a, only_b = valid_a & ~valid_b, valid_b & ~valid_a
    weight = np.full(valid_a.shape, s, np.float32)
    if feather > 0:
        for only, target in ((only_b, 1.0), (only_a, 0.0)):
            if only.any() and abs(target - s) > 0:
                distance = cv2.distanceTransform((~only).astype(np.uint8), cv2.DIST_L2, 3)  # to the nearest such pixel
                pull = np.clip(1 - (distance - 1) / feather, 0, 1)
                weight += (target - weight) * pull
    weight[only_b], weight[only_a] = 1.0, 0.0
    return weight


def blend(a: np.ndarray, b: np.ndarray, weight_b: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8: a and b mixed per pixel; exactly a (or b) where the weight is 0 (or 1)."""
    w = weight_b[..., None]
    return np.clip(np.rint(a * (1 - w) + b * w), 0, 255).astype(np.uint8)
