"""The keyframe pair's local affine model (`propagation.appearance`): what it learns, and what it carries into a warp
and into patch synthesis."""

from __future__ import annotations

import numpy as np
import pytest

import fixtures

from magicprop.errors import UsageError
from magicprop.propagation.flow.maps import identity_map
from magicprop.propagation.flow.appearance import AppearanceSettings, LocalAffine, render_keyframe
from magicprop.propagation.flow.patches import synthesize

M = np.array([[0.5, 0.3, 0.0], [0.0, 0.9, -0.2], [0.2, 0.0, 0.6]], np.float32)  # out x in
C = np.array([40.0, 10.0, 60.0], np.float32)


def affine_edit(image: np.ndarray) -> np.ndarray:
    """A colour edit that is one affine map everywhere (kept inside 0..255 so nothing saturates)."""
    return np.clip(np.rint(image.astype(np.float32) @ M.T + C), 0, 255).astype(np.uint8)


def psnr(a, b) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


@pytest.fixture(scope="module")
def textured():
    return fixtures.panning_clip(2, 64, (0, 3))  # a photo-like texture and the same panned by 3 px


def test_an_affine_edit_is_learnt_as_its_matrix(textured):
    source = textured[0]
    model = LocalAffine(source, affine_edit(source))
    assert model.gain.shape == (64, 64, 9) and model.base.shape == (64, 64, 3) and model.gain.dtype == np.float32
    assert psnr(np.clip(model.predict(source), 0, 255), affine_edit(source)) > 50
    # the three channels of a texture are correlated, so a small window leaves the matrix itself loosely determined
    # (the ridge picks the smallest one that predicts); a wide window with a small ridge finds the matrix
    wide = LocalAffine(source, affine_edit(source), AppearanceSettings(radius=32, eps=1e-4))
    assert np.median(np.abs(wide.gain.reshape(64, 64, 3, 3) - M), axis=(0, 1)).max() < 0.03
    # base = E - A S exactly, so base + A S gives the keyframe back
    back = model.base + np.einsum("hwci,hwi->hwc", model.gain.reshape(64, 64, 3, 3), source.astype(np.float32))
    np.testing.assert_allclose(back, affine_edit(source), atol=1e-3)


def test_a_flat_edit_has_no_gain(textured):
    """An edit that paints one colour over everything does not follow the source: the warp is left as it is."""
    source = textured[0]
    flat = np.full_like(source, (200, 30, 90))
    assert np.abs(LocalAffine(source, flat).gain).max() < 1e-4


def test_render_carries_a_change_of_lighting_into_the_edit(textured):
    keyframe = textured[0]
    brighter = np.clip(keyframe.astype(np.int16) * 11 // 10 + 8, 0, 255).astype(np.uint8)  # frame t: relit, not moved
    edited = affine_edit(keyframe)
    same_place = identity_map(64, 64)
    plain = render_keyframe(edited, same_place, 4)
    carried = render_keyframe(edited, same_place, 4, model=LocalAffine(keyframe, edited),
                              frame=brighter)  # fmt: skip
    np.testing.assert_array_equal(plain, edited)  # the plain warp keeps the keyframe's light
    assert psnr(carried, affine_edit(brighter)) > 38 > psnr(plain, affine_edit(brighter)) + 12
    unchanged = render_keyframe(edited, same_place, 4, model=LocalAffine(keyframe, edited),
                                frame=keyframe)  # fmt: skip
    np.testing.assert_array_equal(unchanged, edited)  # no change of the source: the keyframe itself


def test_window_scales_with_the_frame():
    s = AppearanceSettings(radius=4.0)
    assert (s.window(256, 512), s.window(512, 512), s.window(64, 64)) == (4, 8, 2)  # never under 2 px


def test_patch_synthesis_takes_the_edits_response_to_new_colours(textured):
    """A hole whose source colours the keyframe never had at that place: patches from elsewhere bring their own colours
    without the model, the edit of the hole's colours with it."""
    keyframe = textured[0]
    frame = keyframe.copy()
    hole = np.zeros((64, 64), bool)
    hole[24:40, 24:40] = True
    frame[hole] = np.clip(frame[hole].astype(np.int16) + 40, 0, 255).astype(np.uint8)  # relit inside the hole
    edited, truth = affine_edit(keyframe), affine_edit(frame)
    model = LocalAffine(keyframe, edited)
    guide_s, guide_t = keyframe[..., :3] / np.float32(255), frame[..., :3] / np.float32(255)
    init = truth.copy()
    init[hole] = 0  # never read
    plain = synthesize(edited, guide_s, guide_t, hole, init, seed=1)
    with_model = synthesize(edited, guide_s, guide_t, hole, init, seed=1,
                            appearance=(model.base, model.gain, frame))  # fmt: skip
    np.testing.assert_array_equal(with_model[~hole], truth[~hole])  # kept pixels stay exact
    assert psnr(with_model[hole], truth[hole]) > psnr(plain[hole], truth[hole]) + 6
    with pytest.raises(UsageError, match="appearance must be"):
        synthesize(edited, guide_s, guide_t, hole, init, appearance=(model.base, model.gain[..., :3], frame))
