"""Run the whole method on a synthetic clip with ground truth, offline on CPU, in about a minute.

Writes source.mp4, ground_truth.mp4, edited.mp4 (the tiny PropDPM's result), comparison.mp4 (source | truth | propdpm |
hybrid | flow | copy) and comparison.png (a few of its frames), drift.png (PSNR against frame index for each method)
and metrics.json, and prints a table.

Example:
  magicprop demo --out outputs/demo
  magicprop demo --out outputs/demo-local --edit local --keyframe-index 8 --frames 32
"""

from __future__ import annotations

import argparse

NAME = "demo"
HELP = "propagate a synthetic clip's edit with the embedded tiny model (alone and hybrid) and both baselines; write videos, plot, metrics"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..demo import DemoSettings

    d = DemoSettings()
    p.add_argument("--out", default="outputs/demo", help="output folder (default: %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="synthetic clip seed; the default is held out from training")
    p.add_argument("--frames", type=int, default=d.frames, help="clip length (default: %(default)s)")
    p.add_argument("--size", type=int, nargs=2, default=list(d.size), metavar=("H", "W"), help="frame size (default: 64 64)")
    p.add_argument("--edit", choices=("global", "local", "pattern"), default=d.edit, help="kind of ground-truth edit")
    p.add_argument("--textures", choices=("procedural", "photo"), default=d.textures, help="photo = out-of-distribution textures")
    p.add_argument("--keyframe-index", type=int, default=d.keyframe_index, help="edited frame (negative counts from the end)")
    p.add_argument("--steps", type=int, default=d.num_inference_steps, help="PropDPM sampling steps (default: %(default)s)")
    p.add_argument("--model", default=None, help="propagation model folder (default: the embedded tiny model)")


def run(args: argparse.Namespace) -> int:
    from ..demo import DemoSettings, format_table, run_demo
    from ..propagation import PROPAGATORS
    from ..errors import UsageError

    if args.frames < 2:
        raise UsageError(f"--frames must be at least 2, got {args.frames}")
    settings = DemoSettings(
        seed=args.seed, frames=args.frames, size=tuple(args.size), edit=args.edit, textures=args.textures,
        keyframe_index=args.keyframe_index, num_inference_steps=args.steps,
    )  # fmt: skip
    summary = run_demo(args.out, settings, model=args.model)
    print(format_table({m: summary[m] for m in PROPAGATORS}))
    print(f"wrote {args.out}/: source.mp4 ground_truth.mp4 edited.mp4 comparison.mp4/.png drift.png metrics.json ({summary['seconds']} s)")
    return 0
