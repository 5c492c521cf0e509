"""Train PropDPM on video clips (paper, section 3.3.3): triplets of reference, previous and target frames.

Reads a folder of videos, a CSV/JSON-lines manifest, WebDataset shards, synthetic clips from `magicprop synth`, or a
cache from `magicprop precompute`. Writes DIR/checkpoints/step-N/ (resumable), DIR/logs/train_log.jsonl and loss.png,
and DIR/final/, a model that `magicprop propagate --model DIR/final` loads.

Examples:
  magicprop train --config tiny-synthetic --data synth_clips/ --output-dir runs/tiny
  magicprop train --config sd15-256 --data cache/ --output-dir runs/sd15 --recipe my_overrides.yaml
  magicprop train --data cache/ --output-dir runs/sd15 --resume latest
  accelerate launch --multi_gpu --num_processes 8 -m magicprop.cli train --config sd15-256 --data cache/ --output-dir runs/sd15
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NAME = "train"
HELP = "train PropDPM on videos (from SD 1.5 or from scratch) with accelerate; resumable; exports a loadable model"

# Fields a resumed run may change (speed, memory, logging, where the frozen parts come from: none changes a step); any
# other difference from the saved recipe is refused (it would be another run).
RESUMABLE = ("max_steps", "num_workers", "clip_cache", "log_every", "checkpoint_every", "keep_checkpoints", "pretrained",
             "vae", "image_encoder", "depth_model")  # fmt: skip


def add_component_arguments(p: argparse.ArgumentParser, pretrained_help: str) -> None:
    """The frozen encoders and the starting model, as `train` and `precompute` both take them."""
    p.add_argument("--pretrained", default=None, metavar="ID|PATH", help=pretrained_help)
    p.add_argument("--vae", default=None, metavar="ID|PATH", help="frozen VAE (default: the pretrained model's vae/)")
    p.add_argument("--image-encoder", default=None, metavar="ID|PATH",
                   help="frozen CLIP vision tower (default: openai/clip-vit-large-patch14)")  # fmt: skip
    p.add_argument("--depth-model", default=None, metavar="ID|PATH",
                   help="depth model for raw clips (synthetic clips use their depth.npz)")  # fmt: skip


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..training.recipes import RECIPES

    data_help = "folder of videos/synth clips, manifest .csv/.jsonl, 'shards/{000..009}.tar', or a precompute cache"
    p.add_argument("--data", required=True, help=data_help)
    p.add_argument("--output-dir", required=True, help="run folder: checkpoints/, logs/, final/")
    p.add_argument("--config", choices=sorted(RECIPES), default=None,
                   help="named recipe (default: sd15-256; on --resume, the run's own)")  # fmt: skip
    p.add_argument("--recipe", default=None, metavar="FILE", help="JSON/YAML file of recipe field overrides, e.g. {lr: 5e-5}")
    add_component_arguments(p, pretrained_help="SD 1.x id/folder to start from, or 'none' for scratch")
    p.add_argument("--resume", nargs="?", const="latest", default=None, metavar="latest|PATH",
                   help="continue from a checkpoint; a --recipe given with it may change only fields that change no step "
                        "(max_steps, num_workers, clip_cache, logging and checkpoint cadence, where frozen parts load from)")
    p.add_argument("--max-steps", type=int, default=None, help="optimizer steps in total (overrides the recipe)")


def resolve_recipe(args: argparse.Namespace):
    """The recipe of this run: named + file + flags; on --resume the saved one, which the flags may only extend."""
    from ..errors import UsageError
    from ..training.recipes import apply_overrides, recipe_from_dict

    flags = {"pretrained": args.pretrained, "vae": args.vae, "image_encoder": args.image_encoder,
             "depth_model": args.depth_model, "max_steps": args.max_steps}  # fmt: skip
    flags = {k: v for k, v in flags.items() if v is not None}
    if str(flags.get("pretrained", "")).lower() == "none":
        flags["pretrained"] = None  # train from scratch at the recipe's model_config
    saved_file = Path(args.output_dir) / "recipe.json"
    if not (args.resume and saved_file.is_file()):
        name = args.config or "sd15-256"
        return name, _fresh(name, args.recipe, flags)
    saved = json.loads(saved_file.read_text())
    name = saved.pop("name", "")
    recipe = recipe_from_dict(saved)
    if args.config or args.recipe:
        asked = _fresh(args.config or name or "sd15-256", args.recipe, {})
        changed = [f for f, v in asked.to_dict().items() if f not in RESUMABLE and v != getattr(recipe, f)]
        if changed:
            raise UsageError(
                f"--resume: the recipe differs from the run's in {', '.join(changed)}; resume with the same settings "
                "or start a new --output-dir"
            )
        if args.recipe:  # the resumable fields the file sets apply (a smaller clip cache after running out of memory)
            from ..training.recipes import read_overrides

            recipe = apply_overrides(recipe, {k: v for k, v in read_overrides(args.recipe).items() if k in RESUMABLE})
    return name, apply_overrides(recipe, flags, source="command-line flags")


def _fresh(name: str, recipe_file, flags: dict):
    from ..training.recipes import apply_overrides, load_recipe

    return apply_overrides(load_recipe(name, recipe_file), flags, source="command-line flags")


def command_line(args: argparse.Namespace) -> str:
    """This command as typed (for the model card), rebuilt from the parsed flags, wherever it was called from."""
    import shlex

    parts = ["magicprop", "train"]
    flags = ("data", "output_dir", "config", "recipe", "pretrained", "vae", "image_encoder", "depth_model", "resume", "max_steps")
    for flag in flags:
        value = getattr(args, flag)
        if value is not None:
            parts += [f"--{flag.replace('_', '-')}", shlex.quote(str(value))]
    return " ".join(parts)


def run(args: argparse.Namespace) -> int:
    from ..training.checkpoint import resolve_resume
    from ..training.loop import train

    if args.resume:
        resolve_resume(args.output_dir, args.resume)  # a missing checkpoint is reported before anything is loaded
    name, recipe = resolve_recipe(args)
    summary = train(recipe, args.data, args.output_dir, resume=args.resume, recipe_name=name, command=command_line(args))
    if summary is not None:  # the main process
        loss = "n/a" if summary["final_loss"] is None else f"{summary['final_loss']:.4f}"
        print(f"trained {summary['steps']} steps on {summary['world_size']} process(es): final loss {loss}, "
              f"{summary['samples_per_s']:.3g} samples/s, {summary['skipped_videos']} videos skipped; model in {summary['final']}")  # fmt: skip
    return 0
