"""Guided upsampling (`flow.upsample`): an edit made at the working size, brought to the source's size through its local
relation to the source."""

from __future__ import annotations

import numpy as np
import pytest

import fixtures

from magicprop.evaluation.appearance_edits import EDITS
from magicprop.evaluation.ground_truth import sharpness
from magicprop.propagation.flow.resolution import shrink
from magicprop.propagation.flow.upsample import guided_upsample, plain_upsample

M = np.array([[0.5, 0.3, 0.0], [0.0, 0.9, -0.2], [0.2, 0.0, 0.6]], np.float32)  # out x in
C = np.array([40.0, 10.0, 60.0], np.float32)


@pytest.fixture(scope="module")
def photo():
    """(360, 480, 3) uint8: a texture with detail at every scale, down to single pixels (as footage has)."""
    rng = np.random.default_rng(3)
    base = fixtures.panning_clip(1, (360, 480), (0, 0), seed=3)[0].astype(np.float32)
    grain = rng.normal(0, 6, base.shape).astype(np.float32)
    return np.clip(np.rint(base * 0.85 + 20 + grain), 0, 255).astype(np.uint8)


def colour_map(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image.astype(np.float32) @ M.T + C), 0, 255).astype(np.uint8)


def test_a_pure_colour_map_is_reproduced_at_full_size(photo):
    """Edited at half the size, brought up: an affine colour map is the full-size edit to a grey level; a tone curve
    with a split tint (the `grade` edit) to two, where a plain resample misses by ~8."""
    small = shrink(photo, (180, 240))
    out = guided_upsample(colour_map(small), photo)
    assert out.shape == photo.shape and out.dtype == np.uint8
    diff = np.abs(out.astype(np.int16) - colour_map(photo))[4:-4, 4:-4]
    assert diff.max() <= 2 and diff.mean() < 0.6
    grade = EDITS["grade"]
    graded = np.abs(guided_upsample(grade(small), photo).astype(np.int16) - grade(photo))[4:-4, 4:-4]
    plain = np.abs(plain_upsample(grade(small), photo.shape[:2]).astype(np.int16) - grade(photo))[4:-4, 4:-4]
    assert np.percentile(graded, 99) <= 2 and graded.mean() < 0.8
    assert plain.mean() > 4 * graded.mean()


def test_a_painted_in_object_falls_back_to_the_resample(photo):
    """An object the source does not have (another texture pasted over it): inside it, the result is the plain
    resample (the source's detail does not leak into it); outside, the source's detail is carried."""
    small = shrink(photo, (180, 240))
    edit = colour_map(small)
    other = fixtures.panning_clip(1, (100, 100), (0, 0), seed=11)[0]
    edit[40:140, 70:170] = other
    out = guided_upsample(edit, photo).astype(np.float32)
    plain = plain_upsample(edit, photo.shape[:2]).astype(np.float32)
    inside = np.s_[100:300, 160:320]  # the object at full size, 20 px in from its edges
    assert np.sqrt(np.mean((out[inside] - plain[inside]) ** 2)) < 1.0
    outside = np.s_[300:356, 4:-4]
    truth = colour_map(photo)[outside].astype(np.float32)
    assert np.abs(out[outside] - truth).mean() < 0.6 < 2.5 < np.abs(plain[outside] - truth).mean()


def test_guided_is_sharper_than_a_resample_and_a_same_size_edit_is_kept(photo):
    small = shrink(photo, (180, 240))
    sketch = EDITS["sketch"]
    truth = sharpness(sketch(photo)[None])[0]
    guided = sharpness(guided_upsample(sketch(small), photo)[None])[0]
    plain = sharpness(plain_upsample(sketch(small), photo.shape[:2])[None])[0]
    assert guided > 1.3 * plain and guided < 1.2 * truth
    same = colour_map(photo)
    assert guided_upsample(same, photo) is same
    with pytest.raises(ValueError, match="uint8"):
        guided_upsample(same.astype(np.float32), photo)
