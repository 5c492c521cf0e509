"""What the anchored propagator paints where no keyframe explains a pixel (occlusions, entering content, lighting).

Invalid pixels never take keyframe pixels through the map. They get a fallback estimate first (`fallback_estimate`): a
colour transfer of the source frame (a mapping source colour -> edited colour learnt from the keyframe pair) plus, where
the source's flow from the previous frame is consistent, what the previous output added to its own colour transfer. A
fill function then turns that estimate into the frame: `colour_fill` keeps it, `PatchFill` synthesises the pixels from
keyframe patches (`patches.synthesize`, guided as in Jamriska et al. 2019, "Stylizing Video by Example": colour + edges,
position, and a temporal guide, built by `patch_guides`); by default it synthesises the whole frame once anything is
to fill, as EbSynth does (`PatchFill.whole_frame`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import cv2
import numpy as np

from .maps import identity_map, sample_points
from .temporal import TemporalBlend

if TYPE_CHECKING:
    from .appearance import LocalAffine


@dataclass
class FillRequest:
    """One frame's pixels to fill and everything a fill function may read; images are (H, W, 3) uint8."""

    index: int  # the frame
    source_frame: np.ndarray  # source frame t
    fill: np.ndarray  # (H, W) bool: the pixels no keyframe explains
    estimate: np.ndarray  # keyframe pixels where valid, the fallback elsewhere, feathered at the seam
    style: np.ndarray  # the edited keyframe nearest in time
    source_keyframe: np.ndarray  # its source frame
    map: np.ndarray | None  # (H, W, 2) float32: frame t's map into that keyframe (None where the fill does not need it)
    carried: np.ndarray  # the previous output carried to frame t along the source's flow
    appearance: "LocalAffine | None" = None  # the keyframe pair's local affine model (`appearance`), when in use
    keyframe: int = 0  # the frame index of `style`
    # only the holes, never the whole frame (`PatchFill.whole_frame`): between two keyframes (the estimate holds both
    # keyframes' warps), and at a scaled render (`resolution.detail_fill` takes only the holes from the fill and keeps
    # the full-size warp wherever it is valid, so re-drawing the rest would cost time and change nothing)
    holes_only: bool = False
    # per-keyframe constants a fill function may keep for the length of one render (None: keep nothing)
    keyframe_cache: "KeyframeCache | None" = None
    # how much detail the edit re-draws (`temporal.redrawn_detail` of the keyframe pair, grey levels): ~0 for a
    # colour grade, 6-20 for a cartoon or a sketch
    redrawn: float = 0.0


FillFunction = Callable[[FillRequest], np.ndarray]


class KeyframeCache:
    """What a render computes once per keyframe (its colour transfer, its appearance model, the fill's keyframe
    guide), by (name, keyframe). A frame only ever reads the two keyframes around it and keyframes are visited in
    order, so entries of a third keyframe evict those of the earliest one: memory stays that of two keyframes."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, int], object] = {}

    def get(self, name: str, k: int, build: Callable[[], object]):
        if (name, k) not in self.entries:
            keyframes = sorted({key for _, key in self.entries} | {k})
            if len(keyframes) > 2:
                self.entries = {key: v for key, v in self.entries.items() if key[1] != keyframes[0]}
            self.entries[name, k] = build()
        return self.entries[name, k]


def colour_fill(request: FillRequest) -> np.ndarray:
    """The fallback as the result: no synthesis (fast, and always available)."""
    return request.estimate


class PatchFill:
    """Guided patch synthesis of the pixels to fill (`patches.synthesize`, or a function with its signature, which also
    gets `appearance=(base, gain, colours)` when the keyframe pair's local affine model is in use).

    Once more than `whole_frame` of a frame is to fill, the whole frame is synthesised under the guides, as EbSynth
    does, instead of only the pixels the keyframe cannot explain: the patches then also re-draw what the warp carries,
    from keyframe patches whose source looks like frame t's (the anchored map still steers them, as the position
    guide). The default, 0, does so whenever anything is to fill: on real clips with exact ground truth (256 px, 32
    frames, keyframe 0; 7 clips, 8 edits, 26 cases) it measured +0.51 dB on average over filling only the holes, better
    on 23 cases (up to +1.9 dB), within 0.04 dB on the other 3, the pixels the keyframe explains included (+0.5 to
    +1.2 dB there on the cartoon edit: a warped stroke was drawn for the keyframe's content, the truth re-draws it),
    with less flicker on the stylisations; thresholds 0.3 and 0.5 sat in between. It loses where the warp is exact
    and nothing is re-drawn: 0.62 dB on the synthetic benchmark's 64 px `pattern` clips. 1 fills only the holes. Not
    between two keyframes (the estimate there holds both keyframes' warps, and a synthesis from the nearer one alone
    would drop what only the other shows), nor at the source's full resolution above `MapSettings.measure_pixels`,
    where the full-size warp is kept wherever it is valid (`FillRequest.holes_only`)."""

    needs_map = True

    def __init__(self, synthesize: Callable[..., np.ndarray] | None = None, *, patch_size: int = 5,
                 weights: "GuideWeights | None" = None, whole_frame: float = 0.0,
                 redrawn: "RedrawnPatches | None" = None):  # fmt: skip
        """patch_size, weights: the synthesis's settings; redrawn: those for an edit that re-draws detail
        (`RedrawnPatches`, its defaults when None; `RedrawnPatches(threshold=math.inf)` uses `patch_size` and
        `weights` for every edit)."""
        if synthesize is None:
            from .patches import synthesize  # ImportError tells the caller that patch synthesis is not available
        self.synthesize, self.patch_size, self.weights = synthesize, patch_size, weights or GuideWeights()
        self.whole_frame, self.redrawn = whole_frame, redrawn or RedrawnPatches()

    @property
    def name(self) -> str:
        """What the work folder's fingerprint records: the synthesiser, the patch size, the guide weights, when and
        how the whole frame is synthesised, and the settings for edits that re-draw detail."""
        where = f"{getattr(self.synthesize, '__module__', '?')}.{getattr(self.synthesize, '__qualname__', '?')}"
        return f"patches:{where}:{self.patch_size}:{self.weights}:{self.whole_frame}:{self.redrawn}"

    def settings_for(self, redrawn: float, height: int, width: int) -> tuple[int, "GuideWeights"]:
        """(patch size, guide weights) for an edit whose `temporal.redrawn_detail` is `redrawn`, synthesised on
        (height, width) frames; the patch never larger than the frame."""
        patch_size, weights = self.patch_size, self.weights
        if redrawn >= self.redrawn.threshold:
            patch_size, weights = self.redrawn.patch_for(height, width), self.redrawn.weights
        largest = (min(height, width) - 1) | 1  # the largest odd side that fits the frame
        return min(patch_size, largest), weights

    def __call__(self, request: FillRequest) -> np.ndarray:
        # the keyframe's side is the same for every frame of a render: built once per keyframe (~10 ms at 512x512)
        cache = request.keyframe_cache if request.keyframe_cache is not None else KeyframeCache()
        source_guide = cache.get("patch-guide", request.keyframe,
                                 lambda: keyframe_guide(request.source_keyframe, request.style))  # fmt: skip
        target_guide = frame_guide(request.source_frame, request.map, request.carried)
        patch_size, weights = self.settings_for(request.redrawn, *request.fill.shape)
        weights = guide_channel_weights(weights)
        extra = {}
        if request.appearance is not None:  # patches bring the edit's response to colour, not the keyframe's colours
            extra["appearance"] = (request.appearance.base, request.appearance.gain, request.source_frame)
        fill = request.fill
        if not request.holes_only and fill.mean() > self.whole_frame:
            fill = np.ones_like(fill)
        return self.synthesize(request.style, source_guide, target_guide, fill, request.estimate,
                               patch_size=patch_size, guide_weights=weights, **extra)  # fmt: skip


@dataclass(frozen=True)
class GuideWeights:
    """Relative weight of each guide group (each group's weight is spread over its channels; all sum to 1).

    Measured on the real-motion benchmark's clips (with the appearance model, which makes a patch's source colour
    the thing to match): from colour 1 / position 2 to colour 6 / position 0.5, +0.8 dB on 12 cases of three clips
    and +0.7 dB (drift 3.0 -> 2.1 dB) on 20 cases of the four others; colour 3 or position 0.2 sit in between or tie.
    Where the keyframe cannot explain a pixel, the map there is a guess, so where it points counts for little."""

    colour: float = 6.0  # source keyframe vs source frame t, RGB: what the surface looks like
    edges: float = 0.5  # gradient magnitude of the blurred grey images: keeps structure where colours are close
    position: float = 0.5  # identity grid vs map_t: patches come from near where the anchored map says the pixel was
    temporal: float = 0.5  # the style vs the previous output carried to t: what the user saw one frame ago


@dataclass(frozen=True)
class RedrawnPatches:
    """Larger patches with a heavier edge guide for an edit that re-draws detail (`FillRequest.redrawn` >=
    `threshold`, grey levels; the temporal blend's `TemporalBlend.redrawn_to`): a 7 px patch holds a whole stroke of
    a cartoon's outline or a sketch's hatching where a 5 px one cuts it, and the edges keep strokes on the source's
    structure; strokes scale with the frame, so the patch grows by `grow` px per doubling of the frame's size above
    256 px (the geometric mean of its sides, rounded to whole doublings; the frame synthesised, which at a scaled
    render is the measuring size's). On real clips with exact ground truth:

    - patch 7 / edges 1.5 against 5 / 0.5: at 256 px (7 clips, 48 frames) +0.27 dB on average over the 13 cases
      above the threshold (-0.02 to +0.47), while below it the cases spread -0.31 to +0.60; at 512 px (3 clips)
      +0.54 dB on the cartoons and sketches, while a colour grade (redrawn ~1-2) lost 0.28-0.69 dB;
    - edges 3 against 1.5 with patch 7, at 256 px (5 clips x cartoon and sketch, 32 frames): +0.05 dB, no case worse;
      patch 9 there: -0.04 dB;
    - at 512 px (dog and breakdance, 16 frames): patch 9 / edges 3 +0.31 dB over 7 / 1.5 on the three cases above
      the threshold (+0.20 to +0.71), patch 11 / edges 3 within -0.10..+0.14 of patch 9.

    About 1.4x the synthesis's CPU time at patch 7."""

    threshold: float = TemporalBlend.redrawn_to  # where the blend reaches its full strength: one gate for both
    patch_size: int = 7  # at 256 px and smaller
    grow: int = 2  # px more per doubling of the frame's size above 256 px (0: `patch_size` at every size)
    weights: GuideWeights = GuideWeights(edges=3.0)

    def __post_init__(self) -> None:
        if self.patch_size < 1 or self.patch_size % 2 == 0 or self.grow < 0 or self.grow % 2:
            raise ValueError(f"RedrawnPatches: patch_size must be odd and grow even and >= 0, got {self.patch_size} "
                             f"and {self.grow}")  # fmt: skip

    def patch_for(self, height: int, width: int) -> int:
        """The patch side for (height, width) frames."""
        doublings = max(0, round(math.log2(math.sqrt(height * width) / 256)))
        return self.patch_size + self.grow * doublings


def patch_guides(source_keyframe: np.ndarray, source_frame: np.ndarray, map_t: np.ndarray, style: np.ndarray,
                 carried: np.ndarray, weights: GuideWeights = GuideWeights()
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """(source_guide, target_guide, guide_weights): (H, W, 9) float32 guides of the keyframe (`keyframe_guide`) and of
    frame t (`frame_guide`), in [0, 1] (position may leave it where the map leaves the keyframe), and the 9 channel
    weights for `patches.synthesize` (`guide_channel_weights`).

    Channels: colour (3), edges (1), position (2: x / (W - 1), y / (H - 1)), temporal (3).
    """
    return (keyframe_guide(source_keyframe, style), frame_guide(source_frame, map_t, carried),
            guide_channel_weights(weights))  # fmt: skip


def keyframe_guide(source_keyframe: np.ndarray, style: np.ndarray) -> np.ndarray:
    """(H, W, 9) float32: the keyframe's side of `patch_guides` (its source colours and edges, the identity grid, the
    style), the same for every frame propagated from it."""
    h, w = source_keyframe.shape[:2]
    return np.concatenate([source_keyframe / np.float32(255), _edges(source_keyframe)[..., None],
                           identity_map(h, w) / _grid_scale(h, w), style / np.float32(255)], axis=2)  # fmt: skip


def frame_guide(source_frame: np.ndarray, map_t: np.ndarray, carried: np.ndarray) -> np.ndarray:
    """(H, W, 9) float32: frame t's side of `patch_guides` (its source colours and edges, its anchored map, the
    previous output carried to it)."""
    h, w = source_frame.shape[:2]
    return np.concatenate([source_frame / np.float32(255), _edges(source_frame)[..., None],
                           map_t / _grid_scale(h, w), carried / np.float32(255)], axis=2)  # fmt: skip


def guide_channel_weights(weights: GuideWeights) -> np.ndarray:
    """(9,) float32: each group's weight spread over its channels, all summing to 1."""
    groups = [(weights.colour, 3), (weights.edges, 1), (weights.position, 2), (weights.temporal, 3)]
    total = sum(g for g, _ in groups) or 1.0
    return np.concatenate([np.full(n, g / total / n, np.float32) for g, n in groups])


def _grid_scale(h: int, w: int) -> np.ndarray:
    return np.array([max(w - 1, 1), max(h - 1, 1)], np.float32)


def _edges(image: np.ndarray) -> np.ndarray:
    """(H, W) float32 in [0, 1]: gradient magnitude of the blurred grey image (a soft edge map, as EbSynth's)."""
    grey = cv2.GaussianBlur(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32), (0, 0), 1.0)
    magnitude = cv2.magnitude(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))
    return np.clip(magnitude / 255.0, 0, 1)  # Sobel's gain is 8: a slope of 32 grey levels per px saturates


class ColourTransfer:
    """A per-pixel colour mapping learnt from (source keyframe -> edited keyframe) pairs: a least-squares affine fit
    plus a smoothed 3-D lookup table (17^3 vertices, trilinear) of what the affine fit misses, shrunk towards it where
    few pairs were seen. An exact model for colour grades; a plausible average colour for anything else."""

    bins = 16

    def __init__(self, source: np.ndarray, edited: np.ndarray, prior: float = 4.0):
        x = source.reshape(-1, 3)[::2].astype(np.float32)  # every other pixel: pairs are redundant, half the cost
        y = edited.reshape(-1, 3)[::2].astype(np.float32)
        design = np.concatenate([x / 255, np.ones((len(x), 1), np.float32)], axis=1)
        self.affine = np.linalg.lstsq(design, y, rcond=None)[0].astype(np.float32)  # (4, 3)
        residual = y - design @ self.affine
        n = self.bins + 1
        vertex = np.rint(x * (self.bins / 255)).astype(np.int64) @ np.array([n * n, n, 1])
        sums = np.stack([np.bincount(vertex, residual[:, c], n**3) for c in range(3)], axis=1).reshape(n, n, n, 3)
        counts = np.bincount(vertex, minlength=n**3).astype(np.float32).reshape(n, n, n, 1)
        sums, counts = _smooth3(sums), _smooth3(counts)
        self.lut = (sums / (counts + prior)).astype(np.float32)  # (17, 17, 17, 3)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 3) uint8 source colours -> (N, 3) float32 edited colours."""
        x = pixels.astype(np.float32)
        out = x / 255 @ self.affine[:3] + self.affine[3]
        c = x * (self.bins / 255)
        i0 = np.minimum(c.astype(np.int64), self.bins - 1)
        f = c - i0
        for corner in range(8):
            bits = [(corner >> a) & 1 for a in range(3)]
            wgt = np.prod([f[:, a] if b else 1 - f[:, a] for a, b in enumerate(bits)], axis=0)
            out += wgt[:, None] * self.lut[i0[:, 0] + bits[0], i0[:, 1] + bits[1], i0[:, 2] + bits[2]]
        return out


def _smooth3(a: np.ndarray) -> np.ndarray:
    """A [1, 2, 1] / 4 blur along each of the three colour axes (edges replicated)."""
    for axis in range(3):
        p = np.concatenate([np.take(a, [0], axis), a, np.take(a, [-1], axis)], axis)
        n = a.shape[axis]
        lo, mid, hi = (np.take(p, range(i, n + i), axis) for i in range(3))
        a = (lo + 2 * mid + hi) / 4
    return a


def fallback_estimate(rendered: np.ndarray, valid: np.ndarray, source_frame: np.ndarray,
                      colour: Callable[[np.ndarray], np.ndarray], carry: "Carry | None", feather: float
                      ) -> np.ndarray:  # fmt: skip
    """(H, W, 3) uint8: `rendered` where valid; elsewhere the colour transfer of the source frame, plus, where the
    source's flow from the previous frame holds, what the previous output added to *its* colour transfer.

    Carrying the previous output itself would keep stale keyframe content alive for ever (an eye that closes keeps
    showing the keyframe's open eye, one frame-to-frame step at a time); carrying only its difference from the colour
    transfer keeps the edit's look while the colours follow the source. Keyframe pixels fade into the fallback over
    `feather` px *inside* the valid region, so no invalid pixel takes keyframe pixels and no hard seam shows.
    """
    if valid.all():
        return rendered
    weight = np.clip(cv2.distanceTransform(valid.astype(np.uint8), cv2.DIST_L2, 3) / (feather + 1), 0, 1)
    todo = np.nonzero(weight < 1)
    fallback = colour(source_frame[todo])
    if carry is not None:
        ok = carry.ok[todo]
        at = (todo[0][ok], todo[1][ok])
        fallback[ok] += carry.sample(carry.previous, at) - colour(carry.sample(carry.previous_source, at))
    w = weight[todo][:, None]
    out = rendered.copy()
    out[todo] = np.clip(np.rint(w * rendered[todo] + (1 - w) * fallback), 0, 255).astype(np.uint8)
    return out


@dataclass
class Carry:
    """The previous frame of a chain, to be read at x + flow(x): its output and its source frame."""

    previous: np.ndarray  # (H, W, 3) uint8 output of the previous frame
    previous_source: np.ndarray  # (H, W, 3) uint8 its source frame
    flow: np.ndarray  # (H, W, 2) float32 source flow from this frame to the previous one
    ok: np.ndarray  # (H, W) bool: that flow passes the forward-backward check and stays in the frame

    def sample(self, image: np.ndarray, at: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """(N, 3) float32: image bilinearly sampled at the listed pixels (y, x) moved by the flow; only those."""
        ys, xs = at
        return sample_points(image, self.flow[ys, xs, 0] + xs, self.flow[ys, xs, 1] + ys)

    def full(self) -> np.ndarray:
        """(H, W, 3) uint8: the previous output carried to this frame (the temporal guide of patch synthesis)."""
        at = identity_map(*self.ok.shape) + self.flow
        return cv2.remap(self.previous, at[..., 0], at[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
