"""The `lut` baseline (`propagation.lut`): a colour lookup learnt from the keyframe pair, no motion."""

from __future__ import annotations

import numpy as np
import pytest

from magicprop.errors import UsageError
from magicprop.propagation.base import PropagationRequest
from magicprop.propagation.baselines import LutPropagator, apply_lut, fit_lut

FRAMES, SIZE = 5, 48


def keyframe(seed: int = 0) -> np.ndarray:
    """Smooth colour blobs over most of the RGB cube, plus grain: many distinct colours."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:SIZE, :SIZE] / SIZE
    base = np.stack([np.sin(3 * x + 1) * np.cos(2 * y), np.cos(4 * x * y + 0.5), np.sin(2 * (x + y) + 2)], -1)
    image = 127.5 + 120 * base + rng.normal(0, 6, (SIZE, SIZE, 3))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def clip_of(key: np.ndarray) -> np.ndarray:
    """(FRAMES, H, W, 3) frames that rearrange the keyframe's pixels (rolls, flips): every colour appears in it."""
    frames = [np.roll(key, (3 * t, 5 * t), axis=(0, 1)) for t in range(FRAMES)]
    frames[1], frames[3] = frames[1][::-1], frames[3][:, ::-1]
    frames[2] = key  # the keyframe itself, at index 2
    return np.ascontiguousarray(frames)


COLOUR_MAPS = {
    "permutation": lambda c: c[..., [2, 0, 1]],
    "gamma": lambda c: np.rint(255 * (c / 255.0) ** np.array([2.2, 1.6, 1.2])).astype(np.uint8),
    "negative": lambda c: 255 - c,
    "colour matrix": lambda c: np.clip(np.rint(c @ np.array([[0.6, 0.2, 0.1], [0.3, 0.7, 0.1], [0.1, 0.1, 0.8]])),
                                       0, 255).astype(np.uint8),  # fmt: skip
}


@pytest.mark.parametrize("name", list(COLOUR_MAPS))
def test_lut_reproduces_a_pure_colour_map_on_every_frame(name):
    colour_map = COLOUR_MAPS[name]
    source = clip_of(keyframe())
    truth = colour_map(source)
    frames = np.stack(list(LutPropagator()(PropagationRequest(source=source, keyframes={2: truth[2]}, progress=False))))
    assert frames.shape == source.shape and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames[2], truth[2])
    assert np.abs(frames.astype(int) - truth).max() <= 1


def test_an_unseen_colour_maps_like_its_nearest_seen_colours():
    # The keyframe holds every colour of a 4-level grid over [0, 120]^3 and nothing brighter. A colour with red 200
    # never appears: it must map like the nearest colour that does, (120, 60, 60), within a bin (255 / 31 levels).
    grid = np.stack(np.meshgrid(*[np.arange(0, 121, 4)] * 3, indexing="ij"), -1).reshape(-1, 3)  # 31^3 colours
    key = np.zeros((173 * 173, 3), np.uint8)
    key[: len(grid)] = grid
    key = key.reshape(173, 173, 3)
    lut = fit_lut(key, key[..., [2, 0, 1]])
    out = apply_lut(lut, np.array([[[200, 60, 60], [60, 250, 10]]], np.uint8)).astype(int)
    assert np.abs(out[0, 0] - (60, 120, 60)).max() <= 255 / 31 + 1
    assert np.abs(out[0, 1] - (10, 60, 120)).max() <= 255 / 31 + 1
    assert np.isfinite(lut).all() and lut.min() >= 0 and lut.max() <= 255  # every node filled, in range


def test_a_flat_keyframe_maps_everything_to_its_edit():
    key = np.full((8, 8, 3), 90, np.uint8)
    edit = np.full((8, 8, 3), (10, 200, 30), np.uint8)
    out = apply_lut(fit_lut(key, edit, bins=8), np.random.default_rng(0).integers(0, 256, (4, 6, 3), dtype=np.uint8))
    assert np.abs(out.astype(int) - (10, 200, 30)).max() <= 1


@pytest.mark.parametrize("bins", [2, 4, 17, 32])
def test_fit_and_apply_shapes_and_dtypes(bins):
    key = keyframe()
    lut = fit_lut(key, key, bins=bins)
    assert lut.shape == (bins, bins, bins, 3) and lut.dtype == np.float32
    for shape in [(SIZE, SIZE, 3), (2, SIZE, SIZE, 3), (7, 3)]:
        frames = np.resize(key, shape).astype(np.uint8)
        out = apply_lut(lut, frames)
        assert out.shape == shape and out.dtype == np.uint8
        assert np.abs(out.astype(int) - frames).max() <= 1  # the identity edit learns the identity, at any lattice


def test_progress_counts_frames_without_the_keyframe():
    source = clip_of(keyframe())
    calls = []
    request = PropagationRequest(source=source, keyframes={2: source[2]}, progress=False,
                                 callback=lambda done, total: calls.append((done, total)))  # fmt: skip
    frames = list(LutPropagator().render(request))
    assert len(frames) == FRAMES and calls == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_several_keyframes_crossfade_between_two_luts():
    source = clip_of(keyframe())
    negative = COLOUR_MAPS["negative"](source)
    request = PropagationRequest(source=source, keyframes={0: negative[0], 4: source[4]}, progress=False)
    frames = np.stack(list(LutPropagator()(request)))
    np.testing.assert_array_equal(frames[0], negative[0])
    np.testing.assert_array_equal(frames[4], source[4])


BAD_FIT = {
    "float source": (np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 3), np.uint8), 32),
    "grey edit": (np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8), 32),
    "sizes differ": (np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8), 32),
    "one bin": (np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 3), np.uint8), 1),
    "bins float": (np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 3), np.uint8), 8.0),
}


@pytest.mark.parametrize("case", list(BAD_FIT))
def test_fit_lut_rejects_bad_inputs(case):
    with pytest.raises(UsageError, match="^fit_lut: [^\n]*$"):
        fit_lut(*BAD_FIT[case])


@pytest.mark.parametrize("lut, frames", [
    (np.zeros((4, 4, 3, 3), np.float32), np.zeros((2, 2, 3), np.uint8)),
    (np.zeros((4, 4, 4, 3), np.uint8), np.zeros((2, 2, 3), np.uint8)),
    (np.zeros((4, 4, 4, 3), np.float32), np.zeros((2, 2, 3), np.float32)),
    (np.zeros((4, 4, 4, 3), np.float32), np.zeros((2, 2, 4), np.uint8)),
    (np.full((4, 4, 4, 3), np.nan, np.float32), np.zeros((2, 2, 3), np.uint8)),
])  # fmt: skip
def test_apply_lut_rejects_bad_inputs(lut, frames):
    with pytest.raises(UsageError, match="^apply_lut: [^\n]*$"):
        apply_lut(lut, frames)
