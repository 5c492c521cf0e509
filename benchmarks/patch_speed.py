"""Speed of guided patch synthesis (`propagation.patches.synthesize`) on a 512x512 frame, measured in one run.

The keyframe is scikit-image's astronaut, edited (negative, channels rotated); frame t is the same picture panned by
(7, 11) px, so the truth is known everywhere. The pixels to fill are a few discs (occlusion-like blobs) covering 5%
and 20% of the frame; guides are the source colour (3 channels) and the keyframe position each pixel came from (2).
Prints seconds per frame (best of `--repeat`, after one warm-up call that compiles or loads the numba kernels) and
the PSNR inside the filled pixels. Goal: <= 0.1 s per frame at 5% on 2 CPU cores.

    python benchmarks/patch_speed.py [--repeat 5] [--json outputs/patch_speed.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

SIZE, SHIFT = 512, (7, 11)


def discs(fraction: float, seed: int = 0) -> np.ndarray:
    """(SIZE, SIZE) bool: random discs of radius 12..40 px added until they cover `fraction` of the frame."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    mask = np.zeros((SIZE, SIZE), bool)
    while mask.mean() < fraction:
        cy, cx, rad = rng.integers(0, SIZE), rng.integers(0, SIZE), rng.integers(12, 41)
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= rad**2
    return mask


def case():
    from skimage import data

    source = np.ascontiguousarray(data.astronaut()[:SIZE, :SIZE])
    edited = (255 - source)[..., ::-1].copy()
    frame = np.roll(source, SHIFT, axis=(0, 1))
    truth = np.roll(edited, SHIFT, axis=(0, 1))
    grid = np.stack(np.mgrid[:SIZE, :SIZE], -1).astype(np.float32) / SIZE  # (H, W, 2) keyframe position
    guide_s = np.concatenate([source / np.float32(255), grid], axis=2).astype(np.float32)
    guide_t = np.concatenate([frame / np.float32(255), np.roll(grid, SHIFT, axis=(0, 1))], axis=2).astype(np.float32)
    return edited, guide_s, guide_t, truth


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255**2 / mse))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    from magicprop.propagation.flow.patches import synthesize

    style, guide_s, guide_t, truth = case()
    results = {}
    for fraction in (0.05, 0.20):
        fill = discs(fraction)
        init = truth.copy()
        init[fill] = 0
        t0 = time.perf_counter()
        out = synthesize(style, guide_s, guide_t, fill, init)  # warm-up: compiles or loads the cached kernels
        warm = time.perf_counter() - t0
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            again = synthesize(style, guide_s, guide_t, fill, init)
            times.append(time.perf_counter() - t0)
        key = f"fill_{round(fraction * 100)}pct"
        results[key] = {"s_per_frame": min(times), "median_s": float(np.median(times)), "first_call_s": warm,
                        "fill_fraction": float(fill.mean()), "psnr_fill_db": psnr(out[fill], truth[fill]),
                        "deterministic": bool(np.array_equal(out, again))}  # fmt: skip
        r = results[key]
        print(f"{key}: {r['s_per_frame']:.4f} s/frame (median {r['median_s']:.4f}, first call {warm:.2f} s), "
              f"{100 * r['fill_fraction']:.1f}% filled, PSNR in fill {r['psnr_fill_db']:.1f} dB, "
              f"deterministic={r['deterministic']}")  # fmt: skip
    print(f"goal_5pct_le_0.1s: {results['fill_5pct']['s_per_frame'] <= 0.1}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
