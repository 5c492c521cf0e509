"""Reading, writing, sampling and composing clips (magicprop.video), and `magicprop info`."""

from __future__ import annotations

import json
import logging
import tracemalloc
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from fixtures import write_with_pyav
from magicprop import video
from magicprop.errors import UsageError

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def smooth_clip(frames: int = 12, height: int = 64, width: int = 96) -> np.ndarray:
    """Moving gradients: smooth content that H.264 at crf 16 should keep above 35 dB."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    t = np.arange(frames, dtype=np.float32)[:, None, None]
    r = 128 + 100 * np.sin((x + 3 * t) / 15)
    g = 128 + 100 * np.cos((y + 2 * t) / 11)
    b = 128 + 60 * np.sin((x + y) / 20 + t / 4)
    return np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8)


def indexed_clip(frames: int, height: int = 32, width: int = 48) -> np.ndarray:
    """Frame i is flat grey 8 * i, so a frame's index can be read back from its mean through lossy coding."""
    return np.stack([np.full((height, width, 3), 8 * i, np.uint8) for i in range(frames)])


def indices(clip: np.ndarray) -> list[int]:
    return [int(round(f.mean() / 8)) for f in clip]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


# ---------------------------------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fps", [24.0, 30000 / 1001])
def test_mp4_round_trip_keeps_frames_fps_and_quality(tmp_path, fps):
    clip = smooth_clip()
    path = video.write_video(tmp_path / "clip.mp4", clip, fps)
    frames, read_fps = video.read_video(path)
    assert frames.shape == clip.shape and frames.dtype == np.uint8
    assert read_fps == pytest.approx(fps, rel=1e-4)
    assert psnr(frames, clip) >= 35
    assert video.probe(path) == video.VideoInfo(frames=12, fps=pytest.approx(fps, rel=1e-4), width=96, height=64)


def test_odd_size_mp4_is_padded_by_repeating_the_last_row_and_column(tmp_path, caplog):
    clip = smooth_clip(6, 33, 47)
    with caplog.at_level(logging.WARNING):
        video.write_video(tmp_path / "odd.mp4", clip, 24)
    assert "34x48" in caplog.text or "48x34" in caplog.text
    frames, _ = video.read_video(tmp_path / "odd.mp4")
    assert frames.shape == (6, 34, 48, 3)
    assert psnr(frames[:, :33, :47], clip) >= 35
    assert psnr(frames[:, 33, :47], clip[:, 32]) >= 30  # the added row repeats the last one
    assert psnr(frames[:, :33, 47], clip[:, :, 46]) >= 30


def test_odd_size_keeps_its_size_in_a_frame_folder_losslessly(tmp_path):
    clip = smooth_clip(5, 33, 47)
    video.write_video(tmp_path / "frames", clip, 24)
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == [f"{i:05d}.png" for i in range(5)]
    frames, fps = video.read_video(tmp_path / "frames")
    np.testing.assert_array_equal(frames, clip)
    assert fps == video.DEFAULT_FPS


def test_gif_round_trip(tmp_path):
    clip = smooth_clip(8)
    video.write_video(tmp_path / "clip.gif", clip, 25)  # GIF delays are in 1/100 s: 25 fps is exact, 24 is not
    frames, fps = video.read_video(tmp_path / "clip.gif")
    assert frames.shape == clip.shape
    assert fps == pytest.approx(25)
    assert psnr(frames, clip) >= 28  # 256 colours per frame (median cut): 29.4 dB on this clip, H.264 gets 43


@pytest.mark.skipif("libvpx-vp9" not in av.codecs_available, reason="this PyAV build has no VP9 encoder")
def test_webm_round_trip_keeps_odd_sizes(tmp_path):
    clip = smooth_clip(6, 33, 47)
    video.write_video(tmp_path / "clip.webm", clip, 24)
    frames, fps = video.read_video(tmp_path / "clip.webm")
    assert frames.shape == clip.shape and fps == pytest.approx(24)
    assert psnr(frames, clip) >= 33


# ---------------------------------------------------------------------------------------------------------------------
# Image folders
# ---------------------------------------------------------------------------------------------------------------------
def test_image_folder_is_read_in_natural_order_with_the_given_fps(tmp_path):
    for i in (10, 2, 1):
        Image.fromarray(np.full((16, 24, 3), 8 * i, np.uint8)).save(tmp_path / f"frame{i}.png")
    (tmp_path / "notes.txt").write_text("not a frame")
    frames, fps = video.read_video(tmp_path)
    assert indices(frames) == [1, 2, 10] and fps == 24.0
    assert video.read_video(tmp_path, fps=12.5)[1] == 12.5
    assert video.probe(tmp_path, fps=30) == video.VideoInfo(frames=3, fps=30.0, width=24, height=16)


def test_image_folder_with_mixed_sizes_names_both_files(tmp_path):
    Image.fromarray(np.zeros((16, 24, 3), np.uint8)).save(tmp_path / "00000.png")
    Image.fromarray(np.zeros((16, 20, 3), np.uint8)).save(tmp_path / "00001.jpg")
    with pytest.raises(UsageError, match=r"00000\.png is 24x16 but 00001\.jpg is 20x16"):
        video.open_video(tmp_path)


def test_writing_over_a_frame_folder_replaces_it_but_never_a_folder_with_other_files(tmp_path):
    out = tmp_path / "frames"
    video.write_video(out, indexed_clip(5), 24)
    video.write_video(out, indexed_clip(3), 24)
    assert sorted(p.name for p in out.iterdir()) == ["00000.png", "00001.png", "00002.png"]
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="holds other files"):
        video.write_video(out, indexed_clip(2), 24)
    assert (out / "keep.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir()] == ["frames"]  # no temporary folders left behind


# ---------------------------------------------------------------------------------------------------------------------
# Sampling and resizing
# ---------------------------------------------------------------------------------------------------------------------
def test_start_max_frames_and_stride_pick_exact_frames(tmp_path):
    path = video.write_video(tmp_path / "clip.mp4", indexed_clip(20), 24)
    frames, fps = video.read_video(path, start=3, max_frames=4, stride=5)
    assert indices(frames) == [3, 8, 13, 18]
    assert fps == pytest.approx(24 / 5)  # the rate the sampled frames play at, keeping the clip's duration
    assert indices(video.read_video(path, start=17)[0]) == [17, 18, 19]
    with pytest.raises(UsageError, match="past the end"):
        video.read_video(path, start=20)
    with pytest.raises(UsageError, match="stride"):
        video.open_video(path, stride=0)


@pytest.mark.parametrize(
    "options, shape",
    [
        (dict(size=(32, 40)), (32, 40)),
        (dict(short_side=40), (40, 60)),
        (dict(short_side=50, multiple_of=8), (48, 72)),
        (dict(multiple_of=16), (64, 96)),
        (dict(size=(30, 30), multiple_of=8), (32, 32)),
        (dict(size=(32, 32), center_crop=True), (32, 32)),
    ],
)
def test_resizing_options_give_exact_shapes(tmp_path, options, shape):
    path = video.write_video(tmp_path / "clip.mp4", smooth_clip(3), 24)  # 64x96
    frames, _ = video.read_video(path, **options)
    assert frames.shape == (3, *shape, 3)


def test_center_crop_keeps_the_middle_instead_of_stretching(tmp_path):
    clip = np.zeros((2, 64, 96, 3), np.uint8)
    clip[:, :, :16] = (255, 0, 0)  # the 16 columns on each side fall outside a centred square crop
    clip[:, :, 80:] = (0, 0, 255)
    clip[:, :, 16:80] = (0, 255, 0)
    video.write_video(tmp_path / "frames", clip, 24)
    cropped, _ = video.read_video(tmp_path / "frames", size=(32, 32), center_crop=True)
    stretched, _ = video.read_video(tmp_path / "frames", size=(32, 32))
    assert cropped[..., 0].max() == 0 and cropped[..., 2].max() == 0 and cropped[..., 1].min() == 255
    assert stretched[:, :, 0, 0].min() == 255  # without the crop the red border survives


def test_streaming_memory_does_not_grow_with_clip_length(tmp_path):
    rng = np.random.default_rng(0)
    peaks = {}
    for n in (16, 64):
        path = video.write_video(tmp_path / f"clip{n}.mp4", rng.integers(0, 256, (n, 96, 128, 3), np.uint8), 24)
        for _ in range(2):  # the first pass warms caches; measure the second
            with video.open_video(path, size=(64, 80)) as reader:  # resizing allocates a fresh array per frame
                tracemalloc.start()
                count = sum(1 for _ in reader)
                peaks[n] = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
        assert count == n
    frame_bytes = 64 * 80 * 3
    assert peaks[64] < 1.1 * peaks[16], peaks
    assert peaks[64] < 8 * frame_bytes, peaks  # a handful of frames at most, not the 64 of the clip


# ---------------------------------------------------------------------------------------------------------------------
# Sources in other pixel formats, rotation, variable frame rate, damage
# ---------------------------------------------------------------------------------------------------------------------
def test_grayscale_and_rgba_videos_become_rgb(tmp_path):
    gray = np.tile(np.arange(0, 256, 4, dtype=np.uint8)[None, None], (3, 32, 1))
    rgba = np.zeros((3, 32, 64, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, np.arange(64) * 4
    g, _ = video.read_video(write_with_pyav(tmp_path / "gray.mov", gray, "mov", "png", "gray", "gray"))
    a, _ = video.read_video(write_with_pyav(tmp_path / "rgba.mov", rgba, "mov", "png", "rgba", "rgba"))
    assert g.shape == (3, 32, 64, 3)
    np.testing.assert_array_equal(g, np.repeat(gray[..., None], 3, axis=3))
    np.testing.assert_array_equal(a, rgba[..., :3])  # alpha is dropped, not composited


@pytest.mark.skipif(
    not hasattr(av.video.stream.VideoStream, "set_display_rotation"),
    reason="this PyAV cannot write rotation metadata (no VideoStream.set_display_rotation)",
)
@pytest.mark.parametrize("rotation, corner", [(90, (-1, 0)), (-90, (0, -1))])  # counter-clockwise, as PyAV reports it
def test_rotation_metadata_is_applied(tmp_path, rotation, corner):
    clip = np.zeros((2, 32, 48, 3), np.uint8)
    clip[:, :8, :8] = 255  # a white top-left corner
    path = write_with_pyav(tmp_path / "rot.mp4", clip, "mp4", "libx264", "yuv420p", "rgb24", rotation=rotation)
    frames, _ = video.read_video(path)
    assert frames.shape == (2, 48, 32, 3)
    assert frames[0, corner[0], corner[1]].min() > 200 and frames[0, 0, 0].max() < 50
    assert video.probe(path) == video.VideoInfo(frames=2, fps=24.0, width=32, height=48)


def test_variable_frame_rate_reads_in_presentation_order_at_the_average_rate(tmp_path):
    n = 24
    pts = np.cumsum([0] + [10 if i % 2 else 50 for i in range(n - 1)]).tolist()  # alternating 50 ms and 10 ms gaps
    clip = indexed_clip(n, 32, 32)
    path = write_with_pyav(tmp_path / "vfr.mp4", clip, "mp4", "libx264", "yuv420p", "rgb24", pts=pts, time_base=Fraction(1, 1000))
    frames, fps = video.read_video(path)
    assert indices(frames) == list(range(n))
    duration = (pts[-1] + 30) / 1000  # the muxer gives the last frame the mean gap
    assert fps == pytest.approx(n / duration, rel=0.05)


def test_truncated_mp4_yields_the_frames_that_decode(tmp_path, caplog):
    rng = np.random.default_rng(0)
    path = video.write_video(tmp_path / "clip.mp4", rng.integers(0, 256, (30, 48, 48, 3), np.uint8), 24)
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING):
        frames, _ = video.read_video(cut)
    assert 5 < len(frames) < 30
    assert "truncated" in caplog.text


# ---------------------------------------------------------------------------------------------------------------------
# Atomic writing and bad inputs
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["out.mp4", "out.gif", "out"])
def test_writer_leaves_nothing_on_error_and_keeps_an_older_file(tmp_path, name):
    target = tmp_path / name
    with pytest.raises(RuntimeError):
        with video.VideoWriter(target, 24) as writer:
            writer.write(smooth_clip(1)[0])
            raise RuntimeError("crash mid-write")
    assert list(tmp_path.iterdir()) == []
    video.write_video(target, indexed_clip(3), 24)
    before = sorted((p.name, p.read_bytes()) for p in ([target] if target.is_file() else target.iterdir()))
    with pytest.raises(RuntimeError):
        with video.VideoWriter(target, 24) as writer:
            writer.write(indexed_clip(1)[0])
            raise RuntimeError("crash mid-write")
    after = sorted((p.name, p.read_bytes()) for p in ([target] if target.is_file() else target.iterdir()))
    assert after == before and [p.name for p in tmp_path.iterdir()] == [name]


def test_bad_inputs_raise_usage_errors_naming_the_file(tmp_path):
    (tmp_path / "empty.mp4").touch()
    (tmp_path / "text.mp4").write_text("this is not a video\n" * 20)
    (tmp_path / "nothing").mkdir()
    good = video.write_video(tmp_path / "good.mp4", np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), np.uint8), 24)
    data = good.read_bytes()
    (tmp_path / "headless.mp4").write_bytes(data[: data.find(b"mdat") + 20])  # the index survives, no frame does
    cases = {
        "missing.mp4": "not found",
        "empty.mp4": "empty file",
        "text.mp4": "not a readable video",
        "nothing": "no .jpg/.jpeg/.png images",
        "headless.mp4": "no decodable video frames",
    }
    for name, reason in cases.items():
        for read in (video.probe, video.read_video):
            with pytest.raises(UsageError, match=reason) as info:
                read(tmp_path / name)
            assert name in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(UsageError, match="not a readable image"):
        video.load_image(tmp_path / "text.mp4")
    with pytest.raises(UsageError, match="cannot create output folder"):
        video.write_video(tmp_path / "text.mp4" / "sub" / "out.mp4", indexed_clip(1), 24)  # a folder under a file
    with pytest.raises(UsageError, match="unknown video suffix"):
        video.VideoWriter(tmp_path / "out.xyz", 24)


# ---------------------------------------------------------------------------------------------------------------------
# Images, masks and sizes
# ---------------------------------------------------------------------------------------------------------------------
def test_load_image_converts_every_mode_to_rgb(tmp_path):
    gray = np.arange(0, 256, 16, dtype=np.uint8).reshape(4, 4)
    Image.fromarray(gray, "L").save(tmp_path / "gray.png")
    Image.fromarray((gray.astype(np.uint16) * 257), "I;16").save(tmp_path / "gray16.png")
    Image.fromarray(np.dstack([gray, gray, gray, np.zeros_like(gray)]), "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(np.dstack([gray] * 3)).quantize(16).save(tmp_path / "palette.png")
    for name in ("gray.png", "gray16.png", "rgba.png", "palette.png"):
        image = video.load_image(tmp_path / name)
        assert image.shape == (4, 4, 3) and image.dtype == np.uint8, name
        assert np.abs(image[..., 1].astype(int) - gray).max() <= 8, name


def test_save_image_round_trips_losslessly_as_png(tmp_path):
    image = smooth_clip(1)[0]
    np.testing.assert_array_equal(video.load_image(video.save_image(tmp_path / "a.png", image)), image)
    assert psnr(video.load_image(video.save_image(tmp_path / "a.jpg", image)), image) > 35


def test_load_mask_thresholds_and_resizes_with_a_warning(tmp_path, caplog):
    mask = np.zeros((20, 30), np.uint8)
    mask[5:15, 10:20] = 200
    Image.fromarray(mask).save(tmp_path / "mask.png")
    loaded = video.load_mask(tmp_path / "mask.png")
    np.testing.assert_array_equal(loaded, mask > 127)
    with caplog.at_level(logging.WARNING):
        resized = video.load_mask(tmp_path / "mask.png", size=(40, 60))
    assert resized.shape == (40, 60) and resized.dtype == bool and resized.sum() == 4 * loaded.sum()
    assert "resizing" in caplog.text


def test_resize_fit_and_working_size(caplog):
    frames = smooth_clip(2)
    assert video.resize_frames(frames, (32, 48)).shape == (2, 32, 48, 3)
    assert video.resize_frames(frames[0].astype(np.float32) / 255, (128, 192)).dtype == np.float32
    with caplog.at_level(logging.WARNING):
        assert video.fit_image(frames[0], (64, 64)).shape == (64, 64, 3)
    assert "stretches" in caplog.text
    assert video.working_size(512, 512) == (512, 512)
    assert video.working_size(480, 854) == (384, 680)  # aspect 1.78 within 512 * 512 pixels
    assert video.working_size(1080, 1920) == (384, 680)
    assert video.working_size(33, 47) == (40, 48)  # small clips are only rounded up to the multiple, never blown up
    assert video.working_size(720, 1280, multiple_of=16)[0] % 16 == 0


def test_side_by_side_and_grid_shapes():
    a = smooth_clip(4, 64, 96)
    b = smooth_clip(2, 32, 32)
    out = video.side_by_side([a, b])
    assert out.shape == (4, 64, 96 + 64, 3)
    np.testing.assert_array_equal(out[3, :, 96:], out[1, :, 96:])  # the shorter clip holds its last frame
    labelled = video.side_by_side([a, b], ["source", "edit"])
    bar = labelled.shape[1] - 64
    assert bar > 0 and bar % 2 == 0 and labelled[:, :bar].max() > 0  # the label text is drawn
    assert video.grid([a, b, a], cols=2).shape == (4, 128, 192, 3)


# ---------------------------------------------------------------------------------------------------------------------
# CLI and the shared sample
# ---------------------------------------------------------------------------------------------------------------------
@pytest.fixture
def cli_main(monkeypatch):
    """magicprop.cli.main with only the `info` subcommand registered: the real parser and error handling, without
    importing the model stacks that other subcommands' options pull in (seconds per test)."""
    from magicprop import cli

    assert "info" in cli.COMMANDS
    monkeypatch.setattr(cli, "COMMANDS", ("info",))
    return cli.main


def test_info_cli_prints_json_and_a_readable_line(tmp_path, capsys, cli_main):
    path = video.write_video(tmp_path / "clip.mp4", smooth_clip(7), 12)
    assert cli_main(["info", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"frames": 7, "fps": 12.0, "width": 96, "height": 64}
    assert cli_main(["info", str(path)]) == 0
    assert "7 frames" in capsys.readouterr().out


def test_info_cli_bad_input_exits_2_with_one_line(tmp_path, capsys, cli_main):
    (tmp_path / "text.mp4").write_text("nope\n" * 50)
    assert cli_main(["info", str(tmp_path / "text.mp4")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "text.mp4" in err and "Traceback" not in err


def test_probe_shared_sample():
    wolf = SHARED / "samples" / "wolf" / "wolf.mp4"
    if not wolf.exists():
        pytest.skip(f"{wolf} is not present")
    info = video.probe(wolf)
    assert (info.frames, info.width, info.height) == (40, 512, 512)
