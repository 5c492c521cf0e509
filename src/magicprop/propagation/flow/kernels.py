"""The numba kernels of guided patch synthesis (`patches.synthesize`): patch distance, PatchMatch search, vote.

Arithmetic is written so that each kernel's `.py_func` (plain Python, which the tests run) gives bit-identical results:
float32 differences are promoted to float64 before they are squared and summed, and the 32-bit integer hashing masks
after every step so Python's unbounded ints and numba's int64 agree.

The kernels are serial on purpose. A parallel PatchMatch (bands of centres, each seeing the others' matches as they were
when the sweep began) ran 3x slower on 2 threads than on one (0.83 s vs 0.29 s per 512x512 frame, in an earlier and
slower version of this code) on 2 cores that other work kept busy: OpenMP workers wait for each other at each of the
dozens of short parallel regions a frame needs. Parallelise over frames instead.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def hash32(x):
    """A 32-bit integer mixer (xor-shift-multiply rounds; multipliers below 2^31 so no product leaves int64)."""
    x = x & 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x5BD1E995) & 0xFFFFFFFF
    x ^= x >> 16
    return x


@njit(cache=True, nogil=True)
def xorshift(x):
    """Marsaglia's xorshift32 step (the state must not be 0)."""
    x ^= (x << 13) & 0xFFFFFFFF
    x ^= x >> 17
    x ^= (x << 5) & 0xFFFFFFFF
    return x


@njit(cache=True, nogil=True)
def patch_cost(src, tgt, conf, n_guide, sy, sx, ty, tx, r, limit):
    """D between the source patch centred at (sy, sx) and the target patch at (ty, tx): squared feature differences,
    the style channels (after the n_guide guide channels) weighted by the target pixel's conf. Stops after a patch
    row once the sum passes `limit`: callers only need to know whether a candidate beats the current best."""
    k = src.shape[2]
    d = 0.0
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            g = 0.0
            for c in range(n_guide):
                e = float(src[sy + dy, sx + dx, c] - tgt[ty + dy, tx + dx, c])
                g += e * e
            s = 0.0
            for c in range(n_guide, k):
                e = float(src[sy + dy, sx + dx, c] - tgt[ty + dy, tx + dx, c])
                s += e * e
            d += g + float(conf[ty + dy, tx + dx]) * s
        if d > limit:
            return d
    return d


@njit(cache=True, nogil=True)
def search_pass(src, tgt, conf, n_guide, r, stride, cy, cx, index, ny, nx, cost, reverse, radius, state):
    """One PatchMatch sweep (Barnes et al. 2009) over the centres, in scanline order or reversed: D of the current match
    (the estimate changed since the last sweep), propagation from the two neighbours already visited (`stride` pixels
    away), then random search in windows halving from `radius` down to one pixel. Writes ny, nx, cost. (No separate
    random initialisation: at the coarsest level the first window is the whole source, so the first sample of the
    first sweep is a uniformly random match, tried against the centre's own position.)"""
    hs, ws = src.shape[0], src.shape[1]
    ht, wt = index.shape[0], index.shape[1]
    step = -stride if reverse else stride
    n = cy.shape[0]
    s = state | 1
    for i in range(n):
        k = n - 1 - i if reverse else i
        y, x = cy[k], cx[k]
        by, bx = ny[k], nx[k]
        best = patch_cost(src, tgt, conf, n_guide, by, bx, y, x, r, np.inf)
        # Propagation: in a coherent region the neighbour's match, shifted as the centres are, is the likeliest one.
        for axis in range(2):
            qy = y - step if axis == 0 else y
            qx = x - step if axis == 1 else x
            if qy < 0 or qy >= ht or qx < 0 or qx >= wt or index[qy, qx] < 0:
                continue
            j = index[qy, qx]
            sy = min(max(ny[j] + y - qy, r), hs - 1 - r)
            sx = min(max(nx[j] + x - qx, r), ws - 1 - r)
            if sy != by or sx != bx:
                d = patch_cost(src, tgt, conf, n_guide, sy, sx, y, x, r, best)
                if d <= best:  # a tie goes to the coherent match: it floods regions nothing else tells apart
                    by, bx, best = sy, sx, d
        # Random search, sampled inside the window cut to the valid centres (so borders are not oversampled).
        rad = radius
        while rad >= 1:
            lo_y, hi_y = max(by - rad, r), min(by + rad, hs - 1 - r)
            lo_x, hi_x = max(bx - rad, r), min(bx + rad, ws - 1 - r)
            s = xorshift(s)
            sy = lo_y + s % (hi_y - lo_y + 1)
            s = xorshift(s)
            sx = lo_x + s % (hi_x - lo_x + 1)
            if sy != by or sx != bx:
                d = patch_cost(src, tgt, conf, n_guide, sy, sx, y, x, r, best)
                if d < best:
                    by, bx, best = sy, sx, d
            rad //= 2
        ny[k], nx[k], cost[k] = by, bx, best


@njit(cache=True, nogil=True)
def gather(values, r, fy, fx, index, ny, nx, weight, out):
    """out[i] = weighted mean, over the searched patches covering pixel (fy[i], fx[i]), of values (h, w, C) at the
    pixel each one maps it to. Gathered per pixel (not scattered per patch) so only pixels to fill are visited. `vote`
    gathers the style; the appearance model's base and gain are gathered with the same field and weights."""
    ht, wt = index.shape[0], index.shape[1]
    nc = values.shape[2]
    acc = np.zeros(nc, np.float64)
    for i in range(fy.shape[0]):
        y, x = fy[i], fx[i]
        acc[:] = 0.0
        n = 0.0
        for dy in range(-r, r + 1):
            if y + dy < 0 or y + dy >= ht:
                continue
            for dx in range(-r, r + 1):
                if x + dx < 0 or x + dx >= wt or index[y + dy, x + dx] < 0:
                    continue
                j = index[y + dy, x + dx]
                sy, sx = ny[j] - dy, nx[j] - dx  # the pixel sits at (-dy, -dx) in the patch centred at (y+dy, x+dx)
                wj = float(weight[j])
                for c in range(nc):
                    acc[c] += wj * float(values[sy, sx, c])
                n += wj
        for c in range(nc):
            out[i, c] = acc[c] / n


@njit(cache=True, nogil=True)
def vote(style, r, fy, fx, index, ny, nx, weight, out, tgt, n_guide, s_scale, conf, trust):
    """Wexler et al.'s vote: out[i] = weighted mean of the style pixels the patches covering pixel i map it to
    (`gather`). The vote becomes the estimate E (tgt's style channels), weighted by `trust` in D from now on (conf)."""
    gather(style, r, fy, fx, index, ny, nx, weight, out)
    for i in range(fy.shape[0]):
        y, x = fy[i], fx[i]
        for c in range(3):
            tgt[y, x, n_guide + c] = out[i, c] * s_scale
        conf[y, x] = trust[i]


@njit(cache=True, nogil=True)
def centres(fill, r, stride, index):
    """The patch centres to search, in scanline order (propagation relies on it): the valid centres (patch inside the
    frame) on a lattice of `stride` pixels, plus the last valid row and column so that every pixel is covered, whose
    window touches a pixel to fill. Returns their rows and columns, and fills `index` (H, W) int64 with each one's
    position in them (-1: not a centre)."""
    h, w = fill.shape
    index[:] = -1
    for y in range(h):
        for x in range(w):
            if fill[y, x]:
                for yy in range(max(y - r, r), min(y + r, h - 1 - r) + 1):
                    for xx in range(max(x - r, r), min(x + r, w - 1 - r) + 1):
                        index[yy, xx] = 0
    n = 0
    for pass_ in range(2):  # count, then fill
        if pass_ == 1:
            cy, cx = np.empty(n, np.int64), np.empty(n, np.int64)
            n = 0
        for y in range(r, h - r):
            if (y - r) % stride != 0 and y != h - 1 - r:
                continue
            for x in range(r, w - r):
                if ((x - r) % stride == 0 or x == w - 1 - r) and index[y, x] == 0:
                    if pass_ == 1:
                        cy[n], cx[n] = y, x
                    n += 1
    index[:] = -1
    for k in range(n):
        index[cy[k], cx[k]] = k
    return cy, cx


@njit(cache=True, nogil=True)
def upsample_nnf(cny, cnx, cindex, stride, cy, cx, r, hs, ws, ny, nx):
    """Each centre starts from the offset (match minus position) of the nearest coarse centre within a stride of its
    parent, doubled; a centre with none keeps the match it has."""
    hc, wc = cindex.shape[0], cindex.shape[1]
    for k in range(cy.shape[0]):
        py, px = cy[k] // 2, cx[k] // 2
        best, bj, by, bx = 1 << 30, -1, 0, 0
        for qy in range(max(py - stride, 0), min(py + stride, hc - 1) + 1):
            for qx in range(max(px - stride, 0), min(px + stride, wc - 1) + 1):
                j = cindex[qy, qx]
                dist = (qy - py) * (qy - py) + (qx - px) * (qx - px)
                if j >= 0 and dist < best:
                    best, bj, by, bx = dist, j, qy, qx
        if bj >= 0:
            ny[k] = min(max(cy[k] + 2 * (cny[bj] - by), r), hs - 1 - r)
            nx[k] = min(max(cx[k] + 2 * (cnx[bj] - bx), r), ws - 1 - r)


@njit(cache=True, nogil=True)
def confidence(fill, decay, d, out):
    """out (H, W) float32 confidence: 1 on kept pixels, decay[d] on a pixel to fill whose nearest kept pixel is d steps
    away (chessboard distance in the int64 scratch `d`, two raster passes; nothing kept: d = H + W). `decay` is a table
    of powers, so both this kernel and its py_func read the same numbers."""
    h, w = fill.shape
    for y in range(h):
        for x in range(w):
            if fill[y, x]:
                m = h + w
                for yy, xx in ((y - 1, x - 1), (y - 1, x), (y - 1, x + 1), (y, x - 1)):
                    if 0 <= yy and 0 <= xx < w:
                        m = min(m, d[yy, xx] + 1)
                d[y, x] = m
            else:
                d[y, x] = 0
    for y in range(h - 1, -1, -1):
        for x in range(w - 1, -1, -1):
            if fill[y, x]:
                m = d[y, x]
                for yy, xx in ((y + 1, x + 1), (y + 1, x), (y + 1, x - 1), (y, x + 1)):
                    if yy < h and 0 <= xx < w:
                        m = min(m, d[yy, xx] + 1)
                d[y, x] = m
                out[y, x] = decay[m]
            else:
                out[y, x] = 1.0


@njit(cache=True, nogil=True)
def window_mean(a, cy, cx, r):
    """(N,) float32 mean of the 2-D array `a` over the (2r+1)^2 window at each centre (windows lie inside `a`)."""
    out = np.empty(cy.shape[0], np.float32)
    for k in range(cy.shape[0]):
        s = 0.0
        for y in range(cy[k] - r, cy[k] + r + 1):
            for x in range(cx[k] - r, cx[k] + r + 1):
                s += float(a[y, x])
        out[k] = s / (2 * r + 1) ** 2
    return out


@njit(cache=True, nogil=True)
def stack(guide, g_scale, rgb, s_scale, out):
    """out (H, W, C + 3) float32 features: each guide channel times its scale, then RGB times s_scale."""
    h, w, c = guide.shape
    for y in range(h):
        for x in range(w):
            for k in range(c):
                out[y, x, k] = guide[y, x, k] * g_scale[k]
            for k in range(3):
                out[y, x, c + k] = rgb[y, x, k] * s_scale


@njit(cache=True, nogil=True)
def half(a, out):
    """2x2 box downsampling of (h, w, c) float32 into out ((h+1)//2, (w+1)//2, c); odd edges are repeated."""
    h, w, c = a.shape
    for y in range(out.shape[0]):
        y0, y1 = 2 * y, min(2 * y + 1, h - 1)
        for x in range(out.shape[1]):
            x0, x1 = 2 * x, min(2 * x + 1, w - 1)
            for k in range(c):
                out[y, x, k] = 0.25 * (a[y0, x0, k] + a[y1, x0, k] + a[y0, x1, k] + a[y1, x1, k])


@njit(cache=True, nogil=True)
def half_any(mask, out):
    """2x2 downsampling of a bool mask into out: a coarse pixel is set when any of its (up to) four fine pixels is."""
    h, w = mask.shape
    for y in range(out.shape[0]):
        y0, y1 = 2 * y, min(2 * y + 1, h - 1)
        for x in range(out.shape[1]):
            x0, x1 = 2 * x, min(2 * x + 1, w - 1)
            out[y, x] = mask[y0, x0] or mask[y1, x0] or mask[y0, x1] or mask[y1, x1]


KERNELS = (
    "hash32", "xorshift", "patch_cost", "search_pass", "vote", "gather", "centres", "upsample_nnf", "confidence",
    "window_mean", "stack", "half", "half_any",
)  # fmt: skip  (every njit function here, for tests that swap in their .py_func)
