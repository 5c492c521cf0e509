"""Cache what training reads of each clip: depth (at the latent size), VAE posteriors and CLIP reference tokens.

Training from the cache (`magicprop train --data CACHE`) skips decoding, depth, VAE and CLIP at every step. The sampling
(resolution, frames per clip, stride) and the encoders come from the same recipe and flags as `magicprop train`.
Split across processes with accelerate; re-running finishes an interrupted cache without redoing finished clips.

Examples:
  magicprop precompute --config tiny-synthetic --data synth_clips/ --output-dir cache/
  accelerate launch --multi_gpu --num_processes 8 -m magicprop.cli precompute --config sd15-256 --data webvid.csv --output-dir cache/
"""

from __future__ import annotations

import argparse

NAME = "precompute"
HELP = "cache depth, VAE latents and CLIP tokens of every clip for fast training (accelerate, resumable)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..training.recipes import RECIPES
    from .train import add_component_arguments

    p.add_argument("--data", required=True, help="folder of videos/synth clips, manifest .csv/.jsonl, or 'shards/{0..9}.tar'")
    p.add_argument("--output-dir", required=True, help="cache folder (index.json + clips/*.safetensors)")
    p.add_argument("--config", choices=sorted(RECIPES), default="sd15-256",
                   help="recipe giving resolution and sampling (default: %(default)s)")  # fmt: skip
    p.add_argument("--recipe", default=None, metavar="FILE", help="JSON/YAML file of recipe field overrides")
    add_component_arguments(p, pretrained_help="SD 1.x id/folder whose vae/ encodes the frames")
    p.add_argument("--reference-frames", type=int, default=None, metavar="K",
                   help="store CLIP tokens of K evenly spaced frames per clip instead of all (tokens are most of the cache)")
    p.add_argument("--batch-size", type=int, default=16, help="frames per VAE/CLIP forward (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    from accelerate import PartialState

    from ..training.precompute import precompute
    from ..training.recipes import apply_overrides, load_recipe

    flags = {"pretrained": args.pretrained, "vae": args.vae, "image_encoder": args.image_encoder,
             "depth_model": args.depth_model}  # fmt: skip
    flags = {k: v for k, v in flags.items() if v is not None}
    if str(flags.get("pretrained", "")).lower() == "none":
        flags["pretrained"] = None
    recipe = apply_overrides(load_recipe(args.config, args.recipe), flags, source="command-line flags")
    index = precompute(recipe, args.data, args.output_dir, reference_frames=args.reference_frames, batch=args.batch_size)
    skipped = len(index["skipped"]) + len(index["missing"])
    if PartialState().is_main_process:
        print(f"cached {len(index['clips'])} clips in {args.output_dir} ({skipped} videos skipped)")
    return 0
