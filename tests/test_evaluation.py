"""Metrics with known answers: identical clips, a known brightness shift, a clip that moves with its source, flicker."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

import fixtures

from magicprop.errors import MagicPropError, UsageError
from magicprop.evaluation import (PSNR_CAP_DB, ClipScorer, color_shift, evaluate_clip, psnr, score_against_truth, ssim,
                                  temporal_flicker, warp_error, warp_errors)

FRAMES, SIZE, STEP = 6, 64, (1, 2)  # a camera pan of 1 px down, 2 px right per frame


def panning_clip(seed: int = 0) -> np.ndarray:
    return fixtures.panning_clip(FRAMES, SIZE, STEP, seed, value_range=(30, 225))  # values in 30..225, so +-20 never clips


@pytest.fixture(scope="module")
def source():
    return panning_clip()


@pytest.fixture(scope="module")
def edited(source):
    return (255 - source)[..., ::-1].copy()  # a per-pixel edit: it moves exactly with the source


# --------------------------------------------------------------------------------------------------------------------
# Pixel metrics
# --------------------------------------------------------------------------------------------------------------------
def test_identical_clips(edited, source):
    p = psnr(edited, edited)
    assert p.shape == (FRAMES,) and np.isinf(p).all()
    np.testing.assert_allclose(ssim(edited, edited), 1.0)
    np.testing.assert_array_equal(color_shift(edited, edited), 0.0)
    metrics = evaluate_clip(edited, source, reference=edited)
    assert metrics["psnr"] == PSNR_CAP_DB and metrics["per_frame"]["psnr"] == [PSNR_CAP_DB] * FRAMES
    assert metrics["ssim"] == pytest.approx(1.0) and metrics["color_shift"] == 0.0
    json.dumps(metrics, allow_nan=False)  # no inf or NaN anywhere


def test_known_brightness_shift(edited):
    brighter = edited + np.uint8(10)  # values are 30..225: no wrap-around
    np.testing.assert_allclose(psnr(brighter, edited), 20 * math.log10(255 / 10), atol=0.01)  # MSE is exactly 100
    np.testing.assert_allclose(color_shift(brighter, edited), 10 * math.sqrt(3), atol=1e-9)
    s = ssim(brighter, edited)
    assert (s < 1).all() and (s > 0.9).all()  # a uniform offset barely changes structure


def test_an_edit_that_moves_with_the_source_has_no_warp_error(edited, source):
    errors = warp_error(edited, source)
    assert errors.shape == (FRAMES - 1,)
    assert errors.max() < 0.005  # about 1 grey level: only bilinear resampling of sub-pixel flow error remains


def test_flicker_and_a_frozen_clip_have_larger_warp_error(edited, source):
    signs = np.where(np.arange(FRAMES) % 2 == 0, 1, -1)[:, None, None, None]
    flicker = (edited.astype(int) + 20 * signs).astype(np.uint8)  # +-20 grey levels, alternating
    frozen = np.repeat(edited[:1], FRAMES, axis=0)  # the "copy" baseline: right colours, no motion
    steady, flickering, still = warp_error(edited, source), warp_error(flicker, source), warp_error(frozen, source)
    np.testing.assert_allclose(flickering, 40 / 255, atol=0.01)  # every valid pixel is off by exactly 40 levels
    assert still.min() > 5 * steady.max()


def _noisy(clip: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """The clip with fresh Gaussian noise on every frame (a result that boils)."""
    noise = np.random.default_rng(seed).normal(0, sigma, clip.shape)
    return np.clip(np.rint(clip + noise), 0, 255).astype(np.uint8)


def test_flicker_is_zero_for_the_truth_and_grows_with_per_frame_noise(edited, source):
    assert temporal_flicker(edited, edited, source).tolist() == [0.0] * (FRAMES - 1)
    steady_offset = edited + np.uint8(10)  # steadily off: wrong, but it does not flicker
    assert temporal_flicker(steady_offset, edited, source).max() < 1e-6
    moved = np.roll(edited, 1, axis=2)  # a texture misplaced by a pixel but moving with the footage: still steady
    assert temporal_flicker(moved, edited, source).max() < 0.2 * warp_error(_noisy(edited, 8), source).min()
    scores = [score_against_truth(_noisy(edited, sigma), edited, source, 0) for sigma in (0, 2, 8)]
    assert scores[0]["flicker"] == 0.0 and scores[0]["warp_excess"] == 0.0  # sigma 0: the truth itself
    assert 0 < scores[1]["flicker"] < scores[2]["flicker"] and 0 < scores[1]["warp_excess"] < scores[2]["warp_excess"]
    # independent noise in two frames: E|n1 - n2| ~ 2 sigma / sqrt(pi) (a normal of variance 2 sigma^2; the warp's
    # bilinear averaging of the earlier frame's noise lowers it a little), in [0, 1] units
    np.testing.assert_allclose(scores[2]["flicker"], 2 * 8 / np.sqrt(np.pi) / 255, rtol=0.15)


def test_warp_errors_share_the_flows_and_match_warp_error_clip_by_clip(edited, source):
    flicker = _noisy(edited, 4)
    together = warp_errors([edited, flicker], source)
    np.testing.assert_array_equal(together[0], warp_error(edited, source))
    np.testing.assert_array_equal(together[1], warp_error(flicker, source))


def test_evaluate_clip_reports_every_key_and_none_for_what_it_cannot_compute(edited, source):
    only = evaluate_clip(edited)
    for key in ("psnr", "ssim", "warp_error", "clip_consistency", "clip_text", "color_shift"):
        assert only[key] is None and only["per_frame"][key] is None
    assert only["frames"] == FRAMES
    full = evaluate_clip(edited, source, reference=(edited + np.uint8(10)))
    assert full["psnr"] == pytest.approx(20 * math.log10(255 / 10), abs=0.01)
    assert len(full["per_frame"]["warp_error"]) == FRAMES - 1 and len(full["per_frame"]["ssim"]) == FRAMES
    assert full["warp_error"] == pytest.approx(float(np.mean(warp_error(edited, source))))


def test_frame_count_mismatch_names_both_counts(edited, source):
    with pytest.raises(UsageError, match=f"{FRAMES} frames.* {FRAMES - 1}") as info:
        evaluate_clip(edited, source[:-1])
    assert "\n" not in str(info.value)
    for bad in (lambda: psnr(edited, edited[:2]), lambda: psnr(edited.astype(np.float32), edited),
                lambda: ssim(edited[:, :5, :5], edited[:, :5, :5]), lambda: evaluate_clip(edited[0])):  # fmt: skip
        with pytest.raises(UsageError):
            bad()


def test_a_reference_of_another_size_is_resized_to_the_edited_clip(edited, source):
    pytest.importorskip("magicprop.video")
    big = np.repeat(np.repeat(edited, 2, axis=1), 2, axis=2)  # 2x nearest upscale: resizing back is nearly lossless
    metrics = evaluate_clip(edited, np.repeat(np.repeat(source, 2, axis=1), 2, axis=2), reference=big)
    assert metrics["psnr"] > 30 and metrics["ssim"] > 0.9 and metrics["warp_error"] < 0.01


# --------------------------------------------------------------------------------------------------------------------
# CLIP metrics, with a tiny CLIP saved to a folder and loaded through the real code path
# --------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    from fixtures import save_tiny_clip

    return save_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="module")
def scorer(clip_folder):
    return ClipScorer.from_pretrained(str(clip_folder), device="cpu")


def test_tiny_tokenizer_is_real(scorer):
    ids = scorer.tokenizer("a painting of a wolf in snow")["input_ids"]
    assert len(ids) == 9  # start, 7 words (one token each), end
    assert len(scorer.tokenizer) > 300


def test_frame_consistency_of_identical_frames_is_one(scorer, edited):
    same = scorer.frame_consistency(np.repeat(edited[:1], 4, axis=0))
    assert same["consecutive"] == pytest.approx(1.0, abs=1e-5) and same["all_pairs"] == pytest.approx(1.0, abs=1e-5)
    assert len(same["per_frame"]) == 3
    emb = scorer.image_embeddings(edited)
    assert tuple(emb.shape) == (FRAMES, 16)
    np.testing.assert_allclose(emb.norm(dim=-1).numpy(), 1.0, atol=1e-5)
    single = scorer.frame_consistency(edited[:1])
    assert math.isnan(single["consecutive"]) and single["per_frame"] == []


def test_text_alignment_is_per_frame_and_deterministic(scorer, clip_folder, edited):
    first = scorer.text_alignment(edited, "a photo of a red cat")
    assert first.shape == (FRAMES,) and np.isfinite(first).all() and (np.abs(first) <= 100).all()
    np.testing.assert_array_equal(first, scorer.text_alignment(edited, "a photo of a red cat"))
    reloaded = ClipScorer.from_pretrained(str(clip_folder))
    np.testing.assert_allclose(first, reloaded.text_alignment(edited, "a photo of a red cat"), atol=1e-4)
    assert not np.allclose(first, scorer.text_alignment(edited, "a painting of an elephant"))


def test_evaluate_clip_with_a_scorer(scorer, edited, source):
    metrics = evaluate_clip(edited, source, prompt="a dog", clip_scorer=scorer)
    assert 0.9 < metrics["clip_consistency"] <= 1.0 + 1e-6
    assert metrics["clip_text"] == pytest.approx(float(np.mean(scorer.text_alignment(edited, "a dog"))), abs=1e-6)
    assert evaluate_clip(edited, clip_scorer=scorer)["clip_text"] is None  # no prompt, no CLIP-T


def test_missing_clip_model_is_a_one_line_error_naming_it(tmp_path, clip_folder):
    with pytest.raises(MagicPropError, match="no-such-clip") as info:
        ClipScorer.from_pretrained("magicprop-test/no-such-clip")
    assert "\n" not in str(info.value)
    # A folder whose tokenizer lost its vocabulary must not "load" and score every prompt the same.
    broken = shutil.copytree(clip_folder, tmp_path / "broken")
    for name in ("vocab.json", "merges.txt", "tokenizer.json"):
        (broken / name).unlink()
    with pytest.raises(MagicPropError, match="broken") as info:
        ClipScorer.from_pretrained(str(broken))
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------------------------------------------------
# `magicprop eval`
# --------------------------------------------------------------------------------------------------------------------
JSON_KEYS = {"psnr", "ssim", "warp_error", "clip_consistency", "clip_text", "per_frame"}


@pytest.fixture(scope="module")
def videos(tmp_path_factory, edited, source):
    video = pytest.importorskip("magicprop.video")
    folder = tmp_path_factory.mktemp("eval-videos")
    for name, frames in (("edited", edited), ("source", source)):
        video.write_video(folder / f"{name}.mp4", frames, 8)
    # A byte copy, not a second encode: encoders need not be deterministic, decoders are.
    shutil.copy(folder / "edited.mp4", folder / "truth.mp4")
    return folder


def test_cli_writes_every_key(videos, clip_folder, capsys):
    from magicprop.cli import main

    out = videos / "metrics.json"
    argv = ["eval", str(videos / "edited.mp4"), "--source", str(videos / "source.mp4"),
            "--reference", str(videos / "truth.mp4"), "--prompt", "a red cat",
            "--clip-model", str(clip_folder), "--json", str(out)]  # fmt: skip
    assert main(argv) == 0
    metrics = json.loads(out.read_text())
    assert set(metrics) == JSON_KEYS
    assert metrics["psnr"] == PSNR_CAP_DB and metrics["ssim"] == pytest.approx(1.0)  # the same file, decoded twice
    assert metrics["warp_error"] < 0.02  # lossy codec noise, still far below the frozen clip's 0.04
    assert metrics["clip_consistency"] > 0.9 and isinstance(metrics["clip_text"], float)
    assert len(metrics["per_frame"]["clip_text"]) == FRAMES and len(metrics["per_frame"]["warp_error"]) == FRAMES - 1
    assert "PSNR" in capsys.readouterr().out


def test_cli_without_clip_writes_null(videos, tmp_path):
    from magicprop.cli import main

    base = ["eval", str(videos / "edited.mp4"), "--source", str(videos / "source.mp4")]
    for extra in (["--no-clip"], ["--clip-model", str(tmp_path / "no-clip-here")]):  # skipped, or fails to load
        out = tmp_path / "metrics.json"
        assert main([*base, *extra, "--json", str(out)]) == 0
        metrics = json.loads(out.read_text())
        assert set(metrics) == JSON_KEYS
        assert metrics["clip_consistency"] is None and metrics["clip_text"] is None
        assert metrics["psnr"] is None and metrics["ssim"] is None and metrics["warp_error"] is not None


def test_cli_missing_file_is_one_line_exit_2(videos, tmp_path, capsys):
    from magicprop.cli import main

    code = main(["eval", str(tmp_path / "missing.mp4"), "--source", str(videos / "source.mp4"), "--no-clip", "--json",
                 str(tmp_path / "m.json")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and "missing.mp4" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "m.json").exists()
