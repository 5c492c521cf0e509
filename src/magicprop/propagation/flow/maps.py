"""Anchored coordinate maps: for each frame, where each of its pixels was in the keyframe, and whether the keyframe
explains it at all.

Chaining warps frame to frame (`baselines.propagate_flow`) resamples the output at every step, so blur compounds and
flow errors add up. Here the *coordinates* are chained instead (EbSynth-style anchored warping): map_t(x) = map_p(x +
flow_{t->p}(x)), p the neighbour nearer the keyframe, and every map is then checked against the real source: the source
keyframe warped by map_t should look like source frame t, so the flow between the two (at full resolution) is a
correction composed into map_t. Errors therefore do not accumulate: each frame's map is re-measured against the
keyframe itself, and the edited keyframe is sampled once through it.

Conventions: a map is (H, W, 2) float32 of absolute keyframe coordinates, channel 0 = x (columns); flows are those of
`motion.flow` (channel 0 = dx, `optical_flow(a, b)`: a[y, x] ~ b[y + dy, x + dx]).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator

import cv2
import numpy as np
from numba import njit

from .geometry import (colour_mismatch, compose, identity_map, inside, local_distance, sample,  # noqa: F401 - also maps' API
                       sample_points)
from ...allocator import KEEP_PAGES_MAX_PIXELS, keep_freed_pages
from .resolution import Resized, enlarge, measure_size, upsample_map

PRESETS = {"medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST}
MIN_FLOW_SIDE = 32  # DIS refuses frames under ~12 px a side (its patches and pyramid): smaller ones are padded


@dataclass(frozen=True)
class MapSettings:
    """How anchored maps are measured and checked. Every field enters the work folder's fingerprint."""

    # The frame-to-frame flow only starts each map (and finds occlusions): "medium" is `motion.flow.optical_flow`
    # (2 x ~45 ms per 512x512 frame on 2 cores), "fast" DIS's FAST preset (2 x ~11 ms; coarser at motion boundaries,
    # which costs a little validity; the correction refines the map anyway).
    frame_flow: str = "medium"
    # Flows between frame t and the source keyframe warped by its map, composed into the map (0: none, and maps drift:
    # 1 to 4.6 dB lower PSNR at frame 47 of real clips). One pass costs ~90 ms at 512x512; a second gains < 0.1 dB.
    correction_passes: int = 1
    # The correction runs DIS at full resolution (finest scale 0). Variational refinement keeps it smooth in flat
    # regions, where a bare patch flow jitters the edit's texture from frame to frame (warp error +5% without it);
    # 0 iterations save ~30 ms, more than 1 buys nothing measurable.
    correction_refinement: int = 1
    mismatch_threshold: float = 28.0  # local RMS RGB distance (0..255) above which a map is wrong (`colour_mismatch`)
    mismatch_blur: float = 1.0  # sigma of that blur: tolerates codec noise and sub-pixel misregistration at edges
    mismatch_window: float = 2.0  # sigma of the window over which that distance is averaged (as a local RMS)
    # px a map must stay inside the keyframe's outermost pixel centres: -0.5 lets it reach half a pixel beyond them
    # (it samples the border pixel there), so a still border is not lost to a coordinate of -1e-6
    margin: float = -0.5
    # The maps are measured on the clip shrunk to at most this many pixels (0: at the source's own size) and brought
    # up to it (`resolution`); the keyframe is still sampled, and its validity checked, at full size.
    measure_pixels: int = 350_000

    def __post_init__(self) -> None:
        if self.frame_flow not in PRESETS:
            raise ValueError(f"frame_flow must be one of {sorted(PRESETS)}, got {self.frame_flow!r}")
        if self.correction_passes < 0 or self.correction_refinement < 0:
            raise ValueError("correction_passes and correction_refinement must be >= 0")
        if self.measure_pixels < 0:
            raise ValueError(f"measure_pixels must be >= 0 (0: measure at the source's size), got {self.measure_pixels}")

    def measure_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) at which the maps of a (height, width) clip are measured (`resolution.measure_size`)."""
        return measure_size(height, width, self.measure_pixels)


@dataclass
class AnchoredFrame:
    """One frame of a chain: its map into the keyframe and what the keyframe explains."""

    index: int
    map: np.ndarray  # (H, W, 2) float32: (x, y) of each pixel in the keyframe
    valid: np.ndarray  # (H, W) bool: the map stays in the keyframe, the flow is consistent and the colours agree
    step: int  # +1 (walking forward) or -1: the previous frame of the chain is index - step
    # (H, W, 2) float32: source flow from this frame to the previous one of the chain; None when the map was measured
    # at a reduced size (the flow is `measured`'s)
    flow: np.ndarray | None
    flow_ok: np.ndarray | None  # (H, W) bool: that flow passes the forward-backward check and stays in the frame
    occluded: np.ndarray | None = None  # (H, W) bool: the previous frame did not show this pixel (forward-backward check)
    measured: "AnchoredFrame | None" = None  # the frame as measured at a reduced size; None when measured at full size

    @property
    def at_measured_size(self) -> "AnchoredFrame":
        """The frame as its map was measured: itself, or the reduced-size frame it was brought up from."""
        return self if self.measured is None else self.measured


def fill_map(map_: np.ndarray, known: np.ndarray) -> np.ndarray:
    """The map with its unknown pixels re-estimated from the known ones (push-pull on the displacement).

    Where frame t shows what the previous frame did not (an occlusion), the flow there, and so the chained map, is
    meaningless; the neighbours' motion is the best guess, and the colour check decides whether it holds.
    """
    if known.all():
        return map_
    grid = identity_map(*known.shape)
    h, w = known.shape
    ys, xs = np.nonzero(~known)
    disp = fill_holes(map_ - grid, known)  # at half resolution: a hole is always wider than a pixel or two
    out = map_.copy()
    sx, sy = disp.shape[1] / w, disp.shape[0] / h
    out[ys, xs] = grid[ys, xs] + sample_points(disp, (xs + 0.5) * sx - 0.5, (ys + 0.5) * sy - 0.5)
    return out


def fill_holes(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """(h, w, C) float32 at half resolution (or less): the known values averaged, the unknown ones filled from a
    normalised-convolution pyramid of the known ones (0 where nothing is known)."""
    weight = known.astype(np.float32)
    levels = [(_down(values * weight[..., None]), cv2.pyrDown(weight))]
    while min(levels[-1][1].shape) > 8:
        v, w = levels[-1]
        levels.append((_down(v), cv2.pyrDown(w)))
    v, w = levels[-1]
    mean = v.reshape(-1, v.shape[2]).sum(0) / max(float(w.sum()), 1e-6) if w.any() else np.zeros(v.shape[2], np.float32)
    est = np.where(w[..., None] > 1e-6, v / np.maximum(w, 1e-6)[..., None], mean).astype(np.float32)
    for v, w in reversed(levels[:-1]):
        up = cv2.resize(est, (w.shape[1], w.shape[0]), interpolation=cv2.INTER_LINEAR).reshape(v.shape)
        trust = np.clip(w * 4, 0, 1)[..., None]  # a pixel with a quarter of its footprint known is taken as known
        est = trust * (v / np.maximum(w, 1e-6)[..., None]) + (1 - trust) * up
    return est


def _down(v: np.ndarray) -> np.ndarray:
    out = cv2.pyrDown(v)  # OpenCV drops a trailing channel axis of size 1
    return out.reshape(out.shape[0], out.shape[1], v.shape[2])


@njit(cache=True, nogil=True)
def _bilerp(a, y0, x0, fy, fx):  # pragma: no cover - compiled
    """a (H, W) at (y0 + fy, x0 + fx), bilinear, 0 <= fy, fx <= 1 and the 2x2 block inside a."""
    top = a[y0, x0] + fx * (a[y0, x0 + 1] - a[y0, x0])
    bottom = a[y0 + 1, x0] + fx * (a[y0 + 1, x0 + 1] - a[y0 + 1, x0])
    return top + fy * (bottom - top)


@njit(cache=True, nogil=True)
def _flow_checks(flow_tp, flow_pt, unreliable, alpha1, alpha2):  # pragma: no cover - compiled
    """Per pixel of frame t, in one pass: the forward-backward check of `motion.flow.occlusion_mask` (Sundaram et al.
    2010, Eq. 5: |w + w_hat|^2 > alpha1 (|w|^2 + |w_hat|^2) + alpha2, w_hat = flow_pt bilinear at x + w), whether x + w
    leaves the frame (`outside_frame`), and whether the previous frame's unreliable mask, bilinear at x + w (border
    replicated), exceeds one half. Frames of one row or column are handled by the caller (`flow_checks`)."""
    h, w = flow_tp.shape[:2]
    occluded = np.zeros((h, w), np.bool_)
    outside = np.zeros((h, w), np.bool_)
    carried = np.zeros((h, w), np.bool_)
    back_u, back_v = flow_pt[:, :, 0], flow_pt[:, :, 1]
    for y in range(h):
        for x in range(w):
            u, v = flow_tp[y, x, 0], flow_tp[y, x, 1]
            px, py = x + u, y + v
            outside[y, x] = px < 0 or px > w - 1 or py < 0 or py > h - 1
            cx, cy = min(max(px, 0.0), w - 1.0), min(max(py, 0.0), h - 1.0)  # border replicated, as cv2.remap does
            x0, y0 = min(int(cx), w - 2), min(int(cy), h - 2)
            fx, fy = cx - x0, cy - y0
            bu, bv = _bilerp(back_u, y0, x0, fy, fx), _bilerp(back_v, y0, x0, fy, fx)
            lu, lv = u + bu, v + bv
            occluded[y, x] = lu * lu + lv * lv > alpha1 * (u * u + v * v + bu * bu + bv * bv) + alpha2
            carried[y, x] = _bilerp(unreliable, y0, x0, fy, fx) > 0.5
    return occluded, outside, carried


def flow_checks(flow_tp: np.ndarray, flow_pt: np.ndarray, unreliable: np.ndarray) -> tuple[np.ndarray, ...]:
    """(occluded, outside, carried), bool (H, W) each: see `_flow_checks` (alpha1 = 0.01, alpha2 = 0.5, the defaults
    of `motion.flow.occlusion_mask`)."""
    h, w = unreliable.shape
    if h < 2 or w < 2:  # no 2x2 block to interpolate in: pad by replication, check, crop
        widths = [(0, 2 - min(h, 2)), (0, 2 - min(w, 2))]
        pad = lambda a: np.pad(a, widths + [(0, 0)] * (a.ndim - 2), mode="edge")  # noqa: E731
        return tuple(m[:h, :w] for m in flow_checks(pad(flow_tp), pad(flow_pt), pad(unreliable)))
    return _flow_checks(flow_tp, flow_pt, unreliable.astype(np.float32), 0.01, 0.5)


def frame_flow(a: np.ndarray, b: np.ndarray, preset: str) -> np.ndarray:
    """Source flow from frame a to frame b (uint8 RGB), DIS with the named preset ("medium" is what
    `motion.flow.optical_flow` computes)."""
    if preset not in PRESETS:
        raise ValueError(f"frame_flow must be one of {sorted(PRESETS)}, got {preset!r}")
    grey = lambda f: cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)  # noqa: E731
    return _dis(cv2.DISOpticalFlow_create(PRESETS[preset]), grey(a), grey(b))


# Two single-thread workers, started on first use and shared by every chain (`_executor`):
# - "flow": the frame-to-frame flows depend on the source alone, so the next step's two DIS runs (each on one core:
#   OpenCV's DIS barely uses a second thread, and it releases the GIL) overlap the correction, the warp and the fill of
#   the current frame on the main thread.
# - "maps": walks the chains one frame ahead of the renderer (`AnchoredChain.walk`): the map of frame t + 1 (its
#   correction DIS, the checks) is measured while the main thread renders, fills and saves frame t. Not the flow
#   worker: a step waits on that worker's flows, and one thread waiting on itself would never return.
# One thread each, not more: together with the main thread they keep two cores busy.
_WORKERS: dict[str, ThreadPoolExecutor] = {}


def _executor(name: str) -> ThreadPoolExecutor:
    if name not in _WORKERS:
        _WORKERS[name] = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"magicprop-{name}")
    return _WORKERS[name]


def flow_pair(a: np.ndarray, b: np.ndarray, preset: str) -> tuple[np.ndarray, np.ndarray]:
    """(flow a -> b, flow b -> a) of two uint8 RGB frames, the pair the forward-backward check needs."""
    return frame_flow(a, b, preset), frame_flow(b, a, preset)


class FlowPrefetch:
    """A chain's frame-to-frame source flows, each step's pair computed on the worker thread one step ahead.

    `get(t)` returns (flow t -> t - step, flow t - step -> t) and starts the pair of the step after it, unless t is
    `last` (the frame the caller stops at: no pair is computed that nothing reads); results are the same numbers as
    computing them in place (DIS is deterministic), so prefetching never changes a frame."""

    def __init__(self, source: np.ndarray, step: int, preset: str, last: int | None = None):
        self.source, self.step, self.preset, self.last = source, step, preset, last
        self.pending: dict[int, Future] = {}

    def _submit(self, t: int) -> None:
        if self.last is not None and (t - self.last) * self.step > 0:
            return
        if 0 <= t - self.step < len(self.source) and 0 <= t < len(self.source) and t not in self.pending:
            self.pending[t] = _executor("flow").submit(flow_pair, self.source[t], self.source[t - self.step], self.preset)

    def get(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        self._submit(t)
        future = self.pending.pop(t)
        for stale in [i for i in self.pending if i != t + self.step]:  # a chain restarted elsewhere: drop the rest
            self.pending.pop(stale).cancel()
        self._submit(t + self.step)
        return future.result()


def correction_flow(frame_grey: np.ndarray, warped_grey: np.ndarray, refinement: int) -> np.ndarray:
    """Flow from source frame t to the warped source keyframe, measured at full resolution (DIS, finest scale 0)."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)  # fresh: DIS instances keep state between calls
    dis.setFinestScale(0)
    dis.setVariationalRefinementIterations(refinement)
    return _dis(dis, frame_grey, warped_grey)


def _dis(dis, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(H, W, 2) float32 flow from grey a to grey b; frames too small for DIS are padded (reflected), then cropped."""
    h, w = a.shape
    pad_y, pad_x = max(MIN_FLOW_SIDE - h, 0), max(MIN_FLOW_SIDE - w, 0)
    if pad_y or pad_x:
        a, b = (cv2.copyMakeBorder(g, 0, pad_y, 0, pad_x, cv2.BORDER_REFLECT) for g in (a, b))
    return np.ascontiguousarray(dis.calc(a, b, None)[:h, :w], dtype=np.float32)


def correct(map_t: np.ndarray, key_grey: np.ndarray, frame_grey: np.ndarray, trusted: np.ndarray, passes: int,
            refinement: int) -> np.ndarray:
    """map_t composed with the residual flow between source frame t and the source keyframe warped by map_t.

    Outside `trusted` (the map leaves the keyframe or follows a wrong surface) the warped keyframe is replaced by frame
    t itself, so the residual there is zero: otherwise DIS would match the replicated border or the occluder, and its
    coarse levels and smoothing would carry that error into the good pixels around it.
    """
    for _ in range(passes):
        # cubic, not bilinear: bilinear blurs by a position-dependent amount, which DIS reads as a little motion and
        # which left a drift of ~0.03 px per frame on a synthetic zoom (cubic: ~0.015)
        warped = np.where(trusted, sample(key_grey, map_t, cv2.INTER_CUBIC), frame_grey)
        map_t = compose(map_t, correction_flow(frame_grey, warped, refinement))
    return map_t


class AnchoredChain:
    """One keyframe's walk through the clip in one direction (step +1 or -1), one frame per `advance()`.

    Its state (the map of the last frame and where that map is unreliable) is all it needs to continue, so a run can be
    resumed from a saved state bit-identically.
    """

    def __init__(self, source: np.ndarray, keyframe_index: int, step: int, settings: MapSettings = MapSettings(),
                 state: tuple[int, np.ndarray, np.ndarray] | None = None, *, measured: Resized | None = None):  # fmt: skip
        """measured: the clip at its measuring size, when the caller already reads it there (shared, not resized twice)."""
        # the chain walks the clip at its measuring size; `full` is the clip itself, where `advance` checks each map
        self.full, self.keyframe_index, self.step, self.settings = source, keyframe_index, step, settings
        h, w = settings.measure_size(*source.shape[1:3])
        self.scaled = (h, w) != tuple(source.shape[1:3])
        if self.scaled and (measured is None or measured.size != (h, w)):
            measured = Resized(source, (h, w))
        if self.scaled and source.shape[1] * source.shape[2] <= KEEP_PAGES_MAX_PIXELS:
            keep_freed_pages()  # full-size frames reuse their temporaries' pages, up to 1440p (`allocator`)
        self.source = measured if self.scaled else source
        self.key_grey = cv2.cvtColor(self.source[keyframe_index], cv2.COLOR_RGB2GRAY)
        if self.scaled:
            self.full_key = np.asarray(source[keyframe_index])
            self.full_key_grey = cv2.cvtColor(self.full_key, cv2.COLOR_RGB2GRAY)
        if state is None:
            state = (keyframe_index, identity_map(h, w).copy(), np.zeros((h, w), bool))
        self.index, self.map, self.unreliable = state
        self.flows = FlowPrefetch(self.source, step, settings.frame_flow)

    def state(self) -> dict[str, np.ndarray]:
        return {"map": self.map, "unreliable": self.unreliable.astype(np.uint8)}

    @classmethod
    def from_state(cls, source, keyframe_index, step, settings, index, arrays, *, measured=None) -> "AnchoredChain":
        state = (index, arrays["map"], arrays["unreliable"].astype(bool))
        return cls(source, keyframe_index, step, settings, state, measured=measured)

    def walk(self, stop: int) -> Iterator[tuple[AnchoredFrame, dict[str, np.ndarray]]]:
        """(frame, the chain's state right after it) for every frame up to and including `stop`, each advanced on the
        map worker one frame ahead of the caller, so the caller's work on a frame overlaps the next frame's map. The
        frames are those `advance` gives in place (the chain's work depends on the source alone), and the state is the
        one to save with that frame: by the time the caller has it, the chain itself may already be a frame further."""
        remaining = (stop - self.index) * self.step
        if remaining <= 0:
            return
        self.flows.last = stop

        def step() -> tuple[AnchoredFrame, dict[str, np.ndarray]]:
            frame = self.advance()
            return frame, self.state()  # new arrays every step (advance replaces, never writes into, map and mask)

        future = _executor("maps").submit(step)
        try:
            for i in range(remaining):
                result = future.result()
                future = _executor("maps").submit(step) if i + 1 < remaining else None
                yield result
        finally:  # the caller stopped early (an error, a cancelled job): let no step run on behind its back
            if future is not None and not future.cancel():
                future.exception()

    def advance(self) -> AnchoredFrame:
        """The next frame's map, corrected against the source, and its validity, at the clip's size (measured at the
        measuring size, then brought up: `resolution.upscale_frame`)."""
        measured = self._measure()
        if not self.scaled:
            return measured
        return upscale_frame(measured, self.full_key, np.asarray(self.full[measured.index]), self.full_key_grey,
                             self.settings)  # fmt: skip

    def _measure(self) -> AnchoredFrame:
        """The next frame's map and validity at the measuring size; the chain's state moves on."""
        # 1. Frame-to-frame flow of the source, and where it can be trusted (forward-backward check, inside the frame)
        t, s = self.index + self.step, self.settings
        src_t = self.source[t]
        flow_tp, flow_pt = self.flows.get(t)
        occluded, outside, carried = flow_checks(flow_tp, flow_pt, self.unreliable)
        flow_ok = ~(occluded | outside)

        # 2. Chain the coordinates; where frame t shows what frame p did not, the flow (and so the chained map) is
        # meaningless: re-estimate the map there from the neighbours' motion
        map_t = compose(self.map, flow_tp)
        map_t = fill_map(map_t, ~occluded | ~inside(map_t))
        reliable = ~(occluded | carried)

        # 3. Correct against the keyframe itself, so nothing drifts
        frame_grey = cv2.cvtColor(src_t, cv2.COLOR_RGB2GRAY)
        trusted = reliable & inside(map_t, 1.0)
        map_t = correct(map_t, self.key_grey, frame_grey, trusted, s.correction_passes, s.correction_refinement)

        # 4. What the keyframe explains: inside it, visible in the previous frame, and the colours agree
        in_key = inside(map_t, s.margin)
        warped = sample(self.source[self.keyframe_index], map_t)
        agrees = ~colour_mismatch(warped, src_t, s.mismatch_threshold, s.mismatch_blur, s.mismatch_window)
        valid = in_key & ~occluded & agrees
        self.index, self.map, self.unreliable = t, map_t, in_key & ~valid
        return AnchoredFrame(t, map_t, valid, self.step, flow_tp, flow_ok, occluded)


def anchored_maps(source: np.ndarray, keyframe_index: int, settings: MapSettings = MapSettings()
                  ) -> Iterator[AnchoredFrame]:  # fmt: skip
    """Every other frame's anchored map and validity: forward from the keyframe to the end, then backward to 0."""
    for step, stop in ((1, len(source) - 1), (-1, 0)):
        chain = AnchoredChain(source, keyframe_index, step, settings)
        while chain.index != stop and 0 <= chain.index + step < len(source):
            yield chain.advance()


def upscale_frame(measured: AnchoredFrame, key: np.ndarray, frame: np.ndarray, key_grey: np.ndarray,
                  settings: MapSettings) -> AnchoredFrame:  # fmt: skip
    """The full-size version of a frame whose map was measured at a reduced size: its map upsampled (`resolution.upsample_map`),
    its validity checked at full size (inside the keyframe, not occluded, colours agree). key / frame: (H, W, 3) uint8
    source keyframe and frame t; key_grey: the keyframe in grey. `flow` and `flow_ok` stay at the measured size
    (read them from `measured`)."""
    size = frame.shape[:2]
    frame_grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    map_ = upsample_map(measured.map, size, key_grey, frame_grey)
    # the colour check at full size with the measured size's tolerances: widening the blur by the size ratio (a map
    # measured at a third of the size is good to a fraction of a *measured* pixel) changed PSNR by < 0.02 dB on a
    # 1080p and a 720p clip, and costs a wider blur of every frame
    distance = local_distance(sample(key, map_), frame, settings.mismatch_blur, settings.mismatch_window)
    occluded = enlarge(measured.occluded.astype(np.float32), size)
    # fully occluded neighbourhoods stay occluded; in the band between, the full-size colour check alone decides
    valid, fully_occluded = np.empty(size, bool), np.empty(size, bool)
    _full_size_validity(map_, np.float32(settings.margin), distance, np.float32(settings.mismatch_threshold**2),
                        occluded, np.float32(1.0 - 1e-6), valid, fully_occluded)  # fmt: skip
    return AnchoredFrame(measured.index, map_, valid, measured.step, None, None, fully_occluded, measured)


@njit(cache=True, nogil=True)
def _full_size_validity(map_, margin, distance, limit, occluded, full, valid, fully_occluded):  # pragma: no cover
    """In one pass over a full-size frame: valid = the map inside the keyframe (`inside`) & the colours agree
    (`colour_mismatch`: distance <= limit) & not fully occluded (occluded < full); fully_occluded = occluded >= full.
    The numpy expressions it replaces held eight full-size temporaries."""
    h, w = distance.shape
    right, bottom = np.float32(w - 1) - margin, np.float32(h - 1) - margin
    for y in range(h):
        for x in range(w):
            mx, my = map_[y, x, 0], map_[y, x, 1]
            hidden = occluded[y, x] >= full
            fully_occluded[y, x] = hidden
            valid[y, x] = (mx >= margin and mx <= right and my >= margin and my <= bottom and not distance[y, x] > limit
                           and not hidden)  # fmt: skip
