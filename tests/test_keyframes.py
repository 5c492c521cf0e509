"""Several keyframes: each kept exactly, propagated to its neighbours and crossfaded between them (Python API and CLI)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from fixtures import save_tiny_magicprop_models

from magicprop.cli import main
from magicprop.errors import UsageError
from magicprop.evaluation import psnr
from magicprop.pipeline import MagicPropPipeline
from magicprop.propagation import blend_keyframes, keyframe_spans
from magicprop.synthetic import render_clip
from magicprop.video import read_video, save_image, write_video


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    return save_tiny_magicprop_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def pipe(paths):
    return MagicPropPipeline.from_pretrained(paths["sd"], paths["controlnet"], paths["model"], paths["depth"], load_editor=False, device="cpu")


@pytest.fixture(scope="module")
def clip():
    return render_clip(11, frames=6, size=(48, 80), edit="global")


def _run(pipe, video, keyframes, **kw):
    return pipe(video, keyframe_image=keyframes, propagation_steps=2, generator=torch.Generator().manual_seed(0), **kw)


def test_spans_and_linear_crossfade():
    assert keyframe_spans([6, 1, 5], 9) == [(1, 0, 5), (5, 2, 6), (6, 6, 9)]  # sorted; neighbours share the gap
    assert keyframe_spans([3], 9) == [(3, 0, 9)]
    value = {1: 0, 5: 200, 6: 100}

    def render(k, start, stop):  # a "copy" propagator: every frame is its keyframe's value
        return (np.full((2, 2, 3), value[k], np.uint8) for _ in range(start, stop))

    frames = list(blend_keyframes(render, [6, 1, 5], 9))
    assert [int(f[0, 0, 0]) for f in frames] == [0, 0, 50, 100, 150, 200, 100, 100, 100]
    with pytest.raises(RuntimeError, match="gave 1 frames for 5"):
        list(blend_keyframes(lambda k, s, e: iter([np.zeros((2, 2, 3), np.uint8)]), [1, 5], 9))


def test_one_keyframe_as_a_mapping_is_the_single_keyframe_run(pipe, clip):
    single = _run(pipe, clip.source, clip.edited[2], keyframe_index=2)
    mapping = _run(pipe, clip.source, {2: clip.edited[2]})
    np.testing.assert_array_equal(mapping.frames, single.frames)


def test_several_keyframes_are_kept_exactly_and_blended(pipe, clip):
    calls = []
    keys = {0: clip.edited[0], -1: clip.edited[5]}  # negative counts from the end
    out = _run(pipe, clip.source, keys, callback=lambda t, n: calls.append((t, n)))
    np.testing.assert_array_equal(out.frames[0], clip.edited[0])
    np.testing.assert_array_equal(out.frames[5], clip.edited[5])
    assert out.keyframe_index == 0 and (out.keyframe == clip.edited[0]).all()
    # 2 keyframes done + frames 1..4 rendered from each side: 10 renders, counted up without going back
    assert calls[-1] == (10, 10) and all(a[0] <= b[0] for a, b in zip(calls, calls[1:])) and {n for _, n in calls} == {10}
    np.testing.assert_array_equal(_run(pipe, clip.source, keys).frames, out.frames)  # deterministic
    only_first = _run(pipe, clip.source, {0: clip.edited[0]})
    assert not np.array_equal(out.frames[4], only_first.frames[4])  # the second keyframe weighs in near it


def test_several_keyframes_resume(pipe, clip, tmp_path, monkeypatch):
    import magicprop.propagation.propdpm.sampling as propagation

    work = tmp_path / "work"
    keys = {0: clip.edited[0], 3: clip.edited[3]}
    full = _run(pipe, clip.source, keys, work_dir=work)
    folders = sorted((work / "propagation").iterdir())
    assert [f.name for f in folders] == ["keyframe-00000", "keyframe-00003"]
    sorted((folders[1] / "steps").iterdir())[-1].unlink()  # killed during keyframe 3's last step
    calls = []
    real = propagation.denoise
    monkeypatch.setattr(propagation, "denoise", lambda *a, **k: calls.append(1) or real(*a, **k))
    resumed = _run(pipe, clip.source, keys, work_dir=work, resume=True)
    np.testing.assert_array_equal(resumed.frames, full.frames)
    assert len(calls) == 1


def test_several_keyframes_errors(pipe, clip):
    with pytest.raises(UsageError, match="outside the clip"):
        _run(pipe, clip.source, {0: clip.edited[0], 6: clip.edited[5]})
    with pytest.raises(UsageError, match="same frame"):
        _run(pipe, clip.source, {5: clip.edited[5], -1: clip.edited[5]})
    with pytest.raises(UsageError, match="per-frame masks"):
        _run(pipe, clip.source, {0: clip.edited[0], 5: clip.edited[5]}, mask=np.ones((48, 80), bool))
    with pytest.raises(UsageError, match="none was given"):
        _run(pipe, clip.source, {})


def test_a_second_keyframe_stops_the_drift_of_flow_propagation():
    """On a 16-frame clip with ground truth, true keyframes at both ends beat one keyframe, most of all at the far end.
    The edit paints a pattern: a plain colour grade is carried by `flow`'s appearance model from one keyframe almost as
    well as from two (38.5 against 38.9 dB), so it would not show what a second keyframe is for."""
    c = render_clip(900001, frames=16, size=(64, 64), edit="pattern")
    pipe = MagicPropPipeline.from_pretrained("nobody/sd", "nobody/cn", None, "nobody/depth", propagator="flow", device="cpu")
    one = pipe(c.source, keyframe_image={0: c.edited[0]}).frames
    two = pipe(c.source, keyframe_image={0: c.edited[0], 15: c.edited[15]}).frames
    p1, p2 = psnr(one, c.edited)[1:15], psnr(two, c.edited)[1:15]
    assert p2.mean() > p1.mean() + 1.0
    assert p2[-1] > p1[-1] + 3.0


def test_cli_keyframes_folder(paths, clip, tmp_path, capsys):
    src = tmp_path / "source.mp4"
    write_video(src, clip.source, 12.0)
    keys = tmp_path / "keys"
    keys.mkdir()
    save_image(keys / "0.png", clip.edited[0])
    save_image(keys / "bear-4.png", clip.edited[4])  # the last number is the frame index
    out = tmp_path / "out.mp4"
    stage2 = ["--model", str(paths["model"]), "--depth-model", str(paths["depth"]), "--steps", "2", "--seed", "3"]
    assert main(["propagate", str(src), "--keyframes", str(keys), *stage2, "-o", str(out)]) == 0
    assert "keyframes 0, 4" in capsys.readouterr().out
    frames, _ = read_video(out)
    assert frames.shape == clip.source.shape
    kept, between = psnr(frames[[0, 4]], clip.edited[[0, 4]]), psnr(frames[1:4], clip.edited[1:4])
    assert kept.min() > 25 and kept.min() > between.max() + 5  # kept, up to the mp4's compression (random tiny model between)
    record = json.loads((tmp_path / "out.json").read_text())
    assert record["keyframe_indices"] == [0, 4] and record["settings"]["keyframes"] == str(keys)
    # --config reproduces it
    again = tmp_path / "again.mp4"
    assert main(["propagate", str(src), "--config", str(tmp_path / "out.json"), "-o", str(again)]) == 0
    np.testing.assert_array_equal(read_video(again)[0], frames)

    def error(*args) -> str:
        assert main(["propagate", str(src), *map(str, args), *stage2, "-o", str(tmp_path / "bad.mp4")]) == 2
        lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("magicprop ")]
        assert len(lines) == 1 and not list(tmp_path.glob("bad*"))
        return lines[0]

    save_image(keys / "9.png", clip.edited[0])
    assert "names frame 9 but the clip has 6 frames" in error("--keyframes", keys)
    (keys / "9.png").unlink()
    save_image(keys / "x.png", clip.edited[0])
    assert "no frame index in its name" in error("--keyframes", keys)
    (keys / "x.png").unlink()
    assert "not both" in error("--keyframes", keys, "--keyframe-image", keys / "0.png")
    assert "must be a folder" in error("--keyframes", keys / "0.png")
    save_image(keys / "frame_000.png", clip.edited[0])
    assert "both name frame 0" in error("--keyframes", keys)
