"""MagicProp Suggest Keyframes (the node pack's `magicprop keyframes`) without ComfyUI: the CLI's plan on the same
frames, outputs that MagicProp Propagate takes as they are, bad inputs in one line; and the IMAGE batch MagicProp
Propagate fills frame by frame holds the numbers `to_image` gives."""

from __future__ import annotations

import json
import sys
import traceback

import numpy as np
import pytest
import torch
from test_comfyui_pack import FRAMES, PACK, SIZE, clip, image, pack, to_uint8  # noqa: F401 - fixtures

from magicprop.cli import main
from magicprop.errors import UsageError
from magicprop.video import Frames

# (CLI arguments after VIDEO, node arguments): the same request as flags and as widgets
CASES = {
    "nothing given": (["--max", "2"], dict(keyframe_indices="", max_keyframes=2, target=0.95)),
    "frame 1 given": (["--keyframe-index", "1", "--max", "3"], dict(keyframe_indices="1", max_keyframes=3, target=0.95)),
    "two given, from the end, other settings": (
        ["--keyframe-index", "-1", "--keyframe-index", "3", "--max", "2", "--target", "0.999", "--size", "40", "--every", "2"],
        dict(keyframe_indices="-1, 3", max_keyframes=2, target=0.999, coverage_size=40, candidates_every=2),
    ),  # fmt: skip
}


def suggest(pack, clip, **args):
    node = pack.NODE_CLASS_MAPPINGS["MagicPropSuggestKeyframes"]()
    return node.suggest(image(clip.source), **args)


@pytest.mark.parametrize("case", list(CASES))
def test_suggest_keyframes_gives_the_cli_plan(pack, clip, tmp_path, monkeypatch, case):
    cli_args, node_args = CASES[case]
    monkeypatch.chdir(clip.root)
    assert main(["keyframes", "source", *cli_args, "-o", str(tmp_path / "plan.json")]) == 0
    plan = json.loads((tmp_path / "plan.json").read_text())
    indices, frames, coverage = suggest(pack, clip, **node_args)
    # the given frames in the user's order (from the end: as frames), then the CLI's suggestions in its order
    given = [int(k) % FRAMES for k in node_args["keyframe_indices"].replace(",", " ").split()]
    assert plan["suggested"], plan  # a plan with suggestions: the case compares something
    assert indices == ", ".join(map(str, given + plan["suggested"]))
    # the source frames at those indices, the loader's own values
    order = [int(k) for k in indices.split(", ")]
    assert frames.dtype == torch.float32 and torch.equal(frames, image(clip.source[order]))
    # the coverage curve as one picture, not blank
    assert coverage.dtype == torch.float32 and coverage.ndim == 4 and coverage.shape[0] == 1 and coverage.shape[-1] == 3
    assert coverage.shape[1] > 300 and coverage.shape[2] > 500 and float(coverage.std()) > 0.05


def test_suggested_keyframes_go_into_propagate_as_they_are(pack, clip):
    indices, frames, _ = suggest(pack, clip, keyframe_indices="1", max_keyframes=2, target=0.95)
    edited = 1.0 - frames  # a stand-in for the user's edit of the batch: every keyframe visibly changed
    (out,) = pack.NODE_CLASS_MAPPINGS["MagicPropPropagate"]().propagate(image(clip.source), edited, indices, "flow", 0)
    for j, k in enumerate(int(k) for k in indices.split(", ")):
        np.testing.assert_array_equal(to_uint8(out[k]), to_uint8(edited[j]))  # every keyframe kept exactly


BAD = {
    "empty batch": (dict(images=image(np.zeros((0, *SIZE, 3), np.uint8))), r"^images is an empty batch \(0 images\)"),
    "one frame": (dict(images=image(np.zeros((1, *SIZE, 3), np.uint8))), r"the clip has 1 frame\(s\): with nothing to propagate to"),
    "index outside": (dict(keyframe_indices="0, 6"), r"keyframe index 6 is outside the clip \(0\.\.5, or -6\.\.-1 from the end\)"),
    "not numbers": (dict(keyframe_indices="0; two"), r"keyframe_indices '0; two' is not a list of frame indices"),
    "the same frame twice": (dict(keyframe_indices="5, -1"), r"names frame 5 twice \(-1 counts from the end\)"),
    "not an image": (dict(images=torch.zeros(FRAMES, *SIZE)), r"images must be an \[B, H, W, 3\] IMAGE batch"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_suggest_bad_input_is_one_clear_line_raised_from_the_node(pack, clip, case):
    change, message = BAD[case]
    args = {**dict(images=image(clip.source), keyframe_indices="", max_keyframes=2, target=0.95), **change}
    with pytest.raises(UsageError, match=message) as info:
        pack.NODE_CLASS_MAPPINGS["MagicPropSuggestKeyframes"]().suggest(**args)
    assert "\n" not in str(info.value) and info.value.__cause__ is None
    files = [frame.filename for frame in traceback.extract_tb(info.value.__traceback__)]
    assert not any("/src/magicprop/" in f for f in files) and files[-1].startswith(str(PACK)), files


def test_propagate_fills_comfyuis_batch_with_to_images_numbers(pack):
    module = sys.modules[pack.__name__ + ".tensors"]  # the pack's module, imported by its location
    frames = np.random.default_rng(0).integers(0, 256, (5, 7, 9, 3), dtype=np.uint8)
    batch = module.collect_image(iter(frames), frames.shape)
    assert batch.dtype == torch.float32 and torch.equal(batch, module.to_image(frames))  # bit for bit
    with pytest.raises(RuntimeError, match="made 4 frames for a 5-frame clip"):
        module.collect_image(iter(frames[:4]), frames.shape)
    with pytest.raises(RuntimeError, match="more than the 4 frames"):
        module.collect_image(iter(frames), (4, 7, 9, 3))


def test_propagate_reads_comfyuis_batch_as_the_same_lazy_clip(pack):
    module = sys.modules[pack.__name__ + ".tensors"]
    frames = np.random.default_rng(1).integers(0, 256, (9, 7, 5, 3), dtype=np.uint8)
    batch = image(frames)
    clip = module.to_clip(batch)
    expected = Frames.from_array(module.to_frames(batch, "images"))
    assert clip.shape == expected.shape == frames.shape and len(clip) == 9
    for t in (0, 8, -1, 3, 3, 0):  # forward, backward, again: the reads a propagator makes
        np.testing.assert_array_equal(clip[t], frames[t])
    np.testing.assert_array_equal(clip[2:6].numpy(), frames[2:6])
    np.testing.assert_array_equal(clip.resized((4, 3))[5], expected.resized((4, 3))[5])
    assert clip.identity == expected.identity  # the same digest as the array's (work-folder fingerprints)
    assert len(clip._source.cache) <= 4  # a few frames, not the clip
    with pytest.raises(UsageError, match="images is an empty batch"):
        module.to_clip(batch[:0])
