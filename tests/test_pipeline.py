"""MagicPropPipeline end to end on synthetic clips, with every model tiny and loaded from folders."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from fixtures import save_tiny_magicprop_models, save_tiny_sam

from magicprop.editing import feather_mask
from magicprop.errors import UsageError
from magicprop.pipeline import MagicPropOutput, MagicPropPipeline
from magicprop.synthetic import render_clip
from magicprop.video import resize_frames

STEPS = dict(num_inference_steps=2, propagation_steps=2)


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    return save_tiny_magicprop_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def pipe(paths):
    return MagicPropPipeline.from_pretrained(paths["sd"], paths["controlnet"], paths["model"], paths["depth"], device="cpu")


@pytest.fixture(scope="module")
def clip():
    return render_clip(3, frames=6, size=(48, 80), edit="local")  # non-square


def _run(pipe, video, seed=0, **kw):
    return pipe(video, **{"prompt": "a red cat", **STEPS, **kw}, generator=torch.Generator().manual_seed(seed))


def test_end_to_end_shapes_and_seed(pipe, clip):
    calls = []
    a = _run(pipe, clip.source, callback=lambda t, n: calls.append((t, n)))
    assert isinstance(a, MagicPropOutput)
    assert a.frames.shape == clip.source.shape and a.frames.dtype == np.uint8
    assert a.keyframe.shape == (48, 80, 3) and a.keyframe_index == 3  # the middle frame
    np.testing.assert_array_equal(a.frames[3], a.keyframe)
    assert a.depth.shape == (6, 48, 80) and 0 <= a.depth.min() and a.depth.max() <= 1
    assert calls == [(1, 6), (3, 6), (5, 6), (6, 6)]  # keyframe 3 done first; both chains per step; the last backward frame
    b, c = _run(pipe, clip.source), _run(pipe, clip.source, seed=1)
    np.testing.assert_array_equal(a.frames, b.frames)
    assert not np.array_equal(a.frames, c.frames)


def test_frames_come_back_at_the_source_size(pipe):
    source = render_clip(4, frames=3, size=(50, 90)).source  # not a multiple of 8
    out = _run(pipe, source, max_pixels=32 * 56, output_type="pil")
    assert pipe.working_size(50, 90, 32 * 56) == (32, 56)
    assert len(out.frames) == 3 and out.frames[0].size == (90, 50)


def test_per_frame_masks_keep_the_source_outside(pipe, clip):
    out = _run(pipe, clip.source, mask=clip.masks, feather=2)
    assert out.keyframe_index == int(np.argmax(clip.masks.reshape(6, -1).sum(1)))
    for t in range(6):
        outside = feather_mask(clip.masks[t], 2) == 0
        np.testing.assert_array_equal(out.frames[t][outside], clip.source[t][outside])
    inside = clip.masks[out.keyframe_index]
    assert not np.array_equal(out.frames[out.keyframe_index][inside], clip.source[out.keyframe_index][inside])


def test_keyframe_image_never_loads_stable_diffusion(paths, clip):
    pipe = MagicPropPipeline.from_pretrained("nobody/no-such-sd", "nobody/no-such-controlnet", paths["model"], paths["depth"], device="cpu")
    user = np.full((30, 30, 3), 90, np.uint8)  # any size
    out = pipe(clip.source, keyframe_image=user, keyframe_index=0, propagation_steps=2, generator=torch.Generator().manual_seed(0))
    assert pipe.editor is None
    assert out.frames.shape == clip.source.shape and (out.keyframe == 90).all()


def test_weight_free_propagators_need_no_models(clip):
    pipe = MagicPropPipeline.from_pretrained("nobody/sd", "nobody/cn", "/no/such/model", "nobody/depth", propagator="copy", device="cpu")
    key = clip.edited[2]
    out = pipe(clip.source, keyframe_image=key, keyframe_index=2)
    assert out.depth is None
    np.testing.assert_array_equal(out.frames, np.repeat(key[None], 6, axis=0))
    flow = MagicPropPipeline.from_pretrained("nobody/sd", "nobody/cn", None, "nobody/depth", propagator="flow", device="cpu")
    assert flow(clip.source, keyframe_image=key, keyframe_index=2).frames.shape == clip.source.shape


def test_hybrid_propagator_fuses_propdpm_with_flow(paths, clip):
    """`hybrid` runs PropDPM (so it needs the model and depth) with flow fusion; the keyframe stays exact."""
    with pytest.raises(UsageError, match="hybrid propagator needs propagation models"):
        MagicPropPipeline(None, propagator="hybrid")
    hybrid = MagicPropPipeline.from_pretrained(paths["sd"], paths["controlnet"], paths["model"], "nobody/no-depth", propagator="hybrid", device="cpu")
    plain = MagicPropPipeline(hybrid.propagation_models, propagator="propdpm", model_ids=hybrid.model_ids)
    key, calls = clip.edited[2], []
    kw = dict(keyframe_image=key, keyframe_index=2, depth=clip.depth, propagation_steps=2, generator=torch.Generator().manual_seed(0))
    a = hybrid(clip.source, callback=lambda t, n: calls.append((t, n)), **kw)
    b = plain(clip.source, **kw)
    assert a.frames.shape == clip.source.shape and a.depth is not None and calls[-1] == (6, 6)
    np.testing.assert_array_equal(a.frames[2], key)
    assert not np.array_equal(a.frames, b.frames)  # flow-carried pixels replace PropDPM's where the flow is reliable


def test_given_depth_skips_the_depth_model(paths, clip):
    pipe = MagicPropPipeline.from_pretrained(paths["sd"], paths["controlnet"], paths["model"], "nobody/no-depth", device="cpu")
    out = _run(pipe, clip.source, depth=clip.depth)
    assert pipe.depth_estimator is None
    np.testing.assert_allclose(out.depth, clip.depth, atol=1e-6)


def test_resume_redoes_nothing_finished(pipe, clip, tmp_path, monkeypatch):
    import magicprop.propagation.propdpm.sampling as propagation

    work = tmp_path / "work"
    full = _run(pipe, clip.source, work_dir=work)
    steps = sorted((work / "propagation" / "steps").iterdir())
    steps[-1].unlink()  # as if killed during the last propagation step
    calls = []
    real = propagation.denoise
    monkeypatch.setattr(propagation, "denoise", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(pipe.editor, "edit_keyframe", lambda *a, **k: pytest.fail("stage I ran again"))
    resumed = _run(pipe, clip.source, work_dir=work, resume=True)
    np.testing.assert_array_equal(resumed.frames, full.frames)
    assert len(calls) == 1  # only the last step
    monkeypatch.undo()
    with pytest.raises(UsageError, match="other settings"):
        _run(pipe, clip.source, work_dir=work, resume=True, prompt="a blue dog")


def test_input_errors(pipe, paths, clip):
    with pytest.raises(UsageError, match="nothing to edit"):
        pipe(clip.source)
    with pytest.raises(UsageError, match="not both"):
        pipe(clip.source, prompt="a cat", keyframe_image=clip.edited[0])
    with pytest.raises(UsageError, match="empty"):
        _run(pipe, clip.source, mask=np.zeros((48, 80), bool))
    with pytest.raises(UsageError, match="outside the clip"):
        _run(pipe, clip.source, keyframe_index=6)
    stage2_only = MagicPropPipeline.from_pretrained(paths["sd"], paths["controlnet"], paths["model"], paths["depth"], load_editor=False, device="cpu")
    with pytest.raises(UsageError, match="load_editor=False"):
        _run(stage2_only, clip.source)


def test_keyframe_mask_from_clicks(paths, clip, tmp_path):
    pipe = MagicPropPipeline.from_pretrained(paths["sd"], paths["controlnet"], paths["model"], paths["depth"],
                                             sam_model=save_tiny_sam(tmp_path / "sam"), device="cpu")  # fmt: skip
    out = _run(pipe, clip.source, mask_points=[(40, 24)], keyframe_index=1)
    assert pipe.segmenter is not None and out.frames.shape == clip.source.shape
    mask = resize_frames(pipe.segmenter(clip.source[1], [(40, 24)]).astype(np.uint8)[..., None], (48, 80), interpolation="nearest")[..., 0] > 0
    outside = feather_mask(mask, 1) == 0  # the inpainted keyframe keeps the frame outside the clicked object's mask
    np.testing.assert_array_equal(out.keyframe[outside], clip.source[1][outside])


@pytest.mark.real_weights
@pytest.mark.skipif(os.environ.get("MAGICPROP_REAL_WEIGHTS") != "1", reason="needs SD 1.5, the depth ControlNet and Depth Anything")
def test_real_weights_edit_keeps_the_layout():
    """With the real models: a prompt edit of a synthetic clip at 256x256 comes back at its size, in every frame."""
    clip = render_clip(7, frames=4, size=(256, 256))
    pipe = MagicPropPipeline.from_pretrained(propagator="flow")
    out = pipe(clip.source, prompt="a watercolor painting", num_inference_steps=20, generator=torch.Generator().manual_seed(0))
    assert out.frames.shape == clip.source.shape and out.keyframe.std() > 10
