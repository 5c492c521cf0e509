"""A keyframe plan for people: the record (OUT.json), the picture (coverage against frame index) and a short table."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..fileio import atomic_path
from .coverage import CoverageTable
from .suggestions import OBJECTIVE, KeyframePlan


def plan_record(plan: KeyframePlan, table: CoverageTable) -> dict:
    """What OUT.json holds: the suggestions in the order to edit them, and the per-frame coverage."""
    return {
        "suggested": list(plan.suggested),  # in the order to edit them
        "given": list(plan.given),
        "keyframes": plan.keyframes,  # given and suggested, sorted
        "target": plan.target,
        "reached": plan.reached,
        "below_target": plan.below_target,
        "coverage": [round(float(c), 4) for c in plan.coverage],  # per frame, with every keyframe
        "coverage_given": [round(float(c), 4) for c in plan.coverage_given],  # per frame, with the given ones alone
        "coverage_steps": [[round(float(c), 4) for c in step] for step in plan.steps],  # after each suggestion
        "objective": OBJECTIVE,
        "spacing": plan.spacing,  # "even" where the maps explain too little for coverage to rank frames
        "measured": {"frames": table.num_frames, "height": table.size[0], "width": table.size[1],
                     "candidates": table.candidates, "candidates_every": table.stride},  # fmt: skip
    }


def format_plan(plan: KeyframePlan, table: CoverageTable) -> str:
    """The short table printed by `magicprop keyframes`: coverage after the given keyframes and after each suggestion."""
    pct = f"{plan.target:.0%}"
    lines = [f"coverage measured at {table.size[1]}x{table.size[0]} from {len(table.candidates)} candidate keyframes "
             f"({_every(table.stride)}), target {pct} of every frame:",  # fmt: skip
             f"  {'keyframes':<24} {'mean':>6} {'lowest (frame)':>15} {'frames below ' + pct:>18}"]
    rows = [("given: " + (", ".join(map(str, plan.given)) or "none"), plan.coverage_given)]
    rows += [(f"+ {k} (suggestion {i + 1})", step) for i, (k, step) in enumerate(zip(plan.suggested, plan.steps))]
    for label, cov in rows:
        low = int(np.argmin(cov))
        below = int((cov < plan.target - 1e-9).sum())
        lines.append(f"  {label:<24} {cov.mean():>6.2f} {f'{cov[low]:.2f} ({low})':>15} {below:>18}")
    if plan.suggested:
        order = ", ".join(map(str, plan.suggested))
        verdict = "then every frame reaches the target" if plan.reached else f"{len(plan.below_target)} frames stay below it (raise --max)"
        lines.append(f"suggested: edit frame{'s' if len(plan.suggested) > 1 else ''} {order}, in this order; {verdict}")
        if plan.spacing == "even":
            lines.append(f"  (spaced evenly: the clip's motion is tracked over only {plan.coverage.mean():.0%} of it, too little "
                         "for coverage to say which frames need a keyframe)")
    elif plan.reached:
        lines.append("suggested: none; the given keyframes already explain every frame up to the target")
    else:
        lines.append("suggested: none; no candidate explains more of the frames below the target")
    return "\n".join(lines)


def plot_plan(plan: KeyframePlan, path: str | Path, title: str = "", frames=None) -> Path:
    """Coverage against frame index (given keyframes alone, dashed; with the suggestions, solid), the target, the given
    keyframes (grey) and the suggestions (numbered in the order to edit them); with `frames` (the clip, any size), the
    keyframes' pictures below it. Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [(k, "given") for k in plan.given] + [(k, f"edit {i + 1}") for i, k in enumerate(plan.suggested)]
    shown = shown[:8] if frames is not None else []
    fig = plt.figure(figsize=(7, 3.4 + (1.5 if shown else 0)), dpi=110)
    grid = fig.add_gridspec(2 if shown else 1, max(len(shown), 1), height_ratios=[3.4, 1.5] if shown else [1])
    ax = fig.add_subplot(grid[0, :])
    index = np.arange(len(plan.coverage))
    if plan.given:
        ax.plot(index, plan.coverage_given, "--", color="C7", label=f"keyframes {', '.join(map(str, plan.given))}")
    if plan.suggested:
        ax.plot(index, plan.coverage, "-", color="C0", label=f"with the suggestions {', '.join(map(str, plan.suggested))}")
    ax.axhline(plan.target, color="C3", lw=1, ls=":", label=f"target {plan.target:.0%}")
    for k in plan.given:
        ax.axvline(k, color="C7", lw=1)
    for i, k in enumerate(plan.suggested):
        ax.axvline(k, color="C1", lw=1.5)
        ax.annotate(str(i + 1), (k, 1.0), xytext=(3, -12), textcoords="offset points", color="C1", fontweight="bold")
    curves = [plan.coverage] + ([plan.coverage_given] if plan.given else [])
    ax.set_ylim(min(0.5, min(float(c.min()) for c in curves)) - 0.02, 1.02)
    ax.set_xlim(-0.5, len(index) - 0.5)
    ax.set_xlabel("frame index")
    ax.set_ylabel("fraction explained")
    ax.set_title(title or "keyframe coverage (orange: suggested keyframes, in order)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    for j, (k, label) in enumerate(shown):
        thumb = fig.add_subplot(grid[1, j])
        thumb.imshow(np.asarray(frames[k]))
        thumb.set_title(f"frame {k} ({label})", fontsize=8, color="C1" if label != "given" else "C7")
        thumb.axis("off")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)
    return Path(path)


def _every(n: int) -> str:
    return "every frame" if n == 1 else f"every {n}{ {2: 'nd', 3: 'rd'}.get(n, 'th') } frame"
