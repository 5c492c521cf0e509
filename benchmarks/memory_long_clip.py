"""Peak memory of `magicprop propagate` on a long 4K clip against the same clip's first frames, measured in one run.

A real clip (default `../shared/samples/real/koolshooters.mp4`, 960x720) is centre-cropped to the target shape,
upscaled (bicubic) to `--size` (default 3840x2160) and played forward then backward until it has `--frames` frames
(default 300); it and its first `--short` frames (default 48) are written as mp4s to a temporary folder, and the
middle frame of each is given a pencil-sketch edit as the keyframe. Each propagator then runs on both clips through
the CLI, each run in a fresh subprocess (`magicprop propagate --propagator P`, writing OUT.mp4 and the comparison),
and the table gives each run's peak RSS (`wait4`'s ru_maxrss), the long/short ratio, and CPU seconds per frame.

Goals (issue 23): peak RSS <= 2.5 GB on the long clip, and <= 1.3x the short clip's: memory does not grow with the
clip's length. Everything is streamed, so the long run's extra memory is only what its longer backward pass and work
folder bookkeeping hold; what remains is per-frame working memory, which grows with resolution, not length.

    python benchmarks/memory_long_clip.py --json outputs/memory_long_clip.json            # slow on 2 cores (hours)
    python benchmarks/memory_long_clip.py --frames 96 --short 24 --size 1280x720          # a few minutes
    python benchmarks/memory_long_clip.py --propagators chain copy --size 3840x2160 --propagators-size flow=1920x1080

Runs are niced (`--nice`, default 10, or this script's own niceness if higher); the clip and outputs go to `--work` (default a temporary folder, removed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VIDEO = ROOT.parent / "shared" / "samples" / "real" / "koolshooters.mp4"


def size_arg(text: str) -> tuple[int, int]:
    """WIDTHxHEIGHT -> (height, width)."""
    w, h = (int(v) for v in text.lower().split("x"))
    return h, w


def ping_pong(n: int, length: int) -> int:
    """Frame index of step n when a clip of `length` frames plays forward, then backward, and so on (no frame twice
    in a row: the motion never stops)."""
    period = 2 * (length - 1)
    i = n % period
    return i if i < length else period - i


def _crop(shape: tuple[int, int], size: tuple[int, int]) -> tuple[slice, slice]:
    """The centred crop of an (sh, sw) frame to the aspect ratio of `size` = (h, w): nothing is stretched."""
    (sh, sw), (h, w) = shape, size
    if sw * h > w * sh:
        cw = round(sh * w / h)
        return slice(None), slice((sw - cw) // 2, (sw - cw) // 2 + cw)
    ch = round(sw * h / w)
    return slice((sh - ch) // 2, (sh - ch) // 2 + ch), slice(None)


def make_clip(video: Path, out: Path, frames: int, size: tuple[int, int]) -> None:
    """Write the upscaled ping-pong clip to `out` (mp4, streamed, one frame in memory at a time)."""
    from magicprop.video import Frames, VideoWriter

    with Frames.open(video) as source, VideoWriter(out, source.fps or 24.0, crf=18) as writer:
        crop = _crop(source.shape[1:3], size)
        for i in range(frames):
            frame = np.ascontiguousarray(source[ping_pong(i, len(source))][crop])
            writer.write(cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_CUBIC))


def describe(video: Path, frames: int, size: tuple[int, int]) -> str:
    from magicprop.video import probe

    info, (h, w) = probe(video), size
    return (f"{video.name} ({info.width}x{info.height}, {info.frames} frames) centre-cropped to {w}:{h}, resized (bicubic) "
            f"to {w}x{h}, played forward then backward to {frames} frames")  # fmt: skip


def run(argv: list[str], nice: int, log: Path) -> dict:
    """One `magicprop` run in a fresh process at niceness `nice` (at least this script's own: under `nice -n 10`, the
    runs are at 10, not 20): exit code, peak RSS (MB), CPU and wall seconds."""
    cmd = [sys.executable, "-m", "magicprop.cli", *map(str, argv)]
    start = time.perf_counter()
    with open(log, "wb") as out:  # a file, not a pipe: progress bars would fill a pipe
        proc = subprocess.Popen(cmd, stdout=out, stderr=out, preexec_fn=lambda: os.nice(max(0, nice - os.nice(0))))
        _, status, usage = os.wait4(proc.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{' '.join(map(str, argv))} failed (exit {code}):\n{log.read_text()[-3000:]}")
    return {"peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "wall_s": round(time.perf_counter() - start, 1)}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", type=Path, default=DEFAULT_VIDEO, help="the real clip to upscale (default: %(default)s)")
    p.add_argument("--frames", type=int, default=300, help="frames of the long clip (default: %(default)s)")
    p.add_argument("--short", type=int, default=48, help="frames of the short clip, the long one's first (default: %(default)s)")
    p.add_argument("--size", type=size_arg, default=(2160, 3840), metavar="WxH", help="frame size (default: 3840x2160)")
    p.add_argument("--propagators", nargs="+", default=["flow", "chain", "copy"], help="default: flow chain copy")
    p.add_argument("--propagators-size", nargs="*", default=[], metavar="NAME=WxH",
                   help="another frame size for some propagators (flow=1920x1080: flow's per-frame working memory at 4K "
                        "is over the 4 GB a shared machine allows)")
    p.add_argument("--nice", type=int, default=10, help="niceness of the runs (default: %(default)s)")
    p.add_argument("--work", type=Path, help="keep the clips and outputs here (default: a temporary folder, removed)")
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args()
    if not args.video.exists():
        raise SystemExit(f"{args.video} not found; pass --video CLIP")
    if not 2 <= args.short < args.frames:
        raise SystemExit(f"--short must be in 2..{args.frames - 1}")
    sizes = {name: args.size for name in args.propagators}
    for item in args.propagators_size:
        name, _, text = item.partition("=")
        sizes[name] = size_arg(text)

    from magicprop.evaluation.appearance_edits import EDITS
    from magicprop.video import Frames, save_image

    work = args.work or Path(tempfile.mkdtemp(prefix="magicprop-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    results, made = [], {}
    try:
        for size in sorted(set(sizes.values()), reverse=True):
            tag = f"{size[1]}x{size[0]}"
            long_clip, short_clip = work / f"long-{args.frames}f-{tag}.mp4", work / f"short-{args.short}f-{tag}.mp4"
            t0 = time.perf_counter()
            for clip, n in ((long_clip, args.frames), (short_clip, args.short)):
                if not clip.exists():  # a --work folder of an earlier run keeps its clips: they take long to write
                    make_clip(args.video, clip, n, size)
            made[tag] = describe(args.video, args.frames, size)
            print(f"clip: {made[tag]}; in {work} ({time.perf_counter() - t0:.0f} s)", flush=True)
            for clip, n in ((long_clip, args.frames), (short_clip, args.short)):
                with Frames.open(clip) as frames:
                    save_image(work / f"{clip.stem}-key.png", EDITS["sketch"](frames[n // 2]))
            for name in [p for p in args.propagators if sizes[p] == size]:
                row = {"propagator": name, "size": tag}
                for which, clip, n in (("short", short_clip, args.short), ("long", long_clip, args.frames)):
                    argv = ["propagate", clip, "--keyframe-image", work / f"{clip.stem}-key.png", "--keyframe-index", n // 2,
                            "--propagator", name, "--seed", "0", "-o", work / f"{name}-{clip.stem}.mp4"]  # fmt: skip
                    row[which] = {"frames": n, **run(argv, args.nice, work / f"{name}-{clip.stem}.log")}
                    row[which]["cpu_s_per_frame"] = round(row[which]["cpu_s"] / n, 2)
                    print(f"  {name} {tag} {which} ({n} frames): {row[which]}", flush=True)
                row["ratio"] = round(row["long"]["peak_rss_mb"] / row["short"]["peak_rss_mb"], 3)
                row["goals_met"] = row["long"]["peak_rss_mb"] <= 2500 and row["ratio"] <= 1.3
                results.append(row)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)

    print(f"\n| propagator | size | peak RSS, {args.short} frames (MB) | peak RSS, {args.frames} frames (MB) | ratio (goal <= 1.3) "
          f"| <= 2.5 GB | CPU s/frame ({args.frames}) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['propagator']} | {r['size']} | {r['short']['peak_rss_mb']:.0f} | {r['long']['peak_rss_mb']:.0f} | {r['ratio']:.2f} "
              f"| {'yes' if r['long']['peak_rss_mb'] <= 2500 else 'no'} | {r['long']['cpu_s_per_frame']:.2f} |")  # fmt: skip
    for tag, line in made.items():
        print(f"{tag}: {line}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"clips": made, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
