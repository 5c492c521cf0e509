"""The per-frame appearance edits (exact ground truth on real motion) and the real-motion benchmark, on one short
generated clip: the numbers it reports are `score_against_truth` of what each registered method returns."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import fixtures
from fixtures import panning_clip

from magicprop.evaluation import score_against_truth
from magicprop.evaluation.appearance_edits import EDITS, FAMILIES
from magicprop.propagation import PROPAGATORS, PropagationRequest, PropagationSettings
from magicprop.video import load_image, save_image, write_video

ROOT = Path(__file__).resolve().parents[1]
COLOUR = (250, 200, 120)  # bright (grey 206) and vivid (saturation 0.52): inside both content-defined regions


@pytest.fixture(scope="module")
def bench():
    return fixtures.load_benchmark("real_motion")


@pytest.fixture(scope="module")
def image():
    return panning_clip(1, (48, 64), (0, 0))[0]


def test_edits_are_deterministic_and_keep_the_shape(image):
    assert {e.family for e in EDITS.values()} == set(FAMILIES) and all(e.name == n for n, e in EDITS.items())
    before = image.copy()
    for edit in EDITS.values():
        out = edit(image)
        assert out.shape == image.shape and out.dtype == np.uint8, edit.name
        assert np.array_equal(out, edit(image.copy())), edit.name
        assert not np.array_equal(out, image), f"{edit.name} changed nothing"
    assert np.array_equal(image, before)  # no edit writes into its input
    clip = panning_clip(3, (48, 64), (1, 2))
    assert np.array_equal(EDITS["cartoon"].clip(clip)[2], EDITS["cartoon"](clip[2]))
    with pytest.raises(ValueError, match="uint8"):
        EDITS["grade"](image.astype(np.float32))


@pytest.mark.parametrize("name", [n for n, e in EDITS.items() if e.family == "pointwise"])
def test_pointwise_edits_commute_with_a_translation(name, image):
    edit = EDITS[name]
    shift = lambda x: np.roll(x, (5, -9), axis=(0, 1))  # noqa: E731
    assert np.array_equal(edit(shift(image)), shift(edit(image)))
    # and on real motion: frame t+1 of a pan is frame t moved, so its edit is the moved edit where they overlap
    a, b = panning_clip(2, (48, 64), (2, 3))
    assert np.array_equal(edit(b)[:-2, :-3], edit(a)[2:, 3:])


def test_kuwahara_matches_the_definition_away_from_the_border():
    rng = np.random.default_rng(0)
    image, r = rng.integers(0, 256, (14, 16, 3), dtype=np.uint8), 2
    out = EDITS["kuwahara"].fn(image, radius=r)
    grey = image.astype(np.float64) @ [0.299, 0.587, 0.114]
    for y in range(r, 14 - r):
        for x in range(r, 16 - r):
            quadrants = [(slice(a, a + r + 1), slice(b, b + r + 1)) for a in (y - r, y) for b in (x - r, x)]
            best = quadrants[int(np.argmin([grey[q].var() for q in quadrants]))]  # the flattest quadrant
            assert np.array_equal(out[y, x], np.floor(image[best].reshape(-1, 3).mean(0) + 0.5)), (y, x)


def _one_colour_three_places(image: np.ndarray) -> tuple[np.ndarray, tuple[int, int], list[tuple[int, int]]]:
    """COLOUR filling a flat square, and on one lone pixel amid dark texture and one amid bright texture (a filter
    sees each differently: brighter or darker than its neighbourhood, inside a large region or a speck)."""
    out = np.concatenate([image // 3, 255 - image // 6], axis=1)  # (48, 128, 3): dark left half, bright right half
    out[8:40, 48:80] = COLOUR
    out[24, 8] = out[24, 120] = COLOUR
    return out, (24, 64), [(24, 8), (24, 120)]


@pytest.mark.parametrize("name", list(EDITS))
def test_only_pointwise_edits_map_one_colour_to_one_colour(name, image):
    test_image, flat, lone = _one_colour_three_places(image)
    out = EDITS[name](test_image)
    if EDITS[name].family == "pointwise":
        assert (out[(test_image == COLOUR).all(-1)] == out[flat]).all()
    else:  # pixels of one colour come out differently: the edit reads the neighbourhood
        assert any(not np.array_equal(out[flat], out[p]) for p in lone), f"{name} treats every pixel of one colour alike"


def test_benchmark_rows_score_what_each_method_returns(bench, tmp_path, capsys):
    video = write_video(tmp_path / "pan.mp4", panning_clip(8, (48, 64), (1, 2)), fps=8)
    out = tmp_path / "bench" / "real.json"
    assert bench.main(["--video", str(video), "--samples", str(tmp_path / "none"), "--size", "64", "--max-frames", "6",
                       "--edits", "grade", "cartoon", "--methods", "copy", "chain", "flow", "lut", "nope",
                       "--json", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "skipping nope: not registered" in printed and "pan x cartoon (6 frames, 64x48)" in printed
    result = json.loads(out.read_text())
    methods = [m for m in ("copy", "chain", "flow", "lut") if m in PROPAGATORS]
    assert result["methods"] == methods and len(result["rows"]) == 2 * len(methods)
    source = bench.load_clip(video, 64, 6)
    assert source.shape == (6, 48, 64, 3)
    for row in result["rows"]:
        truth = EDITS[row["edit"]].clip(source)
        request = PropagationRequest(source=source, keyframes={0: truth[0]}, progress=False)
        frames = np.stack(list(PROPAGATORS[row["method"]](request)))
        expected = score_against_truth(frames, truth, source, 0)
        for key in ("psnr", "ssim", "color_shift", "sharpness_ratio", "warp_error"):
            assert row[key] == pytest.approx(expected[key], rel=1e-9), (row["method"], key)
        assert row["per_frame"]["psnr"] == pytest.approx(expected["per_frame"]["psnr"])
        assert row["psnr@8"] is None and row["s_per_frame"] > 0 and row["family"] == EDITS[row["edit"]].family
    copy = [r for r in result["rows"] if r["method"] == "copy"]
    assert result["summary"]["copy"]["all"]["psnr"] == pytest.approx(np.mean([r["psnr"] for r in copy]))
    assert result["summary"]["copy"]["stylisation"]["cases"] == 1
    # the headline group leaves the pointwise edit (a colour map: lut's by construction) out
    cartoon = {r["method"]: r for r in result["rows"] if r["edit"] == "cartoon"}
    assert result["summary"]["copy"]["propagation"]["psnr"] == pytest.approx(cartoon["copy"]["psnr"])
    if "lut" in cartoon:
        assert result["summary"]["copy"]["propagation"]["beats_lut"] == int(cartoon["copy"]["psnr"] > cartoon["lut"]["psnr"])
        assert "beats_lut" not in result["summary"]["lut"]["all"]
    assert "| copy | pointwise | 1 |" in (tmp_path / "bench" / "real.md").read_text()
    assert (tmp_path / "bench" / "real-drift.png").is_file() and (tmp_path / "bench" / "real-bars.png").is_file()


def test_benchmark_temporal_blend_rows_are_flow_at_that_setting(bench, tmp_path, capsys):
    video = write_video(tmp_path / "pan.mp4", panning_clip(6, (48, 64), (1, 2)), fps=8)
    argv = ["--video", str(video), "--samples", str(tmp_path / "none"), "--size", "64", "--edits", "cartoon", "--methods", "flow"]
    result = bench.run(bench.parse_args([*argv, "--temporal-blend", "0.9"]))
    assert result["methods"] == ["flow", "flow@0.9"]
    row = next(r for r in result["rows"] if r["method"] == "flow@0.9")
    source = bench.load_clip(video, 64, 48)
    truth = EDITS["cartoon"].clip(source)
    request = PropagationRequest(source=source, keyframes={0: truth[0]}, progress=False,
                                 settings=PropagationSettings(temporal_blend=0.9))  # fmt: skip
    expected = score_against_truth(np.stack(list(PROPAGATORS["flow"](request))), truth, source, 0)
    assert row["psnr"] == pytest.approx(expected["psnr"], rel=1e-9) and row["flicker"] == pytest.approx(expected["flicker"])
    with pytest.raises(SystemExit):
        bench.parse_args([*argv, "--temporal-blend", "1"])
    assert "--temporal-blend values must be in [0, 1)" in capsys.readouterr().err


def test_benchmark_middle_keyframe(bench, tmp_path):
    video = write_video(tmp_path / "pan.mp4", panning_clip(7, (32, 32), (1, 1)), fps=8)
    args = bench.parse_args(["--video", str(video), "--samples", str(tmp_path / "none"), "--size", "32", "--edits", "sketch",
                             "--methods", "copy", "--keyframe", "middle"])  # fmt: skip
    (row,) = bench.run(args)["rows"]
    assert row["keyframe"] == 3 and row["per_frame"]["psnr"][3] == 100.0 and row["frames"] == 7


def test_no_samples_and_no_video_says_so(bench, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert bench.main(["--samples", str(tmp_path / "nowhere"), "--json", str(out)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and printed[0].startswith("no cases:") and not out.exists()


def test_pictures_script_writes_one_sheet_per_edited_keyframe(tmp_path):
    spec = importlib.util.spec_from_file_location("real_edits_pictures", ROOT / "benchmarks" / "real_edits_pictures.py")
    pictures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pictures)
    clip = panning_clip(12, (32, 48), (1, 1))
    write_video(tmp_path / "pan.mp4", clip, fps=8)
    save_image(tmp_path / "pan_tint_000.png", EDITS["grade"](clip[0]))
    save_image(tmp_path / "stray_000.png", clip[0])  # no stray.mp4: skipped
    assert pictures.find_edits(tmp_path) == [(tmp_path / "pan.mp4", tmp_path / "pan_tint_000.png", 0)]
    results = pictures.run(pictures.argparse.Namespace(edits_dir=tmp_path, out=tmp_path / "out", size=48, max_frames=16))
    sheet = load_image(tmp_path / "out" / "pan_tint.png")
    columns = 1 + len([m for m in pictures.METHODS if m in PROPAGATORS])
    assert sheet.shape[1] == 48 * columns and sheet.shape[0] > 3 * 32  # rows 0, 5, 10 (the clip has 12 frames)
    assert {r["method"] for r in results} == {m for m in (*pictures.METHODS, "copy") if m in PROPAGATORS}
    assert all(np.isfinite(r["warp_error"]) and r["sharpness_ratio"] > 0 for r in results)
