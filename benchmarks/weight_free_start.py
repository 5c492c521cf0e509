"""Peak memory and time of a weight-free `magicprop propagate` now that it imports no torch, against the code before, in one run.

Clips from a real one (default `../shared/samples/real/koolshooters.mp4`, 960x720): its first 12 frames centre-cropped
to each `--sizes` aspect and resized (bicubic), by default 480x360 and 1920x1080; the keyframe is frame 0 with its
colours inverted. Each run is a fresh process (`python -m magicprop.cli propagate CLIP --keyframe-image K --keyframe-index 0
--propagator flow --seed 0 -o OUT.mp4`, writing the comparison too), in three arms that differ only in `PYTHONPATH`:

- before: the source tree of `--before REV` (`git archive`), the code that imported torch on this path;
- now: this tree;
- now + torch: this tree with torch imported at start-up (a `sitecustomize` module): what torch alone costs now.

Every arm first runs once on a 3-frame 480x360 clip, untimed (numba compiles its cache for that tree). The table gives, per clip
and arm, the median over `--repeats` runs of peak RSS (`wait4`'s ru_maxrss), wall and CPU seconds, and whether the
output mp4's bytes are the before arm's; then the ratios now / before, measured in this one run.

    python benchmarks/weight_free_start.py --before 44af242 --json outputs/weight_free_start.json
    python benchmarks/weight_free_start.py --before 44af242 --sizes 3840x2160 --frames 8 --repeats 1   # 4K: minutes
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory_long_clip import DEFAULT_VIDEO, ROOT, make_clip, run, size_arg  # noqa: E402 - a sibling script: one way to run a child


@contextlib.contextmanager
def python_path(*paths: Path):
    """Children started inside see these folders first on their path (the arm's source tree)."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(map(str, paths))
    try:
        yield
    finally:
        del os.environ["PYTHONPATH"]
        if old is not None:
            os.environ["PYTHONPATH"] = old


def arms(before: str, work: Path) -> dict[str, list[Path]]:
    """Each arm's PYTHONPATH: the old tree unpacked from git, this tree, and this tree with torch imported at start."""
    old = work / "before"
    old.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", before, "src"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
    preload = work / "preload"
    preload.mkdir()
    (preload / "sitecustomize.py").write_text("import torch  # noqa: F401 - the arm that measures torch's own cost\n")
    return {"before": [old / "src"], "now": [ROOT / "src"], "now + torch": [preload, ROOT / "src"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", type=Path, default=DEFAULT_VIDEO, help="the real clip (default: %(default)s)")
    p.add_argument("--before", required=True, metavar="REV", help="the git revision whose code imported torch")
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--sizes", type=size_arg, nargs="+", default=[(360, 480), (1080, 1920)], metavar="WxH",
                   help="clip sizes (default: 480x360 1920x1080)")
    p.add_argument("--repeats", type=int, default=2, help="measured runs per clip and arm (default: %(default)s)")
    p.add_argument("--nice", type=int, default=10, help="niceness of the runs (default: %(default)s)")
    p.add_argument("--json", type=Path, help="write the table here")
    args = p.parse_args()
    import cv2
    from tqdm import tqdm

    from magicprop.video import Frames, save_image

    with tempfile.TemporaryDirectory(prefix="weight-free-start-") as tmp:
        work = Path(tmp)
        paths = arms(args.before, work)
        clips = {}
        for name, size, frames in [("warm", (360, 480), 3)] + [(f"{w}x{h}", (h, w), args.frames) for h, w in args.sizes]:
            clips[name] = work / f"{name}.mp4"
            make_clip(args.video, clips[name], frames, size)
            with Frames.open(clips[name]) as frames:
                save_image(work / f"{name}.key.png", 255 - frames[0])

        def propagate(arm: str, clip: str, out: Path) -> dict:
            argv = ["propagate", clips[clip], "--keyframe-image", work / f"{clip}.key.png", "--keyframe-index", "0",
                    "--propagator", "flow", "--seed", "0", "-o", out]  # fmt: skip
            with python_path(*paths[arm]):
                return run(argv, args.nice, out.with_suffix(".log"))

        for arm in paths:  # numba's cache for each tree, untimed
            propagate(arm, "warm", work / f"warm-{arm.replace(' + ', '-')}.mp4")
        del clips["warm"]
        runs: dict[str, dict[str, list[dict]]] = {clip: {arm: [] for arm in paths} for clip in clips}
        bar = tqdm(total=len(clips) * len(paths) * args.repeats, desc="propagate runs", unit="run")
        for r in range(args.repeats):
            for clip in clips:
                for arm in paths:  # interleaved, so that the machine's load weighs on every arm alike
                    out = work / f"{clip}-{arm.replace(' + ', '-')}-{r}.mp4"
                    runs[clip][arm].append({**propagate(arm, clip, out), "sha256": hashlib.sha256(out.read_bytes()).hexdigest()})
                    bar.update()
        bar.close()

    table = {}
    print(f"\n{args.video.name}, {args.frames} frames, `flow`, median of {args.repeats} runs per arm (load {os.getloadavg()[0]:.1f})")
    print("| clip | arm | peak RSS MB | wall s | CPU s | mp4 bytes as before |\n|---|---|---|---|---|---|")
    for clip, by_arm in runs.items():
        table[clip] = {}
        for arm, rs in by_arm.items():
            row = {k: statistics.median(r[k] for r in rs) for k in ("peak_rss_mb", "wall_s", "cpu_s")}
            row["same_bytes"] = all(r["sha256"] == by_arm["before"][0]["sha256"] for r in rs)
            table[clip][arm] = row
            print(f"| {clip} | {arm} | {row['peak_rss_mb']:.0f} | {row['wall_s']:.1f} | {row['cpu_s']:.1f} | {row['same_bytes']} |")
    for clip, row in table.items():
        now, before, torch = row["now"], row["before"], row["now + torch"]
        print(f"{clip}: now / before: peak RSS {now['peak_rss_mb'] / before['peak_rss_mb']:.3f} ({now['peak_rss_mb'] - before['peak_rss_mb']:+.0f} MB), "
              f"wall {now['wall_s'] / before['wall_s']:.3f}, CPU {now['cpu_s'] / before['cpu_s']:.3f}; torch's own cost now: "
              f"{torch['peak_rss_mb'] - now['peak_rss_mb']:+.0f} MB, {torch['cpu_s'] - now['cpu_s']:+.1f} CPU s")  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"video": str(args.video), "frames": args.frames, "before": args.before, "table": table,
                                         "runs": runs}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
