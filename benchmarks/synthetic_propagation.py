"""Propagation against ground truth on held-out synthetic clips: PropDPM model(s) against the `flow` and `copy` baselines.

Every case is a synthetic clip (seeds from 900000, never seen in training) whose exact edited version is known; the
edited keyframe is given, and every other frame is scored against the truth. Cases cover 16 and 64 frames, the keyframe
at the start and in the middle, the `pattern` edit (a colour grade plus a bold painted pattern that no colour lookup
reproduces; `--edits global local` gives the colour-map edits, which `lut` wins by construction), and procedural textures (the training distribution) against
real-photo textures and twice-as-fast motion (unlike it). Extra PropDPM models (ablations trained with the same budget) are compared with
`--model label=PATH`.

    python benchmarks/synthetic_propagation.py --json outputs/bench/synthetic.json
    python benchmarks/synthetic_propagation.py --model zero-snr=src/magicprop/weights/tiny --model standard=runs/std/final \
        --clips 2 --json outputs/bench/ablation.json

`--hybrid` also runs each model with flow fusion (`--propagator hybrid`: flow-carried pixels where the flow is reliable,
PropDPM's rendering elsewhere), as "LABEL hybrid". `--latent-warp` also runs "latent warp": the keyframe's latent (first model's VAE) warped frame to frame along
the source's flow, no network: what a `predict_residual` PropDPM returns if its correction is zero, so its floor.
`--invalid` also reports PSNR over the pixels the keyframe cannot explain (the anchored maps' invalid pixels), where
`hybrid`'s PropDPM paints and `flow` synthesises patches: where a learned model has to earn its place.
`--keyframe-every N` also runs every method from true keyframes every N frames (and the last frame) on the same clips,
as "METHOD every N": what several keyframes buy against drift.

Writes PATH (all numbers), PATH.md (a markdown table) and PATH-drift.png / PATH-bars.png beside it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np

from magicprop.evaluation import score_against_truth
from magicprop.models.bundle import PropagationModels
from magicprop.propagation import PROPAGATORS, PropagationRequest, PropagationSettings
from magicprop.synthetic import render_clip

HELD_OUT = 900_000


def cases(num_clips: int, lengths, positions, edits, textures, motions=("normal",), first_seed: int = HELD_OUT):
    for i, (n, pos, edit, tex, motion) in enumerate(itertools.product(lengths, positions, edits, textures, motions)):
        for c in range(num_clips):
            yield {"seed": first_seed + 100 * i + c, "frames": n, "keyframe": 0 if pos == "start" else n // 2,
                   "position": pos, "edit": edit, "textures": tex, "motion": motion}  # fmt: skip


def render_case(case: dict):
    """The case's clip; "fast" motion keeps every other frame of a clip twice as long: twice the training motion."""
    speed = 2 if case["motion"] == "fast" else 1
    clip = render_clip(case["seed"], frames=case["frames"] * speed, size=(64, 64), edit=case["edit"], textures=case["textures"])
    return clip.source[::speed], clip.edited[::speed], clip.depth[::speed]


def score(frames, truth, source, k, invalid=None) -> dict:
    """`evaluation.score_against_truth` (the demo's scoring), with the per-frame PSNR curve as a flat list, and with
    `invalid` ((T, H, W) bool) the PSNR over those pixels alone (pooled over the clip)."""
    scores = score_against_truth(frames, truth, source, k)
    out = {**{key: v for key, v in scores.items() if key != "per_frame"}, "psnr_per_frame": scores["per_frame"]["psnr"]}
    if invalid is not None and invalid.any():
        err = (frames.astype(np.float64) - truth.astype(np.float64))[invalid]
        out["psnr_invalid"] = float(min(10 * np.log10(255.0**2 / max(np.mean(err**2), 1e-20)), 100.0))  # capped as psnr
    return out


def invalid_pixels(source: np.ndarray, k: int) -> np.ndarray:
    """(T, H, W) bool: the pixels the keyframe cannot explain (the anchored maps' validity, as `flow` and `hybrid` see
    it): where a learned model has to paint, and where patch synthesis fills for `flow`."""
    from magicprop.propagation.flow.maps import anchored_maps

    invalid = np.zeros(source.shape[:3], bool)
    for frame in anchored_maps(source, k):
        invalid[frame.index] = ~frame.valid
    return invalid


def propagate_latent_warp(models: PropagationModels, source: np.ndarray, keyframe: np.ndarray, k: int) -> np.ndarray:
    """The keyframe's VAE latent carried frame to frame by `warp_latent` along the source's flow, then decoded."""
    import torch

    from magicprop.motion.flow import optical_flow
    from magicprop.models.propdpm import warp_latent
    from magicprop.models.encoders import images_to_tensor, tensor_to_images, vae_decode, vae_encode

    with torch.no_grad():
        z = {k: vae_encode(models.vae, images_to_tensor(keyframe, models.device, models.dtype))}
        for d in (+1, -1):
            for t in range(k + d, len(source) if d > 0 else -1, d):
                flow = torch.from_numpy(optical_flow(source[t], source[t - d])).permute(2, 0, 1)[None]
                z[t] = warp_latent(z[t - d], flow.to(models.device, models.dtype))
        return np.stack([keyframe if t == k else tensor_to_images(vae_decode(models.vae, z[t]))[0] for t in range(len(source))])


def methods_of(args) -> dict:
    """label -> (propagator, models): every weight-free propagator by its name; each model under its label with the
    first learned propagator (PropDPM alone) and, with --hybrid, as "LABEL NAME" with the other learned ones."""
    models = {label: PropagationModels.from_pretrained(path) for label, path in args.models}
    learned = [p for p in PROPAGATORS.values() if p.needs_model]
    methods = {}
    for label, m in models.items():
        methods[label] = (learned[0], m)
        if args.hybrid:
            methods.update({f"{label} {p.name}": (p, m) for p in learned[1:]})
    methods.update({p.name: (p, None) for p in PROPAGATORS.values() if not p.needs_model})
    return methods


def run(args) -> dict:
    methods = methods_of(args)
    settings = PropagationSettings(num_inference_steps=args.steps, seed=0)
    learned = [label for label, (_, m) in methods.items() if m is not None]
    first_model = methods[learned[0]][1] if learned else None
    rows = []
    for case in cases(args.clips, args.lengths, args.positions, args.edits, args.textures, args.motions, args.first_seed):
        source, edited, depth = render_case(case)
        k = case["keyframe"]
        runs = {label: (p, m, {k: edited[k]}) for label, (p, m) in methods.items()}
        if args.keyframe_every:
            keys = sorted({*range(0, len(source), args.keyframe_every), len(source) - 1})
            runs.update({f"{label} every {args.keyframe_every}": (p, m, {kk: edited[kk] for kk in keys})
                         for label, (p, m) in methods.items()})  # fmt: skip
        outputs, given = {}, {}
        for label, (propagator, models, keyframes) in runs.items():
            request = PropagationRequest(source=source, keyframes=keyframes, depth=depth, models=models, settings=settings, progress=False)
            outputs[label], given[label] = np.stack(list(propagator(request))), list(keyframes)
            if args.latent_warp and learned and label == learned[-1]:  # reported after the models, before the baselines
                outputs["latent warp"], given["latent warp"] = propagate_latent_warp(first_model, source, edited[k], k), [k]
        invalid = invalid_pixels(source, k) if args.invalid else None
        for method, frames in outputs.items():
            one_keyframe = given[method] == [k]  # the invalid pixels are those of keyframe k's maps
            rows.append({**case, "method": method, **score(frames, edited, source, given[method], invalid if one_keyframe else None)})
        print(f"{case}: " + ", ".join(f"{r['method']} {r['psnr']:.2f}" for r in rows[-len(outputs):]), flush=True)
    return {"rows": rows, "methods": list(dict.fromkeys(r["method"] for r in rows)), "steps": args.steps}


NEAR, FAR = (1, 16), (48, 63)  # distances from the keyframe whose mean PSNR the drift compares (64-frame clips)


def distance_mean(rows: list[dict], lo: int, hi: int) -> float | None:
    """Mean PSNR over the frames lo..hi frames away from the keyframe, pooled over the rows (None if none is that far)."""
    values = [p for r in rows for t, p in enumerate(r["psnr_per_frame"]) if lo <= abs(t - r["keyframe"]) <= hi]
    return float(np.mean(values)) if values else None


def summarise(result: dict) -> dict:
    """Mean of each metric per method, overall and per group (length, position, edit, textures); on clips of 64 frames
    or more, `near` / `far` (mean PSNR 1-16 and 48-63 frames from the keyframe) and `drift` = near - far; and `wins` /
    `cases`: on how many cases the method beats `flow` (the weight-free default) on mean PSNR; `beats_lut`: on how many
    it beats `lut`, the colour lookup learnt from the keyframe pair (a case `lut` wins measures colour mapping)."""
    rows, out = result["rows"], {}
    flow = {_case_key(r): r["psnr"] for r in rows if r["method"] == "flow"}
    lut = {_case_key(r): r["psnr"] for r in rows if r["method"] == "lut"}
    for method in result["methods"]:
        mine = [r for r in rows if r["method"] == method]
        entry = {m: float(np.mean([r[m] for r in mine])) for m in ("psnr", "ssim", "warp_error", "color_shift", "sharpness_ratio")}
        long = [r for r in mine if r["frames"] >= FAR[1] + 1]
        near, far = distance_mean(long, *NEAR), distance_mean(long, *FAR)
        if near is not None and far is not None:
            entry.update(near=near, far=far, drift=near - far)
        if flow and method != "flow":
            entry.update(wins=sum(r["psnr"] > flow[_case_key(r)] for r in mine if _case_key(r) in flow), cases=len(mine))
        if lut and method != "lut":
            entry.update(beats_lut=sum(r["psnr"] > lut[_case_key(r)] for r in mine if _case_key(r) in lut), cases=len(mine))
        if any("psnr_invalid" in r for r in mine):
            entry["psnr_invalid"] = float(np.mean([r["psnr_invalid"] for r in mine if "psnr_invalid" in r]))
        for key in ("frames", "position", "edit", "textures", "motion"):
            for value in sorted({r[key] for r in mine}, key=str):
                entry[f"psnr[{key}={value}]"] = float(np.mean([r["psnr"] for r in mine if r[key] == value]))
        out[method] = entry
    return out


def _case_key(row: dict) -> tuple:
    return row["seed"], row["frames"], row["keyframe"], row["edit"], row["textures"], row["motion"]


def markdown(summary: dict) -> str:
    cols = sorted({k for v in summary.values() for k in v if k.startswith("psnr[")})
    head = ("| method | PSNR | PSNR invalid px | SSIM | sharpness | warp err | colour shift | PSNR 1-16 | PSNR 48-63 | drift "
            "| wins vs flow | beats lut | " + " | ".join(c[5:-1] for c in cols) + " |")  # fmt: skip
    lines = [head, "|" + "---|" * (12 + len(cols))]
    fmt = lambda v, key, f: format(v[key], f) if key in v else ""  # noqa: E731
    for method, v in summary.items():
        cells = [f"{v['psnr']:.2f}", fmt(v, "psnr_invalid", ".2f"), f"{v['ssim']:.3f}", f"{v['sharpness_ratio']:.2f}",
                 f"{v['warp_error']:.4f}", f"{v['color_shift']:.2f}", fmt(v, "near", ".2f"), fmt(v, "far", ".2f"),
                 fmt(v, "drift", ".2f"), f"{v['wins']}/{v['cases']}" if "wins" in v else "",
                 f"{v['beats_lut']}/{v['cases']}" if "beats_lut" in v else ""]  # fmt: skip
        lines.append(f"| {method} | " + " | ".join(cells + [f"{v[c]:.2f}" for c in cols]) + " |")
    return "\n".join(lines)


def plot(result: dict, summary: dict, stem: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)  # drift: PSNR against distance from the keyframe, 64-frame cases
    for method in result["methods"]:
        curves = [r for r in result["rows"] if r["method"] == method and r["frames"] == max(args_lengths(result))]
        by_dist: dict[int, list[float]] = {}
        for r in curves:
            for t, p in enumerate(r["psnr_per_frame"]):
                if t != r["keyframe"] and p < 100:  # given keyframes score 100 (capped)
                    by_dist.setdefault(abs(t - r["keyframe"]), []).append(p)
        d = sorted(by_dist)
        ax.plot(d, [np.mean(by_dist[i]) for i in d], label=method)
    ax.set_xlabel("frames from the keyframe")
    ax.set_ylabel("PSNR vs ground truth (dB)")
    ax.set_title("drift over long clips")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(f"{stem}-drift.png")
    plt.close(fig)
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4), dpi=120)
    for ax, metric in zip(axes, ("psnr", "ssim", "warp_error")):
        ax.bar(list(summary), [summary[m][metric] for m in summary], color="C0")
        ax.set_title(metric)
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(f"{stem}-bars.png")
    plt.close(fig)


def args_lengths(result: dict) -> list[int]:
    return sorted({r["frames"] for r in result["rows"]})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", default=[], metavar="LABEL=PATH", help="PropDPM model(s); default: the embedded tiny one")
    p.add_argument("--clips", type=int, default=1, help="clips per combination of length/position/edit/textures")
    p.add_argument("--lengths", type=int, nargs="+", default=[16, 64])
    p.add_argument("--positions", nargs="+", default=["start", "middle"], choices=["start", "middle"])
    # pattern: a grade plus a painted pattern no colour lookup reproduces, so the benchmark measures propagation; global
    # and local are colour maps of the source (a lookup learnt from the keyframe pair reproduces them: `lut` wins)
    p.add_argument("--edits", nargs="+", default=["pattern"], choices=["global", "local", "pattern"])
    p.add_argument("--textures", nargs="+", default=["procedural", "photo"], choices=["procedural", "photo"])
    p.add_argument("--motions", nargs="+", default=["normal", "fast"], choices=["normal", "fast"],
                   help="fast: every other frame of a clip twice as long (motion unlike training)")
    p.add_argument("--keyframe-every", type=int, default=0, metavar="N",
                   help="also run every method from true keyframes every N frames and the last (several keyframes)")
    p.add_argument("--hybrid", action="store_true",
                   help="also run each model with the other learned propagators, as 'LABEL NAME' (e.g. 'propdpm hybrid')")
    p.add_argument("--latent-warp", action="store_true",
                   help="also run 'latent warp': the keyframe latent warped along the flow, no network (the floor of predict_residual)")
    p.add_argument("--first-seed", type=int, default=HELD_OUT, metavar="S",
                   help=f"seed of the first clip (default {HELD_OUT}); another set of held-out clips checks that a "
                        "difference between methods is not the luck of one set (training uses seeds below 100000)")
    p.add_argument("--invalid", action="store_true",
                   help="also report PSNR over the pixels the keyframe cannot explain (anchored maps' validity) alone")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--json", type=Path, required=True)
    args = p.parse_args()
    args.models = [tuple(m.split("=", 1)) for m in args.model] or [("propdpm", None)]
    t0 = time.time()
    result = run(args)
    summary = summarise(result)
    result["summary"] = summary
    result["seconds"] = round(time.time() - t0, 1)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    table = markdown(summary)
    Path(f"{args.json.with_suffix('')}.md").write_text(table + "\n")
    plot(result, summary, args.json.with_suffix(""))
    print(table)
    print(json.dumps({m: {k: round(v, 3) for k, v in s.items() if "[" not in k} for m, s in summary.items()}))


if __name__ == "__main__":
    main()
