"""Guided patch synthesis (`propagation.patches`): holes filled from matching patches, guides steering the choice."""

from __future__ import annotations

import numpy as np
import pytest

from magicprop.errors import UsageError
from magicprop.propagation.flow import kernels as patch_kernels
from magicprop.propagation.flow.patches import synthesize

SIZE = 128


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255**2 / mse))


def texture(dy: int = 0, dx: int = 0, size: int = SIZE) -> np.ndarray:
    """A smooth periodic RGB texture (periods 24..48 px) shifted by (dy, dx): each shift's patches appear in another."""
    y, x = np.mgrid[dy : dy + size, dx : dx + size].astype(np.float64)
    r = 128 + 60 * np.sin(2 * np.pi * x / 32) + 50 * np.cos(2 * np.pi * (y / 24 + x / 48))
    g = 128 + 70 * np.sin(2 * np.pi * (y / 32 + 0.3)) * np.cos(2 * np.pi * x / 48)
    b = 128 + 80 * np.sin(2 * np.pi * (x + y) / 40)
    return np.clip(np.rint(np.stack([r, g, b], -1)), 0, 255).astype(np.uint8)


def stripes(shift: int = 0, size: int = SIZE) -> np.ndarray:
    """Diagonal stripes of four colours, 3 px wide, shifted by `shift`. (Diagonal, so that the kept band around a
    square hole shows stripe edges on every side: vertical stripes leave the band beside a hole one flat colour, and
    then the stripes' phase inside is a guess.)"""
    palette = np.array([[230, 40, 40], [40, 200, 60], [30, 60, 220], [240, 220, 40]], np.uint8)
    y, x = np.mgrid[:size, :size]
    return palette[((x + y + shift) // 3) % 4]


def no_guides(size: int = SIZE) -> np.ndarray:
    return np.zeros((size, size, 0), np.float32)


def square(top: int, left: int, side: int, size: int = SIZE) -> np.ndarray:
    fill = np.zeros((size, size), bool)
    fill[top : top + side, left : left + side] = True
    return fill


@pytest.mark.parametrize("side", [8, 24])
@pytest.mark.parametrize("kind", ["texture", "stripes"])
def test_a_hole_is_filled_with_the_patches_that_match(kind, side):
    # The keyframe shows the pattern; frame t is the same pattern shifted, with a square hole. No guides: only the
    # kept pixels around the hole (the style term) say what belongs inside.
    style, truth = (texture(), texture(5, 9)) if kind == "texture" else (stripes(), stripes(7))
    fill = square(50, 40, side)
    init = truth.copy()
    init[fill] = 0
    out = synthesize(style, no_guides(), no_guides(), fill, init)
    mean_fill = np.broadcast_to(truth[~fill].mean(0), truth[fill].shape)
    assert psnr(out[fill], truth[fill]) > max(30.0, psnr(mean_fill, truth[fill]) + 15)


def test_guides_steer_each_pixel_to_the_region_with_the_same_guide():
    # Style: red on the left, blue on the right, the source guide 0 / 1 likewise. Frame t's guide is 0 on top and 1 at
    # the bottom, and every pixel is to synthesise: the top must come out red and the bottom blue.
    red, blue = np.array([220, 30, 30], np.uint8), np.array([30, 40, 210], np.uint8)
    rng = np.random.default_rng(0)
    style = np.where(np.arange(64)[None, :, None] < 32, red, blue).astype(np.uint8) * np.ones((64, 1, 1), np.uint8)
    style = np.clip(style.astype(int) + rng.integers(-10, 11, style.shape), 0, 255).astype(np.uint8)  # a little grain
    source_guide = (np.arange(64)[None, :, None] >= 32).astype(np.float32) * np.ones((64, 1, 1), np.float32)
    target_guide = np.ascontiguousarray(source_guide.transpose(1, 0, 2))
    fill = np.ones((64, 64), bool)
    out = synthesize(style, source_guide, target_guide, fill, np.zeros_like(style)).astype(int)
    top, bottom = out[:28].reshape(-1, 3), out[36:].reshape(-1, 3)  # away from the guide's edge by more than a patch
    assert np.abs(top - red).max() <= 12 and np.abs(bottom - blue).max() <= 12


def test_guide_weights_decide_between_guides_and_style():
    # A hole whose surroundings say "stripes continue" while the guide says "take the flat left region": with the guide
    # weighted heavily the hole takes the flat colour, with it weighted zero it takes the stripes.
    style = stripes()
    style[:, :40] = 128
    source_guide = np.zeros((SIZE, SIZE, 1), np.float32)
    source_guide[:, :40] = 1
    target_guide = np.zeros((SIZE, SIZE, 1), np.float32)
    fill = square(50, 70, 20)
    target_guide[fill] = 1
    init = stripes()
    heavy = synthesize(style, source_guide, target_guide, fill, init, guide_weights=[50.0])
    none = synthesize(style, source_guide, target_guide, fill, init, guide_weights=[0.0])
    inner = square(54, 74, 12)
    assert np.abs(heavy[inner].astype(int) - 128).max() <= 2
    assert psnr(none[inner], stripes()[inner]) > 30


def test_pixels_outside_fill_are_kept_exactly_and_inside_init_is_never_read():
    rng = np.random.default_rng(1)
    style = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    guide = rng.random((40, 56, 2), dtype=np.float32)
    fill = rng.random((40, 56)) < 0.1
    init = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    out = synthesize(style, guide, guide[::-1].copy(), fill, init)
    assert out.shape == init.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[~fill], init[~fill])
    other = init.copy()
    other[fill] = 255 - other[fill]
    np.testing.assert_array_equal(synthesize(style, guide, guide[::-1].copy(), fill, other), out)


def test_an_empty_fill_returns_init():
    style = texture(size=16)
    out = synthesize(style, no_guides(16), no_guides(16), np.zeros((16, 16), bool), style[::-1].copy())
    np.testing.assert_array_equal(out, style[::-1])


def test_the_same_seed_gives_bit_identical_frames():
    style, init = texture(), texture(5, 9)
    guide_s = np.stack(np.mgrid[:SIZE, :SIZE], -1).astype(np.float32) / SIZE
    fill = square(30, 30, 40)
    runs = [synthesize(style, guide_s, guide_s, fill, init, seed=3) for _ in range(2)]
    np.testing.assert_array_equal(runs[0], runs[1])


@pytest.mark.parametrize("shape", [(5, 5), (5, 9), (7, 13), (17, 6), (33, 20)])
def test_any_frame_size_at_least_a_patch(shape):
    rng = np.random.default_rng(2)
    style = rng.integers(0, 256, shape + (3,), dtype=np.uint8)
    guide = rng.random(shape + (1,), dtype=np.float32)
    for fill in (np.ones(shape, bool), rng.random(shape) < 0.3):
        out = synthesize(style, guide, guide, fill, style)
        assert out.shape == shape + (3,)
        np.testing.assert_array_equal(out[~fill], style[~fill])
        # with the target's guides equal to the source's, each patch matches itself: the frame is reproduced
        assert psnr(out, style) > 40


def test_only_the_pixels_near_the_fill_are_searched():
    # What makes a frame with few pixels to fill cheap: the searched centres are those whose patch touches them.
    fill = np.zeros((256, 256), bool)
    fill[40:80, 100:140] = True  # 2.4% of the frame
    index = np.empty(fill.shape, np.int64)
    few, _ = patch_kernels.centres(fill, 2, 2, index)
    everything, _ = patch_kernels.centres(np.ones_like(fill), 2, 2, index)
    assert len(few) < 0.04 * fill.size / 4 and len(few) < 0.05 * len(everything)


def test_the_python_kernels_agree_with_numba_bit_for_bit(monkeypatch):
    # Every kernel's py_func is the plain-Python reading of the same code; swapping them all in must not change a bit.
    rng = np.random.default_rng(4)
    style = texture(size=24)
    guide_s = rng.random((24, 24, 2), dtype=np.float32)
    guide_t = np.roll(guide_s, 2, axis=1)
    fill = square(6, 8, 8, size=24)
    init = np.roll(style, 2, axis=1)
    appearance = (rng.random((24, 24, 3), dtype=np.float32) * 255, rng.random((24, 24, 9), dtype=np.float32),
                  init.astype(np.float32))  # fmt: skip  (the appearance model's gather kernel too)
    kwargs = dict(levels=2, iterations=2, seed=5, appearance=appearance)
    jitted = synthesize(style, guide_s, guide_t, fill, init, **kwargs)
    for name in patch_kernels.KERNELS:
        monkeypatch.setattr(patch_kernels, name, getattr(patch_kernels, name).py_func)
    assert not hasattr(patch_kernels.search_pass, "py_func")  # plain Python from here on
    python = synthesize(style, guide_s, guide_t, fill, init, **kwargs)
    np.testing.assert_array_equal(python, jitted)


GOOD = dict(
    style=np.zeros((8, 8, 3), np.uint8), source_guide=np.zeros((8, 8, 1), np.float32),
    target_guide=np.zeros((8, 8, 1), np.float32), fill=np.ones((8, 8), bool), init=np.zeros((8, 8, 3), np.uint8),
)  # fmt: skip
BAD = {
    "style float": dict(style=np.zeros((8, 8, 3), np.float32)),
    "style grey": dict(style=np.zeros((8, 8), np.uint8)),
    "init size": dict(init=np.zeros((8, 9, 3), np.uint8)),
    "fill not bool": dict(fill=np.ones((8, 8), np.uint8)),
    "fill 3-D": dict(fill=np.ones((8, 8, 1), bool)),
    "guide int": dict(source_guide=np.zeros((8, 8, 1), np.int32)),
    "guide channels": dict(target_guide=np.zeros((8, 8, 2), np.float32)),
    "guide nan": dict(target_guide=np.full((8, 8, 1), np.nan, np.float32)),
    "guide list": dict(source_guide=[[0.0]]),
    "even patch": dict(patch_size=4),
    "patch too big": dict(patch_size=9),
    "levels 0": dict(levels=0),
    "iterations float": dict(iterations=2.0),
    "negative weight": dict(guide_weights=[-1.0]),
    "weights count": dict(guide_weights=[1.0, 1.0]),
    "weights text": dict(guide_weights="heavy"),
    "style weight nan": dict(style_weight=float("nan")),
    "seed text": dict(seed="0"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_inputs_raise_one_line(case):
    kwargs = {**GOOD, **BAD[case]}
    with pytest.raises(UsageError) as err:
        synthesize(**kwargs)
    assert "\n" not in str(err.value) and str(err.value).startswith("synthesize:")
