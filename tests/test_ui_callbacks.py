"""The web UI's callbacks, called as the page calls them but without a browser (tests/test_ui_browser.py drives the page).

Models are the tiny test components in folders (`save_tiny_magicprop_models`), loaded through the same `ActiveModels`
the app uses, so stage I, PropDPM and the depth estimator all really run; the bundled examples are rendered as at
start-up.
"""

import json

import numpy as np
import pytest

gr = pytest.importorskip("gradio")

from fixtures import save_tiny_magicprop_models  # noqa: E402
from magicprop.propagation import PROPAGATORS  # noqa: E402
from magicprop.synthetic import render_clip, write_clip  # noqa: E402
from magicprop.ui import ActiveModels, ModelOptions, build_app  # noqa: E402
from magicprop.ui import callbacks as cb  # noqa: E402
from magicprop.ui.session import Examples, Session  # noqa: E402
from magicprop.video import probe, read_video, save_image  # noqa: E402

T, H, W = 8, 48, 64


class RecordProgress:
    """Stands in for gr.Progress: records (done, total) and can press Cancel from inside a job."""

    def __init__(self, session=None, cancel_at=None):
        self.calls, self.session, self.cancel_at = [], session, cancel_at

    def __call__(self, progress, desc=None, unit="steps", **kwargs):
        self.calls.append(progress)
        if self.cancel_at is not None and progress[0] >= self.cancel_at:
            cb.cancel(self.session)


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    return save_tiny_magicprop_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def models(paths):
    opts = ModelOptions(model=str(paths["model"]), base_model=str(paths["sd"]), controlnet=str(paths["controlnet"]),
                        depth_model=str(paths["depth"]), device="cpu")  # fmt: skip
    return ActiveModels.load(opts)


@pytest.fixture(scope="module")
def weightless():
    """What a fresh install offline gets when no propagation model loads: flow and copy only, no stage I."""
    return ActiveModels.load(ModelOptions(model=None, load_editor=False))


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return write_clip(render_clip(3, frames=T, size=(H, W), edit="local"), tmp_path_factory.mktemp("clip"))


@pytest.fixture
def session(tmp_path):
    s = Session(tmp_path)
    yield s
    s.close()


def _loaded(session, clip_dir, index=2):
    cb.load_clip(str(clip_dir / "source.mp4"), session)
    key = read_video(clip_dir / "edited.mp4")[0][index]
    save_image(clip_dir.parent / "key.png", key)
    cb.upload_keyframe(str(clip_dir.parent / "key.png"), index, session)
    return key


def test_load_clip_reports_length_size_fps_and_sets_the_slider(session, clip_dir):
    info, slider, keyframe, editor = cb.load_clip(str(clip_dir / "source.mp4"), session)
    assert f"{T} frames" in info and f"{W}×{H} px" in info and "8 fps" in info
    assert slider["maximum"] == T - 1 and slider["value"] == 0 and slider["interactive"] is True
    assert keyframe is None  # a new clip clears the previous keyframe
    assert editor["background"].shape == (H, W, 3)


def test_slider_shows_that_frame(session, clip_dir):
    cb.load_clip(str(clip_dir / "source.mp4"), session)
    frames, _ = read_video(clip_dir / "source.mp4")
    for k in (0, 5, T - 1):
        assert np.array_equal(cb.show_frame(k, session)["background"], frames[k])
    assert np.array_equal(cb.show_frame(10_000, session)["background"], frames[-1])  # clamped, not an IndexError


def test_uploaded_keyframe_of_another_size_is_fitted(session, clip_dir, tmp_path):
    cb.load_clip(str(clip_dir / "source.mp4"), session)
    save_image(tmp_path / "big.png", np.full((2 * H, 2 * W, 3), 90, np.uint8))
    fitted, note = cb.upload_keyframe(str(tmp_path / "big.png"), 3, session)
    assert fitted.shape == (H, W, 3) and session.keyframe.shape == (H, W, 3)
    assert session.keyframe_index == 3 and session.keyframe_source == "uploaded"
    assert f"{2 * W}×{2 * H}" in note and "stretched" not in note


def test_propagate_with_flow_writes_a_readable_video_of_every_frame(session, clip_dir, weightless):
    _loaded(session, clip_dir, index=2)
    progress = RecordProgress()
    comparison, files, note = cb.propagate("flow", 25, 0, 0.65, session, weightless, progress=progress)
    edited = next(f for f in files if f.endswith("-edited.mp4"))
    frames, fps = read_video(edited)
    assert frames.shape == (T, H, W, 3) and fps == pytest.approx(8.0)
    assert probe(comparison).frames == T and probe(comparison).width > W  # source | edited, side by side
    assert progress.calls[-1] == (T, T) and len(progress.calls) == T  # one tick per finished frame
    assert str(session.dir) in edited  # per-session temporary folder
    assert "flow" in note
    # the steadiness slider reaches flow and the record
    _, files, _ = cb.propagate("flow", 25, 0, 0.9, session, weightless, progress=RecordProgress())
    assert json.loads(open(next(f for f in files if f.endswith(".json"))).read())["temporal_blend"] == 0.9


def test_settings_json_has_every_key(session, clip_dir, weightless):
    _loaded(session, clip_dir, index=4)
    _, files, _ = cb.propagate("copy", 25, 0, 0.65, session, weightless, progress=RecordProgress())
    settings = json.loads(open(next(f for f in files if f.endswith(".json"))).read())
    assert set(cb.SETTINGS_KEYS) <= set(settings), set(cb.SETTINGS_KEYS) - set(settings)
    assert settings["frames"] == T and settings["keyframe_index"] == 4 and settings["propagator"] == "copy"
    assert settings["temporal_blend"] is None  # flow's setting: copy has none
    assert settings["keyframe_source"] == "uploaded" and settings["width"] == W and settings["height"] == H
    png = next(f for f in files if f.endswith(".png"))
    assert read_video(png)[0].shape[1:] == (H, W, 3)


def test_kept_keyframes_are_all_propagated(session, clip_dir, weightless, tmp_path):
    with pytest.raises(gr.Error, match="upload a clip"):
        cb.keep_keyframe(session)
    cb.load_clip(str(clip_dir / "source.mp4"), session)
    with pytest.raises(gr.Error, match="no edited keyframe to keep"):
        cb.keep_keyframe(session)
    dark, light = np.full((H, W, 3), 40, np.uint8), np.full((H, W, 3), 200, np.uint8)
    save_image(tmp_path / "dark.png", dark)
    save_image(tmp_path / "light.png", light)
    cb.upload_keyframe(str(tmp_path / "dark.png"), 1, session)
    assert "Kept keyframes: 1." in cb.keep_keyframe(session)
    cb.upload_keyframe(str(tmp_path / "light.png"), 5, session)  # the current keyframe joins the kept one
    progress = RecordProgress()
    _, files, note = cb.propagate("copy", 25, 0, 0.65, session, weightless, progress=progress)
    frames, _ = read_video(next(f for f in files if f.endswith("-edited.mp4")))
    # copy from both ends, crossfaded: frames 2-4 step from 40 to 200 (mp4 compression aside)
    assert np.allclose(frames.reshape(T, -1).mean(1), [40, 40, 80, 120, 160, 200, 200, 200], atol=3)
    assert "keyframes 1, 5" in note and sum(f.endswith(".png") for f in files) == 2
    settings = json.loads(open(next(f for f in files if f.endswith(".json"))).read())
    assert settings["keyframe_indices"] == [1, 5]
    assert "current keyframe only" in cb.clear_kept(session) and session.kept == {}
    cb.keep_keyframe(session)
    cb.load_clip(str(clip_dir / "source.mp4"), session)  # a new clip forgets them
    assert session.kept == {}


@pytest.mark.parametrize("content", [b"", b"this is not a video\n", "image"])
def test_bad_clip_upload_gives_one_readable_line(session, tmp_path, content):
    path = tmp_path / "upload.mp4"
    if content == "image":
        save_image(tmp_path / "upload.png", np.zeros((H, W, 3), np.uint8))
        path = tmp_path / "upload.png"
    else:
        path.write_bytes(content)
    with pytest.raises(gr.Error) as err:
        cb.load_clip(str(path), session)
    message = str(err.value.message)
    assert "\n" not in message and "Traceback" not in message and path.name in message
    assert session.clip is None


def test_bad_keyframe_upload_and_missing_steps_give_readable_errors(session, clip_dir, tmp_path, weightless):
    with pytest.raises(gr.Error, match="upload a clip"):
        cb.propagate("flow", 25, 0, 0.65, session, weightless, progress=RecordProgress())
    cb.load_clip(str(clip_dir / "source.mp4"), session)
    with pytest.raises(gr.Error, match="no edited keyframe"):
        cb.propagate("flow", 25, 0, 0.65, session, weightless, progress=RecordProgress())
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(gr.Error) as err:
        cb.upload_keyframe(str(tmp_path / "notes.png"), 0, session)
    assert "\n" not in str(err.value.message) and "notes.png" in str(err.value.message)


def test_weightless_models_say_why_and_offer_flow(weightless, session, clip_dir):
    status = weightless.status_markdown()
    assert "Propagation:" in status and "Stage I editor:" in status and "--no-editor" in status
    assert "flow" in weightless.propagators() and weightless.default_propagator() in ("flow", "propdpm")
    cb.load_clip(str(clip_dir / "source.mp4"), session)
    with pytest.raises(gr.Error, match="upload a keyframe"):
        cb.generate_keyframe(None, "a red car", "", 0, 2, 7.5, 0, session, weightless, progress=RecordProgress())


@pytest.mark.slow  # loads and runs the tiny SD + ControlNet twice (inpainting), about 10-25 s on 2 shared cores
def test_generate_keyframe_then_another_seed(models, session, clip_dir):
    cb.load_clip(str(clip_dir / "source.mp4"), session)
    assert models.editor_ok and models.propagators() == list(PROPAGATORS)
    layer = np.zeros((H, W, 4), np.uint8)
    layer[10:30, 20:40] = (255, 0, 255, 255)  # a painted stroke: the region stage I may repaint
    editor = {"background": None, "layers": [layer], "composite": None}
    a, note = cb.generate_keyframe(editor, "a red car", "", 1, 2, 7.5, 3, session, models, progress=RecordProgress())
    assert a.shape == (H, W, 3) and a.dtype == np.uint8 and session.keyframe_index == 3
    assert session.keyframe_source == "generated" and session.edit["mask_pixels"] == 20 * 20 and "mask" in note
    b, _ = cb.generate_keyframe(editor, "a red car", "", 2, 2, 7.5, 3, session, models, progress=RecordProgress())
    assert not np.array_equal(a, b)  # a new seed gives a new candidate
    with pytest.raises(gr.Error, match="prompt"):
        cb.generate_keyframe(editor, "  ", "", 1, 2, 7.5, 3, session, models, progress=RecordProgress())


@pytest.mark.slow  # the depth model and PropDPM really run
def test_propdpm_estimates_depth_for_uploads_and_uses_exact_depth_for_examples(models, session, clip_dir, tmp_path):
    _loaded(session, clip_dir, index=1)
    _, files, _ = cb.propagate("propdpm", 2, 0, 0.65, session, models, progress=RecordProgress())
    assert read_video(files[0])[0].shape == (T, H, W, 3)
    examples = Examples.render(tmp_path / "examples", count=1, frames=T, size=(32, 32))
    info, *_ = cb.load_clip(examples.paths[0], session, examples)
    assert "ground-truth depth" in info and session.clip.depth.shape == (T, 32, 32)


def test_cancel_stops_a_running_job_at_the_next_frame(session, clip_dir, weightless):
    _loaded(session, clip_dir)
    assert cb.cancel(session) == "Nothing is running."
    progress = RecordProgress(session, cancel_at=2)
    with pytest.raises(gr.Error, match="cancelled"):
        cb.propagate("flow", 25, 0, 0.65, session, weightless, progress=progress)
    assert len(progress.calls) == 2 and session.busy is None
    cb.propagate("flow", 25, 0, 0.65, session, weightless, progress=RecordProgress())  # the next job is not cancelled


def test_mask_from_editor_unions_layers_and_ignores_empty_ones():
    assert cb.mask_from_editor(None, (H, W)) is None
    empty = np.zeros((H, W, 4), np.uint8)
    assert cb.mask_from_editor({"layers": [empty]}, (H, W)) is None
    small = np.zeros((H // 2, W // 2, 4), np.uint8)
    small[:4, :4, 3] = 255  # painted on a half-size canvas: scaled to the frame
    mask = cb.mask_from_editor({"layers": [empty, small]}, (H, W))
    assert mask.shape == (H, W) and mask[:8, :8].all() and mask.sum() == 64


def test_app_wires_model_jobs_to_one_slot_and_keeps_light_events_free(weightless, tmp_path):
    app = build_app(models=weightless, workdir=tmp_path, num_examples=1, example_frames=4, example_size=(32, 32))
    fns = {fn.api_name: fn for fn in app.fns.values()}
    jobs = [fns[name] for name in ("generate_keyframe", "regenerate_keyframe", "propagate")]
    assert {fn.concurrency_id for fn in jobs} == {"model"} and {fn.concurrency_limit for fn in jobs} == {1}
    assert all(fns[name].concurrency_limit is None for name in ("load_clip", "show_frame", "upload_keyframe"))
    assert fns["cancel"].queue is False  # Cancel never waits behind the job it cancels
    job_ids = {i for i, fn in app.fns.items() if any(fn is job for job in jobs)}
    assert any(job_ids <= set(fn.cancels) for fn in app.fns.values() if fn.cancels)  # Cancel stops every model job
    assert (tmp_path / "examples").is_dir() and (tmp_path / "sessions").is_dir()
