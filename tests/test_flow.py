"""Optical flow, warping and the occlusion check on images whose true motion is known exactly."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from magicprop.errors import UsageError
from magicprop.motion.flow import occlusion_mask, optical_flow, outside_frame, warp

SHIFT = (3, 2)  # (dy, dx): b = a moved 3 px down and 2 px right
INNER = np.s_[12:-12, 12:-12]  # away from np.roll's wrapped border and DIS's edge patches


def smooth_noise(h: int = 64, w: int = 64, seed: int = 0) -> np.ndarray:
    """uint8 RGB noise blurred at three scales: texture at every size DIS and Farneback look at, no flat patches."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.float32)
    for sigma in (1.5, 3.0, 6.0):
        n = cv2.GaussianBlur(rng.normal(size=(h, w, 3)).astype(np.float32), (0, 0), sigma)
        img += n / n.std()
    img = (img - img.min()) / (img.max() - img.min()) * 255
    return img.round().astype(np.uint8)


@pytest.fixture(scope="module")
def pair():
    a = smooth_noise()
    return a, np.roll(a, SHIFT, axis=(0, 1))  # b[y + 3, x + 2] = a[y, x]


@pytest.mark.parametrize("method", ["dis", "farneback"])
def test_flow_of_a_translation_is_the_translation(pair, method):
    a, b = pair
    flow_ab = optical_flow(a, b, method=method)
    flow_ba = optical_flow(b, a, method=method)
    assert flow_ab.shape == (64, 64, 2) and flow_ab.dtype == np.float32
    # a[y, x] = b[y + 3, x + 2]: the flow a -> b is (+2, +3) in (dx, dy); b -> a is its negative.
    err_ab = np.linalg.norm(flow_ab[INNER] - np.array([2.0, 3.0]), axis=2)
    err_ba = np.linalg.norm(flow_ba[INNER] - np.array([-2.0, -3.0]), axis=2)
    assert np.median(err_ab) < 0.25 and np.median(err_ba) < 0.25


@pytest.mark.parametrize("method", ["dis", "farneback"])
def test_warping_b_along_the_flow_gives_back_a(pair, method):
    a, b = pair
    warped = warp(b, optical_flow(a, b, method=method))
    assert warped.dtype == np.uint8 and warped.shape == a.shape
    assert np.abs(warped[INNER].astype(int) - a[INNER]).mean() < 1.0  # grey levels, out of 255


def test_warp_with_an_exact_integer_flow_is_exact(pair):
    a, b = pair
    flow = np.zeros((64, 64, 2), np.float32)
    flow[..., 0], flow[..., 1] = SHIFT[1], SHIFT[0]
    np.testing.assert_array_equal(warp(b, flow)[: -SHIFT[0], : -SHIFT[1]], a[: -SHIFT[0], : -SHIFT[1]])
    # float, single-channel and many-channel images take the same path and keep their dtype and shape
    as_float = warp(b.astype(np.float64) / 255, flow)
    assert as_float.dtype == np.float64
    np.testing.assert_allclose(as_float[:-3, :-2], a[:-3, :-2] / 255, atol=1e-6)
    assert warp(b[..., 0], flow).shape == (64, 64)
    wide = np.concatenate([b, b, b], axis=2)  # 9 channels: more than cv2.remap takes at once
    np.testing.assert_array_equal(warp(wide, flow)[:-3, :-2], np.concatenate([a, a, a], axis=2)[:-3, :-2])


def test_zero_flow_is_identity(pair):
    a, _ = pair
    np.testing.assert_array_equal(warp(a, np.zeros((64, 64, 2), np.float32)), a)


def test_occlusion_mask_is_clear_for_a_translation_and_flags_inconsistent_flow(pair):
    a, b = pair
    flow_ab, flow_ba = optical_flow(a, b), optical_flow(b, a)
    mask = occlusion_mask(flow_ab, flow_ba)
    assert mask.dtype == bool and mask.shape == (64, 64)
    assert mask[INNER].mean() < 0.02
    # A backward flow that does not undo the forward one (here: the same direction twice) fails everywhere.
    assert occlusion_mask(flow_ab, flow_ab)[INNER].all()


def test_outside_frame_marks_exactly_the_pixels_that_leave():
    flow = np.zeros((10, 12, 2), np.float32)
    flow[..., 0] = 2.0  # every pixel looks 2 columns to the right
    out = outside_frame(flow)
    assert out[:, -2:].all() and not out[:, :-2].any()


def test_bad_inputs_raise_one_line_usage_errors(pair):
    a, _ = pair
    for bad in (lambda: optical_flow(a, a[:32]), lambda: optical_flow(a, a, method="raft"),
                lambda: optical_flow(a.astype(np.float32), a.astype(np.float32)),
                lambda: warp(a, np.zeros((32, 32, 2), np.float32))):  # fmt: skip
        with pytest.raises(UsageError) as info:
            bad()
        assert "\n" not in str(info.value)
