"""The keyframe pair's local affine model (`propagation.appearance`): what it learns, and what it carries into a warp
and into patch synthesis."""

from __future__ import annotations

import cv2
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


def scale_dependent_edit(image: np.ndarray, settings: AppearanceSettings) -> np.ndarray:
    """An edit that answers a surface's coarse shading weakly and its fine texture strongly, as a pencil sketch does:
    0.3 x the low-pass plus 1.8 x the rest, about mid-grey."""
    s = image.astype(np.float32)
    low = settings.low_pass(s)
    return np.clip(np.rint(90 + 0.3 * (low - 128) + 1.8 * (s - low)), 0, 255).astype(np.uint8)


def test_two_bands_carry_fine_detail_and_coarse_shading_each_at_its_own_gain():
    """Frame t shows the keyframe relit and with more fine texture (a camera coming into focus): one band carries both
    changes at one gain in between; two bands carry each at the edit's own. (256 px: the bands split at 1.5 px.)"""
    settings = AppearanceSettings()
    keyframe, other = fixtures.panning_clip(2, 256, (0, 3))
    detail = other.astype(np.float32) - settings.low_pass(other)  # another texture's fine detail
    frame = np.clip(np.rint(keyframe * 0.85 + 20 + 0.6 * detail), 0, 255).astype(np.uint8)
    edited, truth = scale_dependent_edit(keyframe, settings), scale_dependent_edit(frame, settings)
    same_place = identity_map(256, 256)
    two = LocalAffine(keyframe, edited, settings)
    one = LocalAffine(keyframe, edited, AppearanceSettings(detail_sigma=0))
    assert one.bands() is None and two.bands() is not None
    carried_two = render_keyframe(edited, same_place, 4, model=two, frame=frame)
    carried_one = render_keyframe(edited, same_place, 4, model=one, frame=frame)
    assert psnr(carried_two, truth) > psnr(carried_one, truth) + 3 and psnr(carried_two, truth) > 42
    # no change of the source: the keyframe itself, with two bands as with one
    np.testing.assert_array_equal(render_keyframe(edited, same_place, 4, model=two, frame=keyframe), edited)
    # an affine colour map answers every scale alike: both bands learn it, and the render is its edit of the frame
    affine = affine_edit(keyframe)
    model = LocalAffine(keyframe, affine)
    assert psnr(render_keyframe(affine, same_place, 4, model=model, frame=frame), affine_edit(frame)) > 40


def test_two_bands_fitted_at_a_smaller_size_render_the_keyframe_itself(textured):
    """A model fitted at a fit size below the pair's (a large clip): its base is at the pair's size, its gains and the
    frame's low-pass at the fit size, and the keyframe renders as itself within a grey level."""
    big = cv2.resize(textured[0], (128, 128), interpolation=cv2.INTER_CUBIC)
    edited = scale_dependent_edit(big, AppearanceSettings())
    model = LocalAffine(big, edited, fit_size=(64, 64))
    bands = model.bands()
    assert bands.base.shape == (128, 128, 3) and bands.fine.shape == bands.excess.shape == (64, 64, 9)
    out = render_keyframe(edited, identity_map(128, 128), 4, model=model, frame=big)
    assert np.abs(out.astype(np.int16) - edited).max() <= 1


def test_window_scales_with_the_frame():
    with pytest.raises(ValueError, match="detail_sigma >= 0"):
        AppearanceSettings(detail_sigma=-1.0)
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
