"""Render synthetic clips with ground truth: source.mp4, edited.mp4 (the same motion, edited appearance), exact depth
(depth.npz, 1 = nearest), masks/ of the edited object (local edits) and meta.json.

Each seed is a different scene (textured backdrops and objects at distinct depths, object motion, camera pan and zoom
with parallax); the same seed always gives the same clip. Use them to test propagation against the truth, or with
--count to make a folder of training clips (`magicprop train` reads such folders with their exact depth).

Example:
  magicprop synth --out outputs/synth/7 --seed 7 --frames 16 --size 64 64 --edit local
  magicprop synth --out data/synthetic --seed 0 --count 1000 --size 64 64
"""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "synth"
HELP = "render synthetic clips with an exact edit, depth and masks (ground truth for tests and training)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output folder (with --count > 1: one subfolder per clip)")
    p.add_argument("--seed", type=int, default=0, help="scene seed (default: %(default)s)")
    p.add_argument("--frames", type=int, default=16, help="clip length (default: %(default)s)")
    p.add_argument("--size", type=int, nargs=2, default=[64, 64], metavar=("H", "W"), help="frame size (default: 64 64)")
    p.add_argument("--edit", choices=("global", "local", "pattern"), default="global", help="restyle everything, or one object (default: %(default)s)")
    p.add_argument("--textures", choices=("procedural", "photo"), default="procedural",
                   help="photo = crops of real photos (out of distribution for models trained on procedural clips)")  # fmt: skip
    p.add_argument("--fps", type=float, default=8.0, help="frame rate of the videos (default: %(default)s)")
    p.add_argument("--count", type=int, default=1, help="clips to write, seeds SEED, SEED+1, ... into OUT/clip-SEED/")


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from ..errors import UsageError
    from ..fileio import check_output_path
    from ..synthetic import render_clip, write_clip

    if args.count < 1:
        raise UsageError(f"--count must be at least 1, got {args.count}")
    if args.fps <= 0:
        raise UsageError(f"--fps must be positive, got {args.fps}")
    if args.seed < 0:
        raise UsageError(f"--seed must be non-negative, got {args.seed}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; choose a folder")
    check_output_path(out / "meta.json")
    seeds = range(args.seed, args.seed + args.count)
    for seed in tqdm(seeds, desc="synth", unit="clip", disable=args.count < 2):
        clip = render_clip(seed, frames=args.frames, size=tuple(args.size), edit=args.edit, textures=args.textures)
        write_clip(clip, out if args.count == 1 else out / f"clip-{seed:06d}", fps=args.fps)
    where = out if args.count == 1 else f"{out}/clip-{seeds[0]:06d} ... clip-{seeds[-1]:06d}"
    print(f"wrote {where}: {args.frames} frames, {args.size[0]}x{args.size[1]}, {args.edit} edit, {args.textures} textures")
    return 0
