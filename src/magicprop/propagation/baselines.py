"""The baselines every benchmark shows beside the real propagators: `copy`, `chain` and `lut`. They need no weights and
are the floor any propagation has to beat.

- `propagate_copy` repeats the edited keyframe: perfect appearance, no motion at all.
- `propagate_flow` carries the keyframe along the source clip's optical flow, frame by frame, like a bare-bones EbSynth:
  right where flow is reliable, but it cannot invent content that the keyframe never showed (disocclusions, new objects
  entering the frame), and bilinear resampling softens the result a little more at every step.

Both take the *source* clip (T, H, W, 3) uint8, the edited keyframe (H, W, 3) uint8 and the keyframe's index, and
return the edited clip (T, H, W, 3) uint8 whose frame `keyframe_index` is the keyframe itself. The propagators (`copy`,
`chain`, `lut`) stream the same frames one at a time, at the source's own size (`full_resolution`), from an array or a
lazy `video.Frames`.

- `lut`: a colour lookup learnt from the keyframe pair, applied to every source frame, with no motion. It is the sanity
  check of every benchmark: where `lut` wins, the benchmark measures colour mapping, not propagation.

The map is a 3-D lookup table over RGB: a lattice of `bins` nodes per channel (node i sits at grey level
i * 255 / (bins - 1)), applied by trilinear interpolation between the 8 nodes around a colour. Fitting gives each node
the edited colour that the source pixels around it (weighted by the same trilinear weights) predict at the node:

    value(n) = mean_e - M^T mean_d,   M = (Cov_dd + l I)^-1 (Cov_de + l M_coarse),   d = source colour - n

(e = edited colour), that is a local linear fit evaluated at the node. The plain per-bin mean of the edited colours
would be biased by where in its bin the pixels happen to lie (up to half a bin, ~4 grey levels at 32 bins); the local
fit removes that bias, so a colour map that is smooth over a couple of bins (a channel permutation, a colour matrix, a
gamma) is reproduced to within a grey level. A keyframe shows few colours around many nodes, often along a line or a
single one; in the directions they do not span, the slope comes from the same fit on a lattice a quarter as fine,
M_coarse (through the small ridge l; below 4 nodes, the linear fit over the whole keyframe), not zero: a zero slope
would give such a node the edit of its few pixels instead of its own, and break exactness between them. Slopes are
capped so a discontinuous edit cannot overshoot far. Nodes that no pixel reaches take the value of the nearest node
that one does (a Euclidean distance transform in lattice space), so an unseen colour maps like the nearest colours the
keyframe did show.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
from numba import njit
from scipy import ndimage  # installed with scikit-image
from tqdm.auto import tqdm

from ..errors import UsageError
from ..motion.flow import FlowMethod, carry, optical_flow
from ..video import Frames, clip_digest
from .base import PropagationRequest, Propagator
from .store import FrameStore


def propagate_copy(source: np.ndarray, keyframe: np.ndarray, keyframe_index: int) -> np.ndarray:
    """(T, H, W, 3) uint8: the keyframe repeated for every frame of `source`."""
    _check_inputs(source, keyframe, keyframe_index)
    return np.repeat(keyframe[None], len(source), axis=0).astype(np.uint8, copy=False)


def propagate_flow(
    source: np.ndarray,
    keyframe: np.ndarray,
    keyframe_index: int,
    *,
    method: FlowMethod = "dis",
    progress: bool = True,
) -> np.ndarray:
    """(T, H, W, 3) uint8: the keyframe warped along the source's flow, forward to the end and backward to the start
    (`carry_along_flow` in both directions, gathered in one array: the `chain` propagator streams them instead)."""
    keyframe_index = _check_inputs(source, keyframe, keyframe_index)
    out = np.empty(source.shape, np.uint8)
    out[keyframe_index] = keyframe
    with tqdm(total=len(source) - 1, desc="flow propagation", unit="frame", disable=not progress) as bar:
        for step in (1, -1):
            for t, frame in carry_along_flow(source, keyframe, keyframe_index, step, method=method):
                out[t] = frame
                bar.update()
    return out


def carry_along_flow(source: np.ndarray | Frames, keyframe: np.ndarray, keyframe_index: int, step: int, *,
                     method: FlowMethod = "dis") -> Iterator[tuple[int, np.ndarray]]:  # fmt: skip
    """(t, frame) for t = k + step, k + 2 step, ... to the clip's end: the keyframe carried frame to frame.

    For each next frame t reached from its neighbour p = t - step, the flow from t to p is measured on the *source*
    frames (the edit may have destroyed the texture flow needs), and the output at p is backward-warped with it. Where
    the forward-backward check fails (t shows something p did not) or the flow points outside the frame, there is
    nothing to carry, so the pixel keeps the output at p's value at the same place: a still patch is less jarring than a
    smear. Only the previous output and two source frames are held.
    """
    previous, t = keyframe, keyframe_index + step
    while 0 <= t < len(source):
        p = t - step
        flow_tp = optical_flow(source[t], source[p], method=method)  # source[t][y, x] ~ source[p][(y, x) + flow]
        flow_pt = optical_flow(source[p], source[t], method=method)
        carried, hole = carry(previous, flow_tp, flow_pt)
        carried[hole] = previous[hole]
        yield t, carried
        previous, t = carried, t + step


def _check_inputs(source: np.ndarray, keyframe: np.ndarray, keyframe_index: int) -> int:
    """Validate shapes and return the keyframe index made non-negative (negative counts from the end, like Python)."""
    if source.ndim != 4 or source.shape[-1] != 3:
        raise UsageError(
            f"source must be a (T, H, W, 3) clip, got shape {source.shape}; read it with magicprop.video.read_video"
        )
    if keyframe.shape != source.shape[1:]:
        raise UsageError(
            f"keyframe shape {keyframe.shape} differs from the source frames' {source.shape[1:]}; "
            "resize the keyframe to match"
        )
    if source.dtype != np.uint8 or keyframe.dtype != np.uint8:
        raise UsageError(
            f"source and keyframe must be uint8 (0..255), got {source.dtype} and {keyframe.dtype}; convert them first"
        )
    num_frames = len(source)
    if not -num_frames <= keyframe_index < num_frames:
        raise UsageError(
            f"keyframe index {keyframe_index} is out of range for a {num_frames}-frame clip; use 0..{num_frames - 1}"
        )
    return keyframe_index % num_frames


class CopyPropagator(Propagator):
    """The keyframe repeated for every frame: perfect appearance, no motion at all (the floor of every benchmark)."""

    name = "copy"
    summary = "repeat the keyframe (a baseline: no motion)"
    needs_source = False
    full_resolution = True

    def render(self, request: PropagationRequest) -> Iterator[np.ndarray]:
        for t in range(request.num_frames):
            yield request.keyframe
            if t != request.keyframe_index:
                report(request, t + (t < request.keyframe_index), request.num_frames - 1)


class ChainPropagator(Propagator):
    """`carry_along_flow`: the keyframe carried frame to frame along the source's optical flow, each frame resampling
    the one before it (the baseline the anchored `flow` propagator is measured against: blur and drift compound).

    Frames stream in order with flat memory: the backward chain (frames before the keyframe) is computed first into a
    `FrameStore` (the work folder, or a temporary one) and read back; the forward chain is given as it is computed. A
    resumed run whose backward frames are all saved and intact does not compute them again."""

    name = "chain"
    summary = "carry the previous output frame to frame along the flow (a baseline: blur compounds)"
    full_resolution = True

    def fingerprint(self, request: PropagationRequest) -> dict:
        return {"propagator": "chain/1", "shape": list(request.source.shape), "source": clip_digest(request.source),
                "keyframe": clip_digest(request.keyframe), "keyframe_index": request.keyframe_index}  # fmt: skip

    def render(self, request: PropagationRequest) -> Iterator[np.ndarray]:
        k, total = request.keyframe_index, request.num_frames - 1
        store = FrameStore(request.work_dir, self.fingerprint(request), request.resume)
        bar = tqdm(total=total, desc="chain propagation", unit="frame", disable=not request.progress)
        done = 0

        def finished() -> None:
            nonlocal done
            done += 1
            bar.update()
            report(request, done, total)

        try:
            # 1. Before the keyframe: its backward chain, each frame saved as it comes, then read back in order
            if request.resume and all(store.has(t) for t in range(k)):
                bar.update(k)
                done = k
            else:
                for t, frame in carry_along_flow(request.source, request.keyframe, k, -1):
                    store.save(t, frame)
                    finished()
            yield from (store.load(t) for t in range(k))
            yield request.keyframe
            # 2. After it: the forward chain, each frame given as it comes
            for _, frame in carry_along_flow(request.source, request.keyframe, k, 1):
                yield frame
                finished()
        finally:
            bar.close()
            store.close()


def report(request: PropagationRequest, done: int, total: int) -> None:
    if request.callback is not None:
        request.callback(done, total)


_MAX_SLOPE = 4.0  # grey levels of edit per grey level of source, per channel pair: caps overshoot of sharp edits
_RIDGE = 1e-3  # l, times the squared node spacing: where a node's pixels do not vary, its slope is the coarse one


def fit_lut(source_key: np.ndarray, edited_key: np.ndarray, bins: int = 32) -> np.ndarray:
    """(bins, bins, bins, 3) float32 LUT, indexed [r, g, b] in 0..255 units, mapping source_key's colours to
    edited_key's. Both (H, W, 3) uint8 of one size."""
    _check_pair(source_key, edited_key, bins)
    # One row per distinct source colour: its count and the sum of the edited colours it became (the moments are
    # additive, and a keyframe repeats colours a lot).
    src = source_key.reshape(-1, 3)
    codes = (src[:, 0].astype(np.int64) << 16) | (src[:, 1].astype(np.int64) << 8) | src[:, 2]
    unique, inverse = np.unique(codes, return_inverse=True)
    colours = np.stack([unique >> 16, (unique >> 8) & 255, unique & 255], -1).astype(np.float64)  # (U, 3)
    count = np.bincount(inverse, minlength=len(unique)).astype(np.float64)
    edit_sum = np.stack([np.bincount(inverse, edited_key.reshape(-1, 3)[:, c], len(unique)) for c in range(3)], -1)
    values, _ = _fit(colours, count, edit_sum, bins)
    return np.clip(values, 0, 255).astype(np.float32)


def apply_lut(lut: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """uint8 frames of the same shape: each (..., 3) uint8 colour mapped through `lut` by trilinear interpolation."""
    _check_lut(lut)
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim < 2 or frames.shape[-1] != 3:
        got = f"{frames.shape} {frames.dtype}" if isinstance(frames, np.ndarray) else type(frames).__name__
        raise UsageError(f"apply_lut: frames must be (..., 3) uint8 colours, got {got}")
    pixels = np.ascontiguousarray(frames).reshape(-1, 3)
    out = np.empty(pixels.shape, np.uint8)
    _apply(np.ascontiguousarray(lut, np.float32), pixels, out)
    return out.reshape(frames.shape)


class LutPropagator(Propagator):
    """`fit_lut` on (source keyframe, edited keyframe), `apply_lut` on every source frame: colour mapping, no motion."""

    name = "lut"
    summary = "map each source frame through a colour lookup learnt from the keyframe (a baseline: no motion)"
    needs_source = True
    full_resolution = True

    def __init__(self, bins: int = 32) -> None:
        self.bins = bins

    def render(self, request: PropagationRequest) -> Iterator[np.ndarray]:
        k = request.keyframe_index
        lut = fit_lut(request.source[k], request.keyframe, self.bins)
        for t in range(request.num_frames):
            yield request.keyframe if t == k else apply_lut(lut, request.source[t])
            if t != k:
                report(request, t + (t < k), request.num_frames - 1)


def _fit(colours: np.ndarray, count: np.ndarray, edit_sum: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """(values (bins, bins, bins, 3), slopes (bins, bins, bins, 3, 3)) of the local linear fit at every node, each
    slope shrunk towards the fit on a lattice a quarter as fine (below 4 nodes, the whole keyframe's linear fit)."""
    spacing = 255.0 / (bins - 1)
    if bins < 4:
        prior = np.broadcast_to(_global_slope(colours, count, edit_sum), (bins**3, 3, 3))
    else:
        _, coarse = _fit(colours, count, edit_sum, max(2, (bins + 3) // 4))
        nodes = np.stack(np.meshgrid(*[np.arange(bins) * spacing] * 3, indexing="ij"), -1).reshape(-1, 3)
        prior = _interpolate(coarse.reshape(coarse.shape[:3] + (9,)), nodes).reshape(-1, 3, 3)
    values, slopes, filled = _node_fit(_moments(colours, count, edit_sum, bins), spacing, prior)
    # Nodes no pixel reaches copy the nearest node one does.
    shape = (bins, bins, bins)
    nearest = ndimage.distance_transform_edt(~filled.reshape(shape), return_distances=False, return_indices=True)
    flat = np.ravel_multi_index(tuple(nearest), shape).reshape(-1)
    return values[flat].reshape(shape + (3,)), slopes[flat].reshape(shape + (3, 3))


def _moments(colours: np.ndarray, count: np.ndarray, edit_sum: np.ndarray, bins: int) -> np.ndarray:
    """(bins^3, 22) trilinear-weighted moments at every node: sum w, sum w d (3), sum w d d^T (6, upper triangle),
    sum w e (3), sum w d e^T (9), with d the colour's offset from the node in grey levels."""
    moments = np.zeros((bins**3, 22))
    _accumulate(colours, count, edit_sum, bins, moments)
    return moments


@njit(cache=True, nogil=True)
def _accumulate(colours, count, edit_sum, bins, moments):
    """Add each colour's moments to the 8 nodes around it (a numba loop: numpy bincounts took seconds a keyframe)."""
    scale, spacing = (bins - 1) / 255.0, 255.0 / (bins - 1)
    for i in range(colours.shape[0]):
        lo = np.empty(3, np.int64)
        frac = np.empty(3)
        for c in range(3):
            lo[c] = min(int(colours[i, c] * scale), bins - 2)
            frac[c] = colours[i, c] * scale - lo[c]
        for corner in range(8):
            weight, flat = 1.0, 0
            d = np.empty(3)
            for c in range(3):
                up = (corner >> (2 - c)) & 1
                weight *= frac[c] if up else 1.0 - frac[c]
                flat = flat * bins + lo[c] + up
                d[c] = colours[i, c] - (lo[c] + up) * spacing
            m = moments[flat]
            w = weight * count[i]
            m[0] += w
            k = 4
            for a in range(3):
                m[1 + a] += w * d[a]
                for b in range(a, 3):
                    m[k] += w * d[a] * d[b]
                    k += 1
            for e in range(3):
                m[10 + e] += weight * edit_sum[i, e]
                for a in range(3):
                    m[13 + 3 * a + e] += weight * d[a] * edit_sum[i, e]


@njit(cache=True, nogil=True)
def _apply(lut, pixels, out):
    """out[i] = lut trilinearly interpolated at the uint8 colour pixels[i], rounded to uint8."""
    bins = lut.shape[0]
    scale = (bins - 1) / 255.0
    lo_of = np.empty(256, np.int64)
    frac_of = np.empty(256)
    for v in range(256):
        lo_of[v] = min(int(v * scale), bins - 2)
        frac_of[v] = v * scale - lo_of[v]
    for i in range(pixels.shape[0]):
        r, g, b = lo_of[pixels[i, 0]], lo_of[pixels[i, 1]], lo_of[pixels[i, 2]]
        fr, fg, fb = frac_of[pixels[i, 0]], frac_of[pixels[i, 1]], frac_of[pixels[i, 2]]
        for c in range(3):
            acc = 0.0
            for corner in range(8):
                ur, ug, ub = corner >> 2, (corner >> 1) & 1, corner & 1
                w = (fr if ur else 1.0 - fr) * (fg if ug else 1.0 - fg) * (fb if ub else 1.0 - fb)
                acc += w * lut[r + ur, g + ug, b + ub, c]
            out[i, c] = min(max(np.rint(acc), 0.0), 255.0)


def _corners(colours: np.ndarray, bins: int):
    """For each of the 8 lattice corners around each colour: (node index (N, 3) int64, trilinear weight (N,))."""
    position = colours * ((bins - 1) / 255.0)
    below = np.minimum(position.astype(np.int64), bins - 2)
    frac = position - below
    for corner in range(8):
        up = np.array([(corner >> (2 - c)) & 1 for c in range(3)])
        yield below + up, np.prod(np.where(up, frac, 1 - frac), axis=1)


def _interpolate(table: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """(N, C) trilinear interpolation of a (bins, bins, bins, C) lattice at (N, 3) colours in 0..255."""
    bins, flat = table.shape[0], table.reshape(-1, table.shape[-1])
    out = np.zeros((len(colours), flat.shape[1]), np.float64)
    for node, weight in _corners(colours.astype(np.float64), bins):
        out += weight[:, None] * flat[(node[:, 0] * bins + node[:, 1]) * bins + node[:, 2]]
    return out


def _global_slope(colours: np.ndarray, count: np.ndarray, edit_sum: np.ndarray) -> np.ndarray:
    """(3, 3) least-squares slope of edited over source colour over the whole keyframe (flat where it does not vary)."""
    n = count.sum()
    mean_c, mean_e = (count[:, None] * colours).sum(0) / n, edit_sum.sum(0) / n
    centred = colours - mean_c
    cov = (count[:, None, None] * centred[:, :, None] * centred[:, None, :]).sum(0) / n
    cross = (centred[:, :, None] * (edit_sum - count[:, None] * mean_e)[:, None, :]).sum(0) / n
    return np.linalg.solve(cov + 1e-6 * np.eye(3), cross)


def _node_fit(moments: np.ndarray, spacing: float, prior: np.ndarray):
    """(values (N, 3), slopes (N, 3, 3), filled (N,) bool) from `_moments`, each slope shrunk towards `prior`."""
    w = moments[:, 0]
    filled = w > 1e-9
    w = np.where(filled, w, 1.0)[:, None]
    mean_d, mean_e = moments[:, 1:4] / w, moments[:, 10:13] / w
    upper = moments[:, 4:10] / w
    cov_dd = upper[:, [0, 1, 2, 1, 3, 4, 2, 4, 5]].reshape(-1, 3, 3) - mean_d[:, :, None] * mean_d[:, None, :]
    cov_de = (moments[:, 13:22] / w).reshape(-1, 3, 3) - mean_d[:, :, None] * mean_e[:, None, :]
    ridge = _RIDGE * spacing**2 + 1e-9
    slope = np.linalg.solve(cov_dd + ridge * np.eye(3), cov_de + ridge * prior)  # (N, 3 source, 3 edited)
    slope = np.clip(slope, -_MAX_SLOPE, _MAX_SLOPE)
    return mean_e - np.einsum("nd,nde->ne", mean_d, slope), slope, filled


def _check_pair(source_key, edited_key, bins) -> None:
    for name, a in (("source_key", source_key), ("edited_key", edited_key)):
        if not isinstance(a, np.ndarray) or a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
            got = f"{a.shape} {a.dtype}" if isinstance(a, np.ndarray) else type(a).__name__
            raise UsageError(f"fit_lut: {name} must be an (H, W, 3) uint8 image, got {got}")
    if source_key.shape != edited_key.shape:
        raise UsageError(f"fit_lut: source_key is {source_key.shape} but edited_key {edited_key.shape}; "
                         "give the source keyframe and its edit at one size")  # fmt: skip
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or not 2 <= bins <= 256:
        raise UsageError(f"fit_lut: bins must be an integer in 2..256, got {bins!r}")


def _check_lut(lut) -> None:
    ok = isinstance(lut, np.ndarray) and lut.ndim == 4 and lut.shape[3] == 3 and lut.shape[0] >= 2
    ok = ok and lut.shape[:3] == (lut.shape[0],) * 3 and np.issubdtype(lut.dtype, np.floating)
    ok = ok and bool(np.isfinite(lut).all())
    if not ok:
        got = f"{lut.shape} {lut.dtype}" if isinstance(lut, np.ndarray) else type(lut).__name__
        raise UsageError(f"apply_lut: lut must be a (bins, bins, bins, 3) float array from fit_lut, got {got}")
