"""Issue 23, the plumbing: weight-free propagators work at the clip's own size, the clip is streamed, and what a run
writes at full resolution (every frame, resumable) is what the propagator made.

- a keyframe's one-pixel detail survives a pure translation at 1920x1080 through `magicprop propagate` (no shrink and
  enlarge round trip: at the old 512x512 budget a one-pixel dot is averaged away);
- memory stays flat with length: 36 frames through `magicprop propagate` allocate no more than the same clip's first
  12 frames, and less than half its frames (tracemalloc counts numpy's allocations);
- a run killed midway at full resolution resumes to the identical output; `-o DIR/` writes every frame;
- sizes: what each propagator is given, and where keyframes of other sizes go (`inputs`).
"""

from __future__ import annotations

import json
import logging
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from fixtures import save_tiny_magicprop_models

import magicprop.inputs
import magicprop.pipeline
import magicprop.propagation.store
import magicprop.video.clip
from magicprop.cli import main
from magicprop.pipeline import MagicPropPipeline
from magicprop.propagation import get_propagator
from magicprop.video import Frames, load_image, read_video, save_image, write_video


def textured_strip(h: int, w: int, seed: int = 0) -> np.ndarray:
    """(h, w, 3) uint8 smooth random texture: gradients everywhere, so optical flow is well posed."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 12 + 2, w // 12 + 2, 3), np.uint8)
    return cv2.resize(small, (w + 24, h + 24), interpolation=cv2.INTER_CUBIC)[12 : 12 + h, 12 : 12 + w]


def translated_clip(n: int, h: int, w: int, shift: int) -> np.ndarray:
    """(n, h, w, 3): frame t is a window of one strip moved `shift` px left per frame (a pure translation)."""
    strip = textured_strip(h, w + shift * n)
    return np.stack([strip[:, shift * t : shift * t + w] for t in range(n)])


def with_dots(image: np.ndarray, offset: int = 8, every: int = 16) -> np.ndarray:
    """The edit: colours inverted, plus single magenta pixels every `every` px."""
    edited = 255 - image
    edited[offset::every, offset::every] = (255, 0, 255)
    return edited


def test_one_pixel_detail_survives_a_translation_at_1080p(tmp_path):
    shift, n = 6, 2
    frames = translated_clip(n, 1080, 1920, shift)
    clip = write_video(tmp_path / "clip", frames, 24.0)  # PNG folders: lossless in and out
    key = save_image(tmp_path / "key.png", with_dots(frames[0]))
    out = tmp_path / "out"
    assert main(["propagate", str(clip), "--keyframe-image", str(key), "--keyframe-index", "0", "--propagator", "flow",
                 "--seed", "0", "-o", str(out)]) == 0  # fmt: skip
    result = read_video(out)[0]
    assert result.shape == frames.shape  # the source's size, no rounding
    np.testing.assert_array_equal(result[0], load_image(key))  # the keyframe exactly: no resample round trip
    assert json.loads((tmp_path / "out.json").read_text())["propagation_size"] == [1080, 1920]
    for t in range(1, n):
        # the dots moved with the content: at x = 8 + 16 j - shift t, away from the borders (new content enters right)
        ys, xs = np.mgrid[64:1016:16, 8 + 64 - shift * t : 1920 - 128 : 16]
        dots = result[t][ys + 8, xs]
        magenta = (dots[..., 0] > 180) & (dots[..., 1] < 90) & (dots[..., 2] > 180)
        assert magenta.mean() > 0.95, f"frame {t}: {magenta.mean():.2%} of the one-pixel dots survived"
        beside = result[t][ys + 8, xs + 2]  # two pixels away: the inverted source, not a smear of the dot
        assert (beside[..., 1] > 120).mean() > 0.5 or np.abs(beside.astype(int) - (255 - frames[t][ys + 8, xs + 2])).mean() < 12


def _traced_peak(argv: list[str]) -> int:
    tracemalloc.start()
    try:
        assert main([str(a) for a in argv]) == 0
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_stays_flat_with_the_clip_length(tmp_path, monkeypatch):
    """36 frames of 1280x720 (100 MB of pixels) against their first 12, keyframe in the middle: `chain` reads the
    source both ways and keeps its backward frames on disk, the writers take each frame as it comes, and the decoder
    keeps 4 frames (the default 256 MB would hold a short test clip whole)."""
    h, w = 720, 1280
    monkeypatch.setattr(magicprop.video.clip, "DEFAULT_CACHE_BYTES", 4 * h * w * 3)
    frames = translated_clip(36, h, w, 4)
    peaks = {}
    for n in (12, 36):
        clip = write_video(tmp_path / f"clip{n}.mp4", frames[:n], 24.0)
        key = save_image(tmp_path / f"key{n}.png", with_dots(frames[n // 2]))
        argv = ["propagate", clip, "--keyframe-image", key, "--keyframe-index", n // 2, "--propagator", "chain", "--seed", "0",
                "-o", tmp_path / f"out{n}.mp4"]  # fmt: skip
        peaks[n] = _traced_peak(argv)
        assert read_video(tmp_path / f"out{n}.mp4")[0].shape == (n, h, w, 3)
    assert peaks[36] < 1.3 * peaks[12], peaks
    assert peaks[36] < 0.6 * frames.nbytes, f"peak {peaks[36] / 1e6:.0f} MB for a clip of {frames.nbytes / 1e6:.0f} MB"


class _Killed(KeyboardInterrupt):
    """What Ctrl-C does to a run: the CLI answers 130 and keeps the work folder."""


def test_a_killed_run_resumes_to_the_identical_result_at_full_resolution(tmp_path, monkeypatch):
    frames = translated_clip(8, 480, 640, 5)  # 307,200 px: over the old 512x512 budget
    clip = write_video(tmp_path / "clip", frames, 24.0)
    key = save_image(tmp_path / "key.png", with_dots(frames[4]))
    argv = ["propagate", clip, "--keyframe-image", key, "--keyframe-index", "4", "--propagator", "flow", "--seed", "0"]
    argv = [str(a) for a in argv]
    assert main([*argv, "-o", str(tmp_path / "reference")]) == 0
    saved: list[int] = []
    real = magicprop.propagation.store.FrameStore.save

    def save(self, t, frame):
        if len(saved) == 5:  # the four frames before the keyframe and one after it
            raise _Killed()
        saved.append(t)
        real(self, t, frame)

    monkeypatch.setattr(magicprop.propagation.store.FrameStore, "save", save)
    assert main([*argv, "-o", str(tmp_path / "out")]) == 130
    monkeypatch.undo()
    assert (tmp_path / "out.magicprop-work").is_dir() and not (tmp_path / "out").exists()
    computed: list[int] = []
    monkeypatch.setattr(magicprop.propagation.store.FrameStore, "save", lambda self, t, f: (computed.append(t), real(self, t, f)))
    assert main([*argv, "-o", str(tmp_path / "out"), "--resume"]) == 0
    assert computed == [6, 7], computed  # only the frames after the kill
    np.testing.assert_array_equal(read_video(tmp_path / "out")[0], read_video(tmp_path / "reference")[0])
    assert read_video(tmp_path / "out")[0].shape == (8, 480, 640, 3)


def test_output_folder_gets_every_frame(tmp_path):
    frames = translated_clip(7, 72, 100, 3)
    clip = write_video(tmp_path / "clip.mp4", frames, 12.0)
    key = with_dots(Frames.open(clip)[2])
    save_image(tmp_path / "key.png", key)
    out = f"{tmp_path / 'frames'}/"  # as typed: a trailing slash
    assert main(["propagate", str(clip), "--keyframe-image", str(tmp_path / "key.png"), "--keyframe-index", "2", "--propagator",
                 "flow", "--seed", "0", "-o", out]) == 0  # fmt: skip
    names = sorted(p.name for p in (tmp_path / "frames").iterdir())
    assert names == [f"{t:05d}.png" for t in range(7)]
    expected = MagicPropPipeline(propagator="flow")(clip, keyframe_image=key, keyframe_index=2, generator=torch.Generator().manual_seed(0))
    for t in range(7):
        np.testing.assert_array_equal(load_image(tmp_path / "frames" / names[t]), expected.frames[t])
    assert all((tmp_path / f"frames{s}").is_file() for s in (".json", ".keyframe.png", ".comparison.mp4"))


# ---------------------------------------------------------------------------------------------------------------------
# Sizes
# ---------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    return save_tiny_magicprop_models(tmp_path_factory.mktemp("models"))


def _spy_requests(monkeypatch, *names: str) -> dict:
    seen = {}
    for name in names:
        cls = type(get_propagator(name))
        real = cls.render
        monkeypatch.setattr(cls, "render", lambda self, request, real=real, name=name: (seen.setdefault(name, request), real(self, request))[1])
    return seen


def test_each_propagator_gets_its_size(paths, monkeypatch):
    """Full-resolution propagators get the clip at its own size (a keyframe of that size as it is) and the working
    size in the request; PropDPM gets the working size; an explicit max_pixels caps both."""
    frames = translated_clip(3, 96, 160, 2)
    key = with_dots(frames[1])
    seen = _spy_requests(monkeypatch, "copy", "propdpm")
    pipe = MagicPropPipeline.from_pretrained(paths["sd"], paths["controlnet"], paths["model"], paths["depth"], device="cpu")
    kw = dict(keyframe_image=key, keyframe_index=1, propagation_steps=1, generator=torch.Generator().manual_seed(0))
    full = pipe(frames, propagator="copy", **kw)
    small = pipe(frames, propagator="propdpm", max_pixels=48 * 80, **kw)
    assert seen["copy"].source.shape == (3, 96, 160, 3) and seen["copy"].keyframe is key
    assert seen["copy"].working_size == pipe.working_size(96, 160) == (96, 160)  # within 512x512
    assert seen["propdpm"].source.shape == (3, 48, 80, 3) == (3, *seen["propdpm"].working_size, 3)
    assert full.sizes.propagation == (96, 160) and small.sizes.propagation == (48, 80)
    assert full.frames.shape == small.frames.shape == frames.shape
    np.testing.assert_array_equal(full.frames[0], key)
    capped = pipe(frames, propagator="copy", max_pixels=48 * 80, **kw)
    assert capped.sizes.propagation == (48, 80) and capped.frames.shape == frames.shape


def test_keyframes_of_other_sizes(monkeypatch, caplog):
    """A smaller keyframe of the clip's shape goes through `keyframe_to_source_size` (the guided upsampling's place),
    said in one line; a thumbnail is refused; the stage I keyframe of a prompt takes the same path."""
    frames = translated_clip(3, 192, 320, 2)
    calls = []
    real = magicprop.inputs.keyframe_to_source_size
    monkeypatch.setattr(magicprop.inputs, "keyframe_to_source_size", lambda e, s: (calls.append((e.shape, s.shape)), real(e, s))[1])
    pipe = MagicPropPipeline(propagator="copy")
    with caplog.at_level(logging.INFO):
        out = pipe(frames, keyframe_image=with_dots(frames[1])[::2, ::2], keyframe_index=1)
    assert calls == [((96, 160, 3), (192, 320, 3))] and "bringing it up" in caplog.text
    assert out.keyframe.shape == (192, 320, 3)
    with pytest.raises(magicprop.errors.UsageError, match="under 64 px"):
        pipe(frames, keyframe_image=with_dots(frames[1])[::4, ::4], keyframe_index=1)


def test_stage_one_keyframe_comes_up_to_full_size_keeping_the_source_outside_its_mask(paths, monkeypatch):
    """Stage I paints at the working size; `keyframe_to_source_size` brings the edit to the clip's size, and outside
    the keyframe mask the keyframe is the source frame itself. (The default budget is made 48x80 here: tiny SD's
    attention at a real 512x512 budget takes minutes on a CPU.)"""
    monkeypatch.setattr(magicprop.pipeline, "DEFAULT_MAX_PIXELS", 48 * 80)
    frames = translated_clip(2, 96, 160, 2)
    calls = []
    real = magicprop.inputs.keyframe_to_source_size
    monkeypatch.setattr(magicprop.inputs, "keyframe_to_source_size", lambda e, s: (calls.append((e.shape, s.shape)), real(e, s))[1])
    pipe = MagicPropPipeline.from_pretrained(paths["sd"], paths["controlnet"], None, paths["depth"], propagator="copy", device="cpu")
    mask = np.zeros((96, 160), bool)
    mask[30:60, 40:100] = True
    kw = dict(prompt="a red cat", mask=mask, keyframe_index=0, num_inference_steps=2)
    out = pipe(frames, **kw, generator=torch.Generator().manual_seed(0))
    assert out.sizes.working == (48, 80) and out.sizes.propagation == (96, 160)
    assert calls == [((48, 80, 3), (96, 160, 3))] and out.keyframe.shape == (96, 160, 3)
    far = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 3) > 4  # beyond the feathered edge
    np.testing.assert_array_equal(out.keyframe[far], frames[0][far])  # the source itself, full detail
    assert not np.array_equal(out.keyframe[mask], frames[0][mask])
    calls.clear()
    capped = pipe(frames, **kw, max_pixels=48 * 80, generator=torch.Generator().manual_seed(0))
    assert capped.sizes.propagation == (48, 80) and calls == []  # capped: the edit is already at the propagation size
