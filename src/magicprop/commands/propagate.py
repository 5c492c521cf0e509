"""Propagate a keyframe you edited yourself (in any tool) through the video: `magicprop edit` without stage I, so Stable
Diffusion is never loaded.

Writes the same files as `magicprop edit`: OUT.mp4 (source size and frame rate; `-o DIR/` writes numbered PNGs
instead, `--crf` sets the mp4's quality), OUT.keyframe.png, OUT.comparison.mp4 and OUT.json (`--config OUT.json` runs
it again). flow, chain, lut and copy work at the video's own size (a 4K clip stays 4K; `--max-pixels` caps them); a
keyframe image of that size is used as it is, another is fitted to it (with a warning when that stretches it). The
clip is streamed: memory does not grow with its length. Without --keyframe-index, the frame the image was edited from
is found by matching structure (edges, not colours) and said in one line with its confidence; when no frame matches
confidently, frame 0 is used (the usual case: an edited first frame) and said so. With --keyframes DIR, several edited
keyframes (each named by its frame index) are propagated together; every keyframe is kept exactly.

By default (no --model) the propagator is `flow`: the edited keyframe warped through anchored optical-flow maps, with
guided patch synthesis for what it cannot explain; no weights are needed. With --model it is PropDPM (the paper).

Examples:
  magicprop propagate clip.mp4 --keyframe-image first_frame_edited.png -o edited.mp4   # flow; the frame is found
  magicprop propagate clip.mp4 --keyframe-image frame12_edited.png --keyframe-index 12 --seed 0 -o edited.mp4
  magicprop propagate clip.mp4 --keyframe-image edit.png --keyframe-index 0 --depth clip_depth.npz --model runs/sd15/final -o edited.mp4
  magicprop propagate clip.mp4 --keyframe-image edit.png --keyframe-index 0 --propagator flow -o flow.mp4
  magicprop propagate clip.mp4 --keyframe-image edit.png --keyframe-index 0 --propagator hybrid -o hybrid.mp4   # flow + PropDPM
  magicprop propagate clip.mp4 --keyframe-image cartoon0.png --keyframe-index 0 --temporal-blend 0.9 -o steady.mp4   # less boiling
  magicprop propagate long_clip.mp4 --keyframes edited_keys/ -o edited.mp4   # edited_keys/0.png, 40.png, 80.png
  magicprop propagate clip_4k.mp4 --keyframe-image frame0_4k.png --keyframe-index 0 -o edited_frames/   # 00000.png, ...
  magicprop propagate clip_4k.mp4 --keyframe-image frame0_4k.png --keyframe-index 0 --max-pixels 2073600 --crf 20 -o edited.mp4
"""

from __future__ import annotations

import argparse

NAME = "propagate"
HELP = "propagate your own edited keyframe through the video (no prompt, no Stable Diffusion)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .edit import add_io_arguments, add_stage2_arguments

    add_io_arguments(p)
    add_stage2_arguments(p, aliases=True)


def run(args: argparse.Namespace) -> int:
    from ..errors import UsageError
    from ..jobs import run_job
    from .edit import job_from_args, report

    job = job_from_args(args)
    if job.prompt or job.mask or job.mask_points:
        raise UsageError("propagate takes no prompt or keyframe mask (its --config asks for a stage I edit); use `magicprop edit`")
    if job.edit_keyframes:
        raise UsageError(f"--keyframes {job.edit_keyframes} picks frames for stage I to edit from a prompt: use `magicprop edit --prompt ... --keyframes {job.edit_keyframes}`, or give propagate --keyframes DIR of keyframes you edited")
    if not job.keyframe_image and not job.keyframes:
        raise UsageError("propagate needs --keyframe-image K.png or --keyframes DIR (or use `magicprop edit --prompt ...`)")
    report(run_job(job, command=NAME), job.output)
    return 0
