"""The frames to edit next: a greedy cover of the clip by keyframes, and the evenly spaced keyframes it is compared with.

What the search optimises, in two steps:
1. How many keyframes, greedily: the sum over frames of min(coverage_t, target), the part of every frame that is
   explained, counted up to the target and no further. Each step adds the candidate that raises it most (coverage as
   `flow` combines keyframes: each frame from its two neighbouring keyframes, `CoverageTable.coverage`), until every
   frame reaches the target, the budget is spent, or no candidate adds anything. Capping at the target makes a step
   prefer frames far below it (a head turning away, a door opening) to polishing frames already good enough; the sum
   makes it prefer a keyframe that lifts many frames to one that lifts a single frame a little more. It is the usual
   greedy heuristic for covering problems, not a proof of the fewest keyframes.
2. Where exactly: each suggestion moved to the frame that maximises the coverage weighted by distance
   (`CoverageTable.quality`: a pixel counts 1/(1 + d/HORIZON), d the frames to the keyframe it is taken from), keeping
   every frame at the target when step 1 reached it. Validity alone prefers keyframes far apart, each frame taking the
   union of its two neighbours, while a warp degrades with distance: placed by validity alone, budgets of 2 and 3 lost
   0.6-1.2 dB against evenly spaced keyframes on real clips.
The suggestions are then ordered as step 1 would add them: the order to edit them in.

Where the maps explain too little of the clip (mean coverage with the suggestions under `RELIABLE_COVERAGE`: water,
smoke, fast non-rigid motion), coverage is noise and cannot rank frames: the suggestions are then spaced evenly
instead (`spaced_keyframes`), and the plan says so (`KeyframePlan.spacing`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import UsageError
from .coverage import CoverageSettings, CoverageTable, measure_coverage

# Frames at which a warped pixel counts half when suggestions are placed (`CoverageTable.quality`): chosen on three
# real clips x one edit (background, puff, mallard_water x cartoon) among 4-32 and none, where 16 and 32 gave
# suggestions within 0.1 dB of evenly spaced keyframes and none (plain validity) 0.6-1.2 dB below them.
HORIZON: float | None = 32.0
# Mean coverage below which coverage does not rank frames. On the 4 longest real clips the maps explain 0.93-0.99 of
# every clip but mallard_water's (0.26-0.34: its water is not tracked), and there alone coverage-placed keyframes lost
# to evenly spaced ones by more than 0.2 dB (up to 0.47 where new content appears). Set from that one clip.
RELIABLE_COVERAGE = 0.5
OBJECTIVE = ("how many: greedy on the sum over frames of min(coverage, target); where: each moved to maximise the coverage "
             f"weighted by 1/(1 + d/{HORIZON:g}) for its distance d, every frame kept at the target once reached")


@dataclass(frozen=True)
class KeyframePlan:
    """The user's keyframes, the suggested ones (in the order to edit them) and the coverage they give."""

    given: tuple[int, ...]
    suggested: tuple[int, ...]
    target: float
    coverage_given: np.ndarray  # (T,) with the given keyframes alone (zeros when none was given)
    coverage: np.ndarray  # (T,) with the given and the suggested keyframes
    steps: tuple[np.ndarray, ...]  # (T,) coverage after each suggestion, in order
    spacing: str = "coverage"  # "coverage": placed by the coverage; "even": spaced evenly (the maps explain too little)

    @property
    def keyframes(self) -> list[int]:
        return sorted({*self.given, *self.suggested})

    @property
    def below_target(self) -> list[int]:
        """Frames still under the target with every keyframe."""
        return [int(t) for t in np.flatnonzero(self.coverage < self.target - 1e-9)]

    @property
    def reached(self) -> bool:
        return not self.below_target


def check_target(target: float) -> float:
    """One line when the target is not a fraction in (0, 1]."""
    if not (isinstance(target, (int, float)) and 0 < target <= 1):
        raise UsageError(f"--target is the fraction of every frame to explain, in (0, 1]; got {target} (e.g. 0.95)")
    return float(target)


def check_budget(max_keyframes: int) -> int:
    if max_keyframes < 1:
        raise UsageError(f"--max must be at least 1 (the most keyframes to suggest), got {max_keyframes}")
    return int(max_keyframes)


def suggest_keyframes(table: CoverageTable, given: Sequence[int] = (), *, max_keyframes: int = 5,
                      target: float = 0.95, horizon: float | None = HORIZON) -> KeyframePlan:  # fmt: skip
    """Up to `max_keyframes` candidates to add to `given` (see the module docstring); given keyframes must have been
    measured (`measure_coverage(extra=given)`).

    1. Greedy: add the candidate that raises the sum of min(coverage, target) most, until every frame reaches the
       target, the budget is spent or nothing helps: how many keyframes, and roughly where.
    2. Place: move each suggestion in turn to the candidate that raises the distance-weighted coverage most
       (`CoverageTable.quality`, `horizon`); when step 1 reached the target, only as long as every other frame stays
       at it (when the budget ran out first, the target cannot be had and the weighted coverage alone decides).
       Validity alone prefers keyframes far apart (each frame takes the union of its two neighbours); a warp's
       quality falls with distance, so this keeps them as near their frames as the target allows.
    3. Order the suggestions as the greedy pass of step 1 would add them: the order to edit them in.
    """
    target, max_keyframes = check_target(target), check_budget(max_keyframes)
    given = sorted({int(k) for k in given})
    capped = lambda keys: float(np.minimum(table.coverage(keys), target).sum())  # noqa: E731

    # 1. Greedy
    suggested: list[int] = []
    while len(suggested) < max_keyframes and (table.coverage(given + suggested) < target - 1e-9).any():
        nxt = _best_addition(table, given + suggested, table.candidates, capped)
        if nxt is None:  # no candidate explains anything more
            break
        suggested.append(nxt)

    # 2. Place (at most a few passes: each accepted move strictly raises the weighted coverage)
    weighted = lambda keys: float(table.quality(keys, horizon).sum())  # noqa: E731
    hold = bool((table.coverage(given + suggested) >= target - 1e-9).all())  # the target was reached: keep it so
    for _ in range(8):
        moved = False
        for i in range(len(suggested)):
            others = given + suggested[:i] + suggested[i + 1 :]
            reached = table.coverage(others + [suggested[i]]) >= target - 1e-9 if hold else np.zeros(table.num_frames, bool)
            reached[suggested[i]] = False  # its own frame may go: it is only explained because it is the keyframe
            best, value = None, weighted(others + [suggested[i]])
            for c in table.candidates:
                if c in others or c == suggested[i]:
                    continue
                trial = others + [c]
                if (table.coverage(trial)[reached] >= target - 1e-9).all() and weighted(trial) > value + 1e-9:
                    best, value = c, weighted(trial)
            if best is not None:
                suggested[i], moved = best, True
        if not moved:
            break

    # Too little explained for coverage to rank frames: space them evenly instead (see RELIABLE_COVERAGE)
    spacing = "coverage"
    if suggested and table.coverage(given + suggested).mean() < RELIABLE_COVERAGE:
        suggested, spacing = spaced_keyframes(table, given, len(suggested)), "even"

    # 3. The order to edit them in
    ordered: list[int] = []
    while len(ordered) < len(suggested):
        ordered.append(_best_addition(table, given + ordered, [c for c in suggested if c not in ordered], capped, above=-1.0))
    steps = tuple(table.coverage(given + ordered[: i + 1]) for i in range(len(ordered)))
    coverage_given = table.coverage(given)
    return KeyframePlan(tuple(given), tuple(ordered), target, coverage_given, steps[-1] if steps else coverage_given, steps,
                        spacing)  # fmt: skip


def plan_keyframes(source, given: Sequence[int] = (), *, max_keyframes: int = 5, target: float = 0.95,
                   settings: CoverageSettings = CoverageSettings(), progress: bool = True) -> tuple[KeyframePlan, CoverageTable]:
    """Measure the clip's coverage (`measure_coverage`) and suggest keyframes to add to `given` (negative indices count
    from the end): (the plan, the table it was made from)."""
    target, max_keyframes = check_target(target), check_budget(max_keyframes)
    num_frames = len(source)
    if num_frames < 2:
        raise UsageError(f"the clip has {num_frames} frame(s): with nothing to propagate to, there is no keyframe to suggest")
    for k in given:
        if not -num_frames <= k < num_frames:
            raise UsageError(f"keyframe {k} is outside the clip (0..{num_frames - 1}, or -{num_frames}..-1 from the end)")
    given = sorted({k % num_frames for k in given})
    table = measure_coverage(source, settings, extra=given, progress=progress)
    return suggest_keyframes(table, given, max_keyframes=max_keyframes, target=target), table


def _best_addition(table: CoverageTable, chosen: list[int], candidates, score, above: float | None = None) -> int | None:
    """The candidate (not chosen) whose addition scores highest, if above `above` (default: the score without it);
    ties go to the earlier frame."""
    bar = score(chosen) if above is None else above
    best = None
    for c in candidates:
        if c in chosen:
            continue
        value = score(chosen + [c])
        if value > bar + 1e-9:
            best, bar = c, value
    return best


def spaced_keyframes(table: CoverageTable, given: Sequence[int], count: int) -> list[int]:
    """`count` measured candidates spaced evenly around `given`, as `evenly_spaced` spaces them in a clip: each new
    keyframe goes to the stretch whose frames are farthest from a keyframe (between two keyframes, or the clip's
    start or end, where a keyframe serves frames on one side only), and each stretch's keyframes split it evenly;
    each is then moved to the nearest free candidate."""
    if not given:
        targets = evenly_spaced(table.num_frames, count)
    else:
        last = table.num_frames - 1
        # (start, end, open side): frames from start to end; the open side has no keyframe beyond it
        gaps = [(0, given[0], "start")] if given[0] > 0 else []
        gaps += [(a, b, None) for a, b in zip(given, given[1:]) if b - a > 1]
        gaps += [(given[-1], last, "end")] if given[-1] < last else []
        # the farthest any frame of a stretch is from its keyframes with m more of them, evenly split
        reach = lambda g, m: (g[1] - g[0]) / (2 * m + 1 if g[2] else 2 * m + 2)  # noqa: E731
        shares = [0] * len(gaps)
        for _ in range(count if gaps else 0):
            i = max(range(len(gaps)), key=lambda j: (reach(gaps[j], shares[j]), -j))
            shares[i] += 1
        targets = []
        for (a, b, side), m in zip(gaps, shares):
            step = (b - a) / (m + 0.5 if side else m + 1)
            targets += [b - j * step if side == "start" else a + j * step for j in range(1, m + 1)]
    free, picks = [c for c in table.candidates if c not in given], []
    for t in targets:
        if free:
            pick = min(free, key=lambda c: (abs(c - t), c))
            picks.append(pick)
            free.remove(pick)
    return sorted(picks)


def evenly_spaced(num_frames: int, count: int) -> list[int]:
    """`count` keyframes at the centres of `count` equal parts of the clip (what a user spacing them by hand does, and
    what keeps every frame nearest to a keyframe)."""
    if count < 1:
        raise UsageError(f"need at least one keyframe, got {count}")
    return sorted({min(num_frames - 1, int((i + 0.5) * num_frames / count)) for i in range(count)})
