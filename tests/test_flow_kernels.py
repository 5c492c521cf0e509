"""The fused numba kernels of the full-size `flow` render give the numbers of the OpenCV / numpy code they replace:
bit-identical on random input (borders and far-outside positions included), and the same in every call."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from magicprop.propagation.flow import appearance, maps
from magicprop.propagation.flow.geometry import colour_mismatch, inside, local_distance
from magicprop.allocator import keep_freed_pages
from magicprop.propagation.flow.resolution import enlarge


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def _random_map(rng, h, w, noise):
    """A zoom and shift with per-pixel noise: positions inside, across the border and (noise 40) far outside."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack([xs * 1.07 - 2 + rng.standard_normal((h, w)) * noise,
                     ys * 0.96 + 3 + rng.standard_normal((h, w)) * noise], axis=2).astype(np.float32)  # fmt: skip


@pytest.mark.parametrize("noise", [0.0, 0.8, 40.0])
def test_compose_lanczos_is_cv2_lanczos_then_compose_gain(rng, noise):
    h, w = 57, 83
    base = (rng.standard_normal((61, 90, 3)) * 80).astype(np.float32)
    map_ = _random_map(rng, h, w, noise)
    gain = (rng.standard_normal((13, 19, 9)) * 0.5).astype(np.float32)
    frame = rng.integers(0, 256, (h, w, 3), np.uint8)
    sampled = cv2.remap(base, map_[..., 0].copy(), map_[..., 1].copy(), cv2.INTER_LANCZOS4,
                        borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
    expected = np.empty((h, w, 3), np.uint8)
    appearance.compose_gain(sampled, gain, frame, expected)
    got = appearance.compose_lanczos(base, map_, gain, frame)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(appearance.compose_lanczos(base, map_, gain, frame), got)  # deterministic


@pytest.mark.parametrize("noise", [0.0, 40.0])
def test_the_detail_band_term_is_its_numpy_expression(rng, noise):
    """base + A frame - X low, X and low bilinear on the gain's grid (`enlarge`), within float rounding."""
    h, w = 57, 83
    base = (rng.standard_normal((61, 90, 3)) * 80 + 128).astype(np.float32)
    map_ = _random_map(rng, h, w, noise)
    gain, excess = ((rng.standard_normal((13, 19, 9)) * 0.5).astype(np.float32) for _ in range(2))
    low = rng.uniform(0, 255, (13, 19, 3)).astype(np.float32)
    frame = rng.integers(0, 256, (h, w, 3), np.uint8)
    got = appearance.compose_lanczos(base, map_, gain, frame, excess, low)
    sampled = cv2.remap(base, map_[..., 0].copy(), map_[..., 1].copy(), cv2.INTER_LANCZOS4,
                        borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
    a, x, l = enlarge(gain, (h, w)), enlarge(excess, (h, w)), enlarge(low, (h, w))
    want = sampled + np.einsum("hwci,hwi->hwc", a.reshape(h, w, 3, 3), frame.astype(np.float32))
    want -= np.einsum("hwci,hwi->hwc", x.reshape(h, w, 3, 3), l)
    want = np.clip(np.rint(want), 0, 255)
    assert np.abs(got.astype(np.float32) - want).max() <= 1 and np.mean(got != want) < 0.01
    without = appearance.compose_lanczos(base, map_, gain, frame)  # no band term: the one-band kernel
    np.testing.assert_array_equal(without, appearance.compose_lanczos(base, map_, gain, frame, None, None))


def test_lanczos_table_rows_are_normalised_and_exact_at_whole_pixels():
    table = appearance.lanczos_table()
    assert table.shape == (1024, 64) and table.dtype == np.float32
    np.testing.assert_allclose(table.sum(axis=1), 1.0, atol=1e-5)
    assert table[0, 3 * 8 + 3] == 1 and np.count_nonzero(table[0]) == 1  # fraction (0, 0): the pixel itself


def test_local_distance_is_the_numpy_expression(rng):
    a, b = (rng.integers(0, 256, (45, 71, 3), np.uint8) for _ in range(2))
    d = cv2.absdiff(cv2.GaussianBlur(a, (0, 0), 1.0), cv2.GaussianBlur(b, (0, 0), 1.0)).astype(np.float32)
    expected = cv2.GaussianBlur(d[..., 0] ** 2 + d[..., 1] ** 2 + d[..., 2] ** 2, (0, 0), 2.0)
    np.testing.assert_array_equal(local_distance(a, b, 1.0, 2.0), expected)
    for threshold in (20.0, 60.0):
        np.testing.assert_array_equal(colour_mismatch(a, b, threshold, 1.0, 2.0), expected > threshold**2)


def test_full_size_validity_is_the_numpy_expression(rng):
    h, w = 40, 66
    map_ = _random_map(rng, h, w, 3.0)
    distance = (rng.random((h, w)) * 1600).astype(np.float32)
    occluded = enlarge(rng.random((10, 17)).round().astype(np.float32), (h, w))
    valid, fully = np.empty((h, w), bool), np.empty((h, w), bool)
    for margin in (-0.5, 0.0, 1.0):
        maps._full_size_validity(map_, np.float32(margin), distance, np.float32(28.0**2), occluded,
                                 np.float32(1.0 - 1e-6), valid, fully)  # fmt: skip
        np.testing.assert_array_equal(valid, inside(map_, margin) & ~(distance > 28.0**2) & (occluded < 1.0 - 1e-6))
        np.testing.assert_array_equal(fully, occluded >= 1.0 - 1e-6)
    assert 0 < fully.sum() < fully.size and 0 < valid.sum() < valid.size  # both outcomes exercised


def test_keep_freed_pages_is_set_once():
    assert keep_freed_pages() is keep_freed_pages()  # cached: one mallopt per process, whatever it answered


def test_freed_pages_are_kept_for_a_scaled_render_up_to_1440p_only(monkeypatch):
    """A 1080p render keeps its temporaries' pages (speed); a 4K one hands them back (memory); a clip measured at its
    own size asks for nothing."""
    import magicprop.propagation.flow.maps as maps

    calls = []
    monkeypatch.setattr(maps, "keep_freed_pages", lambda: calls.append(1))
    for (h, w), expected in [((1080, 1920), 1), ((2160, 3840), 0), ((240, 320), 0)]:
        calls.clear()
        clip = np.zeros((2, h, w, 3), np.uint8)
        chain = maps.AnchoredChain(clip, 0, 1)
        assert len(calls) == expected and chain.scaled == (h * w > maps.MapSettings.measure_pixels)
