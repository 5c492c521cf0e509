"""Keyframes the way users work, measured: finding an edited image's frame, and suggested keyframes against evenly
spaced ones.

1. Detection (`keyframes.find_keyframe`): every clip of ../shared/samples/real edited by every edit of
   `evaluation.appearance_edits.EDITS` at `--detection-draws` random frames each (seeded), plus the image-editor
   keyframes of ../shared/samples/edits (and bear's), all edited from frame 0. Counted: the frame found within +-1 of
   the truth, and any confident answer for an image searched in a clip it does not come from (each image against every
   other clip).
2. Suggestions (`keyframes.suggest_keyframes`, `--max N --target 1`: the budget's keyframes that explain the most) against
   evenly spaced keyframes (the centres of N equal parts), N in `--budgets`, on the longest real clips, every frame, at
   `--size` px: the ground-truth edit of those frames is the keyframes given to `flow`, and the truth everywhere else.
   PSNR where new content appears: pooled over the pixels that frame 0 does not explain (flow's anchored validity from
   frame 0), so the region is the same for every method; overall: the mean per-frame PSNR. Frames that are a keyframe of
   any method are left out of both. `flow` with frame 0 alone is the row beside them.
3. Pictures: the coverage curve and suggestions of each clip of ../shared/samples/edits from its edited frame 0.

    python benchmarks/keyframes.py --json outputs/bench/keyframes.json --pictures docs/
    python benchmarks/keyframes.py --skip-suggestions --detection-draws 3      # detection only, more draws

Writes PATH (every row), PATH.md (the tables) and, with --pictures DIR, DIR/keyframes-<clip>.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from magicprop.evaluation import PSNR_CAP_DB, psnr
from magicprop.evaluation.appearance_edits import EDITS
from magicprop.keyframes import (
    CONFIDENT, evenly_spaced, find_keyframe, measure_coverage, plot_plan, suggest_keyframes,
)  # fmt: skip
from magicprop.propagation import PROPAGATORS, PropagationRequest
from magicprop.propagation.flow.maps import anchored_maps
from magicprop.video import load_image, open_video, probe

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT.parent / "shared" / "samples"
LONGEST = ("koolshooters", "background", "puff", "mallard_water")
PROPAGATION_EDITS = ("cartoon", "sketch", "kuwahara", "bright_to_cyan", "vivid_cartoon")  # no colour lookup does these


def load_clip(path: Path, long_side: int) -> np.ndarray:
    """Every frame, the long side at `long_side` px (aspect kept, multiples of 8), decoded one at a time."""
    info = probe(path)
    scale = long_side / max(info.height, info.width)
    size = (max(8, round(info.height * scale / 8) * 8), max(8, round(info.width * scale / 8) * 8))
    with open_video(path, size=size) as reader:
        return np.stack(list(reader))


# ---------------------------------------------------------------------------------------------------------------------
# 1. Detection
# ---------------------------------------------------------------------------------------------------------------------
def detection_cases(args) -> tuple[dict[str, np.ndarray], list[dict]]:
    """The clips, and every (clip, image, truth) case: real clips x edits at random frames, then the real edits."""
    clips = {p.stem: load_clip(p, args.size) for p in sorted((args.samples / "real").glob("*.mp4"))}
    rng = np.random.default_rng(args.seed)
    cases = []
    for name, frames in clips.items():
        for edit in args.detection_edits:
            for _ in range(args.detection_draws):
                k = int(rng.integers(len(frames)))
                cases.append({"clip": name, "image": f"{edit}@{k}", "truth": k, "pixels": EDITS[edit](frames[k])})
    for video in sorted((args.samples / "edits").glob("*.mp4")):
        clips[video.stem] = load_clip(video, args.size)
        for image in sorted((args.samples / "edits").glob(f"{video.stem}_*_000.png")):
            cases.append({"clip": video.stem, "image": image.name, "truth": 0, "pixels": load_image(image)})
    bear = args.samples / "bear"
    if (bear / "frames").is_dir() and (bear / "edited_keyframe_000.png").is_file():
        clips["bear"] = load_clip(bear / "frames", args.size)
        cases.append({"clip": "bear", "image": "edited_keyframe_000.png", "truth": 0, "pixels": load_image(bear / "edited_keyframe_000.png")})
    return clips, cases


def run_detection(args) -> dict:
    clips, cases = detection_cases(args)
    rows, cross = [], []
    for case in cases:
        match = find_keyframe(clips[case["clip"]], case["pixels"])
        rows.append({**{k: v for k, v in case.items() if k != "pixels"}, **match.as_dict(),
                     "right": abs(match.index - case["truth"]) <= 1})  # fmt: skip
        if not rows[-1]["right"]:
            print(f"  wrong: {case['clip']} {case['image']}: {match.describe()}")
        for other in clips:  # the same image searched in every other clip: it must say it found nothing
            if other != case["clip"]:
                m = find_keyframe(clips[other], case["pixels"])
                cross.append({"clip": other, "image": f"{case['clip']}/{case['image']}", "confidence": m.confidence,
                              "confident": m.confident})  # fmt: skip
    real = [r for r in rows if "@" in r["image"]]
    edits = [r for r in rows if "@" not in r["image"]]
    summary = {
        "cases": len(rows), "right": sum(r["right"] for r in rows),
        "real_motion": {"cases": len(real), "right": sum(r["right"] for r in real)},
        "image_editor": {"cases": len(edits), "right": sum(r["right"] for r in edits)},
        "lowest_confidence_of_a_right_answer": min((r["confidence"] for r in rows if r["right"]), default=None),
        "other_clip": {"cases": len(cross), "confident": sum(c["confident"] for c in cross),
                       "highest_confidence": max((c["confidence"] for c in cross), default=None)},
        "threshold": CONFIDENT,
    }  # fmt: skip
    return {"rows": rows, "other_clip": cross, "summary": summary}


# ---------------------------------------------------------------------------------------------------------------------
# 2. Suggestions against evenly spaced keyframes
# ---------------------------------------------------------------------------------------------------------------------
def keyframe_sets(frames: np.ndarray, budgets) -> tuple[dict[str, list[int]], dict[str, float]]:
    """{"frame 0": [0], "suggested N": [...], "even N": [...]} and each set's mean coverage (at 128 px)."""
    sets = {"frame 0": [0]}
    for n in budgets:
        sets[f"even {n}"] = evenly_spaced(len(frames), n)
    table = measure_coverage(frames, extra=sorted({k for ks in sets.values() for k in ks}), progress=False)
    for n in budgets:
        sets[f"suggested {n}"] = suggest_keyframes(table, max_keyframes=n, target=1.0).keyframes
    return sets, {name: float(table.coverage(ks).mean()) for name, ks in sets.items()}


def new_content(frames: np.ndarray) -> np.ndarray:
    """(T, H, W) bool: the pixels frame 0 does not explain (flow's anchored validity from it); none in frame 0."""
    mask = np.zeros(frames.shape[:3], bool)
    for f in anchored_maps(frames, 0):
        mask[f.index] = ~f.valid
    return mask


def run_suggestions(args) -> dict:
    rows = []
    for name in args.clips:
        path = args.samples / "real" / f"{name}.mp4"
        if not path.is_file():
            print(f"skipping {name}: {path} not found")
            continue
        start = time.process_time()
        frames = load_clip(path, args.size)
        sets, coverage = keyframe_sets(frames, args.budgets)
        planning = time.process_time() - start
        unexplained = new_content(frames)
        keep = ~np.isin(np.arange(len(frames)), sorted({k for ks in sets.values() for k in ks}))
        print(f"{name} ({len(frames)} frames, {frames.shape[2]}x{frames.shape[1]}; {unexplained[keep].mean():.1%} of the "
              f"other frames is new content): " + ", ".join(f"{s} {ks}" for s, ks in sets.items()), flush=True)  # fmt: skip
        for edit in args.edits:
            truth = np.stack([EDITS[edit](f) for f in frames])
            for method, ks in sets.items():
                request = PropagationRequest(source=frames, keyframes={k: truth[k] for k in ks}, progress=False)
                out = np.stack(list(PROPAGATORS["flow"](request)))
                rows.append({"clip": name, "edit": edit, "method": method, "keyframes": ks, "coverage": coverage[method],
                             "psnr": float(np.minimum(psnr(out[keep], truth[keep]), PSNR_CAP_DB).mean()),
                             "psnr_new": masked_psnr(out, truth, unexplained & keep[:, None, None]),
                             "planning_cpu_s": planning})  # fmt: skip
            done = [r for r in rows if r["clip"] == name and r["edit"] == edit]
            print(f"  {edit}: " + ", ".join(f"{r['method']} {r['psnr_new']:.2f}/{r['psnr']:.2f}" for r in done), flush=True)
    return {"rows": rows, "summary": summarise_suggestions(rows, args.budgets)}


def masked_psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float | None:
    """PSNR of the MSE pooled over the masked pixels (None without any)."""
    if not mask.any():
        return None
    diff = a[mask].astype(np.float64) - b[mask].astype(np.float64)
    return float(min(10 * np.log10(255.0**2 / max(np.mean(diff**2), 1e-12)), PSNR_CAP_DB))


def summarise_suggestions(rows: list[dict], budgets) -> dict:
    """Per method: means over cases; per budget: the suggested-minus-even difference, mean and worst case."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    out = {"methods": {}}
    for m in methods:
        mine = [r for r in rows if r["method"] == m]
        out["methods"][m] = {key: float(np.mean([r[key] for r in mine if r[key] is not None]))
                             for key in ("psnr_new", "psnr", "coverage")}  # fmt: skip
        out["methods"][m]["cases"] = len(mine)
    for n in budgets:
        pairs = [(s, e) for s in rows if s["method"] == f"suggested {n}" for e in rows
                 if e["method"] == f"even {n}" and (e["clip"], e["edit"]) == (s["clip"], s["edit"])]  # fmt: skip
        for key in ("psnr_new", "psnr"):
            gains = [s[key] - e[key] for s, e in pairs if s[key] is not None and e[key] is not None]
            out[f"budget {n} {key}"] = {"mean_gain": float(np.mean(gains)), "worst": float(np.min(gains)), "cases": len(gains)}
    return out


# ---------------------------------------------------------------------------------------------------------------------
# 3. Pictures, tables
# ---------------------------------------------------------------------------------------------------------------------
def pictures(args) -> list[dict]:
    """The coverage curve and suggestions of each edits/ clip from its edited frame 0 (what `magicprop keyframes clip
    --keyframe-index 0` draws)."""
    from magicprop.keyframes import plan_keyframes

    done = []
    for video in sorted((args.samples / "edits").glob("*.mp4")):
        frames = load_clip(video, args.size)
        plan, _ = plan_keyframes(frames, [0], max_keyframes=3, target=0.95, progress=False)
        path = plot_plan(plan, args.pictures / f"keyframes-{video.stem}.png",
                         title=f"{video.name}, edited at frame 0: coverage (orange: suggestions, in the order to edit them)",
                         frames=frames)
        done.append({"clip": video.stem, "suggested": list(plan.suggested), "lowest_from_frame_0": float(plan.coverage_given.min()),
                     "picture": str(path)})  # fmt: skip
        print(f"{video.stem}: suggested {list(plan.suggested)}; lowest coverage from frame 0 {plan.coverage_given.min():.2f} -> {path}")
    return done


def markdown(result: dict) -> str:
    lines = []
    if "detection" in result:
        s = result["detection"]["summary"]
        lines += ["| detection | right frame (+-1) | lowest confidence when right | confident answers for another clip's image |",
                  "|---|---|---|---|",
                  f"| real-motion clips x edits, random frames | {s['real_motion']['right']}/{s['real_motion']['cases']} | "
                  f"{s['lowest_confidence_of_a_right_answer']:.2f} | {s['other_clip']['confident']}/{s['other_clip']['cases']} "
                  f"(highest confidence {s['other_clip']['highest_confidence']:.2f}, threshold {s['threshold']}) |",
                  f"| image-editor edits of frame 0 (samples/edits, bear) | {s['image_editor']['right']}/{s['image_editor']['cases']} | | |", ""]  # fmt: skip
    if "suggestions" in result:
        s = result["suggestions"]["summary"]
        lines += ["| keyframes (flow) | PSNR where new content appears | PSNR overall | mean coverage (128 px) | cases |",
                  "|---|---|---|---|---|"]
        lines += [f"| {m} | {v['psnr_new']:.2f} | {v['psnr']:.2f} | {v['coverage']:.3f} | {v['cases']} |" for m, v in s["methods"].items()]
        lines += [""] + [f"- {k}: suggested - even = {v['mean_gain']:+.2f} dB mean, {v['worst']:+.2f} dB worst case ({v['cases']} cases)"
                         for k, v in s.items() if k.startswith("budget")]  # fmt: skip
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=Path, default=SAMPLES, help=f"the samples folder (default {SAMPLES})")
    p.add_argument("--size", type=int, default=256, help="long side of the clips, px")
    p.add_argument("--seed", type=int, default=0, help="seed of the random keyframes of the detection cases")
    p.add_argument("--detection-draws", type=int, default=1, help="random frames per clip and edit")
    p.add_argument("--detection-edits", nargs="+", default=list(EDITS), choices=list(EDITS))
    p.add_argument("--clips", nargs="+", default=list(LONGEST), help="real clips for the suggestions")
    p.add_argument("--edits", nargs="+", default=list(PROPAGATION_EDITS), choices=list(EDITS), help="edits for the suggestions")
    p.add_argument("--budgets", nargs="+", type=int, default=[2, 3])
    p.add_argument("--skip-detection", action="store_true")
    p.add_argument("--skip-suggestions", action="store_true")
    p.add_argument("--pictures", type=Path, default=None, metavar="DIR", help="write the coverage pictures of samples/edits here")
    p.add_argument("--json", type=Path, default=ROOT / "outputs" / "bench" / "keyframes.json")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.samples.is_dir():
        print(f"no samples at {args.samples}: nothing to measure")
        return 0
    t0, result = time.process_time(), {}
    if not args.skip_detection:
        result["detection"] = run_detection(args)
        print(json.dumps(result["detection"]["summary"], indent=1))
    if not args.skip_suggestions:
        result["suggestions"] = run_suggestions(args)
    if args.pictures is not None:
        result["pictures"] = pictures(args)
    result.update(cpu_seconds=round(time.process_time() - t0, 1), options={k: str(v) for k, v in vars(args).items()})
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1, default=str) + "\n")
    table = markdown(result)
    Path(f"{args.json.with_suffix('')}.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
