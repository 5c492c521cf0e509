"""Say how much of every frame your keyframes explain, and which frames to edit next.

For every frame, the fraction of its pixels the chosen keyframes explain: where `flow` can carry the edited keyframe
(its anchored maps stay in the keyframe, pass the flow checks and agree in colour), each frame taking what its two
neighbouring keyframes explain, as `flow` does. Content no keyframe shows (a head turning away, a door opening) can
only be filled, so a frame far below 1 needs another keyframe near it. The suggestions are the frames to edit next, in
that order, chosen greedily to maximise the sum over frames of min(coverage, target), until every frame reaches the
target or --max keyframes are suggested. Where the maps explain under half of the clip (water, smoke: nothing is
tracked), coverage cannot rank frames and the suggestions are spaced evenly instead ("spacing": "even"). Coverage is measured at a reduced size (--size px on the long side) from
candidate keyframes every few frames, so a 231-frame clip takes about 20 s of CPU time.

Writes OUT.json ("suggested": frame indices in the order to edit them, "coverage": per frame, ...) and OUT.png
(coverage against frame index, the suggestions marked, and the keyframes' pictures), and prints a short table.

Examples:
  magicprop keyframes clip.mp4 -o plan.json                          # from scratch: where to put keyframes
  magicprop keyframes clip.mp4 --keyframe-index 0 --max 2 -o plan.json   # I edited frame 0: what next?
  magicprop keyframes clip.mp4 --keyframes keys/ --target 0.9 -o plan.json   # keys/0.png, keys/40.png
"""

from __future__ import annotations

import argparse

NAME = "keyframes"
HELP = "per-frame coverage of your keyframes, and the frames to edit next"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..keyframes import CoverageSettings

    p.add_argument("video", metavar="VIDEO", help="the source clip (video file or folder of numbered frames)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.json", help="the plan; OUT.png (the coverage curve) goes beside it")
    p.add_argument("--keyframe-index", dest="keyframe_indices", type=int, action="append", default=[], metavar="K",
                   help="a frame you edited or will edit (repeatable; negative counts from the end)")
    p.add_argument("--keyframes", metavar="DIR", help="a folder of edited keyframes named by frame index (0.png, 40.png): their frames")
    p.add_argument("--max", dest="max_keyframes", type=int, default=5, metavar="N", help="suggest at most N keyframes (default: 5)")
    p.add_argument("--target", type=float, default=0.95, metavar="F",
                   help="fraction of every frame the keyframes should explain, in (0, 1] (default: 0.95)")
    p.add_argument("--size", type=int, default=CoverageSettings.long_side, metavar="PX",
                   help=f"long side at which coverage is measured (default: {CoverageSettings.long_side})")
    p.add_argument("--every", type=int, default=None, metavar="N",
                   help="candidate keyframes every N frames (default: every frame up to 32 frames, else about 32 candidates)")


def run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    import numpy as np

    from ..errors import UsageError
    from ..fileio import atomic_write_json, check_output_path, remove_stale_temporaries, require_file
    from ..jobs import keyframe_files
    from ..keyframes import CoverageSettings, format_plan, plan_keyframes, plan_record, plot_plan
    from ..keyframes.coverage import shrink_frame
    from ..keyframes.suggestions import check_budget, check_target
    from ..video import open_video

    t0 = time.time()
    # 1. Check everything before reading the clip: a typo costs nothing, an input is never overwritten
    video = require_file(args.video, "video")
    check_target(args.target)
    check_budget(args.max_keyframes)
    settings = CoverageSettings(long_side=args.size, every=args.every)
    out = Path(args.output)
    if out.suffix.lower() != ".json":
        raise UsageError(f"-o names the plan's JSON file (OUT.json; OUT.png goes beside it), got {out}")
    picture = out.with_suffix(".png")
    given = list(args.keyframe_indices)
    folder = keyframe_files(args.keyframes) if args.keyframes else {}
    for path in (out, picture):
        check_output_path(path, video, *folder.values())
        remove_stale_temporaries(path)

    # 2. Read the clip one frame at a time, shrunk as it comes
    with open_video(video) as reader:
        small = [shrink_frame(frame, settings.long_side) for frame in reader]
    frames = np.stack(small)
    for index, path in folder.items():
        if not -len(frames) <= index < len(frames):
            raise UsageError(f"{path} names frame {index} but the clip has {len(frames)} frames (0..{len(frames) - 1}); rename it")
    given += list(folder)

    # 3. Measure and suggest; write the picture, then the record (its presence marks the plan complete)
    plan, table = plan_keyframes(frames, given, max_keyframes=args.max_keyframes, target=args.target, settings=settings)
    plot_plan(plan, picture, title=f"{video.name}: keyframe coverage (orange: suggestions, in the order to edit them)", frames=frames)
    record = {"video": str(video.resolve()), **plan_record(plan, table), "seconds": round(time.time() - t0, 2)}
    atomic_write_json(out, record)
    print(format_plan(plan, table))
    print(f"wrote {out} and {picture.name}")
    return 0

