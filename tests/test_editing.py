"""Stage I editors on tiny components saved to disk in the SD folder layout (loaded through hub.load_component)."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest
import torch
from fixtures import save_tiny_controlnet, save_tiny_sam, save_tiny_sd

from magicprop.editing import (
    ControlNetDepthEditor,
    PointSegmenter,
    UserKeyframe,
    check_tokenizer,
    choose_keyframe,
    composite,
    depth_condition,
    feather_mask,
    mask_from_points,
    prepare_mask,
)
from magicprop.errors import MagicPropError, UsageError

H, W = 48, 80  # non-square, as most videos are


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("stage1")
    return save_tiny_sd(root / "sd"), save_tiny_controlnet(root / "controlnet")


@pytest.fixture(scope="module")
def editor(tiny_models):
    sd, cn = tiny_models
    return ControlNetDepthEditor.from_pretrained(sd, cn)


@pytest.fixture
def frame():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    depth = np.tile(np.linspace(0, 1, W, dtype=np.float32), (H, 1))
    return image, depth


def _edit(editor, image, depth, seed=0, **kw):
    kw.setdefault("num_inference_steps", 2)
    return editor.edit_keyframe(image, depth, "a red cat", "blurry", generator=torch.Generator().manual_seed(seed), **kw)


def test_tiny_tokenizer_is_real(editor):
    tokenizer = editor.components["tokenizer"]
    assert len(tokenizer("a photo of a red cat")["input_ids"]) > 3


def test_text_edit_shape_and_seed(editor, frame):
    image, depth = frame
    a, b, c = _edit(editor, image, depth), _edit(editor, image, depth), _edit(editor, image, depth, seed=1)
    assert a.shape == (H, W, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_odd_size_comes_back_at_the_same_size(editor, frame):
    image, depth = frame
    out = _edit(editor, image[:45, :70], depth[:45, :70])
    assert out.shape == (45, 70, 3)


def test_img2img_strength_keeps_more_of_the_frame(editor, frame):
    image, depth = frame
    weak = _edit(editor, image, depth, strength=0.3, num_inference_steps=4)
    free = _edit(editor, image, depth, num_inference_steps=4)
    assert weak.shape == (H, W, 3)
    err = lambda x: np.abs(x.astype(float) - image).mean()  # noqa: E731
    assert err(weak) < err(free)
    with pytest.raises(UsageError, match="strength"):
        _edit(editor, image, depth, strength=1.5)


def test_inpaint_leaves_outside_the_feathered_mask_untouched(editor, frame):
    image, depth = frame
    mask = np.zeros((H, W), bool)
    mask[10:30, 20:50] = True
    out = _edit(editor, image, depth, mask=mask, feather=2)
    outside = feather_mask(mask, 2) == 0
    np.testing.assert_array_equal(out[outside], image[outside])
    assert not np.array_equal(out[mask], image[mask])


def test_inpaint_mask_checks(editor, frame, caplog):
    image, depth = frame
    with pytest.raises(UsageError, match="empty"):
        _edit(editor, image, depth, mask=np.zeros((H, W), bool))
    soft = np.zeros((H // 2, W // 2), np.float32)
    soft[5:15, 10:25] = 0.8  # another size and not binary: thresholded at 0.5 and resized
    soft[0, 0] = 0.2
    with caplog.at_level(logging.WARNING):
        out = _edit(editor, image, depth, mask=soft, feather=0)
    assert "resizing" in caplog.text
    np.testing.assert_array_equal(out[:10], image[:10])  # rows 0..9 are outside the resized mask (starts at row 10)


def test_prompt_required(editor, frame):
    image, depth = frame
    with pytest.raises(UsageError, match="prompt"):
        editor.edit_keyframe(image, depth, prompt=" ")


def test_empty_tokenizer_refused():
    class Empty:
        def __len__(self):
            return 2

        def __call__(self, text):
            return {"input_ids": [0, 1]}

    with pytest.raises(MagicPropError, match="empty vocabulary"):
        check_tokenizer(Empty(), "some/model", "--base-model")


def test_missing_model_offline_fails_fast_with_one_line(tmp_path):
    t0 = time.time()
    with pytest.raises(MagicPropError) as info:
        ControlNetDepthEditor.from_pretrained("nobody/no-such-sd-model", tmp_path / "missing")
    assert time.time() - t0 < 10
    message = str(info.value)
    assert "\n" not in message and "nobody/no-such-sd-model" in message and "--base-model" in message


def test_depth_condition_is_normalised_three_channels():
    c = depth_condition(np.array([[2.0, 4.0], [3.0, 4.0]]))
    assert c.shape == (1, 3, 2, 2) and float(c.min()) == 0 and float(c.max()) == 1
    assert float(depth_condition(np.ones((2, 2))).max()) == 0  # a flat map carries no layout


def test_user_keyframe_fits_and_warns_on_aspect(caplog):
    frame = np.zeros((H, W, 3), np.uint8)
    square = np.full((64, 64, 3), 200, np.uint8)
    with caplog.at_level(logging.WARNING):
        out = UserKeyframe(square).edit_keyframe(frame, None)
    assert out.shape == (H, W, 3) and (out == 200).all()
    assert "stretches" in caplog.text
    mask = np.zeros((H, W), bool)
    mask[:, : W // 2] = True  # a local edit made elsewhere: only the part inside the mask is taken
    local = UserKeyframe(square).edit_keyframe(frame, None, mask=mask, feather=0)
    assert (local[:, : W // 2] == 200).all() and (local[:, W // 2 :] == 0).all()


def test_choose_keyframe():
    assert choose_keyframe(10) == 5
    assert choose_keyframe(10, index=3) == 3
    assert choose_keyframe(10, index=-1) == 9
    with pytest.raises(UsageError, match="outside"):
        choose_keyframe(10, index=10)
    masks = np.zeros((10, 4, 4), bool)
    masks[2, :2] = True
    masks[7, :3] = True
    assert choose_keyframe(10, masks) == 7  # largest mask
    masks[3, :3] = True
    assert choose_keyframe(10, masks) == 3  # tie: nearer the middle (5)
    assert choose_keyframe(10, np.zeros((10, 4, 4), bool)) == 5


def test_feather_and_composite_are_exact_outside():
    mask = np.zeros((20, 20), bool)
    mask[8:12, 8:12] = True
    soft = feather_mask(mask, 3)
    assert soft[mask].min() > 0 and soft.max() <= 1
    assert (soft[:5] == 0).all() and (soft[:, 15:] == 0).all()  # 3 px beyond the mask, nothing
    a, b = np.full((20, 20, 3), 255, np.uint8), np.zeros((20, 20, 3), np.uint8)
    out = composite(a, b, soft)
    np.testing.assert_array_equal(out[soft == 0], b[soft == 0])


def test_prepare_mask_thresholds_uint8_and_colour():
    m = np.zeros((4, 4, 3), np.uint8)
    m[0, 0, 1] = 200
    m[1, 1, 0] = 100
    out = prepare_mask(m, (4, 4))
    assert out.dtype == bool and out.sum() == 1 and out[0, 0]


def test_mask_from_points_with_tiny_sam(tmp_path, frame):
    image, _ = frame
    segmenter = PointSegmenter.from_pretrained(save_tiny_sam(tmp_path / "sam"))
    mask = segmenter(image, [(10, 20), (30, 40)])
    assert mask.shape == (H, W) and mask.dtype == bool
    with pytest.raises(UsageError, match="outside"):
        segmenter(image, [(W + 5, 0)])
    try:  # random weights may segment nothing: then the function must say so, never return an empty mask
        assert mask_from_points(image, [(10, 20)], segmenter).any()
    except UsageError as exc:
        assert "no object" in str(exc)
