"""Keyframe coverage (`keyframes.measure_coverage`) and suggestions (`keyframes.suggest_keyframes`)."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures import panning_clip

from magicprop.errors import UsageError
from magicprop.keyframes import (
    CoverageSettings, CoverageTable, evenly_spaced, measure_coverage, plan_keyframes, suggest_keyframes,
)  # fmt: skip
from magicprop.keyframes.report import format_plan, plan_record
from magicprop.propagation.flow.maps import anchored_maps

T, H, W = 10, 64, 96


@pytest.fixture(scope="module")
def pan():
    """A window sliding 1 px down and 3 px right per frame over a texture: content enters at the right and bottom."""
    clip = panning_clip(T, (H, W), (1, 3), seed=4)
    return clip, measure_coverage(clip, progress=False)


def test_a_pan_is_explained_exactly_where_the_keyframe_saw_it(pan):
    """Everything inside the keyframe's view is explained (1.0), the content entering at the edges is not (0.0), so the
    coverage is the overlap of the two views."""
    clip, table = pan
    for t in (3, 9):
        seen = np.zeros((H, W), bool)
        seen[: H - t, : W - 3 * t] = True  # what frame t shows of frame 0's view
        explained = table.explained(0, t)
        assert explained[seen].mean() == 1.0 and explained[~seen].mean() == 0.0
    overlap = [(H - t) * (W - 3 * t) / (H * W) for t in range(T)]
    np.testing.assert_allclose(table.coverage([0]), overlap, atol=0.005)
    np.testing.assert_allclose(table.coverage([4])[4:], [1.0, *overlap[1 : T - 4]], atol=0.005)  # forward from 4
    assert table.coverage([0])[-1] < 0.65  # it drops where content enters


def test_coverage_is_flows_validity(pan):
    """What is measured is `flow`'s own anchored validity (at the measuring size, with the coverage's map settings)."""
    clip, table = pan
    settings = CoverageSettings().maps
    for frame in anchored_maps(clip, 5, settings):
        np.testing.assert_array_equal(table.explained(5, frame.index), frame.valid)


def test_each_frame_takes_the_union_of_its_two_neighbouring_keyframes():
    half = np.zeros((2, 4), bool)
    left, right, quarter = half.copy(), half.copy(), half.copy()
    left[:, :2], right[:, 2:], quarter[:, 3] = True, True, True
    masks = {0: {1: np.packbits(left), 2: np.packbits(quarter), 3: np.packbits(quarter)},
             3: {2: np.packbits(right), 1: np.packbits(quarter), 0: np.packbits(right)},
             1: {0: np.packbits(left)}}  # fmt: skip
    table = CoverageTable(4, (2, 4), [0, 1, 3], 1, masks)
    np.testing.assert_allclose(table.coverage([0]), [1, 0.5, 0.25, 0.25])
    np.testing.assert_allclose(table.coverage([0, 3]), [1, 0.75, 0.5, 1])  # frame 2: right half, its quarter inside
    np.testing.assert_allclose(table.coverage([1, 3]), [0.5, 1, 0.5, 1])  # frame 0 only from keyframe 1, before it
    np.testing.assert_allclose(table.coverage([]), 0)
    with pytest.raises(ValueError, match="not measured"):
        table.coverage([2])


def test_chains_stop_when_their_coverage_is_gone():
    """A fast pan (8 px a frame across 64): frame 0 explains 9% of frame 7 and nothing of frame 8, so its chain stops
    there instead of walking on to the end."""
    clip = panning_clip(12, (48, 64), (0, 8), seed=1)
    table = measure_coverage(clip, CoverageSettings(every=4, floor=0.05), progress=False)
    assert table.candidates == [0, 4, 8] and table.stride == 4
    assert sorted(table.masks[0]) == list(range(1, 8)) and table.fraction(0, 7) >= 0.05


@pytest.fixture(scope="module")
def occluder():
    """A still textured scene; a black card over its middle slides off to the right over frames 6-8, revealing what
    frame 0 never showed."""
    back = panning_clip(1, (H, W), (0, 0), seed=2)[0]
    clip = np.repeat(back[None], 14, 0)
    for t in range(14):
        x0 = 24 + min(max(0, t - 5), 3) * 24
        clip[t, 8:56, min(W, x0) : min(W, x0 + 40)] = 0
    return clip


def test_suggestions_pick_the_frame_where_an_occluder_reveals_new_content(occluder):
    plan, table = plan_keyframes(occluder, [0], max_keyframes=3, target=0.95, progress=False)
    assert table.coverage([0])[:6].min() == 1.0 and table.coverage([0])[9:].max() < 0.6  # the reveal, unexplained
    first = plan.suggested[0]
    assert 8 <= first <= 13 and plan.steps[0][8:].min() >= 0.95  # a frame showing all of the reveal: it explains it
    assert plan.reached and plan.coverage.min() >= 0.95 and plan.given == (0,)
    assert list(plan.keyframes) == sorted({0, *plan.suggested})
    # by validity alone (no weight for distance) it is the first frame showing all of it; weighted, the keyframe moves
    # towards the middle of the frames it serves, as far as the target allows
    plain = suggest_keyframes(table, [0], max_keyframes=3, target=0.95, horizon=None)
    assert plain.suggested[0] == 8 and plain.reached
    assert table.quality([0, *plan.suggested], 32).sum() >= table.quality([0, *plain.suggested], 32).sum()


def test_suggestions_stop_at_the_target_and_at_the_budget(occluder):
    plan, table = plan_keyframes(occluder, [0], max_keyframes=1, progress=False)
    assert len(plan.suggested) == 1 and not plan.reached and plan.below_target[:2] == [6, 7]
    again = suggest_keyframes(table, [0], max_keyframes=5, target=0.4)
    assert len(again.suggested) == 1 and again.reached  # one keyframe lifts every frame above 40%
    nothing = suggest_keyframes(table, [0, 8], max_keyframes=5, target=0.45)  # frame 6 is the lowest, at 0.47
    assert nothing.suggested == () and nothing.reached


def test_from_scratch_the_first_suggestion_explains_most_alone(pan):
    clip, table = pan
    plan = suggest_keyframes(table, max_keyframes=1, target=1.0)
    alone = {k: table.coverage([k]).sum() for k in table.candidates}
    assert plan.suggested == (max(alone, key=alone.get),) and plan.given == ()


def test_bad_budget_target_and_indices(occluder):
    _, table = plan_keyframes(occluder[:4], progress=False)
    for target in (0, -0.5, 1.5):
        with pytest.raises(UsageError, match=r"--target .* in \(0, 1\]"):
            suggest_keyframes(table, target=target)
    with pytest.raises(UsageError, match="--max must be at least 1"):
        suggest_keyframes(table, max_keyframes=0)
    with pytest.raises(UsageError, match="keyframe 4 is outside the clip"):
        plan_keyframes(occluder[:4], [4], progress=False)
    with pytest.raises(UsageError, match="1 frame"):
        plan_keyframes(occluder[:1], progress=False)
    assert plan_keyframes(occluder[:4], [-1], progress=False)[0].given == (3,)


def test_quality_weighs_each_pixel_by_the_distance_to_its_keyframe():
    full, half = np.ones((2, 4), bool), np.zeros((2, 4), bool)
    half[:, :2] = True
    masks = {0: {t: np.packbits(full) for t in (1, 2, 3)}, 4: {t: np.packbits(half) for t in (1, 2, 3)}}
    table = CoverageTable(5, (2, 4), [0, 4], 1, masks)
    np.testing.assert_allclose(table.quality([0], None), table.coverage([0]))
    np.testing.assert_allclose(table.quality([0], 2.0), [1, 1 / 1.5, 1 / 2, 1 / 2.5, 0])  # its chain stopped before 4
    # between 0 and 4: frame 3 is nearer 4, which explains half of it; 0 explains the rest, from farther
    np.testing.assert_allclose(table.quality([0, 4], 2.0)[3], 0.5 / 1.5 + 0.5 / 2.5)
    np.testing.assert_allclose(table.quality([0, 4], 2.0)[2], 1 / 2)  # a tie goes to the earlier keyframe, 0


def test_evenly_spaced():
    assert evenly_spaced(16, 2) == [4, 12] and evenly_spaced(231, 3) == [38, 115, 192] and evenly_spaced(3, 5) == [0, 1, 2]


def test_same_result_on_one_worker_and_two(pan):
    clip, table = pan
    one = measure_coverage(clip, CoverageSettings(workers=1), progress=False)
    assert one.candidates == table.candidates
    for k in table.candidates:
        assert one.masks[k].keys() == table.masks[k].keys()
        assert all(np.array_equal(one.masks[k][t], table.masks[k][t]) for t in table.masks[k])


def test_where_the_maps_explain_little_the_suggestions_are_spaced_evenly():
    """Noise in every frame (nothing tracks from one frame to the next, as on water): coverage cannot rank frames, so
    the plan spaces its keyframes evenly and says so; with a given keyframe, around it."""
    clip = np.random.default_rng(5).integers(0, 256, (12, H, W, 3), dtype=np.uint8)
    table = measure_coverage(clip, progress=False)
    plan = suggest_keyframes(table, max_keyframes=3, target=0.95)
    assert plan.coverage.mean() < 0.5 and plan.spacing == "even"
    assert plan.keyframes == evenly_spaced(12, 3) == [2, 6, 10]
    assert "spaced evenly" in format_plan(plan, table) and plan_record(plan, table)["spacing"] == "even"
    around = suggest_keyframes(table, [0], max_keyframes=2, target=0.95)
    assert around.spacing == "even" and around.keyframes == [0, 4, 9]  # 11 frames after 0 split as evenly_spaced splits a clip
    both = suggest_keyframes(table, [0, 11], max_keyframes=2, target=0.95)
    assert both.keyframes == [0, 4, 7, 11]  # between two keyframes: thirds
    tracked, _ = plan_keyframes(panning_clip(T, (H, W), (1, 3), seed=4), max_keyframes=2, progress=False)
    assert tracked.spacing == "coverage"
