"""`magicprop keyframes` (coverage and suggestions, from files), and the keyframe's frame found by `propagate` when
`--keyframe-index` is left out, with one line for it and one for the propagator."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from fixtures import panning_clip

from magicprop.cli import main
from magicprop.evaluation.appearance_edits import EDITS
from magicprop.video import save_image, write_video

H, W = 64, 96


@pytest.fixture(scope="module")
def occluder(tmp_path_factory):
    """A still scene whose middle a black card hides until it slides off over frames 6-8 (folder of PNGs: lossless)."""
    back = panning_clip(1, (H, W), (0, 0), seed=2)[0]
    frames = np.repeat(back[None], 14, 0)
    for t in range(14):
        x0 = 24 + min(max(0, t - 5), 3) * 24
        frames[t, 8:56, min(W, x0) : min(W, x0 + 40)] = 0
    folder = tmp_path_factory.mktemp("occluder")
    write_video(folder / "clip", frames, 8.0)
    return folder / "clip", frames


def _error(capsys, *args) -> str:
    assert main([*map(str, args)]) == 2
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("magicprop ")]
    assert len(lines) == 1, lines
    return lines[0]


def test_keyframes_command_writes_the_plan_picture_and_table(occluder, tmp_path, capsys):
    clip, frames = occluder
    out = tmp_path / "plan.json"
    assert main(["keyframes", str(clip), "--keyframe-index", "0", "--max", "3", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    record = json.loads(out.read_text())
    assert 8 <= record["suggested"][0] <= 13 and record["given"] == [0] and record["reached"]
    assert len(record["coverage"]) == 14 and min(record["coverage"]) >= 0.95 and max(record["coverage_given"][9:]) < 0.6
    assert record["measured"]["candidates_every"] == 1 and "min(coverage, target)" in record["objective"]
    assert (tmp_path / "plan.png").stat().st_size > 10_000 and sorted(p.name for p in tmp_path.iterdir()) == ["plan.json", "plan.png"]
    assert "given: 0" in printed and f"+ {record['suggested'][0]} (suggestion 1)" in printed and "suggested: edit frame" in printed
    # the same plan from a folder of edited keyframes (only their frame indices matter)
    keys = tmp_path / "keys"
    keys.mkdir()
    save_image(keys / "frame-0.png", EDITS["cartoon"](frames[0]))
    assert main(["keyframes", str(clip), "--keyframes", str(keys), "--max", "3", "-o", str(tmp_path / "again.json")]) == 0
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["suggested"] == record["suggested"] and again["coverage"] == record["coverage"]


def test_keyframes_command_bad_input(occluder, tmp_path, capsys):
    clip, frames = occluder
    out = tmp_path / "plan.json"
    assert "--max must be at least 1" in _error(capsys, "keyframes", clip, "--max", "0", "-o", out)
    for target in ("0", "1.5", "-1"):
        assert "--target is the fraction of every frame" in _error(capsys, "keyframes", clip, "--target", target, "-o", out)
    assert "keyframe 14 is outside the clip (0..13" in _error(capsys, "keyframes", clip, "--keyframe-index", "14", "-o", out)
    keys = tmp_path / "keys"
    keys.mkdir()
    save_image(keys / "30.png", frames[0])
    assert "names frame 30 but the clip has 14 frames" in _error(capsys, "keyframes", clip, "--keyframes", keys, "-o", out)
    assert "OUT.json" in _error(capsys, "keyframes", clip, "-o", tmp_path / "plan.png")
    one = tmp_path / "one"
    write_video(one, frames[:1], 8.0)
    assert "1 frame(s)" in _error(capsys, "keyframes", one, "-o", out)
    assert "not found" in _error(capsys, "keyframes", tmp_path / "missing.mp4", "-o", out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys", "one"]  # nothing written, not even half


@pytest.fixture(scope="module")
def pan(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pan")
    frames = panning_clip(10, (48, 64), (1, 4), seed=8)
    write_video(folder / "clip", frames, 8.0)
    return folder / "clip", frames


def _propagate(tmp_path, clip, key, *extra) -> dict:
    out = tmp_path / "out"
    assert main(["propagate", str(clip), "--keyframe-image", str(key), "--seed", "0", *map(str, extra), "-o", str(out)]) == 0
    return json.loads((tmp_path / "out.json").read_text())


def test_propagate_finds_the_keyframes_frame_and_says_each_line_once(pan, tmp_path, caplog):
    clip, frames = pan
    key = save_image(tmp_path / "edited.png", EDITS["sketch"](frames[6]))
    with caplog.at_level(logging.INFO):
        record = _propagate(tmp_path, clip, key)
    messages = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("propagator: flow") for m in messages) == 1
    found = [m for m in messages if m.startswith("keyframe image matches")]
    assert len(found) == 1 and "frame 6" in found[0] and "confidence" in found[0] and "runner-up" in found[0]
    assert record["settings"]["keyframe_index"] == 6 and record["keyframe_indices"] == [6]
    assert record["keyframe_match"]["reason"] == "matched" and record["keyframe_match"]["index"] == 6
    assert 0.25 <= record["keyframe_match"]["confidence"] <= 1


def test_keyframe_index_wins_and_another_clips_image_falls_back_to_frame_0(pan, tmp_path, caplog):
    clip, frames = pan
    key = save_image(tmp_path / "edited.png", EDITS["sketch"](frames[6]))
    with caplog.at_level(logging.INFO):
        record = _propagate(tmp_path, clip, key, "--keyframe-index", "3")
    assert record["settings"]["keyframe_index"] == 3 and record["keyframe_match"] is None
    assert not any("keyframe image matches" in r.getMessage() for r in caplog.records)
    caplog.clear()
    other = save_image(tmp_path / "other.png", EDITS["cartoon"](panning_clip(1, (48, 64), (0, 0), seed=99)[0]))
    with caplog.at_level(logging.INFO):
        record = _propagate(tmp_path, clip, other)
    line = [r.getMessage() for r in caplog.records if "keyframe image matches" in r.getMessage()]
    assert len(line) == 1 and "no frame of the clip confidently" in line[0] and "using frame 0" in line[0]
    assert record["settings"]["keyframe_index"] == 0 and record["keyframe_match"]["reason"] == "no match"
    # --config reruns at the recorded frame, without searching again
    caplog.clear()
    again = tmp_path / "again"
    with caplog.at_level(logging.INFO):
        assert main(["propagate", str(clip), "--config", str(tmp_path / "out.json"), "-o", str(again)]) == 0
    assert not any("keyframe image matches" in r.getMessage() for r in caplog.records)
    assert json.loads((tmp_path / "again.json").read_text())["settings"]["keyframe_index"] == 0
