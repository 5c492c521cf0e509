"""The edited keyframe carried to any frame through the anchored coordinate maps of the `flow` propagator.

One class, three readers, so all three sample the keyframe the same way:
  * `fusion.AnchoredFusion` (the `hybrid` propagator) keeps the warp where the keyframe explains the frame;
  * `sampling.propagate_latents` conditions a PropDPM built with `use_anchored_reference` on it;
  * `training.data.RawTripletDataset(with_anchor=True)` computes the same for the training triplets (the reference
    frame warped to the target), so training and inference build identical inputs from identical frames.
"""

from __future__ import annotations

import numpy as np

from .appearance import AppearanceSettings, LocalAffine, render_keyframe
from .maps import AnchoredChain, MapSettings
from .propagator import INTERPOLATIONS


class KeyframeWarp:
    """`warp(t)` -> (the keyframe sampled once, Lanczos, through frame t's anchored map, (H, W, 3) uint8; the map's
    validity, (H, W) bool). With `appearance` (the default, as in the `flow` propagator) the source's change between
    the keyframe and frame t is carried into it through the keyframe pair's local affine model
    (`appearance.render_keyframe`); None gives the plain warp.

    The maps are measured on `video` (the *source* frames: an edited keyframe is not what the source shows), one
    `AnchoredChain` per direction walked from the keyframe. A chain only walks forward, so a run resumed at frame t
    replays its chain up to t (the maps are deterministic: the result is the uninterrupted run's); asking for a frame
    the chain has passed starts that direction again. With `keep=True` every frame walked past is remembered (the
    training data asks for frames in any order, and a 64x64 frame costs 16 kB); without it memory stays flat (the last
    frame of each direction is kept).
    """

    def __init__(self, video: np.ndarray, keyframe: np.ndarray, keyframe_index: int, settings: MapSettings = MapSettings(),
                 *, keep: bool = False, appearance: AppearanceSettings | None = AppearanceSettings()):  # fmt: skip
        if keyframe.shape != video.shape[1:]:
            raise ValueError(f"the keyframe {keyframe.shape} and the source frames {video.shape[1:]} differ in size")
        self.video, self.keyframe, self.settings, self.keep = video, keyframe, settings, keep
        self.k = keyframe_index % len(video)
        # fitted where the maps are measured (a 4K fit would hold ~2 GB of 3x3 matrices); the same at small sizes
        fit = settings.measure_size(*video.shape[1:3])
        self.model = None if appearance is None else LocalAffine(video[self.k], keyframe, appearance, fit_size=fit)
        self.chains: dict[int, AnchoredChain] = {}  # step (+1 / -1) -> that direction's chain
        self.kept: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # frame -> its warp: all walked past with keep, else the last

    def warp(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        t %= len(self.video)
        if t == self.k:  # the keyframe itself: the identity map, valid everywhere
            return self.keyframe, np.ones(self.keyframe.shape[:2], bool)
        if t in self.kept:
            return self.kept[t]
        step = 1 if t > self.k else -1
        chain = self.chains.get(step)
        if chain is None or (chain.index - t) * step >= 0:  # new, or at or past t: walk again from the keyframe
            chain = self.chains[step] = AnchoredChain(self.video, self.k, step, self.settings)
        while chain.index != t:
            frame = chain.advance()
            if self.keep or frame.index == t:
                if not self.keep:  # forget this direction's last frame; the other direction's stays (two chains
                    # of one sampling step ask for both, then the `hybrid` fusion asks again)
                    for f in [f for f in self.kept if (f - self.k) * step > 0]:
                        del self.kept[f]
                warped = render_keyframe(self.keyframe, frame.map, INTERPOLATIONS["lanczos"], model=self.model,
                                         frame=self.video[frame.index],
                                         measured_map=frame.at_measured_size.map)  # fmt: skip
                self.kept[frame.index] = (warped, frame.valid)
        if self.keep and not 0 <= t + step < len(self.video):  # every frame of this direction is kept: drop its state
            del self.chains[step]
        return self.kept[t]
