"""How much of every frame a set of keyframes explains, as `flow` would propagate them.

A keyframe explains a pixel of frame t when `flow`'s anchored map from the keyframe to t stays inside the keyframe,
passes the forward-backward check and agrees in colour with frame t (`AnchoredFrame.valid`, from
`propagation.flow.maps.AnchoredChain`): exactly the pixels `flow` warps instead of filling. With several keyframes
`flow` gives each frame the union of what its two neighbouring keyframes explain (the one before it and the one after
it), so that is what coverage means here too.

Making that affordable on long clips (231 frames of 960x720 in the Rerender-A-Video sample):
- the chains walk the clip at a reduced size (`CoverageSettings.long_side`, 128 px): coverage is a fraction, and the
  maps' checks work at any size;
- candidate keyframes are every `every`-th frame (every frame up to 32 frames, then about 32 candidates);
- the frame-to-frame flows depend on the source alone, so they are computed once per pair of neighbouring frames and
  shared by every chain (a chain otherwise measures them itself);
- a chain stops at the first frame it explains less than `floor` of: a keyframe that far away cannot help;
- chains are walked once and kept as bit masks, so any set of keyframes is scored without walking again;
- chains are independent: two run at once (OpenCV's DIS and the numba checks release the GIL).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import cv2
import numpy as np
from tqdm.auto import tqdm

from ..errors import UsageError
from ..propagation.flow.maps import AnchoredChain, MapSettings, flow_pair

_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], np.uint16)


@dataclass(frozen=True)
class CoverageSettings:
    """How coverage is measured."""

    # px on the long side at which the chains walk (never more than the source's). Coverage is a fraction: on the
    # kitten clip it reads within 0.01 of 192 px at 128 px, and 0.02-0.05 above what 512 px measures.
    long_side: int = 128
    every: int | None = None  # candidate keyframes every N frames; None: every frame up to 32 frames, else ceil(T / 32)
    floor: float = 0.05  # a chain stops at the first frame it explains less than this fraction of
    # The anchored maps as `flow` measures them, less the correction's variational refinement: it smooths the map for
    # the edit's texture, changes validity by < 0.01 on koolshooters, and costs 15% of a chain's time.
    maps: MapSettings = field(default_factory=lambda: MapSettings(correction_refinement=0))
    workers: int = 2  # chains walked at once

    def __post_init__(self) -> None:
        if self.long_side < 16:
            raise UsageError(f"coverage needs at least 16 px on the long side, got {self.long_side}")
        if self.every is not None and self.every < 1:
            raise UsageError(f"candidate keyframes every N frames needs N >= 1, got {self.every}")
        if not 0 <= self.floor < 1:
            raise UsageError(f"the floor must be in [0, 1), got {self.floor}")

    def stride(self, num_frames: int) -> int:
        return self.every or max(1, math.ceil(num_frames / 32))


def shrink_frame(frame: np.ndarray, long_side: int) -> np.ndarray:
    """(h, w, 3) uint8: a frame with its long side at most `long_side` (area-averaged; at least 8 px a side)."""
    h, w = frame.shape[:2]
    scale = min(1.0, long_side / max(h, w))
    size = (max(8, round(w * scale)), max(8, round(h * scale)))
    return frame if size == (w, h) else cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


def reduce_clip(source, long_side: int, *, progress: bool = False) -> np.ndarray:
    """(T, h, w, 3) uint8: `shrink_frame` of every frame, read one at a time (a lazy clip is never turned into one
    full-size array)."""
    num_frames = len(source)
    if num_frames < 1:
        raise UsageError("the clip has no frames")
    frames = (np.asarray(source[t]) for t in range(num_frames))
    return np.stack([shrink_frame(f, long_side) for f in tqdm(frames, total=num_frames, desc="reading the clip", unit="frame",
                                                               disable=not progress)])  # fmt: skip


class SharedFlows:
    """The clip's frame-to-frame flow pairs, computed once and shared by every chain: stands in for a chain's own
    `FlowPrefetch` (same `get(t)`, same numbers: DIS is deterministic)."""

    def __init__(self, pairs: list[tuple[np.ndarray, np.ndarray]], step: int):
        self.pairs, self.step = pairs, step  # pairs[t] = (flow t -> t + 1, flow t + 1 -> t)

    def get(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """(flow t -> t - step, flow t - step -> t), as `FlowPrefetch.get` gives them."""
        forward, backward = self.pairs[min(t, t - self.step)]  # (lower -> upper, upper -> lower)
        return (backward, forward) if self.step > 0 else (forward, backward)


@dataclass
class CoverageTable:
    """Where each measured keyframe explains each frame, as packed bit masks (frames its chain never reached, having
    stopped below the floor, explain nothing)."""

    num_frames: int
    size: tuple[int, int]  # (h, w) at which it was measured
    candidates: list[int]  # the keyframes measured, sorted
    stride: int  # candidates were every `stride` frames (plus any given keyframe)
    masks: dict[int, dict[int, np.ndarray]]  # keyframe -> frame -> np.packbits(valid)
    _unions: dict = field(default_factory=dict, repr=False)

    def fraction(self, k: int, t: int) -> float:
        """The fraction of frame t keyframe k explains on its own."""
        return self._count((k,), t) / (self.size[0] * self.size[1])

    def explained(self, k: int, t: int) -> np.ndarray:
        """Bool (h, w): where keyframe k explains frame t."""
        h, w = self.size
        if t == k:
            return np.ones((h, w), bool)
        packed = self.masks[k].get(t)
        return np.zeros((h, w), bool) if packed is None else np.unpackbits(packed, count=h * w).reshape(h, w).astype(bool)

    def coverage(self, keyframes: Iterable[int]) -> np.ndarray:
        """(T,) float: the fraction of each frame the keyframes explain together, each frame by its neighbouring
        keyframes (`flow`'s rule); 0 everywhere for no keyframe."""
        keys = sorted(set(keyframes))
        self._check(keys)
        out = np.zeros(self.num_frames)
        if not keys:
            return out
        for a, b in zip([None, *keys], [*keys, None]):  # the gaps: before the first, between two, after the last
            lo = 0 if a is None else a
            hi = self.num_frames - 1 if b is None else b
            for t in range(lo, hi + 1):
                out[t] = self.gap_coverage(a, b, t)
        return out

    def gap_coverage(self, a: int | None, b: int | None, t: int) -> float:
        """Coverage of frame t lying between keyframes a and b (None: no keyframe on that side)."""
        if t in (a, b):
            return 1.0
        pair = tuple(k for k in (a, b) if k is not None)
        return self._count(pair, t) / (self.size[0] * self.size[1])

    def quality(self, keyframes: Iterable[int], horizon: float | None) -> np.ndarray:
        """(T,) coverage with each explained pixel weighted by the distance to the keyframe it is taken from,
        w(d) = 1 / (1 + d / horizon): the nearer of the two neighbouring keyframes where both explain it (`flow`'s
        rule: the nearest valid keyframe wins), else the one that does. A warp's quality falls with distance (the
        map's residual error, the source's changes since the keyframe), which validity alone does not see. None:
        plain coverage."""
        keys = sorted(set(keyframes))
        if horizon is None or not keys:
            return self.coverage(keys)
        self._check(keys)
        n, w = self.size[0] * self.size[1], lambda d: 1.0 / (1.0 + d / horizon)  # noqa: E731
        out = np.zeros(self.num_frames)
        for a, b in zip([None, *keys], [*keys, None]):
            for t in range(0 if a is None else a, self.num_frames if b is None else b + 1):
                if t in (a, b):
                    out[t] = 1.0
                    continue
                sides = [k for k in (a, b) if k is not None]
                near = min(sides, key=lambda k: abs(t - k))  # a tie goes to the earlier keyframe
                value = w(abs(t - near)) * self._count((near,), t)
                if len(sides) == 2:  # what only the farther one explains
                    far = b if near == a else a
                    value += w(abs(t - far)) * (self._count((a, b), t) - self._count((near,), t))
                out[t] = value / n
        return out

    def _count(self, keys: tuple[int, ...], t: int) -> int:
        """Pixels of frame t that any of `keys` explains (memoised: the greedy search asks the same pairs again)."""
        if t in keys:
            return self.size[0] * self.size[1]
        cached = self._unions.get((keys, t))
        if cached is None:
            masks = [self.masks[k].get(t) for k in keys]
            masks = [m for m in masks if m is not None]
            union = np.bitwise_or.reduce(masks) if masks else np.zeros(1, np.uint8)
            cached = self._unions[(keys, t)] = int(_POPCOUNT[union].sum())
        return cached

    def _check(self, keys: Sequence[int]) -> None:
        unknown = [k for k in keys if k not in self.masks]
        if unknown:
            raise ValueError(f"keyframes {unknown} were not measured; pass them to measure_coverage(extra=...)")


def measure_coverage(source, settings: CoverageSettings = CoverageSettings(), *, extra: Sequence[int] = (),
                     progress: bool = True) -> CoverageTable:  # fmt: skip
    """Walk every candidate keyframe's anchored chains (forward and backward) once, at a reduced size, and keep where
    each explains each frame.

    source: (T, H, W, 3) uint8 or a lazy clip (read one frame at a time). extra: keyframes to measure besides the
    candidates every `settings.stride(T)` frames (the user's own keyframes).
    """
    small = source if _is_small(source, settings.long_side) else reduce_clip(source, settings.long_side, progress=progress)
    num_frames = len(small)
    extra = sorted({int(k) for k in extra})
    bad = [k for k in extra if not 0 <= k < num_frames]
    if bad:
        raise UsageError(f"keyframe {bad[0]} is outside the clip (0..{num_frames - 1}); pick frames inside it")
    stride = settings.stride(num_frames)
    candidates = sorted(set(range(0, num_frames, stride)) | set(extra))
    walks = [(k, step) for k in candidates for step in (1, -1) if 0 <= k + step < num_frames]
    masks: dict[int, dict[int, np.ndarray]] = {k: {} for k in candidates}
    pairs: list = []

    def walk(k: int, step: int) -> dict[int, np.ndarray]:
        chain = AnchoredChain(small, k, step, settings.maps)
        chain.flows = SharedFlows(pairs, step)  # the clip's flows, measured once, instead of the chain's own prefetch
        found = {}
        while 0 <= chain.index + step < num_frames:
            frame = chain.advance()
            if frame.valid.mean() < settings.floor:
                break
            found[frame.index] = np.packbits(frame.valid)
        return found

    bar = tqdm(total=num_frames - 1 + len(walks), desc="measuring keyframe coverage", unit="step", disable=not progress)
    try:
        with ThreadPoolExecutor(max_workers=max(1, settings.workers), thread_name_prefix="magicprop-coverage") as pool:
            # 1. The frame-to-frame flows, once per pair of neighbours
            pair = lambda t: flow_pair(small[t], small[t + 1], settings.maps.frame_flow)  # noqa: E731
            for flows in pool.map(pair, range(num_frames - 1)):
                pairs.append(flows)
                bar.update()
            # 2. Every candidate's chains, collected in order (the result never depends on the threads)
            for (k, _), future in zip(walks, [pool.submit(walk, k, step) for k, step in walks]):
                masks[k].update(future.result())
                bar.update()
    finally:
        bar.close()
    return CoverageTable(num_frames, small.shape[1:3], candidates, stride, masks)


def _is_small(source, long_side: int) -> bool:
    """Whether the source is already an in-memory clip within the size (then it is used as it is)."""
    return isinstance(source, np.ndarray) and source.ndim == 4 and max(source.shape[1:3]) <= long_side
