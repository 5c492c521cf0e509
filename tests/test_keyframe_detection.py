"""Finding the frame an edited keyframe image was made from (`keyframes.find_keyframe`): structure, not colour."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fixtures import panning_clip

from magicprop.errors import UsageError
from magicprop.evaluation.appearance_edits import EDITS
from magicprop.keyframes import CONFIDENT, find_keyframe
from magicprop.keyframes.detection import judge

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "samples"


class LazyClip:
    """A clip that hands out one frame at a time, counts what was read, and refuses to become one array."""

    def __init__(self, frames: np.ndarray):
        self.frames, self.reads = frames, []
        self.shape, self.dtype, self.ndim = frames.shape, frames.dtype, frames.ndim

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, t):
        if not isinstance(t, (int, np.integer)):
            raise TypeError("this test clip is read one frame at a time")
        self.reads.append(int(t))
        return self.frames[t]

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole clip was turned into one array")


@pytest.fixture(scope="module")
def clip():
    """12 distinct frames: a textured window sliding 5 px right and 2 px down per frame."""
    return panning_clip(12, (72, 96), (2, 5), seed=3)


@pytest.mark.parametrize("edit", ["sketch", "cartoon", "greens_to_purple", "kuwahara"])
def test_finds_the_frame_of_an_edited_frame(clip, edit):
    for k in (0, 5, 11):
        match = find_keyframe(clip, EDITS[edit](clip[k]))
        assert (match.index, match.best, match.reason) == (k, k, "matched"), match.describe()
        assert match.confidence >= CONFIDENT and match.similarity > match.runner_up_similarity
        assert abs(match.runner_up - k) >= 2  # the runner-up is another part of the clip, not a neighbour


def test_an_inverted_and_resized_edit_still_matches(clip):
    """Polarity and size do not matter: a negative at half size (an edit that swaps light and dark) is found."""
    negative = (255 - clip[7])[::2, ::2]
    assert find_keyframe(clip, np.ascontiguousarray(negative)).index == 7


def test_an_unrelated_image_is_no_confident_match_and_falls_back_to_frame_0(clip):
    other = panning_clip(1, (72, 96), (0, 0), seed=11)[0]
    match = find_keyframe(clip, EDITS["cartoon"](other))
    assert match.reason == "no match" and not match.confident and match.index == 0
    assert match.confidence < CONFIDENT
    line = match.describe()
    assert "no frame" in line and "another clip" in line and "using frame 0" in line and "--keyframe-index" in line
    assert find_keyframe(clip, other, fallback=4).index == 4


def test_a_static_clip_matches_every_frame_equally_and_uses_the_first(clip):
    still = np.repeat(clip[3:4], 9, axis=0)
    match = find_keyframe(still, EDITS["sketch"](clip[3]))
    assert match.reason == "ambiguous" and match.index == 0 and match.tied == tuple(range(9))
    assert "frames 0-8 equally" in match.describe() and "\n" not in match.describe()


def test_a_clip_that_returns_is_ambiguous_but_slow_motion_is_not(clip):
    there_and_back = np.concatenate([clip[:6], clip[:6][::-1]])  # frame 2 reappears as frame 9
    match = find_keyframe(there_and_back, clip[2])
    assert match.reason == "ambiguous" and match.tied == (2, 9) and match.index == 2
    slow = np.repeat(clip, 2, axis=0)  # every picture twice in a row: neighbours tie, that is still a match
    match = find_keyframe(slow, clip[4])
    assert match.reason == "matched" and match.index in (8, 9)


def test_one_frame_clip_and_bad_input(clip):
    match = find_keyframe(clip[:1], EDITS["sketch"](clip[0]))
    assert (match.index, match.reason, match.runner_up) == (0, "matched", None)
    with pytest.raises(UsageError, match="uint8 RGB"):
        find_keyframe(clip, clip[0].astype(np.float32))
    with pytest.raises(UsageError, match="no frames"):
        find_keyframe(clip[:0], clip[0])


def test_reads_a_lazy_clip_one_frame_at_a_time(clip):
    lazy = LazyClip(clip)
    assert find_keyframe(lazy, EDITS["sketch"](clip[6])).index == 6
    assert sorted(lazy.reads) == list(range(len(clip)))  # each frame once


def test_judge_rules():
    base = np.linspace(0.2, 0.5, 10)
    assert judge(base, null=0.1).index == 9 and judge(base, null=0.45).reason == "no match"
    record = judge(base, null=0.1).as_dict()
    assert record["index"] == 9 and record["runner_up"] == 7 and record["reason"] == "matched"


@pytest.mark.skipif(not (SHARED / "edits").is_dir(), reason="needs ../shared/samples/edits")
def test_real_first_frame_edits_are_found_at_frame_0_and_not_in_other_clips():
    from magicprop.video import load_image, read_video

    clips = {name: read_video(SHARED / "edits" / f"{name}.mp4", short_side=128)[0] for name in ("kitten", "old_man", "couple")}
    for name, clip in clips.items():
        for image in sorted((SHARED / "edits").glob(f"{name}_*_000.png")):
            edited = load_image(image)
            match = find_keyframe(clip, edited)
            assert match.index == 0 and match.confident, f"{image.name}: {match.describe()}"
            for other in set(clips) - {name}:
                assert not find_keyframe(clips[other], edited).confident, f"{image.name} in {other}"
