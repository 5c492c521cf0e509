"""Guided patch synthesis: fill the pixels of a propagated frame that the keyframe cannot explain.

Written from the published descriptions: EbSynth (Jamriska et al. 2019, "Stylizing Video by Example") for guided
synthesis, PatchMatch (Barnes et al. 2009) for the nearest-neighbour field, and the voting step of Wexler et al. 2007.

For every target patch centre near a pixel to fill we look for the source (keyframe) patch that minimises

    D(s, t) = sum over the patch of [ sum_c w_c (G_s - G_t)^2  +  style_weight * conf_t * mean_rgb (S_s - E_t)^2 ]

where G are the guide channels, S the edited keyframe (the style) and E the current estimate of frame t, in [0, 1].
The style term is what makes the result agree with the pixels we keep (Wexler's completion), the guide term is what
steers it (EbSynth). conf_t is 1 on kept pixels; a pixel to fill enters only once a vote has estimated it, and then
with a confidence that decays with its distance from the kept pixels. The field is found coarse to fine (each level
starts from the coarser field, upsampled) by PatchMatch sweeps, each followed by a vote: a pixel to fill becomes the
weighted mean of the style pixels that the patches covering it point to.

Only patches whose window touches a pixel to fill are searched (`fill` dilated by the patch radius), so a frame with 5%
of its pixels to fill costs a small fraction of a full synthesis; the centres searched are also every other pixel (see
`_stride`). The loops are numba kernels (`kernels`); every random draw comes from a hash of (seed, level, round),
so re-runs are bit-identical (needed for resume).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import UsageError
from . import kernels as K

_M32 = 0xFFFFFFFF
# Confidence of a voted pixel decays by this factor per pixel of distance from the nearest kept pixel (Wexler et al.
# use 1.3 ** -distance): a patch overlapping kept pixels outweighs one that only saw earlier guesses, in D and in votes.
_CONFIDENCE_DECAY = 1.0 / 1.3
# The finest level only refines the field upsampled from a level that already searched globally: half the rounds and a
# local random search (this many pixels). It holds most of the centres, so this is what keeps 512x512 near 0.1 s.
_FINE_RADIUS = 8


def synthesize(
    style: np.ndarray,
    source_guide: np.ndarray,
    target_guide: np.ndarray,
    fill: np.ndarray,
    init: np.ndarray,
    *,
    patch_size: int = 5,
    levels: int | None = None,
    iterations: int = 4,
    guide_weights=None,
    style_weight: float = 1.0,
    seed: int = 0,
    appearance: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """(H, W, 3) uint8: `init` with its `fill` pixels synthesised from `style` patches chosen by guided patch distance.

    style: (H, W, 3) uint8, the edited keyframe. source_guide / target_guide: (H, W, C) float guide channels (C may be
    0) of the keyframe and of frame t, best in [0, 1]. fill: (H, W) bool. init: (H, W, 3) uint8, kept exactly outside
    `fill`; its values inside `fill` are never read (they are what the keyframe could not explain, and trusting them
    would bias the style term). guide_weights: C weights >= 0, default 1 / C each, so all guides together weigh as much
    as the style term does at style_weight = 1. levels: pyramid depth, default (and at most) as many halvings as keep
    the coarsest side >= 2 * patch_size. iterations: search + vote rounds; with a pyramid, the coarser levels (cheap,
    and where the layout is decided) get twice as many and the finest (where nearly all the work is) half as many.
    appearance: (base (H, W, 3), gain (H, W, 9), colours (H, W, 3)) float32, a local affine model of the style over
    the keyframe (`appearance.LocalAffine`: style = base + gain . source keyframe) and frame t's source colours; the
    pixels to fill are then composed as vote(base) + vote(gain) . colours(x) with the final field and weights, so a
    patch brings the edit's *response* to colour rather than the colours of the patch it came from.
    """
    # 1. Check inputs
    guide_s, guide_t, weights = _check(style, source_guide, target_guide, fill, init, patch_size, levels, iterations,
                                       guide_weights, style_weight, seed)  # fmt: skip
    if appearance is not None:
        shapes = [a.shape if isinstance(a, np.ndarray) else None for a in appearance] if len(appearance) == 3 else []
        h, w = style.shape[:2]
        if shapes != [(h, w, 3), (h, w, 9), (h, w, 3)]:
            raise UsageError(f"synthesize: appearance must be (base (H, W, 3), gain (H, W, 9), colours (H, W, 3)) "
                             f"arrays at the style's size {(h, w)}, got shapes {shapes}")  # fmt: skip
    out = init.copy()
    if not fill.any():
        return out
    style, init, fill = (np.ascontiguousarray(a) for a in (style, init, fill))
    r, n_guide, stride = patch_size // 2, guide_s.shape[2], _stride(patch_size)
    num_levels = min(levels or 10**9, _max_levels(*fill.shape, patch_size))

    # 2. Features, scaled so that a plain sum of squares is D: guides by sqrt(w_c), RGB to [0, 1] times sqrt(weight / 3)
    g_scale = np.sqrt(weights).astype(np.float32)
    s_scale = np.float32(np.sqrt(style_weight / 3.0) / 255.0)
    pyramid = _pyramid(style, _stack(guide_s, g_scale, style, s_scale), _stack(guide_t, g_scale, init, s_scale),
                       fill, num_levels)  # fmt: skip

    # 3. Coarse to fine: each level starts from the coarser field, then sweeps and votes round after round.
    nnf, base = None, K.hash32(seed & _M32)
    for level in range(num_levels - 1, -1, -1):
        lv = _Level.build(*pyramid[level], n_guide, r, stride, s_scale)
        refine = level == 0 and num_levels > 1  # the finest level only refines a field found at half its size
        if refine:
            rounds, radius = max(1, iterations // 2), _FINE_RADIUS
        else:
            rounds, radius = (2 * iterations if num_levels > 1 else iterations), max(lv.src.shape[:2])
        ny, nx = _upsample_nnf(nnf, lv, r)
        state = K.hash32(base ^ (level * 0x9E3779B9 & _M32))
        # A coarser level votes the upsampled field before its first sweep. The finest does not: upsampling gives only
        # even offsets, and a sharp estimate one pixel out of phase would hold a hole's interior there, so its first
        # sweep is anchored by the kept pixels and the guides alone (ties going to propagation).
        if nnf is not None and not refine:
            lv.vote(ny, nx)
        cost = np.empty(len(lv.cy), np.float64)
        for it in range(rounds):
            K.search_pass(lv.src, lv.tgt, lv.conf, n_guide, r, stride, lv.cy, lv.cx, lv.index, ny, nx, cost,
                          it % 2 == 1, radius, K.hash32(state + it + 1))  # fmt: skip
            voted = lv.vote(ny, nx, cost)
        nnf = (ny, nx, lv.index, stride)

    # 4. Compose: the kept pixels exactly, the voted ones rounded (through the appearance model when there is one).
    if appearance is not None:
        voted = _compose_appearance(lv, ny, nx, cost, appearance)
    out[lv.fy, lv.fx] = np.clip(np.rint(voted), 0, 255).astype(np.uint8)
    return out


@dataclass
class _Level:
    """The working state of one pyramid level."""

    src: np.ndarray  # (h, w, K) float32 source features: scaled guides, then scaled style
    tgt: np.ndarray  # (h, w, K) float32 target features; the style channels hold the current estimate E
    conf: np.ndarray  # (h, w) float32 weight of E in D: 1 where kept, 0 where to fill until a vote, then `trust`
    style: np.ndarray  # (h, w, 3) float32 style, 0..255: what the vote averages
    fy: np.ndarray  # (F,) rows of the pixels to fill
    fx: np.ndarray
    trust: np.ndarray  # (F,) float32 confidence of each pixel to fill: _CONFIDENCE_DECAY ** (distance to a kept one)
    cy: np.ndarray  # (N,) rows of the centres to search, scanline order
    cx: np.ndarray
    index: np.ndarray  # (h, w) int64 position of each centre in cy/cx, -1 for pixels that are not searched
    weight: np.ndarray  # (N,) float32 vote weight of each centre: mean confidence over its window
    n_guide: int
    s_scale: np.float32
    r: int

    @classmethod
    def build(cls, style, src, tgt, fill, n_guide, r, stride, s_scale) -> "_Level":
        index = np.empty(fill.shape, np.int64)
        cy, cx = K.centres(fill, r, stride, index)
        fy, fx = np.nonzero(fill)
        confidence = np.empty(fill.shape, np.float32)
        decay = (_CONFIDENCE_DECAY ** np.arange(sum(fill.shape) + 1)).astype(np.float32)
        K.confidence(fill, decay, np.empty(fill.shape, np.int64), confidence)
        weight = K.window_mean(confidence, cy, cx, r) + np.float32(1e-3)  # never 0, even with nothing kept
        conf = np.where(fill, np.float32(0), confidence)
        return cls(src, tgt, conf, style, fy, fx, confidence[fy, fx], cy, cx, index, weight, n_guide, s_scale, r)

    def vote_weights(self, cost: np.ndarray | None) -> np.ndarray:
        """Each centre's vote weight: its confidence, times exp(-D / 2 sigma^2) given the field's costs."""
        if cost is None:
            return self.weight
        q = (3 * len(cost)) // 4  # the 75th percentile, without np.percentile's overhead
        sigma2 = max(float(np.partition(cost, q)[q]), 1e-12)
        return (self.weight * np.exp(-cost / (2 * sigma2))).astype(np.float32) + np.float32(1e-12)

    def vote(self, ny: np.ndarray, nx: np.ndarray, cost: np.ndarray | None = None) -> np.ndarray:
        """(F, 3) float32 vote, which becomes the estimate E of the pixels to fill. Given the field's costs, each patch
        also weighs by its similarity, exp(-D / 2 sigma^2) with sigma^2 the 75th percentile of D (Wexler et al.):
        good matches outvote poor ones, which keeps the average sharp."""
        weight = self.vote_weights(cost)
        voted = np.empty((len(self.fy), 3), np.float32)
        K.vote(self.style, self.r, self.fy, self.fx, self.index, ny, nx, weight, voted, self.tgt, self.n_guide,
               self.s_scale, self.conf, self.trust)  # fmt: skip
        return voted


def _compose_appearance(lv: "_Level", ny, nx, cost, appearance) -> np.ndarray:
    """(F, 3) float32 base + gain . colours at the pixels to fill, base and gain voted like the style (same field,
    same weights); the mean of the gains times the pixel's own colour equals the mean of each patch's prediction."""
    base, gain, colours = appearance
    weight = lv.vote_weights(cost)
    voted = []
    for values in (base, gain):  # gathered apart: concatenating them would copy both whole images every frame
        out = np.empty((len(lv.fy), values.shape[2]), np.float32)
        K.gather(np.ascontiguousarray(values, np.float32), lv.r, lv.fy, lv.fx, lv.index, ny, nx, weight, out)
        voted.append(out)
    c = colours[lv.fy, lv.fx].astype(np.float32)  # (F, 3)
    g = voted[1].reshape(-1, 3, 3)  # (F, out, in)
    return voted[0] + np.einsum("fci,fi->fc", g, c)


def _pyramid(style, src, tgt, fill, num_levels):
    """[(style, source features, target features, fill)] from fine (0) to coarse. A coarse pixel is to fill when any of
    its fine pixels is, so a coarse estimate only ever averages kept pixels."""
    levels = [(style.astype(np.float32), src, tgt, fill)]
    for _ in range(num_levels - 1):
        fine = levels[-1]
        coarse = [np.empty(((a.shape[0] + 1) // 2, (a.shape[1] + 1) // 2) + a.shape[2:], a.dtype) for a in fine]
        for a, out in zip(fine[:3], coarse[:3]):
            K.half(a, out)
        K.half_any(fine[3], coarse[3])
        levels.append(tuple(coarse))
    return levels


def _stack(guide, g_scale, rgb, s_scale) -> np.ndarray:
    # Outputs are allocated by numpy and filled by the kernels: numba's own allocator is several times slower for
    # arrays of megabytes (it shows as page faults), which mattered at 512x512.
    out = np.empty(guide.shape[:2] + (guide.shape[2] + 3,), np.float32)
    K.stack(guide, g_scale, rgb, s_scale, out)
    return out


def _upsample_nnf(coarse, lv: "_Level", r: int):
    """(ny, nx): the coarser field carried to this level's centres (`kernels.upsample_nnf`); a centre without a
    coarse neighbour, or every centre at the coarsest level, starts at its own position."""
    ny, nx = lv.cy.copy(), lv.cx.copy()
    if coarse is not None:
        K.upsample_nnf(*coarse, lv.cy, lv.cx, r, lv.src.shape[0], lv.src.shape[1], ny, nx)
    return ny, nx


def _stride(patch_size: int) -> int:
    """Spacing of the searched centres. Every other pixel still covers each pixel with ~(patch_size / 2)^2 patches,
    plenty for the vote, and searches a quarter of the centres: the largest single saving in the synthesis."""
    return max(1, (patch_size + 1) // 3)


def _max_levels(h: int, w: int, patch_size: int) -> int:
    """Levels (the full size counted) whose smaller side stays >= 2 * patch_size."""
    n = 1
    while min((h + 2**n - 1) >> n, (w + 2**n - 1) >> n) >= 2 * patch_size:
        n += 1
    return n


def _check(style, source_guide, target_guide, fill, init, patch_size, levels, iterations, guide_weights, style_weight,
           seed):
    """One line naming the first bad argument; returns contiguous float32 guides and the guide weights."""
    arrays = {"style": style, "source_guide": source_guide, "target_guide": target_guide, "fill": fill, "init": init}
    for name, a in arrays.items():
        if not isinstance(a, np.ndarray):
            raise UsageError(f"synthesize: {name} must be a numpy array, got {type(a).__name__}")
    for name, a in (("style", style), ("init", init)):
        if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
            raise UsageError(f"synthesize: {name} must be (H, W, 3) uint8, got {a.shape} {a.dtype}")
    for name, a in (("source_guide", source_guide), ("target_guide", target_guide)):
        if a.ndim != 3 or not np.issubdtype(a.dtype, np.floating):
            raise UsageError(f"synthesize: {name} must be (H, W, C) float32, got {a.shape} {a.dtype}")
    if fill.ndim != 2 or fill.dtype != bool:
        raise UsageError(f"synthesize: fill must be an (H, W) bool mask, got {fill.shape} {fill.dtype}")
    h, w = style.shape[:2]
    for name, a in arrays.items():
        if a.shape[:2] != (h, w):
            raise UsageError(f"synthesize: {name} is {a.shape[:2]} but style is {(h, w)}; give all inputs one size")
    if source_guide.shape[2] != target_guide.shape[2]:
        raise UsageError(f"synthesize: source_guide has {source_guide.shape[2]} channels but target_guide "
                         f"{target_guide.shape[2]}; give both the same guides")  # fmt: skip
    if not _is_int(patch_size) or patch_size < 1 or patch_size % 2 == 0:
        raise UsageError(f"synthesize: patch_size must be an odd positive integer, got {patch_size!r}")
    if min(h, w) < patch_size:
        raise UsageError(f"synthesize: {h}x{w} frames are smaller than a {patch_size}x{patch_size} patch; "
                         "use a smaller patch_size")  # fmt: skip
    for name, v in (("levels", 1 if levels is None else levels), ("iterations", iterations)):
        if not _is_int(v) or v < 1:
            raise UsageError(f"synthesize: {name} must be a positive integer, got {v!r}")
    if not _is_int(seed):
        raise UsageError(f"synthesize: seed must be an integer, got {seed!r}")
    if isinstance(style_weight, bool) or not isinstance(style_weight, (int, float, np.number)) or not (
        np.isfinite(style_weight) and style_weight >= 0
    ):
        raise UsageError(f"synthesize: style_weight must be a finite number >= 0, got {style_weight!r}")
    c = source_guide.shape[2]
    try:
        weights = np.full(c, 1.0 / max(c, 1)) if guide_weights is None else np.asarray(guide_weights, float).reshape(-1)
    except (TypeError, ValueError):
        weights = None
    if weights is None or weights.shape != (c,) or not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise UsageError(f"synthesize: guide_weights must be {c} finite numbers >= 0 (one per guide channel), "
                         f"got {guide_weights!r}")  # fmt: skip
    # Contiguous float32 everywhere: a strided view would make numba compile (and cache) another copy of each kernel.
    guide_s, guide_t = (np.ascontiguousarray(g, np.float32) for g in (source_guide, target_guide))
    if not (np.all(np.isfinite(guide_s)) and np.all(np.isfinite(guide_t))):
        raise UsageError("synthesize: the guides hold NaN or infinite values; replace them with finite numbers")
    return guide_s, guide_t, weights


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)
