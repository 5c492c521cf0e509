"""Seconds per frame of the anchored `flow` propagator against chained flow (`baselines.propagate_flow`), one run; where
its time goes; and what measuring its maps at a reduced size costs in precision.

Both propagate the same clip from keyframe 0 and are timed back to back, so the ratio holds on a busy machine even when
the absolute numbers do not. Times are CPU seconds of the process (all threads) per propagated frame, the best of
`--repeats` runs (what the code costs, not what the neighbours cost); wall seconds are printed beside them. Goals: <= 0.3
s/frame at 512x512 and <= 0.6 s/frame at 1920x1080 on 2 cores, the fill included, <= 3x chain. Also reported: the time
of each correction-pass setting, of cubic sampling, of the plain warp without the appearance model and of the cheapest
flow settings.

    python benchmarks/anchored_speed.py                        # a synthetic pan at 512x512 (tests/fixtures.panning_clip)
    python benchmarks/anchored_speed.py --video /work/shared/samples/real/koolshooters.mp4 --frames 16
    python benchmarks/anchored_speed.py --video ../shared/samples/real/koolshooters.mp4 --resolution 1080p --stages
    python benchmarks/anchored_speed.py --video ../shared/samples/real/koolshooters.mp4 --resolution 1080p --edit cartoon
    python benchmarks/anchored_speed.py --video ../shared/samples/real/koolshooters.mp4 --resolution full --precision

--resolution full keeps the clip's own size; 1080p and 4k crop it to 16:9 and enlarge it (`full_resolution.upscaled`).
--stages: CPU seconds per frame of each stage (steady state: the first frames, which fit the keyframe's models, are left
out), summed over the threads that run them (not OpenCV's own worker threads: the process total counts those), and how
much of the process's time was kernel time and how many page faults it took. --precision: the maps measured at `MapSettings.measure_pixels` against
maps measured at full size, end-point error in full-size pixels (mean and 95th percentile, over pixels both call
valid, and over the textured ones), and the PSNR of the result with each against a sketch and a cartoon edit.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import json
import pstats
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def load_clip(video: str | None, frames: int, size: int, resolution: str | None) -> np.ndarray:
    if video is None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        import fixtures

        return fixtures.panning_clip(frames, size, (1, 2))
    from magicprop.video import read_video, resize_frames

    clip, _ = read_video(video, max_frames=frames)
    if resolution is None:
        return resize_frames(clip, (size, size))
    from full_resolution import UPSCALED, upscaled

    return clip if resolution == "full" else upscaled(clip, UPSCALED[resolution])


def seconds_per_frame(run, num_frames: int, repeats: int) -> tuple[float, float]:
    """(CPU s, wall s) per propagated frame, each the best of `repeats` runs."""
    cpu = wall = float("inf")
    for _ in range(repeats):
        c, w = time.process_time(), time.perf_counter()
        run()
        cpu = min(cpu, (time.process_time() - c) / (num_frames - 1))
        wall = min(wall, (time.perf_counter() - w) / (num_frames - 1))
    return cpu, wall


def stages(clip: np.ndarray, edited: np.ndarray, fill: str, skip: int = 3) -> dict[str, float]:
    """CPU seconds per frame of each stage of the anchored propagator (thread time, all threads), frames after `skip`."""
    from magicprop.propagation.base import PropagationRequest
    from magicprop.propagation.flow import fill as fill_module, maps, propagator, resolution

    spent: dict[str, float] = {}
    counting = [False]
    patched = []

    def timed(owner, name: str, label: str) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def wrapper(*args, **kwargs):
            start = time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                if counting[0]:
                    spent[label] = spent.get(label, 0.0) + time.thread_time() - start

        setattr(owner, name, wrapper)
        patched.append((owner, name, original))

    for owner, name, label in [
        (maps, "flow_pair", "frame-to-frame flows (2 DIS, measuring size)"),
        (maps, "correct", "correction flow + compose (measuring size)"),
        (maps, "flow_checks", "forward-backward checks (measuring size)"),
        (maps, "fill_map", "re-estimating occluded map pixels (measuring size)"),
        (maps, "upscale_frame", "map brought up + validity checked (full size)"),
        (propagator, "render_keyframe", "keyframe sampled + appearance applied (full size)"),
        (propagator, "fallback_estimate", "colour transfer + carried estimate (measuring size)"),
        (fill_module.PatchFill, "__call__", "patch synthesis (measuring size)"),
        (propagator, "detail_fill", "fill brought up with the frame's detail (full size)"),
        (resolution.Resized, "__getitem__", "frames shrunk to the measuring size"),
        (propagator._Run, "save", "work folder writes"),
    ]:
        timed(owner, name, label)
    try:
        frames = iter(propagator.AnchoredFlowPropagator(fill=fill)(
            PropagationRequest(source=clip, keyframes={0: edited}, progress=False)))  # fmt: skip
        for _ in range(skip + 1):
            next(frames)
        counting[0] = True
        cpu, before = time.process_time(), resource.getrusage(resource.RUSAGE_SELF)
        n = sum(1 for _ in frames)
        cpu, after = time.process_time() - cpu, resource.getrusage(resource.RUSAGE_SELF)
    finally:
        for owner, name, original in reversed(patched):
            setattr(owner, name, original)
    out = {label: s / n for label, s in sorted(spent.items(), key=lambda kv: -kv[1])}
    out["(the process, all threads)"] = cpu / n
    # of which in the kernel (page faults of fresh full-size temporaries: `allocator.keep_freed_pages`), and those faults
    out["(of it, kernel time)"] = (after.ru_stime - before.ru_stime) / n
    out["(page faults per frame, thousands)"] = (after.ru_minflt - before.ru_minflt) / n / 1000
    return out


def precision(clip: np.ndarray) -> dict:
    """Reduced-size maps against full-size maps on `clip`, and the results' PSNR against two edits."""
    import cv2

    from magicprop.evaluation import psnr
    from magicprop.evaluation.appearance_edits import EDITS
    from magicprop.propagation.base import PropagationRequest
    from magicprop.propagation.flow.maps import AnchoredChain, MapSettings
    from magicprop.propagation.flow.propagator import AnchoredFlowPropagator

    reduced, full = MapSettings(), MapSettings(measure_pixels=0)
    chains = [AnchoredChain(clip, 0, 1, s) for s in (reduced, full)]
    grey = cv2.cvtColor(clip[0], cv2.COLOR_RGB2GRAY).astype(np.float32)
    textured = cv2.magnitude(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1)) > 40
    errors, on_texture = [], []
    for _ in range(len(clip) - 1):
        a, b = (c.advance() for c in chains)
        both = a.valid & b.valid
        e = np.linalg.norm(a.map - b.map, axis=2)
        errors.append(e[both])
        # texture where the map points in the keyframe: where a map is measurable at all
        at = np.clip(np.rint(b.map), 0, [clip.shape[2] - 1, clip.shape[1] - 1]).astype(int)
        on_texture.append(e[both & textured[at[..., 1], at[..., 0]]])
    errors, on_texture = np.concatenate(errors), np.concatenate(on_texture)
    out = {"measured_at": list(chains[0].source.shape[1:3]), "size": list(clip.shape[1:3]),
           "epe_mean": float(errors.mean()), "epe_p95": float(np.percentile(errors, 95)),
           "epe_textured_mean": float(on_texture.mean()), "epe_textured_p95": float(np.percentile(on_texture, 95))}  # fmt: skip
    for name in ("sketch", "cartoon"):
        truth = EDITS[name].clip(clip)
        for label, pixels in (("reduced", reduced.measure_pixels), ("full", 0)):
            p = AnchoredFlowPropagator(measure_pixels=pixels)
            frames = np.stack(list(p(PropagationRequest(source=clip, keyframes={0: truth[0]}, progress=False))))
            out[f"psnr_{name}_{label}"] = float(np.minimum(psnr(frames, truth), 100)[1:].mean())
    return out


def keyframe_edit(frame: np.ndarray, edit: str) -> np.ndarray:
    """The edited keyframe. A colour map ("invert") and an edit that re-draws detail cost differently: the latter
    takes larger patches (`fill.RedrawnPatches`) and the temporal blend (not at a scaled render)."""
    if edit == "invert":
        return (255 - frame)[..., ::-1].copy()
    from magicprop.evaluation.appearance_edits import EDITS

    if edit not in EDITS:
        raise SystemExit(f"anchored_speed: unknown --edit {edit!r}; use invert or one of {sorted(EDITS)}")
    return EDITS[edit](frame)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", default=None, help="a real clip (default: a synthetic pan)")
    parser.add_argument("--frames", type=int, default=9)
    parser.add_argument("--size", type=int, default=512, help="square size the clip is resized to (no --resolution)")
    parser.add_argument("--resolution", choices=["full", "1080p", "4k"], default=None,
                        help="the clip's own size, or 1080p / 4K made by enlarging it (needs --video)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--fill", default="auto", help="auto, patches or colour")
    parser.add_argument("--variants", action="store_true", help="also time the other settings (passes, sampling, ...)")
    parser.add_argument("--stages", action="store_true", help="CPU per frame of each stage")
    parser.add_argument("--precision", action="store_true", help="reduced-size maps against full-size maps")
    parser.add_argument("--profile", action="store_true", help="print where the main thread's time goes (cProfile)")
    parser.add_argument("--edit", default="invert",
                        help="the keyframe's edit: invert (a colour map, the default) or one of "
                             "`appearance_edits.EDITS` (cartoon and sketch re-draw detail: larger patches, the blend)")
    parser.add_argument("--json", default=None, help="also write the numbers here")
    args = parser.parse_args()

    from magicprop.propagation.base import PropagationRequest
    from magicprop.propagation.baselines import propagate_flow
    from magicprop.propagation.flow.propagator import AnchoredFlowPropagator

    clip = load_clip(args.video, args.frames, args.size, args.resolution)
    edited = keyframe_edit(clip[0], args.edit)
    n = len(clip)

    def anchored(**options):
        propagator = AnchoredFlowPropagator(fill=args.fill, **options)
        request = PropagationRequest(source=clip, keyframes={0: edited}, progress=False)
        return lambda: sum(1 for _ in propagator(request))  # frames are consumed one by one, as a writer would

    results = {"size": list(clip.shape[1:3]), "frames": n, "edit": args.edit,
               "fill": AnchoredFlowPropagator(fill=args.fill).fill_name}  # fmt: skip
    chained = lambda: propagate_flow(clip, edited, 0, progress=False)  # noqa: E731
    results["chained_s_per_frame"], results["chained_wall_s_per_frame"] = seconds_per_frame(chained, n, args.repeats)
    results["anchored_s_per_frame"], results["anchored_wall_s_per_frame"] = seconds_per_frame(anchored(), n, args.repeats)
    results["ratio"] = results["anchored_s_per_frame"] / results["chained_s_per_frame"]
    if args.variants:
        for passes in (0, 2):
            results[f"anchored_{passes}_passes_s_per_frame"] = seconds_per_frame(anchored(correction_passes=passes), n, 1)[0]
        results["anchored_cubic_s_per_frame"] = seconds_per_frame(anchored(interpolation="cubic"), n, 1)[0]
        # the plain warp, without the keyframe pair's appearance model: what the model costs
        results["anchored_no_appearance_s_per_frame"] = seconds_per_frame(anchored(appearance=False), n, 1)[0]
        results["anchored_no_refinement_s_per_frame"] = seconds_per_frame(anchored(correction_refinement=0), n, 1)[0]
        fastest = anchored(frame_flow="fast", correction_refinement=0)  # the cheap settings, for a busy machine
        results["anchored_fast_flow_no_refinement_s_per_frame"] = seconds_per_frame(fastest, n, 1)[0]
    for key, value in results.items():
        print(f"{key:46s} {value:.3f}" if isinstance(value, float) else f"{key:46s} {value}")
    if args.stages:
        results["stages"] = stages(clip, edited, args.fill)
        print("\nCPU s/frame per stage (steady state):")
        for label, value in results["stages"].items():
            print(f"  {label:56s} {value:.3f}")
    if args.precision:
        results["precision"] = precision(clip)
        print("\nmaps measured at", results["precision"]["measured_at"], "against full size:")
        for key, value in results["precision"].items():
            if isinstance(value, float):
                print(f"  {key:30s} {value:.3f}")
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(anchored())
        pstats.Stats(profiler).sort_stats("tottime").print_stats(12)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
