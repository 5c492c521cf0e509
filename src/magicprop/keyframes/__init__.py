"""Keyframes the way users work: find the frame an edited image belongs to, measure how much of every frame the chosen
keyframes explain, and suggest the frames to edit next.

    from magicprop.keyframes import find_keyframe, measure_coverage, suggest_keyframes
    match = find_keyframe(frames, edited_image)          # KeyframeMatch(index, confidence, runner_up, ...)
    table = measure_coverage(frames)                     # every candidate keyframe's anchored validity, walked once
    plan = suggest_keyframes(table, given=[0], max_keyframes=3, target=0.95)
    plan.suggested, plan.coverage                        # frames to edit next, in order; per-frame coverage

- `detection`: `find_keyframe` matches structure (the orientation of edges), not colour;
- `coverage`: `measure_coverage` walks `flow`'s anchored chains (`propagation.flow.maps.AnchoredChain`) at a reduced
  size from candidate keyframes and keeps where each explains each frame;
- `suggestions`: the greedy choice of the next keyframes, and evenly spaced ones to compare with;
- `report`: the plan as OUT.json, a coverage plot and a printed table.
"""

from .coverage import CoverageSettings, CoverageTable, measure_coverage, reduce_clip
from .detection import CONFIDENT, KeyframeMatch, find_keyframe
from .report import format_plan, plan_record, plot_plan
from .suggestions import KeyframePlan, evenly_spaced, plan_keyframes, suggest_keyframes

__all__ = [
    "CONFIDENT", "CoverageSettings", "CoverageTable", "KeyframeMatch", "KeyframePlan", "evenly_spaced", "find_keyframe",
    "format_plan", "measure_coverage", "plan_keyframes", "plan_record", "plot_plan", "reduce_clip", "suggest_keyframes",
]  # fmt: skip
