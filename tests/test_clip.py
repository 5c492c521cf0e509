"""`video.Frames`, the lazy clip: the same frames as `read_video` in any order of access, views that decode nothing,
a bounded cache, and a stable identity for work-folder fingerprints."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading

import numpy as np
import pytest

import magicprop.video.clip as clip_module
from magicprop.errors import UsageError
from magicprop.video import Frames, clip_digest, read_video, resize_frames, write_video

T, H, W = 40, 48, 64
FRAME_BYTES = H * W * 3


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """(mp4 path, its frames as decoded by read_video): random content, so any mix-up of frames shows."""
    rng = np.random.default_rng(0)
    path = write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", rng.integers(0, 256, (T, H, W, 3), np.uint8), 12.0)
    return path, read_video(path)[0]


@pytest.fixture
def decoded(monkeypatch):
    """A list that grows by one for every frame any Frames decodes (converted to RGB or not)."""
    count: list[int] = []
    real = clip_module._decode

    def counting(*args, **kwargs):
        for frame in real(*args, **kwargs):
            count.append(1)
            yield frame

    monkeypatch.setattr(clip_module, "_decode", counting)
    return count


def test_behaves_like_the_array_read_video_gives(video):
    path, ref = video
    frames = Frames.open(path)
    assert (len(frames), frames.shape, frames.dtype, frames.ndim, frames.fps) == (T, ref.shape, np.uint8, 4, 12.0)
    for t in [5, 3, 39, 0, 38, 37, 10, -1, -40]:  # forward, back, jumps, negative
        np.testing.assert_array_equal(frames[t], ref[t])
    np.testing.assert_array_equal(frames[7, 1:3, 2, 0], ref[7, 1:3, 2, 0])
    np.testing.assert_array_equal(np.stack(list(frames)), ref)
    with pytest.raises(IndexError):
        frames[T]
    with pytest.raises(TypeError, match="frame by frame"):
        np.asarray(frames)  # a whole clip is never made one array by accident
    with pytest.raises(TypeError):
        frames[[1, 2]]
    assert not frames[3].flags.writeable  # one cached array serves every reader


def test_views_decode_nothing_and_show_the_right_frames(video, decoded):
    path, ref = video
    frames = Frames.open(path)
    view = frames[30:5:-3]
    small = view.resized((24, 32))
    assert len(decoded) == T  # only the count, at len()
    assert view.shape == (9, H, W, 3) and small.shape == (9, 24, 32, 3) and view.fps == 4.0
    np.testing.assert_array_equal(view.numpy(), ref[30:5:-3])
    np.testing.assert_array_equal(small[2], resize_frames(ref[24], (24, 32)))
    assert frames.resized((H, W)) is frames


def test_walking_backward_decodes_each_window_once_and_the_cache_stays_bounded(video, decoded):
    """The backward chain of a propagation: frames T-1 down to 0, with the keyframe (T-1) read again every step; then
    the forward chain and the writer, each reading forward from another place."""
    path, ref = video
    frames = Frames.open(path, cache_bytes=8 * FRAME_BYTES)  # 8 frames: windows of 5 going back, 3 kept (the keyframe)
    len(frames)
    decoded.clear()
    for t in range(T - 1, -1, -1):
        np.testing.assert_array_equal(frames[t], ref[t])
        np.testing.assert_array_equal(frames[T - 1], ref[T - 1])
        assert len(frames._source.cache) <= 8
    # each window of 5 is decoded from the start of the file: about T^2 / 10 frames, not T^2 / 2 (one restart per frame)
    assert len(decoded) <= T * T / 10 + 2 * T, len(decoded)
    decoded.clear()
    for t in range(T // 2):  # then forward from the middle (the propagation) and from 0 (the writer), interleaved
        np.testing.assert_array_equal(frames[T // 2 + t], ref[T // 2 + t])
        np.testing.assert_array_equal(frames[t], ref[t])
    assert len(decoded) <= 2 * T, len(decoded)  # one decoder each: at most two passes


def test_several_threads_read_one_clip(video):
    path, ref = video
    frames = Frames.open(path, cache_bytes=4 * FRAME_BYTES)
    wrong: list[int] = []

    def read(order):
        wrong.extend(t for t in order if not np.array_equal(frames[t], ref[t]))

    threads = [threading.Thread(target=read, args=(order,)) for order in (range(T), range(T - 1, -1, -1), range(0, T, 3))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []


def test_folders_and_arrays_behind_the_same_interface(video, tmp_path):
    _, ref = video
    folder = write_video(tmp_path / "frames", ref[:6], 12.0)
    from_folder, from_array = Frames.open(folder, fps=6.0), Frames.from_array(ref)
    assert from_folder.shape == (6, H, W, 3) and from_folder.fps == 6.0 and from_array.fps is None
    np.testing.assert_array_equal(from_folder.numpy(), ref[:6])
    view = from_array[2]
    assert np.shares_memory(view, ref) and not view.flags.writeable and ref.flags.writeable  # no copy; the caller's array stays writable
    with pytest.raises(UsageError, match="uint8"):
        Frames.from_array(ref.astype(np.float32))
    with pytest.raises(UsageError, match="not found"):
        Frames.open(tmp_path / "missing.mp4")


def test_identity_is_stable_across_processes_and_changes_with_the_frames(video, tmp_path):
    path, ref = video
    frames = Frames.open(path)
    code = f"from magicprop.video import Frames; print(Frames.open({str(path)!r}).identity)"
    other_process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert frames.identity == other_process
    copy = tmp_path / "copy.mp4"
    copy.write_bytes(path.read_bytes())
    assert Frames.open(copy).identity == frames.identity  # content, not the name
    others = {frames[1:].identity, frames[::2].identity, frames.resized((24, 32)).identity}
    assert len(others) == 3 and frames.identity not in others
    changed = tmp_path / "changed.mp4"
    write_video(changed, ref[::-1], 12.0)
    assert Frames.open(changed).identity != frames.identity


def test_clip_digest_of_an_array_is_the_digest_of_its_bytes(video):
    _, ref = video
    assert clip_digest(ref) == hashlib.sha256(ref.tobytes()).hexdigest()
    assert clip_digest(ref[:, ::2]) == hashlib.sha256(np.ascontiguousarray(ref[:, ::2]).tobytes()).hexdigest()
    assert clip_digest(Frames.from_array(ref)) == Frames.from_array(ref.copy()).identity


def test_a_reader_function_behind_the_same_interface_keeps_a_few_frames():
    frames = np.random.default_rng(3).integers(0, 256, (9, 6, 5, 3), dtype=np.uint8)
    calls: list[int] = []

    def read(t: int) -> np.ndarray:
        calls.append(t)
        return frames[t].copy()

    clip = Frames.from_reader(read, 9, (6, 5), fps=12.0)
    expected = Frames.from_array(frames)
    assert clip.shape == frames.shape and clip.fps == 12.0
    for t in (0, 8, -1, 3, 3, 0):  # forward, backward, again: the reads a propagator makes
        np.testing.assert_array_equal(clip[t], frames[t])
    assert calls.count(3) == 1  # the second read of frame 3 came from the cache
    assert not clip[4].flags.writeable
    np.testing.assert_array_equal(clip[2:6].numpy(), frames[2:6])
    np.testing.assert_array_equal(clip.resized((3, 4))[5], expected.resized((3, 4))[5])
    assert clip.identity == expected.identity  # the same fingerprint as the array's bytes
    assert len(clip._source.cache) <= 4
    named = Frames.from_reader(read, 9, (6, 5), digest=lambda: "mine")
    assert named._source.digest() == "mine" and named.identity != clip.identity
    with pytest.raises(UsageError, match="at least one frame"):
        Frames.from_reader(read, 0, (6, 5))
    bad = Frames.from_reader(lambda t: frames[t, :3], 9, (6, 5))
    with pytest.raises(Exception, match=r"expected uint8 \(6, 5, 3\)"):
        bad[0]
