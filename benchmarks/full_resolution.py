"""Quality, speed and memory at the source's own resolution, against today's 512x512 working-size budget: one run.

Real clips (koolshooters.mp4, 960x720, the largest sample, and any `--video`) edited frame by frame by a known edit
(`appearance_edits`: exact ground truth, as in `real_motion.py`), the keyframe given at the case's size. Sizes
(`--sizes`): "256" and "512" (long side), "full" (the clip's own), "1080p" and "4k" (the first clip cropped to 16:9 and
enlarged bicubically: marked "(upscaled)" in the tables; their fine detail is the enlargement's, not a camera's).
Every size above the budget is run twice per method: at its own size, and through the budget (`via 512x512`: clip
and keyframe shrunk to the 512x512 working size, propagated there, enlarged back bilinearly, as the pipeline does
today) - the issue's "Why" comparison. Scores are `score_against_truth` against the truth at the case's size.

Per method and case: PSNR, sharpness ratio (truth = 1), s/frame of CPU time (the process's, all threads, per
propagated frame: the machine is shared, so wall time, also reported, needs a quiet machine), and peak memory above
what the run started with (VmHWM after resetting it through /proc/self/clear_refs; the output frames are allocated
before and not counted, as a writer would stream them).

A second table compares bringing an edit made at the 512x512 budget up to full size: `guided_upsample` against a
plain bicubic and a bilinear resample, on the first frame of each clip (and of every other sample clip enlarged x2,
marked so) x every edit.

    python benchmarks/full_resolution.py --json outputs/bench/full_resolution.json
    python benchmarks/full_resolution.py --sizes full 1080p --edits sketch --max-frames 12 --methods flow chain

Writes PATH (all numbers), PATH.md (the tables) and PATH-crops.png (512x512 crops of a 1080p frame: truth |
512x512 budget | full size, flow, the first edit).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_motion import SAMPLES, _cell, _mean, clip_paths, prepare_methods, working_size  # noqa: E402

from magicprop.evaluation import score_against_truth  # noqa: E402
from magicprop.evaluation.appearance_edits import EDITS  # noqa: E402
from magicprop.evaluation.ground_truth import sharpness  # noqa: E402
from magicprop.propagation import PROPAGATORS, PropagationRequest, PropagationSettings  # noqa: E402
from magicprop.propagation.flow.resolution import shrink  # noqa: E402
from magicprop.propagation.flow.upsample import guided_upsample, plain_upsample  # noqa: E402
from magicprop.video import read_video, resize_frames  # noqa: E402
from magicprop.video import working_size as budget_size  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SIZES = ("256", "512", "full", "1080p", "4k")
UPSCALED = {"1080p": (1080, 1920), "4k": (2160, 3840)}
BUDGET = 512 * 512
METHODS = ("flow", "chain", "lut", "copy")
EDITS_DEFAULT = ("sketch", "cartoon", "vivid_cartoon")  # a stylisation with fine strokes, one with flat areas, a local edit


# ---------------------------------------------------------------------------------------------------------------------
# Clips at each size
# ---------------------------------------------------------------------------------------------------------------------
def upscaled(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The clip cropped (centred) to the aspect of `size`, then enlarged bicubically to it."""
    h, w = frames.shape[1:3]
    th, tw = size
    if w * th > h * tw:  # too wide: crop the sides
        cw = round(h * tw / th)
        frames = frames[:, :, (w - cw) // 2 : (w - cw) // 2 + cw]
    else:
        ch = round(w * th / tw)
        frames = frames[:, (h - ch) // 2 : (h - ch) // 2 + ch]
    return np.stack([cv2.resize(f, (tw, th), interpolation=cv2.INTER_CUBIC) for f in frames])


def clip_at(frames: np.ndarray, size: str) -> np.ndarray:
    """The clip at one of `SIZES`."""
    if size == "full":
        return frames
    if size in UPSCALED:
        return upscaled(frames, UPSCALED[size])
    return resize_frames(frames, working_size(*frames.shape[1:3], int(size)))


def size_label(size: str, source: np.ndarray) -> str:
    h, w = source.shape[1:3]
    return f"{size} {w}x{h}" + (" (upscaled)" if size in UPSCALED else "")


# ---------------------------------------------------------------------------------------------------------------------
# Memory: the process's peak resident set since a reset (Linux)
# ---------------------------------------------------------------------------------------------------------------------
def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _libc():
    """glibc, with a fixed mmap threshold: by default it rises after each large free, so the next method's arrays come
    from a heap that never shrinks and its peak reads as 0. None elsewhere."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD: arrays over 128 kB are mapped and returned when freed
        return libc
    except (OSError, AttributeError):
        return None


LIBC = _libc()


def reset_peak() -> float | None:
    """Reset VmHWM to the current resident set (freed memory handed back first); return that (MB), or None where
    /proc cannot do it."""
    gc.collect()
    if LIBC is not None:
        LIBC.malloc_trim(0)
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    return _status_mb("VmRSS")


# ---------------------------------------------------------------------------------------------------------------------
# One method on one case
# ---------------------------------------------------------------------------------------------------------------------
def propagate(name: str, source: np.ndarray, k: int, key: np.ndarray, inputs: dict, depth, steps: int, out: np.ndarray,
              via_budget: bool) -> None:  # fmt: skip
    """Write the method's frames into `out`, at the case's size; `via_budget`: run at the 512x512 working size and
    enlarge back (bilinear), as the pipeline does before full resolution."""
    p = PROPAGATORS[name]
    size = source.shape[1:3]
    multiple = inputs.get("multiple", 8)
    working = budget_size(*size, max_pixels=BUDGET, multiple_of=multiple)
    if via_budget:
        source, key = resize_frames(source, working), resize_frames(key, working)
    request = PropagationRequest(source=source, keyframes={k: key}, progress=False,
                                 depth=depth if p.needs_depth else None,
                                 models=inputs.get("models") if p.needs_model else None,
                                 settings=PropagationSettings(num_inference_steps=steps, seed=0),
                                 working_size=working if p.full_resolution and p.needs_model else None)  # fmt: skip
    for t, frame in enumerate(p(request)):
        out[t] = resize_frames(frame, size)


def measure(name: str, source, truth, k: int, inputs: dict, depth, steps: int, via_budget: bool) -> tuple[dict, np.ndarray]:
    out = np.zeros_like(truth)
    out.fill(0)  # resident before the reset: the outputs are not the method's memory
    base = reset_peak()
    cpu, wall = time.process_time(), time.perf_counter()
    propagate(name, source, k, truth[k], inputs, depth, steps, out, via_budget)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    peak = _status_mb("VmHWM")
    score = score_against_truth(out, truth, source, k)
    score.pop("per_frame")
    n = len(source) - 1
    return {**score, "cpu_s_per_frame": cpu / n, "wall_s_per_frame": wall / n,
            "peak_mb": None if base is None or peak is None else peak - base}, out  # fmt: skip


def run(args) -> dict:
    paths = clip_paths(args)
    if not paths:
        print(f"no clips: {args.samples} holds none of {', '.join(args.clips)} and no --video was given")
        return {"rows": [], "keyframe_rows": [], "crops": None}
    if args.depth_model is None:
        from magicprop.motion import DEFAULT_DEPTH_MODEL

        args.depth_model = DEFAULT_DEPTH_MODEL
    methods, inputs = prepare_methods(args)
    if inputs.get("models") is not None:  # the model's working size: sides multiples of 8 and of its latent pairs
        from math import lcm

        from magicprop.models.encoders import vae_scale_factor

        inputs["multiple"] = lcm(8, 2 * vae_scale_factor(inputs["models"].vae))
    rows, crops = [], None
    for i, path in enumerate(paths):
        frames, _ = read_video(path, max_frames=args.max_frames)
        for size in args.sizes:
            if size in UPSCALED and i > 0:
                continue  # 1080p and 4K are made from the first clip only
            source = clip_at(frames[: args.max_frames_4k] if size == "4k" else frames, size)
            label = size_label(size, source)
            depth = None
            if "depth_estimator" in inputs:
                from magicprop.motion import estimate_clip_depth

                small = resize_frames(source, budget_size(*source.shape[1:3], max_pixels=BUDGET, multiple_of=8))
                depth = estimate_clip_depth(small, inputs["depth_estimator"], size=small.shape[1:3], progress=False)
            modes = [False] + ([True] if source.shape[1] * source.shape[2] > BUDGET else [])
            for edit_name in args.edits:
                truth = EDITS[edit_name].clip(source)
                k = 0 if args.keyframe == "start" else len(source) // 2
                for via_budget in modes:
                    for method in methods:
                        row, out = measure(method, source, truth, k, inputs, depth, args.steps, via_budget)
                        rows.append({"clip": path.stem, "size": size, "label": label, "edit": edit_name,
                                     "mode": "via 512x512" if via_budget else "own size", "method": method,
                                     "frames": len(source), "keyframe": k, **row})  # fmt: skip
                        print(f"{path.stem} {label} {edit_name} {rows[-1]['mode']} {method}: {row['psnr']:.2f} dB, "
                              f"sharpness {row['sharpness_ratio']:.2f}, {row['cpu_s_per_frame']:.2f} s/frame CPU, "
                              f"peak {_cell(row['peak_mb'], '.0f')} MB", flush=True)  # fmt: skip
                        if size == "1080p" and method == "flow" and edit_name == args.edits[0]:
                            crops = (crops or {}) | {via_budget: out[-1], "truth": truth[-1]}
                del truth
    return {"rows": rows, "keyframe_rows": [] if args.no_keyframe_table else keyframe_rows(paths, args), "crops": crops}


# ---------------------------------------------------------------------------------------------------------------------
# Guided upsampling of a keyframe edited at the budget
# ---------------------------------------------------------------------------------------------------------------------
def keyframe_rows(paths: list[Path], args) -> list[dict]:
    """guided_upsample against plain resamples, per first frame x edit: each edited at the 512x512 budget, scored
    against the edit at full size. The first clip also at 1080p and 4K (upscaled); clips under 0.5 Mpx enlarged x2."""
    images = []
    others = sorted(Path(args.samples).glob("*.mp4")) if Path(args.samples).is_dir() else []
    for i, path in enumerate(dict.fromkeys([*paths, *others])):
        frame = read_video(path, max_frames=1)[0]
        if frame.shape[1] * frame.shape[2] < 500_000:
            images.append((f"{path.stem} {frame.shape[2] * 2}x{frame.shape[1] * 2} (upscaled x2)",
                           upscaled(frame, (frame.shape[1] * 2, frame.shape[2] * 2))[0]))  # fmt: skip
        else:
            images.append((f"{path.stem} {frame.shape[2]}x{frame.shape[1]}", frame[0]))
        if i == 0:
            images += [(size_label(s, u), u[0]) for s in ("1080p", "4k") if s in args.sizes
                       for u in [upscaled(frame, UPSCALED[s])]]  # fmt: skip
    rows = []
    for label, full in images:
        if full.shape[0] * full.shape[1] <= BUDGET:
            continue  # nothing to bring up
        small = shrink(full, budget_size(*full.shape[:2], max_pixels=BUDGET, multiple_of=8))
        for name in args.keyframe_edits:
            edit = EDITS[name]
            truth, edited = edit(full), edit(small)
            results = {"bilinear": cv2.resize(edited, (full.shape[1], full.shape[0]), interpolation=cv2.INTER_LINEAR),
                       "bicubic": plain_upsample(edited, full.shape[:2]), "guided": guided_upsample(edited, full)}  # fmt: skip
            scores = {m: score_against_truth(r[None], truth[None], full[None], []) for m, r in results.items()}
            rows.append({"image": label, "edit": name, "family": edit.family,
                         **{f"{m}_psnr": s["psnr"] for m, s in scores.items()},
                         **{f"{m}_sharpness": s["sharpness_ratio"] for m, s in scores.items()}})  # fmt: skip
        mine = rows[-len(args.keyframe_edits) :]
        print(f"keyframe upsampling {label}: guided {_mean([r['guided_psnr'] for r in mine]):.2f} dB, "
              f"bicubic {_mean([r['bicubic_psnr'] for r in mine]):.2f} dB", flush=True)  # fmt: skip
    return rows


# ---------------------------------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------------------------------
def summarise(rows: list[dict]) -> list[dict]:
    """Means over edits per (clip, size, mode, method), in the order they ran."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["clip"], r["label"], r["mode"], r["method"]), []).append(r)
    keys = ("psnr", "sharpness_ratio", "cpu_s_per_frame", "wall_s_per_frame", "peak_mb")
    return [{"clip": c, "label": lab, "mode": m, "method": meth, "edits": len(rs), "frames": rs[0]["frames"],
             **{k: _mean([r[k] for r in rs]) for k in keys}} for (c, lab, m, meth), rs in groups.items()]  # fmt: skip


def markdown(summary: list[dict], keyframe: list[dict], edits: list[str], where: str) -> str:
    lines = [f"Mean over the edits {', '.join(edits)}; keyframe: the {where} frame; CPU s/frame is the process's CPU "
             "time (all threads) per propagated frame; peak MB is above what the run started with.", "",
             "| clip | size | run | method | frames | PSNR | sharpness | CPU s/frame | wall s/frame | peak MB |",
             "|" + "---|" * 10]  # fmt: skip
    for r in summary:
        lines.append(f"| {r['clip']} | {r['label']} | {r['mode']} | {r['method']} | {r['frames']} | "
                     f"{_cell(r['psnr'], '.2f')} | {_cell(r['sharpness_ratio'], '.2f')} | "
                     f"{_cell(r['cpu_s_per_frame'], '.3f')} | {_cell(r['wall_s_per_frame'], '.3f')} | "
                     f"{_cell(r['peak_mb'], '.0f')} |")  # fmt: skip
    if keyframe:
        edits = ", ".join(dict.fromkeys(r["edit"] for r in keyframe))
        lines += ["", f"A keyframe edited at the 512x512 budget, brought to full size (mean over the edits {edits}; "
                  "PSNR dB / sharpness ratio):", "", "| image | bilinear | bicubic | guided | guided - bicubic (dB) |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for image in dict.fromkeys(r["image"] for r in keyframe):
            mine = [r for r in keyframe if r["image"] == image]
            cell = lambda m: f"{_mean([r[m + '_psnr'] for r in mine]):.2f} / {_mean([r[m + '_sharpness'] for r in mine]):.2f}"  # noqa: E731
            gain = _mean([r["guided_psnr"] - r["bicubic_psnr"] for r in mine])
            lines.append(f"| {image} | {cell('bilinear')} | {cell('bicubic')} | {cell('guided')} | {gain:+.2f} |")
    return "\n".join(lines)


def save_crops(crops: dict, path: Path, size: int = 512) -> None:
    """Two 512x512 regions of the 1080p frame (the centre, and a corner region), each truth | budget | full size."""
    from magicprop.video import save_image, side_by_side

    truth = crops["truth"]
    h, w = truth.shape[:2]
    panels = []
    for y, x in (((h - size) // 2, (w - size) // 2), (h // 8, w // 8)):
        cut = lambda im: im[y : y + size, x : x + size]  # noqa: E731
        panels.append(side_by_side([cut(truth)[None], cut(crops[True])[None], cut(crops[False])[None]],
                                   ["truth", "512x512 budget, enlarged", "full size"])[0])  # fmt: skip
    save_image(path, np.concatenate(panels, axis=0))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=Path, default=SAMPLES, help=f"folder of sample clips (default {SAMPLES})")
    p.add_argument("--clips", nargs="+", default=["koolshooters"], metavar="NAME", help="sample clips (default koolshooters)")
    p.add_argument("--video", action="append", default=[], metavar="PATH", help="another clip (repeatable)")
    p.add_argument("--sizes", nargs="+", default=list(SIZES), choices=SIZES)
    p.add_argument("--edits", nargs="+", default=list(EDITS_DEFAULT), choices=list(EDITS))
    p.add_argument("--methods", nargs="+", default=list(METHODS), help=f"registered propagators (default {' '.join(METHODS)})")
    p.add_argument("--model", default=None, metavar="PATH", help="a PropDPM model folder: also runs hybrid")
    p.add_argument("--depth-model", default=None, metavar="ID", help="depth model of the learned methods (default: the hub's)")
    p.add_argument("--steps", type=int, default=25, help="sampling steps of the learned methods")
    p.add_argument("--max-frames", type=int, default=24)
    p.add_argument("--keyframe", choices=["start", "middle"], default="start")
    p.add_argument("--max-frames-4k", type=int, default=10, help="frames of the 4K case (each is 25 MB, held 3 times)")
    p.add_argument("--keyframe-edits", nargs="+", default=list(EDITS), choices=list(EDITS),
                   help="edits of the guided-upsampling table (default: all)")
    p.add_argument("--no-keyframe-table", action="store_true", help="skip the guided-upsampling table")
    p.add_argument("--json", type=Path, default=ROOT / "outputs" / "bench" / "full_resolution.json")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args, t0 = parse_args(argv), time.time()
    result = run(args)
    crops = result.pop("crops")
    if not result["rows"]:
        return 0
    result.update(summary=summarise(result["rows"]), seconds=round(time.time() - t0, 1),
                  options={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()})  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    table = markdown(result["summary"], result["keyframe_rows"], args.edits, "first" if args.keyframe == "start" else "middle")
    Path(f"{args.json.with_suffix('')}.md").write_text(table + "\n")
    if crops is not None and True in crops and False in crops:
        save_crops(crops, Path(f"{args.json.with_suffix('')}-crops.png"))
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
