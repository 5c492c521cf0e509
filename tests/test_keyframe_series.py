"""Several keyframes edited by stage I so that they agree (`--keyframes auto|I,J,K`), on tiny models: each later
keyframe starts from the edit carried to it by `flow` and is refined image-to-image at its strength."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from fixtures import panning_clip, save_tiny_magicprop_models

import magicprop.pipeline as pipeline_module
from magicprop.cli import main
from magicprop.editing import edit_keyframe_series
from magicprop.errors import UsageError
from magicprop.keyframes import plan_keyframes
from magicprop.pipeline import MagicPropPipeline
from magicprop.propagation import PROPAGATORS, PropagationRequest
from magicprop.video import read_video, write_video

STEPS = 4


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    return save_tiny_magicprop_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def pipe(paths):
    return MagicPropPipeline.from_pretrained(paths["sd"], paths["controlnet"], None, paths["depth"], propagator="flow", device="cpu")


@pytest.fixture(scope="module")
def clip():
    """8 frames of 48x80 (multiples of 8: the working size is the source size), panning 6 px a frame."""
    return panning_clip(8, (48, 80), (0, 6), seed=7)


@pytest.fixture
def spy(pipe, monkeypatch):
    """Records every stage I call (start image, strength, mask, result), the UNet's denoising steps of each, and every
    edit carried to a later keyframe."""
    pipe.prepare(prompt="a red cat")
    calls, carried = [], {}
    real_edit, real_carry = pipe.editor.edit_keyframe, pipeline_module.carry_edit
    steps = []
    hook = pipe.editor.components["unet"].register_forward_hook(lambda *_: steps.append(1))

    def edit(image, depth, *args, **kwargs):
        before = len(steps)
        result = real_edit(image, depth, *args, **kwargs)
        calls.append({"image": image.copy(), "strength": kwargs.get("strength"), "mask": kwargs.get("mask"),
                      "result": result, "unet_steps": len(steps) - before})  # fmt: skip
        return result

    def carry(source, edited, t):
        carried[t] = (dict(edited), real_carry(source, edited, t))
        return carried[t][1]

    monkeypatch.setattr(pipe.editor, "edit_keyframe", edit)
    monkeypatch.setattr(pipeline_module, "carry_edit", carry)
    yield calls, carried
    hook.remove()


def _run(pipe, clip, **kw):
    return pipe(clip, prompt="a red cat", num_inference_steps=STEPS, generator=torch.Generator().manual_seed(0), **kw)


def test_a_later_keyframe_starts_from_the_edit_carried_to_it(pipe, clip, spy):
    calls, carried = spy
    out = _run(pipe, clip, keyframe_indices=[2, 6], keyframe_strength=0.5)
    assert out.keyframe_indices == (2, 6) and out.keyframe_index == 2
    first, later = calls
    # the first keyframe is painted from noise on its own frame: every step
    np.testing.assert_array_equal(first["image"], clip[2])
    assert first["strength"] is None and first["unet_steps"] == STEPS
    # the later one starts from the first edit carried to frame 6 by flow, exactly what flow gives there
    edited, start = carried[6]
    np.testing.assert_array_equal(edited[2], first["result"])
    # (the clip up to frame 6: the frames after it are not read, so the blend's second pass starts at 6)
    flow = list(PROPAGATORS["flow"](PropagationRequest(source=clip[:7], keyframes={2: first["result"]}, progress=False)))
    np.testing.assert_array_equal(start, flow[6])
    np.testing.assert_array_equal(later["image"], start)
    # ...refined at its strength: the img2img pipeline runs the last half of the schedule
    assert later["strength"] == 0.5 and later["unet_steps"] == STEPS // 2
    # both keyframes are exact in the result
    np.testing.assert_array_equal(out.frames[2], first["result"])
    np.testing.assert_array_equal(out.frames[6], later["result"])
    assert not np.array_equal(out.frames[6], start)  # stage I did change the carried picture


def test_the_strength_is_the_callers(pipe, clip, spy):
    calls, _ = spy
    _run(pipe, clip, keyframe_indices=[0, 7], keyframe_strength=0.75)
    assert calls[1]["strength"] == 0.75 and calls[1]["unet_steps"] == 3


def test_order_is_the_lists_and_each_later_keyframe_sees_all_earlier_ones(pipe, clip, spy):
    calls, carried = spy
    out = _run(pipe, clip, keyframe_indices=[4, 0, -1])
    assert out.keyframe_indices == (4, 0, 7) and out.keyframe_index == 4
    assert sorted(carried[0][0]) == [4] and sorted(carried[7][0]) == [0, 4]
    for call, k in zip(calls, (4, 0, 7)):
        np.testing.assert_array_equal(out.frames[k], call["result"])


def test_masks_are_respected(pipe, clip, spy):
    calls, _ = spy
    masks = np.zeros(clip.shape[:3], bool)
    masks[:, 10:40, 20:60] = True
    masks[5, :, :] = False
    masks[5, 0:20, 0:30] = True  # frame 5 has a mask of its own
    out = _run(pipe, clip, keyframe_indices=[1, 5], mask=masks, feather=0)
    np.testing.assert_array_equal(calls[1]["mask"], masks[5])
    np.testing.assert_array_equal(out.frames[5][~masks[5]], clip[5][~masks[5]])  # the source outside it


def test_auto_edits_the_suggested_keyframes_in_their_order(pipe, clip, spy):
    calls, _ = spy
    suggested = plan_keyframes(clip, max_keyframes=4, progress=False)[0].suggested
    assert len(suggested) >= 2  # a 42-pixel pan over 80: one keyframe cannot explain it all
    out = _run(pipe, clip, keyframe_indices="auto")
    assert out.keyframe_indices == suggested and [c["strength"] for c in calls] == [None] + [0.5] * (len(suggested) - 1)


def test_series_bad_input(pipe, clip):
    with pytest.raises(UsageError, match="needs --prompt"):
        pipe(clip, keyframe_indices=[0, 4])
    with pytest.raises(UsageError, match="takes no keyframe image"):
        pipe(clip, keyframe_image=clip[0], keyframe_indices=[0, 4])
    with pytest.raises(UsageError, match="outside the clip"):
        _run(pipe, clip, keyframe_indices=[0, 8])
    with pytest.raises(UsageError, match="named twice"):
        _run(pipe, clip, keyframe_indices=[0, -8])
    with pytest.raises(UsageError, match=r"--keyframe-strength must be in \(0, 1\]"):
        _run(pipe, clip, keyframe_indices=[0, 4], keyframe_strength=0)


def test_edit_keyframe_series_mechanism():
    seen = []
    out = edit_keyframe_series([3, 1], lambda k, start: np.full((1,), k if start is None else start[0] + 10),
                               lambda edited, k: seen.append((sorted(edited), k)) or np.array([sum(edited.values())[0]]))  # fmt: skip
    assert seen == [([3], 1)] and {k: int(v[0]) for k, v in out.items()} == {3: 3, 1: 13}


def test_cli_edit_keyframes_list_auto_and_config(paths, clip, tmp_path, capsys):
    src = tmp_path / "clip"
    write_video(src, clip, 8.0)  # a folder of PNGs: lossless
    models = ["--base-model", paths["sd"], "--controlnet", paths["controlnet"], "--depth-model", paths["depth"]]
    run = lambda *a: main(["edit", str(src), "--prompt", "a red cat", "--steps", "2", "--seed", "1", *map(str, models), *map(str, a)])  # noqa: E731
    assert run("--keyframes", "1,6", "--keyframe-strength", "0.5", "-o", tmp_path / "out") == 0
    assert "keyframes 1, 6" in capsys.readouterr().out
    record = json.loads((tmp_path / "out.json").read_text())
    assert record["keyframe_indices"] == [1, 6] and record["settings"]["edit_keyframes"] == "1,6"
    assert record["settings"]["keyframes"] is None and record["settings"]["keyframe_strength"] == 0.5
    assert main(["edit", str(src), "--config", str(tmp_path / "out.json"), "-o", str(tmp_path / "again")]) == 0
    np.testing.assert_array_equal(read_video(tmp_path / "again")[0], read_video(tmp_path / "out")[0])

    def error(*args) -> str:
        assert main([*map(str, args), "-o", str(tmp_path / "bad")]) == 2
        lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("magicprop ")]
        assert len(lines) == 1 and not list(tmp_path.glob("bad*"))
        return lines[0]

    assert "use `magicprop edit --prompt" in error("propagate", src, "--keyframes", "auto")
    assert "takes no keyframe image" in error("edit", src, "--keyframes", "0,3", "--keyframe-image", tmp_path / "out.keyframe.png")
    assert "must be in (0, 1]" in error("edit", src, "--prompt", "x", "--keyframes", "auto", "--keyframe-strength", "1.5")
