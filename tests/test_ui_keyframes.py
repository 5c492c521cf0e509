"""The web UI's keyframe help, without a browser: the coverage curve and suggestions after a clip is loaded (and after
keyframes are kept), and an uploaded keyframe placed at the frame it was edited from."""

import numpy as np
import pytest

gr = pytest.importorskip("gradio")

from fixtures import panning_clip  # noqa: E402
from magicprop.evaluation.appearance_edits import EDITS  # noqa: E402
from magicprop.ui import callbacks as cb  # noqa: E402
from magicprop.ui.session import Session  # noqa: E402
from magicprop.video import load_image, save_image, write_video  # noqa: E402


@pytest.fixture(scope="module")
def pan(tmp_path_factory):
    """10 frames panning 5 px a frame across 64: one keyframe cannot explain it all."""
    frames = panning_clip(10, (48, 64), (0, 5), seed=12)
    folder = tmp_path_factory.mktemp("pan")
    write_video(folder / "pan", frames, 8.0)  # PNG frames: the page reads exactly these
    return folder / "pan", frames


@pytest.fixture
def session(tmp_path):
    s = Session(tmp_path)
    yield s
    s.close()


def test_loading_a_clip_shows_its_coverage_and_suggestions(session, pan):
    path, frames = pan
    assert cb.suggest_keyframes(session) == (None, "")  # nothing before a clip
    cb.load_clip(str(path), session)
    picture, note = cb.suggest_keyframes(session)
    assert load_image(picture).shape[0] > 200 and "Suggested keyframes: edit frames" in note and "in this order" in note
    table = session.coverage
    assert table is not None and table.num_frames == 10
    # keep the first suggestion: the next plan starts from it (and the table is not measured again)
    first = int(note.split("**")[1].split(",")[0])
    session.keyframe, session.keyframe_index = EDITS["cartoon"](frames[first]), first
    cb.keep_keyframe(session)
    _, again = cb.suggest_keyframes(session)
    assert session.coverage is table and again.startswith("With the kept keyframes, edit") and f"**{first}" not in again
    cb.load_clip(str(path), session)  # a new clip is measured anew
    assert session.coverage is None


def test_an_uploaded_keyframe_goes_to_the_frame_it_was_edited_from(session, pan, tmp_path):
    path, frames = pan
    cb.load_clip(str(path), session)
    save_image(tmp_path / "edit.png", EDITS["sketch"](frames[7]))
    _, note = cb.upload_keyframe(str(tmp_path / "edit.png"), 0, session)  # the slider was left at 0
    assert session.keyframe_index == 7 and "found by its structure" in note
    assert cb.keyframe_slider(session)["value"] == 7
    save_image(tmp_path / "flat.png", np.full((48, 64, 3), 128, np.uint8))  # matches nothing: the slider's frame
    _, note = cb.upload_keyframe(str(tmp_path / "flat.png"), 3, session)
    assert session.keyframe_index == 3 and "no frame matched" in note
