"""Estimate a clip's depth with a transformers depth model, normalised once over the whole clip (1 = nearest).

Writes a colour-mapped depth video at -o (near is bright) and the depth itself as DEPTH.npz beside it (same name, .npz):
float32 (T, H, W) in [0, 1], the motion signal PropDPM is conditioned on. Depth Anything V2 Small is downloaded on first
use; offline, pass a local model folder.

Example:
  magicprop depth input.mp4 -o outputs/input_depth.mp4
  magicprop depth input.mp4 -o outputs/depth.mp4 --depth-model ./Depth-Anything-V2-Small-hf --max-frames 32 --device cuda
"""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "depth"
HELP = "estimate clip-normalised depth; write a depth video and a .npz beside it"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..motion import DEFAULT_DEPTH_MODEL

    p.add_argument("video", help="input video file or folder of frames")
    p.add_argument("-o", "--output", required=True, help="depth video to write (.mp4, .gif, or a folder); the .npz goes beside it")
    p.add_argument("--depth-model", default=DEFAULT_DEPTH_MODEL, metavar="ID|PATH", help="hub id or local folder (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=8, help="frames per forward pass (default: %(default)s)")
    p.add_argument("--device", choices=("cpu", "cuda", "mps"), default=None, help="default: the best available")
    p.add_argument("--max-frames", type=int, default=None, help="read at most this many frames from the start")
    p.add_argument("--cache-dir", default=None, help="reuse depth computed before for the same frames and model")
    p.add_argument("--allow-pickle", action="store_true", help="let .bin weights load (only for files you trust)")


def run(args: argparse.Namespace) -> int:
    from ..errors import UsageError
    from ..fileio import check_output_path, require_file
    from ..motion import DepthEstimator, colorize_depth, estimate_clip_depth, save_depth
    from ..video import Frames, write_video

    # 1. Check inputs before loading anything heavy
    video = require_file(args.video, "input video")
    output = Path(args.output)
    if output.suffix.lower() == ".npz":
        raise UsageError(f"-o {output} should be the depth video (.mp4, .gif or a folder); the .npz is written beside it")
    npz = output.with_suffix(".npz")
    check_output_path(output, video)
    check_output_path(npz, video)
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.max_frames is not None and args.max_frames < 1:
        raise UsageError(f"--max-frames must be at least 1, got {args.max_frames}")
    # 2. Read (one batch of frames at a time), estimate, write
    frames = Frames.open(video)[: args.max_frames]
    estimator = DepthEstimator.from_pretrained(args.depth_model, device=args.device, allow_pickle=args.allow_pickle)
    depth = estimate_clip_depth(frames, estimator, cache_dir=args.cache_dir, batch_size=args.batch_size)
    save_depth(npz, depth, model=estimator.model_id, source=str(video), fps=frames.fps)
    write_video(output, (colorize_depth(d[None])[0] for d in depth), frames.fps)
    print(f"wrote {output} and {npz}: {len(depth)} frames, {depth.shape[2]}x{depth.shape[1]}, depth 1 = nearest")
    return 0
