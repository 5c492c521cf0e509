"""Print a video's frame count (counted by decoding), frame rate, and upright width and height.

VIDEO is a video file (mp4, mov, webm, mkv, avi, gif) or a folder of numbered images, whose frame rate is --fps.

Example:
  magicprop info clip.mp4
  magicprop info clip.mp4 --json
  magicprop info frames/ --fps 30
"""

from __future__ import annotations

import argparse
import dataclasses
import json

NAME = "info"
HELP = "print a video's frame count, fps and size (--json for scripts)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("video", metavar="VIDEO", help="video file or folder of numbered images")
    p.add_argument("--json", action="store_true", help='print {"frames": N, "fps": F, "width": W, "height": H}')
    p.add_argument("--fps", type=float, default=None, help="frame rate of an image folder (default: 24; ignored for video files)")


def run(args: argparse.Namespace) -> int:
    from ..video import probe

    info = probe(args.video, fps=args.fps)
    if args.json:
        print(json.dumps(dataclasses.asdict(info)))
    else:
        seconds = info.frames / info.fps
        print(f"{args.video}: {info.frames} frames at {info.fps:.6g} fps ({seconds:.2f} s), {info.width}x{info.height} (width x height)")
    return 0
