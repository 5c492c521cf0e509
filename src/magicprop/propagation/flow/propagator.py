"""The `flow` propagator: EbSynth-style anchored warping, with no weights.

Each frame is the edited keyframe sampled *once* through an anchored coordinate map (`maps`: chained from the
source's frame-to-frame flow and corrected every frame against the source keyframe itself), so neither blur nor drift
accumulates with the distance to the keyframe, unlike `baselines.propagate_flow`, which resamples its own output at
every step. Pixels no keyframe explains are filled (`fill`: guided patch synthesis after Jamriska et al. 2019,
"Stylizing Video by Example", when `patches` is available, else a colour transfer of the source). Where the edit
re-draws detail (a stylisation), each output is blended with the previous one carried along the source's flow, and
once a chain is rendered with the next one, back from the chain's end (`temporal`): less flicker, and the mean of a
re-drawn stroke is closer to the truth than any one drawing of it.

Several keyframes: between two keyframes both chains reach every frame; per pixel the valid one nearer in time wins,
with a short crossfade around the midpoint (`handover`) where both are valid (both are anchored to the same source,
so they agree in geometry and the crossfade cannot ghost; a hard switch would pop) and feathered seams between the
regions each one owns. Frames are streamed in order with flat memory: what is computed backward goes to a `FrameStore`
and is read back, and every finished frame and each chain's state are saved, so `resume=True` continues a killed run
with bit-identical frames.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, replace
from typing import Iterator

import cv2
import numpy as np
from tqdm.auto import tqdm

from ...video import clip_digest
from ..base import PropagationRequest, Propagator
from ..store import FrameStore
from .appearance import AppearanceSettings, LocalAffine, render_keyframe
from .fill import (Carry, ColourTransfer, FillFunction, FillRequest, KeyframeCache, PatchFill, colour_fill,
                            fallback_estimate)
from .handover import blend, keyframe_weight, mix_colours, nearer_keyframe
from .maps import AnchoredChain, AnchoredFrame, MapSettings
from .resolution import Resized, detail_fill, shrink
from .temporal import TemporalBlend, redrawn_detail, settle, temporal_blend

INTERPOLATIONS = {"cubic": cv2.INTER_CUBIC, "lanczos": cv2.INTER_LANCZOS4}


@dataclass(frozen=True)
class AnchoredSettings:
    """Everything but the maps' settings; all of it enters the work folder's fingerprint."""

    # How the edited keyframe is sampled, once per frame. One cubic resample at a half-pixel offset keeps ~80% of the
    # Laplacian's variance of real footage, Lanczos (8x8 taps) ~89%: "lanczos" costs ~20 ms more per 512x512 frame.
    interpolation: str = "lanczos"
    handover: float = 0.5  # fraction of the gap between two keyframes over which one hands over to the other
    feather: float = 6.0  # px over which the seam between the regions two keyframes own is blended
    fill_feather: float = 2.0  # px inside the valid region over which keyframe pixels fade into the fill
    # Carry the source's change between the keyframe and frame t into the edit through a local affine model of the
    # keyframe pair (`appearance`): shading, lighting and the detail resampling softened follow the footage. False
    # gives the plain warp.
    appearance: bool = True
    appearance_radius: float = AppearanceSettings.radius  # px at 256 px on the short side (`AppearanceSettings`)
    appearance_eps: float = AppearanceSettings.eps
    # the warp carries the source's change in two bands split by a Gaussian of this many px at 256 px on the short side
    # (`AppearanceSettings.detail_sigma`; 0: one band)
    appearance_detail_sigma: float = AppearanceSettings.detail_sigma
    # each output frame blended with its neighbours carried along the source's flow where that is reliable and the
    # edit re-draws detail (`temporal`); strength 0: the plain render
    temporal: TemporalBlend = TemporalBlend()

    @property
    def appearance_settings(self) -> AppearanceSettings:
        return AppearanceSettings(self.appearance_radius, self.appearance_eps, self.appearance_detail_sigma)


def resolve_fill(fill: str | FillFunction, synthesize=None) -> tuple[FillFunction, str]:
    """(fill function, its name for the fingerprint). "auto": guided patch synthesis if `patches` imports (or
    `synthesize` is given), else the colour transfer; "patches": patch synthesis or an ImportError; "colour"."""
    if callable(fill):
        return fill, f"{getattr(fill, '__module__', '?')}.{getattr(fill, '__qualname__', type(fill).__name__)}"
    if fill not in ("auto", "patches", "colour"):
        raise ValueError(f"fill must be 'auto', 'patches', 'colour' or a function, got {fill!r}")
    if fill == "colour":
        return colour_fill, "colour"
    try:
        patch = PatchFill(synthesize)
    except ImportError:
        if fill == "patches":
            raise
        return colour_fill, "colour"
    return patch, patch.name


class AnchoredFlowPropagator(Propagator):
    """The keyframe(s) carried by anchored coordinate maps (EbSynth-style; guides after Jamriska et al. 2019): sampled
    once per frame through a map re-measured against the source keyframe every frame, so the edit stays sharp and does
    not drift; occlusions and new content are filled (patch synthesis, or a colour transfer of the source).

    Where the flow fails everywhere (noise, cuts), no pixel is valid and every frame is the fill: the colour transfer
    of its source frame, plus what the previous output added to it where the flow still holds. Frames always come.
    """

    name = "flow"
    summary = "warp the keyframe through anchored flow maps, fill what it cannot explain (no weights)"
    needs_source = True
    combines_keyframes = True
    full_resolution = True

    def __init__(self, *, correction_passes: int = 1, correction_refinement: int = 1, frame_flow: str = "medium",
                 mismatch_threshold: float = 28.0, interpolation: str = "lanczos", handover: float = 0.5,
                 feather: float = 6.0, fill_feather: float = 2.0, fill: str | FillFunction = "auto",
                 synthesize=None, appearance: bool = True, measure_pixels: int = MapSettings.measure_pixels,
                 temporal_blend: float | TemporalBlend = TemporalBlend.strength):  # fmt: skip
        """Options are those of `MapSettings` (the maps) and `AnchoredSettings`; fill: "auto" (patch synthesis when
        `patches` imports, else the colour transfer), "patches", "colour", or a function of a `FillRequest`;
        synthesize: the patch synthesiser to use instead of `patches.synthesize`; appearance: carry the source's
        change since the keyframe into the edit (`appearance.LocalAffine`), in the warp and in the fill;
        measure_pixels: the maps of a larger clip are measured at this many pixels and brought up (0: at full size);
        temporal_blend: how much of its neighbouring outputs (the previous, then the next), carried along the
        source's flow, each frame keeps where the edit re-draws detail (`temporal.TemporalBlend`, or its strength; 0:
        none)."""
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {sorted(INTERPOLATIONS)}, got {interpolation!r}")
        self.maps = MapSettings(frame_flow=frame_flow, correction_passes=correction_passes,
                                correction_refinement=correction_refinement,
                                mismatch_threshold=mismatch_threshold, measure_pixels=measure_pixels)  # fmt: skip
        if not isinstance(temporal_blend, TemporalBlend):
            temporal_blend = TemporalBlend(strength=float(temporal_blend))
        self.settings = AnchoredSettings(interpolation, handover, feather, fill_feather, appearance,
                                         temporal=temporal_blend)  # fmt: skip
        self.fill, self.fill_name = resolve_fill(fill, synthesize)

    def fingerprint(self, request: PropagationRequest) -> dict:
        """Digests of the source (`clip_digest`: a lazy clip's identity, an array's pixels frame by frame) and keyframes,
        and every parameter: a resumed run must match all of them."""
        return {"propagator": "anchored-flow/2", "shape": list(request.source.shape), "source": clip_digest(request.source),
                "keyframes": {str(k): clip_digest(v) for k, v in request.keyframes.items()}, "maps": asdict(self.maps),
                "settings": asdict(self.settings_for(request)), "fill": self.fill_name}  # fmt: skip

    def settings_for(self, request: PropagationRequest) -> AnchoredSettings:
        """This propagator's settings, with the request's `PropagationSettings.temporal_blend` when it gives one."""
        strength = request.settings.temporal_blend
        if strength is None or strength == self.settings.temporal.strength:
            return self.settings
        return replace(self.settings, temporal=replace(self.settings.temporal, strength=float(strength)))

    def render(self, request: PropagationRequest) -> Iterator[np.ndarray]:
        keys = list(request.keyframes)
        if request.num_frames == len(keys):  # a one-frame clip, or every frame a keyframe
            yield from (request.keyframes[k] for k in keys)
            return
        store = FrameStore(request.work_dir, self.fingerprint(request), request.resume)
        run = _Run(self, request, store)
        try:
            # 1. Before the first keyframe: its backward chain, saved, then read back in order
            yield from run.lead(keys[0])
            yield request.keyframes[keys[0]]
            # 2. Between two keyframes: the later one's backward chain saved, then the earlier one's forward chain
            for a, b in zip(keys, keys[1:]):
                yield from run.forward(a, b)
                yield request.keyframes[b]
            # 3. After the last keyframe: its forward chain
            yield from run.forward(keys[-1], request.num_frames)
        finally:
            run.bar.close()
            store.close()


class _Run:
    """One render: the stores, the progress count, and the per-keyframe constants (colour transfer, source keyframe)."""

    def __init__(self, propagator: AnchoredFlowPropagator, request: PropagationRequest, store: FrameStore):
        self.p, self.request, self.store = propagator, request, store
        self.temporal = propagator.settings_for(request).temporal
        self.total = request.num_frames - len(request.keyframes)
        self.done = 0
        self.bar = tqdm(total=self.total, desc="anchored flow", unit="frame", disable=not request.progress)
        self.cache = KeyframeCache()  # per-keyframe constants: colour transfer, appearance model, the fill's guide
        # maps are measured at `size`; a clip larger than that is read there through `small` (and rendered at its own)
        self.size = propagator.maps.measure_size(*request.source.shape[1:3])
        self.small = Resized(request.source, self.size, keep=8) if self.size != request.source.shape[1:3] else None
        # the fill reads maps (patch synthesis); a scaled render also reads them for the gain at the pixels it fills
        self.needs_map = getattr(propagator.fill, "needs_map", propagator.fill is not colour_fill) or self.small is not None

    def colour(self, k: int) -> ColourTransfer:
        """Keyframe k's colour transfer, learnt once."""
        return self.cache.get("colour", k, lambda: ColourTransfer(*self.measured_pair(k)))

    def measured_pair(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(source keyframe k, edited keyframe k) at the measuring size, where the fill of a scaled render works."""
        if self.small is None:
            return self.request.source[k], self.request.keyframes[k]
        return self.small[k], self.cache.get("small keyframe", k, lambda: shrink(self.request.keyframes[k], self.size))

    def model(self, k: int) -> LocalAffine | None:
        """Keyframe k's local affine model (None when the settings turn it off), fitted once."""
        if not self.p.settings.appearance:
            return None
        return self.cache.get("appearance", k, lambda: LocalAffine(self.request.source[k], self.request.keyframes[k],
                                                                   self.p.settings.appearance_settings,
                                                                   fit_size=self.size))  # fmt: skip

    def finished(self, count: int = 1) -> None:
        """`count` more frames are done: the bar and the callback (frames done, frames to do; keyframes excluded)."""
        self.done += count
        self.bar.update(count)
        if self.request.callback is not None:
            self.request.callback(self.done, self.total)

    def chain(self, store: FrameStore, name: str, k: int, step: int) -> tuple[AnchoredChain, np.ndarray]:
        """Keyframe k's chain, continued from its saved state when there is one (and every frame it finished is intact:
        a damaged frame restarts the chain from its keyframe), and the output it last left."""
        saved = store.load_state(name)
        if saved is not None:
            index, maps = saved[0], store is not self.store and self.needs_map  # a pair's backward frames carry maps
            intact = lambda t: store.has(t) and (not maps or store.load_state(f"map-{t:05d}") is not None)  # noqa: E731
            done = range(index, k) if step < 0 else range(k + 1, index + 1)
            saved = saved if all(intact(t) for t in done) else None
        if saved is None:
            return AnchoredChain(self.request.source, k, step, self.p.maps, measured=self.small), self.request.keyframes[k]
        index, arrays = saved
        chain = AnchoredChain.from_state(self.request.source, k, step, self.p.maps, index, arrays, measured=self.small)
        return chain, store.load(index) if store is self.store else None  # the output it left is the frame it saved

    def render(self, k: int, frame: AnchoredFrame) -> np.ndarray:
        """The edited keyframe k sampled once through the frame's map, plus the source's change since the keyframe
        carried through its local affine model (`appearance.render_keyframe`; uint8 saturates)."""
        source = self.request.source
        return render_keyframe(self.request.keyframes[k], frame.map, INTERPOLATIONS[self.p.settings.interpolation],
                               model=self.model(k), frame=source[frame.index],
                               measured_map=frame.at_measured_size.map,
                               measured_frame=None if self.small is None else self.small[frame.index])  # fmt: skip

    def lead(self, k: int) -> Iterator[np.ndarray]:
        """Frames 0..k-1: keyframe k's backward chain, each finished frame saved, then all read back in order."""
        if k == 0:
            return
        chain, previous = self.chain(self.store, "lead", k, -1)
        if chain.index < k:  # resumed: those frames are done
            self.finished(k - chain.index)
        for frame, state in chain.walk(0):
            previous = self.finish(frame, self.render(k, frame), frame.valid, previous, k, None, 0.0,
                                   frame.at_measured_size.map)  # fmt: skip
            self.save(self.store, "lead", state, frame.index, previous)
            self.finished()
        # read back in order, which is the blend's second pass for this chain (`temporal.settle`)
        yield from self.settle(range(k), None, lambda t: k)

    def forward(self, a: int, b: int) -> Iterator[np.ndarray]:
        """Frames a+1..b-1 from keyframe a's forward chain, combined with keyframe b's (b < T) backward chain."""
        if b == a + 1:
            return
        name, closed = f"forward-{a:05d}", b < self.request.num_frames  # closed: b is a keyframe, not the clip's end
        owner = lambda t: nearer_keyframe(a, b, t) if closed else a  # noqa: E731 - whose blend and fill t takes
        settling = self.lookahead(a) > 0 or self.lookahead(owner(b - 1)) > 0
        chain, previous = self.chain(self.store, name, a, 1)
        if chain.index > a:  # resumed: those frames are done
            self.finished(chain.index - a)
            if not settling:
                yield from (self.store.load(t) for t in range(a + 1, chain.index + 1))
        if chain.index < b - 1:
            between = self.backward(a, b) if closed else None
            frames = self._forward(chain, previous, a, b, name, between, keep=settling)
            if settling:
                for _ in frames:  # every frame rendered and saved first: the second pass starts at the far end
                    pass
            else:
                yield from frames
            if between is not None:  # the pair is done: its backward frames are never read again
                shutil.rmtree(between.work_dir, ignore_errors=True)
        if settling:  # the second pass runs from b back to a; its frames wait on disk to be given in order
            settled = FrameStore(None, {}, False)
            try:
                order = range(b - 1, a, -1)
                frames = self.settle(order, self.request.keyframes[b] if closed else None, owner)
                for t, frame in tqdm(zip(order, frames), total=len(order), desc="second pass", unit="frame",
                                     leave=False, disable=not self.request.progress):  # fmt: skip
                    settled.save(t, frame)
                yield from (settled.load(t) for t in range(a + 1, b))
            finally:
                settled.close()

    def _forward(self, chain: AnchoredChain, previous: np.ndarray, a: int, b: int, name: str,
                 between: FrameStore | None, keep: bool) -> Iterator[np.ndarray]:  # fmt: skip
        for frame, state in chain.walk(b - 1):
            t, rendered, valid = frame.index, self.render(a, frame), frame.valid
            k, alpha, map_ = a, 0.0, frame.at_measured_size.map
            if between is not None:
                alpha, other = (t - a) / (b - a), between.load(t)  # keyframe b's rendering, its validity as channel 3
                valid_b = other[..., 3] > 127
                weight = keyframe_weight(valid, valid_b, alpha, self.p.settings.handover, self.p.settings.feather)
                rendered, valid = blend(rendered, other[..., :3], weight), valid | valid_b
                if nearer_keyframe(a, b, t) == b:  # the fill reads the nearer keyframe
                    k, map_ = b, between.load_state(f"map-{t:05d}")[1]["map"] if self.needs_map else None
            pair = (a, b) if between is not None else None
            previous = self.finish(frame, rendered, valid, previous, k, pair, alpha, map_)
            if keep or self.request.work_dir is not None:  # read back by the second pass or a resumed run only (a
                self.save(self.store, name, state, t, previous)  # 4K frame: 25 MB)
            self.finished()
            yield previous

    def backward(self, a: int, b: int) -> FrameStore:
        """Keyframe b's backward chain over a+1..b-1 in its own store: each frame's rendering with its validity as a
        4th channel (and its map when the fill reads maps); resumable on its own."""
        sub = FrameStore(self.store.work_dir / f"between-{a:05d}-{b:05d}", self.p.fingerprint(self.request),
                         self.request.resume)  # fmt: skip
        chain, _ = self.chain(sub, "backward", b, -1)
        for frame, state in chain.walk(a + 1):
            packed = np.concatenate([self.render(b, frame), frame.valid[..., None].astype(np.uint8) * 255], axis=2)
            sub.save(frame.index, packed)
            if self.needs_map:
                sub.save_state(f"map-{frame.index:05d}", frame.index, {"map": frame.at_measured_size.map})
            sub.save_state("backward", frame.index, state)
        return sub

    def save(self, store: FrameStore, name: str, state: dict[str, np.ndarray], t: int, output: np.ndarray) -> None:
        """The finished frame first, then the chain's state right after it (`AnchoredChain.walk`): a kill between the
        two only redoes this frame. The state does not repeat the frame (a resumed chain reads it back from the store)."""
        store.save(t, output)
        store.save_state(name, t, state)

    def finish(self, frame: AnchoredFrame, rendered: np.ndarray, valid: np.ndarray, previous: np.ndarray, k: int,
               pair: tuple[int, int] | None, alpha: float, map_: np.ndarray | None) -> np.ndarray:  # fmt: skip
        """The output frame (`compose`), blended with the previous output carried along the source's flow
        (`temporal.temporal_blend`; not at a scaled render, whose flow is the measuring size's)."""
        output = self.compose(frame, rendered, valid, previous, k, pair, alpha, map_)
        settings = self.temporal
        if self.small is not None or settings.strength == 0:
            return output
        source, measured = self.request.source, frame.at_measured_size
        return temporal_blend(output, previous, source[frame.index], source[frame.index - frame.step], measured.flow,
                              measured.flow_ok, settings, settings.strength_for(self.redrawn(k)))  # fmt: skip

    def lookahead(self, k: int) -> float:
        """The second pass's strength for frames that keyframe k owns (`TemporalBlend.lookahead_for`); 0 at a scaled
        render, which does not blend."""
        return 0.0 if self.small is not None else self.temporal.lookahead_for(self.redrawn(k))

    def settle(self, order: range, anchor: np.ndarray | None, owner) -> Iterator[np.ndarray]:
        """The saved frames in `order`, through the blend's second pass (`temporal.settle`); owner(t): the keyframe
        whose strength frame t takes."""
        return settle(order, self.store.load, self.request.source, anchor, lambda t: self.lookahead(owner(t)),
                      self.temporal, self.p.maps.frame_flow)  # fmt: skip

    def redrawn(self, k: int) -> float:
        """Keyframe k's `temporal.redrawn_detail`, measured once: what the blend and the fill's settings read."""
        return self.cache.get("redrawn", k, lambda: redrawn_detail(self.request.source[k], self.request.keyframes[k],
                                                                   self.model(k)))  # fmt: skip

    def compose(self, frame: AnchoredFrame, rendered: np.ndarray, valid: np.ndarray, previous: np.ndarray, k: int,
                pair: tuple[int, int] | None, alpha: float, map_: np.ndarray | None) -> np.ndarray:  # fmt: skip
        """The output frame before blending: `rendered` where valid, the fill elsewhere. map_: frame t's map into keyframe k at the
        measuring size. A scaled render fills at the measuring size and brings the fill up (`resolution.detail_fill`)."""
        if valid.all():
            return rendered
        t, step, scaled = frame.index, frame.step, self.small is not None
        source = self.small if scaled else self.request.source
        measured = frame.at_measured_size
        known = shrink(valid.astype(np.float32), self.size) > 0.999 if scaled else valid  # fully valid pixels only
        shown = shrink(rendered, self.size)
        carry = Carry(shrink(previous, self.size), source[t - step], measured.flow, measured.flow_ok)
        colour = self.colour(k) if pair is None else mix_colours(self.colour(pair[0]), self.colour(pair[1]), alpha)
        filled = fallback_estimate(shown, known, source[t], colour, carry, self.p.settings.fill_feather)
        model = self.model(k)
        if self.p.fill is not colour_fill:
            small_model = None if model is None else model.at_fit_size()
            style, source_key = self.measured_pair(k)[::-1]
            filled = self.p.fill(FillRequest(t, source[t], ~known, filled, style, source_key, map_, carry.full(),
                                             small_model, keyframe=k, keyframe_cache=self.cache,
                                             holes_only=pair is not None or scaled, redrawn=self.redrawn(k)))  # fmt: skip
        if not scaled:
            return filled
        gain = None if model is None else model.gain_at(map_)  # the detail band's A_f: no better (-0.05..+0.02 dB)
        return detail_fill(rendered, valid, filled, self.request.source[t], source[t], gain, self.p.settings.fill_feather)
