"""Fusion steps: what the PropDPM sampling loop calls after each rendered frame (the `hybrid` propagator).

A fusion step takes PropDPM's rendering of the frames of one step (one per chain) and returns the frames the user
sees; the loop encodes them again as the next step's previous latents, so each chain continues from its output.
Beyond the paper, in the manner of Rerender-A-Video's pixel fusion.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import cv2
import numpy as np

from ...motion.flow import carry, optical_flow
from ..flow.keyframe_warp import KeyframeWarp
from ..flow.upsample import guided_upsample


class FusionStep(Protocol):
    name: str  # recorded in the work folder's fingerprint: a resumed run must fuse the same way

    def __call__(self, rendered: np.ndarray, previous: Sequence[np.ndarray], targets: Sequence[int],
                 prev_idx: Sequence[int], flows: Sequence[np.ndarray] | None) -> np.ndarray: ...  # fmt: skip


class FlowFusion:
    """Each previous output frame carried to its target along the source's flow wherever the flow's forward-backward
    check passes (sharp, and steady from frame to frame), PropDPM's rendering everywhere else: disocclusions and
    content entering the frame. The same hole test as the `flow` propagator, which fills those pixels with stale ones."""

    name = "flow"

    def __init__(self, video: np.ndarray):
        self.video = video  # (T, H, W, 3) uint8 source frames at the working size

    def __call__(self, rendered, previous, targets, prev_idx, flows=None) -> np.ndarray:
        """(B, H, W, 3) uint8. `flows[i]`: the source's flow from targets[i] to prev_idx[i], when the loop has it."""
        out = []
        for i, (image, shown, t, p) in enumerate(zip(rendered, previous, targets, prev_idx)):
            flow_tp = flows[i] if flows is not None else optical_flow(self.video[t], self.video[p])
            carried, hole = carry(shown, flow_tp, optical_flow(self.video[p], self.video[t]))
            carried[hole] = image[hole]
            out.append(carried)
        return np.stack(out)


class AnchoredFusion:
    """The edited keyframe warped once through the anchored map of each frame (`anchored_maps.AnchoredChain`, the
    `flow` propagator's maps) wherever the keyframe explains the frame, PropDPM's rendering where it cannot
    (disocclusions, entering content): the learned model paints only what no warp can carry. The seam between the two
    is feathered over a pixel or two, so PropDPM's softer rendering does not meet the warp with a hard edge.

    At full resolution (`working` given: the source at PropDPM's working size), the warp is the full-size one and
    PropDPM's frame is brought up to it by `upsample.guided_upsample` against the full-size source frame, where any
    of it shows; the frames returned are at the source's size (the sampling loop shrinks them to re-encode them)."""

    name = "anchored"

    def __init__(self, video: np.ndarray, keyframe: np.ndarray, keyframe_index: int, *, feather: float = 1.5,
                 working: np.ndarray | None = None):  # fmt: skip
        self.video, self.keyframe, self.k, self.feather, self.working = video, keyframe, keyframe_index, feather, working
        self.keyframe_warp = KeyframeWarp(video, keyframe, keyframe_index)  # one chain per direction, walked lazily

    def warp(self, t: int, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(the keyframe warped to frame t, its validity in [0, 1]); a resumed run replays the chain up to t."""
        warped, valid = self.keyframe_warp.warp(t)  # `step` is implied by t and the keyframe
        weight = valid.astype(np.float32)
        if self.feather > 0:  # keep the fully valid interior exact: only shrink the weight near the seam
            weight = np.minimum(weight, cv2.GaussianBlur(weight, (0, 0), self.feather))
        return warped, weight

    def __call__(self, rendered, previous, targets, prev_idx, flows=None) -> np.ndarray:
        out = []
        for image, t, p in zip(rendered, targets, prev_idx):
            warped, weight = self.warp(t, 1 if t > p else -1)
            if weight.min() >= 1:  # the keyframe explains every pixel: PropDPM's frame is not seen
                out.append(warped)
                continue
            if image.shape != warped.shape:
                image = guided_upsample(image, np.asarray(self.video[t]), source_small=self._working_frame(t))
            w = weight[..., None]
            out.append(np.round(warped * w + image.astype(np.float32) * (1 - w)).astype(np.uint8))
        return np.stack(out)

    def _working_frame(self, t: int) -> np.ndarray | None:
        return None if self.working is None else np.asarray(self.working[t])
