"""`magicprop demo`: the whole method on a synthetic clip with ground truth, offline, on CPU, in about a minute.

A procedural clip from seeds the embedded tiny model never saw is edited in texture space, which gives the exact edited
video: its keyframe is the stage I result a perfect editor would give, and every other frame is the answer propagation
should reach. We propagate that keyframe with the tiny PropDPM (alone, and fused with flow: the `hybrid` propagator) and
with the two baselines, and measure each against the truth frame by frame.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .fileio import atomic_path, atomic_write_json, ensure_writable_dir

logger = logging.getLogger(__name__)

HELD_OUT_SEED = 900_000  # training uses seeds below 100_000 (see the tiny-synthetic recipe)


@dataclass
class DemoSettings:
    seed: int = HELD_OUT_SEED
    frames: int = 16
    size: tuple[int, int] = (64, 64)
    edit: str = "pattern"  # a bold pattern painted on the textures: no colour lookup (`lut`) can reproduce it
    textures: str = "procedural"
    keyframe_index: int = 0
    num_inference_steps: int = 25
    fps: float = 8.0


def run_methods(source, depth, keyframe, keyframe_index, *, models=None, steps=25, seed=0, progress=True) -> dict:
    """Propagate one keyframe with every registered propagator; returns {name: frames (T, H, W, 3) uint8}."""
    from .models.bundle import PropagationModels
    from .propagation import PROPAGATORS, PropagationRequest, PropagationSettings

    request = PropagationRequest(
        source=source, keyframes={keyframe_index: keyframe}, depth=depth,
        models=models or PropagationModels.from_pretrained(None),
        settings=PropagationSettings(num_inference_steps=steps, seed=seed), progress=progress,
    )  # fmt: skip
    return {name: np.stack(list(propagator(request))) for name, propagator in PROPAGATORS.items()}


def score(outputs: dict, truth: np.ndarray, source: np.ndarray, keyframe_index: int) -> dict:
    """Per-method means and per-frame curves (`evaluation.score_against_truth`); the keyframe is left out of the means."""
    from .evaluation import score_against_truth

    return {name: score_against_truth(frames, truth, source, keyframe_index) for name, frames in outputs.items()}


def plot_drift(metrics: dict, path: Path, keyframe_index: int, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    for name, m in metrics.items():
        # The keyframe is given (PSNR capped at 100 dB): leave it out, or it flattens every other point.
        curve = np.array(m["per_frame"]["psnr"], dtype=float)
        curve[keyframe_index] = np.nan
        ax.plot(curve, marker="o", ms=3, label=f"{name} ({m['psnr']:.2f} dB)")
    ax.axvline(keyframe_index, color="grey", ls=":", lw=1)
    ax.set_xlabel("frame index")
    ax.set_ylabel("PSNR vs ground truth (dB)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)


def contact_sheet(comparison: np.ndarray, keyframe_index: int, rows: int = 4) -> np.ndarray:
    """Frames of the comparison video stacked top to bottom, evenly spaced from the keyframe to the farthest frame: the
    result at a glance, drift included (shown at 2x, nearest-neighbour, so that 64x64 frames are readable)."""
    last = 0 if keyframe_index > (len(comparison) - 1) / 2 else len(comparison) - 1
    picks = np.unique(np.linspace(keyframe_index, last, rows + 1).round().astype(int)[1:])
    sheet = np.concatenate([comparison[t] for t in picks], axis=0)
    return sheet.repeat(2, axis=0).repeat(2, axis=1)


def format_table(metrics: dict) -> str:
    lines = [f"{'method':<10} {'PSNR (dB)':>10} {'SSIM':>8} {'warp err':>9}"]
    for name, m in metrics.items():
        lines.append(f"{name:<10} {m['psnr']:>10.2f} {m['ssim']:>8.4f} {m['warp_error']:>9.4f}")
    return "\n".join(lines)


def run_demo(out_dir: str | Path, settings: DemoSettings = DemoSettings(), *, model: str | None = None, progress: bool = True) -> dict:
    from .models.bundle import PropagationModels
    from .propagation import PROPAGATORS
    from .synthetic import render_clip
    from .video import save_image, side_by_side, write_video

    t0 = time.time()
    out = ensure_writable_dir(out_dir)
    # 1. A clip with ground truth
    clip = render_clip(settings.seed, frames=settings.frames, size=settings.size, edit=settings.edit, textures=settings.textures)
    k = settings.keyframe_index % settings.frames
    keyframe = clip.edited[k]
    # 2. Propagate with the tiny PropDPM, alone and fused with flow, and both baselines
    models = PropagationModels.from_pretrained(model)
    outputs = run_methods(clip.source, clip.depth, keyframe, k, models=models, steps=settings.num_inference_steps, progress=progress)
    # 3. Measure against the truth
    metrics = score(outputs, clip.edited, clip.source, k)
    # 4. Write what a person wants to look at
    write_video(out / "source.mp4", clip.source, settings.fps)
    write_video(out / "ground_truth.mp4", clip.edited, settings.fps)
    learned = next(name for name in outputs if PROPAGATORS[name].needs_model)  # the first: PropDPM alone
    write_video(out / "edited.mp4", outputs[learned], settings.fps)
    panels = [clip.source, clip.edited] + list(outputs.values())
    comparison = side_by_side(panels, ["source", "truth", *outputs])
    write_video(out / "comparison.mp4", comparison, settings.fps)
    save_image(out / "comparison.png", contact_sheet(comparison, k))
    plot_drift(metrics, out / "drift.png", k, f"{settings.frames} frames, {settings.edit} edit, keyframe {k}")
    summary = {
        **{name: {key: v for key, v in m.items()} for name, m in metrics.items()},
        "settings": {**settings.__dict__, "size": list(settings.size)},
        "model": models.source,
        "seconds": round(time.time() - t0, 1),
    }
    atomic_write_json(out / "metrics.json", summary)
    return summary
