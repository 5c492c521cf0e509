"""Temporal blending of `flow`'s output along the source's motion: less flicker where an edit re-draws its detail.

A stylised edit re-draws its details on every source frame (a cartoon's outlines, a sketch's grain), and whole-frame
patch synthesis re-chooses its patches on every frame, so the same surface point gets a slightly different stroke each
frame: the output boils. The MSE-best estimate of a detail re-drawn every frame is its mean over the frames that show
it, so blending each frame with the previous output carried along the source's flow (a recursive average along the
motion),

    out_t = (1 - a) * render_t + a * warp(out_{t-1}),

lowers flicker and raises PSNR at once on such edits. Where the edit is a colour mapping of the source (a grade, a
region recoloured), the render is already right and steady, and the carry only adds resampling blur and lag: measured
on dog with bright->cyan, -0.1 to -0.4 dB at every setting tried. So `a` is scaled by how much detail the edit draws
that no local colour mapping of the source explains (`redrawn_detail`, read once per keyframe), and applied only where
the carry can be trusted: the flow passes the forward-backward check and stays in the frame, and the source frame
agrees with the previous source frame carried the same way (a soft ramp); 0 wherever content is new. A keyframe is never
blended (it is returned as given).

A recursive average along the chain lags: frame t averages only frames before it, so a detail that changes shows
~1 / (1 - a) frames late. A second pass in the opposite direction (`settle`, run once a chain's frames are all
rendered) blends each frame with its already settled successor carried back along the flow, so every frame averages
both sides of itself: a two-sided average along the motion, with no lag. Measured against the one-sided blend
(`TemporalBlend.lookahead`): higher PSNR on every cartoon and sketch tried, and less flicker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import cv2
import numpy as np

from .appearance import LocalAffine
from .geometry import identity_map, sample
from .maps import FlowPrefetch, flow_checks

_CARRY_INTERPOLATIONS = ("cubic", "linear")


@dataclass(frozen=True)
class TemporalBlend:
    """How much of the previous output, carried along the source's flow, each frame keeps (strength 0: the plain
    render). Measured on cartoon x {dog, flamingo, breakdance} (256 px, 32 frames, keyframe 0), bilinear carry:
    strength 0.35 / 0.5 / 0.65 / 0.8 gave +0.15 / +0.19 / +0.20 / +0.20 dB and flicker 0.0420 -> 0.0377 / 0.0362 /
    0.0348 / 0.0331, but sharpness 0.66 -> 0.56 / 0.52 / 0.48: the recursion resamples the carried frame once per
    frame, and bilinear sampling at a fractional offset is a low-pass filter that compounds. A cubic carry (clamped,
    `carry`) keeps the detail (0.65: sharpness 0.57, 19.52 dB, flicker 0.0347); over the 7 sample clips' cartoon and
    sketch (14 cases, 96 frames at most) 0.65 clamped cubic is within -0.09..+0.10 dB of 0.5 bilinear (23.71 against
    23.69 dB, sharpness 0.51 against 0.49, flicker 0.0263 against 0.0270); unclamped, 0.75 lost 0.24 dB on flamingo's
    sketch and 0.9 0.12 dB on average (lag: a detail that changes takes ~1 / (1 - a) frames to show). On the synthetic
    64 px `pattern` clips (`make demo`'s kind) the bilinear blur scores better: 22.96 against 22.77 dB over six.
    The second pass (`lookahead`, `settle`) at the same 0.65: 19.99 dB and flicker 0.0330 on those cartoons against
    19.85 and 0.0349 one-sided (512 px: 20.35 and 0.0257 against 20.20 and 0.0277); 0.8 / 0.9 in it lost 0.11 / 0.29
    dB on flamingo's sketch, 0.65 lost nothing over 5 clips' cartoon and sketch (mallard's sketch -0.01)."""

    strength: float = 0.65  # `a` where the carry is fully trusted and the edit fully re-drawn
    # how the previous output is carried: "cubic" (clamped to its 2x2 neighbourhood, `carry`) or "linear" (see above)
    interpolation: str = "cubic"
    # mean |source_t - carried source_{t-1}| (grey levels, RGB mean) at which trust falls to 0 (1 at 0, linear): a
    # surface whose source colour changed is not the one the previous output showed there
    colour_tolerance: float = 24.0
    soften: float = 1.0  # px: the trust map is blurred this much, so a blended region ends without a seam
    # `redrawn_detail` (grey levels) below which nothing is blended and above which all of `strength` is, linear in
    # between (two floats, not a tuple: the work folder's fingerprint goes through JSON). On the 7 sample clips colour
    # grades and region edits measure 0.5-3.0 (a few 5-7), sketches 2.1-12.7, cartoons 6.3-19.2
    redrawn_from: float = 3.0
    redrawn_to: float = 6.0
    # the second pass's `a` (`settle`: each frame blended with its settled successor along the chain, so the average
    # is two-sided and lags nothing); None: `strength`, 0: the one-sided blend alone
    lookahead: float | None = None

    def __post_init__(self) -> None:
        if self.interpolation not in _CARRY_INTERPOLATIONS:
            raise ValueError(f"TemporalBlend.interpolation must be one of {sorted(_CARRY_INTERPOLATIONS)}, got "
                             f"{self.interpolation!r}")  # fmt: skip
        if not 0.0 <= self.strength < 1.0:
            raise ValueError(f"TemporalBlend.strength must be in [0, 1), got {self.strength}")
        if self.lookahead is not None and not 0.0 <= self.lookahead < 1.0:
            raise ValueError(f"TemporalBlend.lookahead must be None or in [0, 1), got {self.lookahead}")
        if self.colour_tolerance <= 0 or self.soften < 0 or not 0 <= self.redrawn_from < self.redrawn_to:
            raise ValueError(f"TemporalBlend: colour_tolerance must be > 0, soften >= 0 and 0 <= redrawn_from < "
                             f"redrawn_to, got {self.colour_tolerance}, {self.soften}, {self.redrawn_from} and "
                             f"{self.redrawn_to}")  # fmt: skip

    def strength_for(self, redrawn: float) -> float:
        """`strength` scaled by where an edit's `redrawn_detail` lies between `redrawn_from` and `redrawn_to`."""
        return self.strength * self._gate(redrawn)

    def lookahead_for(self, redrawn: float) -> float:
        """The second pass's strength (`lookahead`, or `strength`), scaled the same way."""
        return (self.strength if self.lookahead is None else self.lookahead) * self._gate(redrawn)

    def _gate(self, redrawn: float) -> float:
        return float(np.clip((redrawn - self.redrawn_from) / (self.redrawn_to - self.redrawn_from), 0, 1))


def redrawn_detail(source_keyframe: np.ndarray, edited_keyframe: np.ndarray, model: LocalAffine | None = None) -> float:
    """Mean |E - (A S + b)| in grey levels over the keyframe pair: the detail the edit draws that its local affine
    colour model (`appearance.LocalAffine`, fitted here unless given) does not explain. ~0 for a colour grade."""
    model = model if model is not None else LocalAffine(source_keyframe, edited_keyframe)
    return float(np.abs(edited_keyframe.astype(np.float32) - model.predict(source_keyframe)).mean())


def blend_weight(strength: float, settings: TemporalBlend, source_frame: np.ndarray, carried_source: np.ndarray,
                 flow_ok: np.ndarray) -> np.ndarray:  # fmt: skip
    """(H, W) float32 in [0, strength]: the weight of the carried previous output at each pixel (carried_source: the
    previous source frame carried along the same flow, float32)."""
    difference = np.abs(source_frame.astype(np.float32) - carried_source).mean(axis=2)
    trust = np.clip(1 - difference / settings.colour_tolerance, 0, 1) * flow_ok
    if settings.soften > 0:
        # blur, then keep it no higher than before: a pixel the check rejects stays at 0 (no ghost of occluded content)
        trust = np.minimum(trust, cv2.GaussianBlur(trust, (0, 0), settings.soften))
    return (strength * trust).astype(np.float32)


def temporal_blend(output: np.ndarray, previous: np.ndarray, source_frame: np.ndarray, previous_source: np.ndarray,
                   flow: np.ndarray, flow_ok: np.ndarray, settings: TemporalBlend, strength: float | None = None
                   ) -> np.ndarray:  # fmt: skip
    """(H, W, 3) uint8: `output` (frame t as rendered) blended with `previous` (the output of the chain's previous
    frame) carried along the source's flow from t to it (flow: (H, W, 2), flow_ok: (H, W) bool), by `blend_weight`;
    exactly `output` where the weight is 0. strength: `a` for this edit (default `settings.strength`)."""
    strength = settings.strength if strength is None else strength
    if strength == 0:
        return output
    at = identity_map(*flow.shape[:2]) + flow  # one map for the source and the output carried the same way
    carried_source = sample(previous_source.astype(np.float32), at, cv2.INTER_LINEAR)
    weight = blend_weight(strength, settings, source_frame, carried_source, flow_ok)[..., None]
    mixed = output * (1 - weight) + carry(previous, at, settings.interpolation) * weight
    return np.where(weight > 0, np.clip(np.rint(mixed), 0, 255), output).astype(np.uint8)


def carry(image: np.ndarray, at: np.ndarray, interpolation: str = "cubic") -> np.ndarray:
    """(H, W, 3) float32: image (uint8) sampled at the absolute map `at`. "cubic" is clamped to the range of the 2x2
    pixels around each sample point: a cubic kernel overshoots at a hard edge, and in a recursion the overshoot would
    compound into ringing (on the synthetic benchmark's 64 px painted dots, unclamped: -0.09 dB against clamped)."""
    image = image.astype(np.float32)
    if interpolation == "linear":
        return sample(image, at, cv2.INTER_LINEAR)
    h, w = image.shape[:2]
    square = np.ones((2, 2), np.uint8)  # anchored at its top-left: pixel (y, x) sees (y..y+1, x..x+1)
    low = cv2.erode(image, square, anchor=(0, 0), borderType=cv2.BORDER_REPLICATE)
    high = cv2.dilate(image, square, anchor=(0, 0), borderType=cv2.BORDER_REPLICATE)
    x = np.clip(np.floor(at[..., 0]), 0, w - 1).astype(np.intp)
    y = np.clip(np.floor(at[..., 1]), 0, h - 1).astype(np.intp)
    return np.clip(sample(image, at, cv2.INTER_CUBIC), low[y, x], high[y, x])


def settle(order: range, read: Callable[[int], np.ndarray], source, anchor: np.ndarray | None,
           strength_at: Callable[[int], float], settings: TemporalBlend, preset: str) -> Iterator[np.ndarray]:
    """The blend's second pass: the frames `read(t)` for t in `order` (one direction, step +1 or -1, opposite to the
    chain that rendered them), each blended with the previous frame of this pass once settled, carried along the
    source's flow from t to it (`temporal_blend`, its flow checked forward-backward as the chain's is); the first
    frame is blended with `anchor` (the keyframe the pass starts from, at order[0] - step) or, without one, kept.
    strength_at(t): `a` at frame t (0: the frame as read). preset: the DIS preset of the chain's frame flows."""
    step = order.step
    flows = FlowPrefetch(source, step, preset, last=order[-1] if order else None)  # get(t): (t -> t - step, back)
    settled = anchor
    for t in order:
        output, strength = read(t), strength_at(t)
        if settled is not None and strength > 0:
            flow, back = flows.get(t)
            occluded, outside, _ = flow_checks(flow, back, np.zeros(flow.shape[:2], bool))
            output = temporal_blend(output, settled, source[t], source[t - step], flow, ~(occluded | outside), settings,
                                    strength)  # fmt: skip
        settled = output
        yield output
