"""Depth: the tiny Depth Anything through the real loading code, clip-level normalisation, depth files, the cache, the CLI."""

import json
import time

import numpy as np
import pytest

from fixtures import save_tiny_depth_model_with_signal
from magicprop.cli import main
from magicprop.errors import MagicPropError, UsageError
from magicprop.motion import (
    DEFAULT_DEPTH_MODEL,
    DepthEstimator,
    colorize_depth,
    estimate_clip_depth,
    load_depth,
    normalize_clip_depth,
    resize_depth,
    save_depth,
)

T, H, W = 5, 40, 72  # non-square and not a multiple of the model's patch size (14)


@pytest.fixture(scope="module")
def depth_folder(tmp_path_factory):
    return save_tiny_depth_model_with_signal(tmp_path_factory.mktemp("models") / "depth")


@pytest.fixture(scope="module")
def estimator(depth_folder):
    return DepthEstimator.from_pretrained(str(depth_folder), device="cpu")


@pytest.fixture(scope="module")
def frames():
    from magicprop.synthetic import render_clip

    return render_clip(1, frames=T, size=(H, W)).source


class CountingEstimator:
    """Wraps an estimator and counts how often the model runs."""

    def __init__(self, inner):
        self.inner, self.model_id, self.calls = inner, inner.model_id, 0

    def __call__(self, frames, **kwargs):
        self.calls += 1
        return self.inner(frames, **kwargs)


def test_default_model_is_depth_anything_v2_small():
    assert DEFAULT_DEPTH_MODEL == "depth-anything/Depth-Anything-V2-Small-hf"


def test_estimator_gives_frame_sized_depth_deterministically_for_any_batch_size(estimator, depth_folder, frames):
    assert estimator.model_id == str(depth_folder)
    a = estimator(frames, batch_size=4, progress=False)
    b = estimator(frames, batch_size=4, progress=False)
    one = estimator(frames, batch_size=1, progress=False)
    assert a.shape == (T, H, W) and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert np.isfinite(a).all() and a.min() > 0 and a.std() > 1.0  # positive disparity that varies over the frame
    np.testing.assert_allclose(one, a, rtol=1e-5, atol=1e-4)


def test_estimator_rejects_frames_that_are_not_uint8_rgb(estimator):
    with pytest.raises(UsageError, match="uint8"):
        estimator(np.zeros((2, 8, 8, 3), np.float32))


def test_clip_normalisation_keeps_depth_changes_over_time():
    # A surface that comes closer over time: raw disparity grows by the same amount every frame.
    ramp = np.linspace(1.0, 2.0, 50, dtype=np.float32)[None, :].repeat(20, 0)  # (20, 50) in [1, 2]
    raw = np.stack([ramp * (t + 1) for t in range(4)])  # values from 1 to 8
    depth = normalize_clip_depth(raw)
    lo, hi = np.quantile(raw, [0.01, 0.99])
    np.testing.assert_allclose(depth, np.clip((raw - lo) / (hi - lo), 0, 1), atol=1e-6)
    assert depth.min() == 0.0 and depth.max() == 1.0
    # One affine map for the clip: equal raw steps between frames stay equal steps (where nothing is clipped) ...
    step1, step2 = depth[1, :, 25] - depth[0, :, 25], depth[2, :, 25] - depth[1, :, 25]
    np.testing.assert_allclose(step1, step2, atol=1e-6)
    assert step1.mean() == pytest.approx(ramp[0, 25] / (hi - lo), rel=1e-5)  # the raw step, on the clip's one scale
    assert depth[0].mean() < 0.15 and depth[3].mean() > 0.65
    # ... whereas per-frame min-max would erase the motion entirely: every frame the same.
    per_frame = (raw - raw.min((1, 2), keepdims=True)) / np.ptp(raw, (1, 2), keepdims=True)
    assert np.allclose(per_frame[0], per_frame[3])


def test_clip_normalisation_is_robust_to_outliers_and_flat_input():
    raw = np.tile(np.linspace(0, 1, 100, dtype=np.float32), (2, 10, 1))
    raw[0, 0, 0] = 1e6  # one broken pixel must not squash everything else to 0
    depth = normalize_clip_depth(raw)
    assert depth[1, 0, 50] == pytest.approx(0.5, abs=0.02)
    assert depth[0, 0, 0] == 1.0
    assert np.array_equal(normalize_clip_depth(np.full((2, 4, 4), 3.0)), np.full((2, 4, 4), 0.5, np.float32))


def test_resize_depth_averages_when_shrinking_and_interpolates_when_growing():
    fine = np.indices((8, 8)).sum(0)[None].astype(np.float32) % 2  # 1-pixel checker
    small = resize_depth(fine, (4, 4))
    assert small.shape == (1, 4, 4) and np.allclose(small, 0.5)  # area average; nearest would alias to all 0 or 1
    big = resize_depth(np.array([[[0.0, 1.0], [0.0, 1.0]]], np.float32), (2, 6))
    np.testing.assert_allclose(big[0, 0], [0, 0, 1 / 3, 2 / 3, 1, 1], atol=1e-6)  # bilinear with OpenCV's half-pixel centres


def test_depth_file_round_trip_resize_and_errors(tmp_path):
    depth = np.random.default_rng(0).random((3, 10, 16), dtype=np.float32)
    path = save_depth(tmp_path / "d.npz", depth, model="tiny", fps=8.0)
    assert np.array_equal(load_depth(path), depth)
    with np.load(path) as data:
        assert json.loads(str(data["meta"])) == {"model": "tiny", "fps": 8.0}
    assert load_depth(path, size=(5, 8)).shape == (3, 5, 8)
    assert load_depth(path, frames=3).shape == (3, 10, 16)
    with pytest.raises(UsageError, match="depth has 3 frames but the clip has 5"):
        load_depth(path, frames=5)
    np.savez(tmp_path / "other.npz", flow=depth)
    with pytest.raises(UsageError, match="no 'depth' array"):
        load_depth(tmp_path / "other.npz")
    np.savez(tmp_path / "flat.npz", depth=depth[0])
    with pytest.raises(UsageError, match=r"\(T, H, W\)"):
        load_depth(tmp_path / "flat.npz")
    np.savez(tmp_path / "raw.npz", depth=depth * 40)
    with pytest.raises(UsageError, match="normalize_clip_depth"):
        load_depth(tmp_path / "raw.npz")
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(UsageError, match="not a readable .npz"):
        load_depth(tmp_path / "text.npz")
    with pytest.raises(UsageError, match="not \\[0, 1\\]"):
        save_depth(tmp_path / "bad.npz", depth - 1)
    assert not (tmp_path / "bad.npz").exists()


def test_estimate_clip_depth_caches_by_frames_model_and_size(estimator, frames, tmp_path):
    counting = CountingEstimator(estimator)
    first = estimate_clip_depth(frames, counting, cache_dir=tmp_path, progress=False)
    assert counting.calls == 1 and first.shape == (T, H, W)
    assert first.min() == 0.0 and first.max() == 1.0  # normalised over the clip
    assert len(list(tmp_path.glob("depth-*.npz"))) == 1
    again = estimate_clip_depth(frames, counting, cache_dir=tmp_path, progress=False)
    assert counting.calls == 1 and np.array_equal(again, first)  # served from the cache, model not run
    small = estimate_clip_depth(frames, counting, cache_dir=tmp_path, size=(20, 36), progress=False)
    assert counting.calls == 2 and small.shape == (T, 20, 36)
    estimate_clip_depth(frames[:, ::-1].copy(), counting, cache_dir=tmp_path, progress=False)
    assert counting.calls == 3  # different frames, different entry
    # A damaged cache file is recomputed and replaced, not fatal.
    for f in tmp_path.glob("depth-*.npz"):
        f.write_bytes(b"junk")
    assert np.array_equal(estimate_clip_depth(frames, counting, cache_dir=tmp_path, progress=False), first)
    assert counting.calls == 4


def test_missing_model_offline_fails_at_once_with_its_name(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(MagicPropError) as info:
        DepthEstimator.from_pretrained("no-such/model")
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert not isinstance(info.value, UsageError) and "no-such/model" in message and "--depth-model" in message
    assert "\n" not in message


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_a_missing_gpu_is_a_usage_error(depth_folder):
    with pytest.raises(UsageError, match="--device cpu"):
        DepthEstimator.from_pretrained(str(depth_folder), device="cuda")


def test_folder_that_is_not_a_depth_model_is_a_usage_error(tmp_path):
    from transformers import CLIPVisionConfig

    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no config.json"):
        DepthEstimator.from_pretrained(str(tmp_path / "empty"))
    CLIPVisionConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2).save_pretrained(tmp_path / "clip")
    with pytest.raises(UsageError, match="'clip_vision_model' model, not a depth model"):
        DepthEstimator.from_pretrained(str(tmp_path / "clip"))


def test_colorize_depth_makes_near_bright():
    ramp = np.linspace(0, 1, 64, dtype=np.float32)[None, None, :].repeat(2, 1)  # (1, 2, 64)
    rgb = colorize_depth(ramp)
    assert rgb.shape == (1, 2, 64, 3) and rgb.dtype == np.uint8
    luma = rgb[0, 0] @ np.array([0.299, 0.587, 0.114])
    assert luma[0] < 10 and luma[-1] > 200
    assert np.all(np.diff(luma) > -1.0)  # lightness never decreases towards the camera (inferno is monotonic)


def test_cli_depth_writes_video_and_npz(depth_folder, frames, tmp_path):
    from magicprop.video import read_video, write_video

    src = write_video(tmp_path / "clip.mp4", np.repeat(frames, 2, axis=0), 8.0)  # 10 frames
    out = tmp_path / "out" / "clip_depth.mp4"
    code = main(["depth", str(src), "-o", str(out), "--depth-model", str(depth_folder), "--max-frames", "6",
                 "--batch-size", "4", "--device", "cpu"])  # fmt: skip
    assert code == 0
    depth = load_depth(out.with_suffix(".npz"), frames=6)
    assert depth.shape == (6, H, W) and depth.min() == 0.0 and depth.max() == 1.0
    video, fps = read_video(out)
    assert video.shape == (6, H, W, 3) and fps == pytest.approx(8.0)
    assert main(["depth", str(src), "-o", str(src), "--depth-model", str(depth_folder)]) == 2  # never overwrite the input
    assert main(["depth", str(src), "-o", str(tmp_path / "d.npz"), "--depth-model", str(depth_folder)]) == 2
