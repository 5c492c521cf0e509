"""The weight-free propagators on a camera pan, where the right answer at every pixel is known."""

from __future__ import annotations

import numpy as np
import pytest

import fixtures

from magicprop.propagation.baselines import propagate_copy, propagate_flow
from magicprop.errors import UsageError

FRAMES, SIZE, STEP = 9, 96, (1, 2)  # the camera pans 1 px down and 2 px right per frame
INNER = np.s_[24:-24, 24:-24]  # what stays visible from the keyframe: new content enters at most 8 x 2 px from an edge


def panning_clip(seed: int = 0) -> np.ndarray:
    return fixtures.panning_clip(FRAMES, SIZE, STEP, seed)


def edit(frames: np.ndarray) -> np.ndarray:
    """A per-pixel edit (negative, channels rotated): it commutes with translation, so edit(source) is the ground truth."""
    return (255 - frames)[..., ::-1].copy()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


@pytest.fixture(scope="module")
def clip():
    source = panning_clip()
    return source, edit(source)


@pytest.mark.parametrize("keyframe_index", [0, FRAMES // 2, FRAMES - 1])
def test_flow_propagation_reproduces_a_translation(clip, keyframe_index):
    source, truth = clip
    out = propagate_flow(source, truth[keyframe_index], keyframe_index, progress=False)
    assert out.shape == source.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[keyframe_index], truth[keyframe_index])
    for t in range(FRAMES):  # frames before and after the keyframe: both directions of the walk
        assert psnr(out[t][INNER], truth[t][INNER]) > 40, f"frame {t}"
    # Sanity of the yardstick: the keyframe alone, unmoved, is far from the truth elsewhere.
    other = (keyframe_index + 3) % FRAMES
    assert psnr(truth[keyframe_index][INNER], truth[other][INNER]) < 20


def test_flow_propagation_fills_disocclusions_from_the_previous_frame(clip):
    source, truth = clip
    out = propagate_flow(source, truth[0], 0, progress=False)
    # The last 2 columns of frame 1 are new content: the flow points outside the frame, so they keep frame 0's pixels.
    np.testing.assert_array_equal(out[1][:, -2:], out[0][:, -2:])


def test_copy_repeats_the_keyframe(clip):
    source, truth = clip
    out = propagate_copy(source, truth[4], 4)
    assert out.shape == source.shape and out.dtype == np.uint8
    assert all(np.array_equal(frame, truth[4]) for frame in out)


def test_negative_index_counts_from_the_end(clip):
    source, truth = clip
    np.testing.assert_array_equal(propagate_copy(source, truth[-1], -1), propagate_copy(source, truth[-1], FRAMES - 1))


@pytest.mark.parametrize("propagate", [propagate_copy, propagate_flow])
def test_bad_index_or_shape_is_a_one_line_usage_error(clip, propagate):
    source, truth = clip
    for keyframe, index in ((truth[0], FRAMES), (truth[0], -FRAMES - 1), (truth[0][:48], 0), (truth[0][..., :1], 0),
                            (truth[0].astype(np.float32), 0)):  # fmt: skip
        with pytest.raises(UsageError) as info:
            propagate(source, keyframe, index)
        assert "\n" not in str(info.value)
    with pytest.raises(UsageError):
        propagate(source[0], truth[0], 0)  # a single frame is not a clip
