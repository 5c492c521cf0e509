"""benchmarks/full_resolution.py on one short generated clip: every size and run it reports, numbers that are
`score_against_truth` of what the methods return, the tables and the crops picture."""

import json
from pathlib import Path

import numpy as np
import pytest
from fixtures import load_benchmark, panning_clip

from magicprop.evaluation import score_against_truth
from magicprop.evaluation.appearance_edits import EDITS
from magicprop.video import write_video


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("full_resolution")


def test_upscaled_sizes_crop_to_the_aspect_then_enlarge(bench):
    clip = panning_clip(2, (72, 96), (1, 1))  # 4:3
    out = bench.upscaled(clip, (90, 160))
    assert out.shape == (2, 90, 160, 3)
    assert bench.clip_at(clip, "full") is clip and bench.clip_at(clip, "256").shape[1:3] == (192, 256)
    assert bench.size_label("1080p", np.zeros((1, 1080, 1920, 3), np.uint8)) == "1080p 1920x1080 (upscaled)"


def test_the_benchmark_reports_each_size_and_the_budget_run(bench, tmp_path, monkeypatch):
    monkeypatch.setitem(bench.UPSCALED, "1080p", (540, 960))  # a quarter of 1080p, still over the 512x512 budget
    video = tmp_path / "pan.mp4"
    write_video(video, panning_clip(4, (72, 128), (1, 2)), fps=8, crf=0)
    out = tmp_path / "fr.json"
    assert bench.main(["--samples", str(tmp_path / "none"), "--video", str(video), "--sizes", "full", "1080p",
                       "--edits", "grade", "--keyframe-edits", "grade", "sketch", "--methods", "flow", "copy", "--max-frames", "3",
                       "--json", str(out)]) == 0  # fmt: skip
    result = json.loads(out.read_text())
    runs = {(r["size"], r["mode"], r["method"]) for r in result["rows"]}
    assert runs == {(s, "own size", m) for s in ("full", "1080p") for m in ("flow", "copy")} | {
        ("1080p", "via 512x512", m) for m in ("flow", "copy")}  # only a size over the budget is also run through it
    for r in result["rows"]:
        assert r["cpu_s_per_frame"] >= 0 and r["wall_s_per_frame"] > 0 and (r["peak_mb"] is None or r["peak_mb"] >= 0)
    # the copy baseline at 1080p: its numbers are score_against_truth of the keyframe repeated
    read = bench.read_video(video, max_frames=3)[0]
    source = bench.upscaled(read, (540, 960))
    truth = EDITS["grade"].clip(source)
    expected = score_against_truth(np.repeat(truth[:1], 3, axis=0), truth, source, 0)
    copy = next(r for r in result["rows"] if (r["size"], r["mode"], r["method"]) == ("1080p", "own size", "copy"))
    assert copy["psnr"] == pytest.approx(expected["psnr"]) and copy["label"] == "1080p 960x540 (upscaled)"
    flow = {r["mode"]: r for r in result["rows"] if r["size"] == "1080p" and r["method"] == "flow"}
    assert flow["own size"]["sharpness_ratio"] > flow["via 512x512"]["sharpness_ratio"] + 0.1  # the round trip blurs
    # keyframes over the budget only (the clip enlarged x2 is 256x144): the "1080p" one, edited at the budget
    assert [(r["image"], r["edit"]) for r in result["keyframe_rows"]] == [("1080p 960x540 (upscaled)", "grade"),
                                                                        ("1080p 960x540 (upscaled)", "sketch")]
    grade = result["keyframe_rows"][0]
    assert grade["guided_psnr"] > grade["bicubic_psnr"] + 1 and grade["guided_sharpness"] > grade["bicubic_sharpness"]
    table = Path(f"{out.with_suffix('')}.md").read_text()
    assert "| via 512x512 | flow |" in table and "guided - bicubic" in table
    assert Path(f"{out.with_suffix('')}-crops.png").stat().st_size > 10_000
