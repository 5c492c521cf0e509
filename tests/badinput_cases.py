"""The table of bad inputs, one `Case` each; tests/test_reliability.py runs them (and benchmarks/reliability.py counts).

Most run `magicprop propagate` on a dummy PropDPM folder and a tiny depth model (or the weight-free `flow` propagator),
`magicprop info` for decoding, or a Python API call. A case that must work (an odd but valid input) expects exit 0 and
checks its result; the rest expect one error line with exit 2 (usage) or 1 (runtime: full disk, offline hub).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
import badinput_resolution as res
import badinput_work as work
from fixtures import write_with_pyav
from badinputs import (
    FPS, SIZE, Case, Setup, Workspace, bad_metadata_mp4, frames_of, headless_mp4, pickle_only_model, png_header_only,
    truncated_mp4,
)  # fmt: skip

from magicprop.video import probe, read_video, save_image, write_video


# ---------------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------------
def _propagate(ws: Workspace, video: Path, out: Path, *extra: str, key: Path | None = None, flow: bool = False) -> list:
    stage2 = ["--propagator", "flow", "--seed", "0"] if flow else ws.stage2()
    return ["propagate", video, "--keyframe-image", key or ws.key, *stage2, *extra, "-o", out]


def _same_frames_as(out: Path, n: int | None, hw: tuple[int, int]) -> Callable[[], None]:
    def check() -> None:
        frames, _ = read_video(out)
        assert frames.shape[1:3] == tuple(hw), f"output is {frames.shape[2]}x{frames.shape[1]}, expected {hw[1]}x{hw[0]}"
        if n is not None:
            assert len(frames) == n, f"{len(frames)} frames, expected {n}"
        assert frames.dtype == np.uint8 and frames.shape[3] == 3

    return check


def _file(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


# --- decoding -------------------------------------------------------------------------------------------------------
def _missing(t, ws):
    return Setup(argv=["info", t / "missing.mp4"], says=("not found", "missing.mp4"))


def _name_too_long(t, ws):
    """ENAMETOOLONG: every path is checked up front (usage error, exit 2), the keyframe's as the video's."""
    return Setup(argv=_propagate(ws, ws.clip, t / "out.mp4", key=t / ("k" * 300 + ".png"), flow=True), says=("cannot be used", "too long"),
                 inputs=[ws.clip], output=t / "out.mp4")  # fmt: skip


def _name_too_long_info(t, ws):
    return Setup(argv=["info", t / ("x" * 300 + ".mp4")], says=("cannot be used", "too long"))


def _empty(t, ws):
    f = _file(t / "empty.mp4", b"")
    return Setup(argv=["info", f], says=("empty", "0 bytes"), inputs=[f])


def _text_mp4(t, ws):
    f = _file(t / "notes.mp4", "this is not a video\n" * 20)
    return Setup(argv=["info", f], says=("not a readable video", "notes.mp4"), inputs=[f])


def _truncated(t, ws):
    f = truncated_mp4(t / "cut.mp4")
    out = t / "out"

    def check():
        n = probe(f).frames
        assert 3 <= n < 24, n
        _same_frames_as(out, n, (32, 32))()

    return Setup(argv=_propagate(ws, f, out, key=ws.key, flow=True), code=0, warns=("truncated",), inputs=[f], check=check)


def _bad_metadata(t, ws):
    f = bad_metadata_mp4(t / "tags.mp4")

    def check():
        assert probe(f).frames == 3

    return Setup(argv=["info", f], code=0, inputs=[f], check=check)


def _zero_frames(t, ws):
    f = headless_mp4(t / "headless.mp4")
    return Setup(argv=_propagate(ws, f, t / "out.mp4", flow=True), says=("no decodable", "headless.mp4"), inputs=[f, ws.key],
                 output=t / "out.mp4")  # fmt: skip


def _one_frame(t, ws):
    f = write_video(t / "one.mp4", frames_of(1, *SIZE), FPS)
    out = t / "out"

    def check():
        frames, _ = read_video(out)
        assert frames.shape == (1, *SIZE, 3), frames.shape

    return Setup(argv=_propagate(ws, f, out), code=0, inputs=[f, ws.key], check=check)


def _huge(t, ws):
    """A 2560x1440 clip and a 4096-pixel budget: models see 48x80 at most, the output is full size again."""
    import magicprop.motion
    import magicprop.propagation.propdpm.sampling

    f = write_video(t / "huge.mp4", frames_of(2, 1440, 2560), FPS, crf=30)
    key = save_image(t / "huge_key.png", frames_of(1, 1440, 2560, seed=9)[0])
    out = t / "out"
    seen: list[tuple[str, tuple]] = []

    def patch(mp):
        real_prop, real_depth = magicprop.propagation.propdpm.sampling.propagate_latents, magicprop.motion.DepthEstimator.__call__

        def spy_prop(models, depth, keyframe, *a, **k):
            seen.append(("keyframe", keyframe.shape[:2]))
            seen.append(("depth", depth.shape[1:]))
            return real_prop(models, depth, keyframe, *a, **k)

        def spy_depth(self, frames, **k):
            seen.append(("depth model", frames.shape[1:3]))
            return real_depth(self, frames, **k)

        mp.setattr(magicprop.propagation.propdpm.sampling, "propagate_latents", spy_prop)
        mp.setattr(magicprop.motion.DepthEstimator, "__call__", spy_depth)

    def check():
        assert seen and all(h * w <= 4096 for _, (h, w) in seen), seen
        record = json.loads((t / "out.json").read_text())
        h, w = record["working_size"]
        assert h * w <= 4096 and abs(w / h - 16 / 9) < 0.2, record["working_size"]
        _same_frames_as(out, 2, (1440, 2560))()

    return Setup(argv=_propagate(ws, f, out, "--max-pixels", "4096", key=key), code=0, inputs=[f, key], patch=patch, check=check)


def _odd_size(t, ws):
    f = write_video(t / "odd", frames_of(4, 33, 47), FPS)  # a PNG folder: odd sizes survive exactly
    out = t / "out"
    return Setup(argv=_propagate(ws, f, out), code=0, inputs=[f, ws.key], warns=("stretches",), check=_same_frames_as(out, 4, (33, 47)))


def _portrait(t, ws):
    f = write_video(t / "portrait.mp4", frames_of(4, 96, 32), FPS)
    out = t / "out"
    return Setup(argv=_propagate(ws, f, out), code=0, inputs=[f], check=_same_frames_as(out, 4, (96, 32)))


def _extreme_aspect(t, ws):
    f = write_video(t / "strip", frames_of(4, 16, 256), FPS)
    key = save_image(t / "strip_key.png", frames_of(1, 16, 256, seed=5)[0])
    out = t / "out"
    return Setup(argv=_propagate(ws, f, out, key=key), code=0, inputs=[f, key], check=_same_frames_as(out, 4, (16, 256)))


def _extreme_aspect_tall(t, ws):
    f = write_video(t / "tall", frames_of(3, 256, 16), FPS)
    out = t / "out"
    return Setup(argv=_propagate(ws, f, out, flow=True), code=0, inputs=[f], check=_same_frames_as(out, 3, (256, 16)))


def _grayscale(t, ws):
    gray = frames_of(3, 32, 48)[..., 1]
    f = write_with_pyav(t / "gray.mov", gray, "mov", "png", "gray", "gray")
    out = t / "out"

    def check():
        frames, _ = read_video(out)
        assert frames.shape == (3, 32, 48, 3), frames.shape

    return Setup(argv=_propagate(ws, f, out, flow=True), code=0, inputs=[f], check=check)


def _rgba(t, ws):
    rgba = np.concatenate([frames_of(3, 32, 48), np.full((3, 32, 48, 1), 128, np.uint8)], axis=3)
    f = write_with_pyav(t / "rgba.mov", rgba, "mov", "png", "rgba", "rgba")
    key = t / "key_rgba.png"
    from PIL import Image

    Image.fromarray(np.dstack([np.asarray(Image.open(ws.key)), np.full(SIZE, 200, np.uint8)]), "RGBA").save(key)
    out = t / "out"
    return Setup(argv=_propagate(ws, f, out, key=key), code=0, inputs=[f, key], check=_same_frames_as(out, 3, SIZE))


def _gray_keyframe(t, ws):
    from PIL import Image

    key = t / "key_gray16.png"
    Image.fromarray((np.asarray(Image.open(ws.key).convert("L")).astype(np.uint16) * 257), "I;16").save(key)
    out = t / "out"
    return Setup(argv=_propagate(ws, ws.clip, out, key=key), code=0, inputs=[key], check=_same_frames_as(out, 6, SIZE))


def _gif(t, ws):
    f = write_video(t / "clip.gif", frames_of(4, 32, 48), 10.0)
    out = t / "out.mp4"

    def check():
        frames, fps = read_video(out)
        assert frames.shape == (4, 32, 48, 3) and fps == 10.0, (frames.shape, fps)

    return Setup(argv=_propagate(ws, f, out, flow=True), code=0, inputs=[f], check=check)


def _vfr(t, ws):
    n = 8
    pts = np.cumsum([0] + [10 if i % 2 else 50 for i in range(n - 1)]).tolist()  # 50 ms and 10 ms gaps alternate
    f = write_with_pyav(t / "vfr.mp4", frames_of(n, 32, 48), "mp4", "libx264", "yuv420p", "rgb24", pts=pts, time_base=Fraction(1, 1000))
    out = t / "out.mp4"

    def check():
        frames, fps = read_video(out)
        assert len(frames) == n and abs(fps - probe(f).fps) < 0.05 * fps, (len(frames), fps, probe(f).fps)

    return Setup(argv=_propagate(ws, f, out, flow=True), code=0, inputs=[f], check=check)


def _rotated(t, ws):
    f = write_with_pyav(t / "rot.mp4", frames_of(3, 32, 48), "mp4", "libx264", "yuv420p", "rgb24", rotation=90)
    out = t / "out"

    def check():
        record = json.loads((t / "out.json").read_text())
        assert (record["source"]["height"], record["source"]["width"]) == (48, 32), record["source"]
        _same_frames_as(out, 3, (48, 32))()

    return Setup(argv=_propagate(ws, f, out), code=0, inputs=[f], warns=("stretches",), check=check)


# --- keyframes, masks, depth, config ----------------------------------------------------------------------------------
def _key_index(t, ws):
    return Setup(argv=_propagate(ws, ws.clip, t / "out.mp4", "--keyframe-index", "99"), says=("keyframe index 99", "outside"),
                 inputs=[ws.clip, ws.key], output=t / "out.mp4")  # fmt: skip


def _key_not_image(t, ws):
    key = _file(t / "key.png", "I am a text file\n")
    return Setup(argv=_propagate(ws, ws.clip, t / "out.mp4", key=key), says=("not a readable image", "key.png"),
                 inputs=[ws.clip, key], output=t / "out.mp4")  # fmt: skip


def _key_empty(t, ws):
    key = _file(t / "key.png", b"")
    return Setup(argv=_propagate(ws, ws.clip, t / "out.mp4", key=key), says=("empty",), inputs=[ws.clip, key], output=t / "out.mp4")


def _masks(t: Path, n: int, size: tuple[int, int], value: int) -> Path:
    folder = t / "masks"
    folder.mkdir()
    for i in range(n):
        m = np.zeros(size, np.uint8)
        m[size[0] // 4 : size[0] // 2, size[1] // 4 : size[1] // 2] = value
        save_image(folder / f"{i}.png", m)
    return folder


def _mask_other_size(t, ws):
    masks = _masks(t, 6, (16, 24), 255)
    out = t / "out"
    return Setup(argv=_propagate(ws, ws.clip, out, "--masks", masks, flow=True), code=0, warns=("resizing",), inputs=[ws.clip, masks],
                 check=_same_frames_as(out, 6, SIZE))  # fmt: skip


def _mask_all_zero(t, ws):
    masks = _masks(t, 6, SIZE, 0)
    return Setup(argv=_propagate(ws, ws.clip, t / "out.mp4", "--masks", masks, flow=True), says=("empty",), inputs=[ws.clip, masks],
                 output=t / "out.mp4")  # fmt: skip


def _mask_count(t, ws):
    masks = _masks(t, 2, SIZE, 255)
    return Setup(argv=_propagate(ws, ws.clip, t / "out.mp4", "--masks", masks, flow=True), says=("2 mask images", "6 frames"),
                 inputs=[ws.clip, masks], output=t / "out.mp4")  # fmt: skip


def _depth_not_npz(t, ws):
    d = _file(t / "depth.npz", "not numpy\n")
    return Setup(argv=_propagate(ws, ws.clip, t / "out.mp4", "--depth", d), says=("not a readable .npz",), inputs=[ws.clip, d],
                 output=t / "out.mp4")  # fmt: skip


def _depth_frames(t, ws):
    from magicprop.motion import save_depth

    d = t / "depth.npz"
    save_depth(d, np.random.default_rng(0).random((3, 32, 48), dtype=np.float32), model="test", source="test", fps=FPS)
    return Setup(argv=_propagate(ws, ws.clip, t / "out.mp4", "--depth", d), says=("3 frames", "6"), inputs=[ws.clip, d],
                 output=t / "out.mp4")  # fmt: skip


def _config_not_json(t, ws):
    cfg = _file(t / "settings.json", "{ not json")
    return Setup(argv=["edit", ws.clip, "--config", cfg, "-o", t / "out.mp4"], says=("not valid JSON",), inputs=[ws.clip, cfg],
                 output=t / "out.mp4")  # fmt: skip


def _config_wrong_type(t, ws):
    cfg = _file(t / "settings.json", json.dumps({"keyframe_image": str(ws.key), "propagator": "flow", "seed": "zero"}))
    return Setup(argv=["propagate", ws.clip, "--config", cfg, "-o", t / "out.mp4"], says=("seed",), inputs=[ws.clip, cfg],
                 output=t / "out.mp4")  # fmt: skip


def _zero_steps(t, ws):
    return Setup(argv=_propagate(ws, ws.clip, t / "out.mp4", "--steps", "0"), says=("steps",), inputs=[ws.clip], output=t / "out.mp4")


# --- outputs ----------------------------------------------------------------------------------------------------------
def _output_is_input(t, ws):
    src = shutil.copyfile(ws.clip, t / "in.mp4")
    return Setup(argv=_propagate(ws, src, src, flow=True), says=("same as the input",), inputs=[src])


def _output_under_file(t, ws):
    blocker = _file(t / "file.txt", "a file, not a folder\n")
    return Setup(argv=_propagate(ws, ws.clip, blocker / "out.mp4", flow=True), says=("cannot create output folder",),
                 inputs=[ws.clip, blocker])  # fmt: skip


def _output_dir_readonly(t, ws):
    ro = t / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    return Setup(argv=_propagate(ws, ws.clip, ro / "out.mp4", flow=True), says=("not writable",), inputs=[ws.clip])


def _is_root() -> str | None:
    return "running as root: chmod does not stop root from writing (see output_parent_is_a_file)" if os.geteuid() == 0 else None


def _enospc(path: object = "") -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def _disk_full_rename(t, ws):
    """The encoder wrote the whole temporary file; the rename into place fails (ENOSPC from the filesystem)."""
    import magicprop.fileio

    out = t / "out.mp4"
    real = os.replace

    def replace(src, dst, *a, **k):
        if Path(dst).name in ("out.mp4", "out.comparison.mp4", "out.keyframe.png", "out.json"):
            raise _enospc(dst)
        return real(src, dst, *a, **k)

    return Setup(argv=_propagate(ws, ws.clip, out), code=1, says=("disk full",), inputs=[ws.clip, ws.key], output=out,
                 patch=lambda mp: mp.setattr(magicprop.fileio.os, "replace", replace))  # fmt: skip


def _disk_full_frames(t, ws):
    """Writing a folder of frames, the third PNG hits a full disk: the earlier folder must survive whole."""
    from PIL import Image

    out = t / "out"
    real = Image.Image.save
    calls = {"n": 0}

    def save(self, fp, *a, **k):
        if Path(str(fp)).parent.name.startswith(".out."):  # frames of the output folder being written
            calls["n"] += 1
            if calls["n"] >= 3:
                raise _enospc(fp)
        return real(self, fp, *a, **k)

    def build_earlier():
        write_video(out, frames_of(6, *SIZE, seed=1), FPS)
        (t / "out.json").write_text('{"earlier": true}\n')

    build_earlier()
    return Setup(argv=_propagate(ws, ws.clip, out), code=1, says=("disk full",), inputs=[ws.clip, ws.key, out, t / "out.json"],
                 patch=lambda mp: mp.setattr(Image.Image, "save", save))  # fmt: skip


def _disk_full_work(t, ws):
    """A propagation step cannot be saved to the work folder (ENOSPC as it is renamed into steps/)."""
    import magicprop.fileio

    real = os.replace

    def replace(src, dst, *a, **k):
        if Path(dst).parent.name == "steps":
            raise _enospc(dst)
        return real(src, dst, *a, **k)

    out = t / "out.mp4"
    return Setup(argv=_propagate(ws, ws.clip, out), code=1, says=("disk full",), inputs=[ws.clip, ws.key], output=out,
                 patch=lambda mp: mp.setattr(magicprop.fileio.os, "replace", replace))  # fmt: skip


# --- models -----------------------------------------------------------------------------------------------------------
def _unknown_propagator(t, ws):
    return Setup(argv=["propagate", ws.clip, "--keyframe-image", ws.key, "--propagator", "magic", "-o", t / "out.mp4"],
                 says=("invalid choice", "magic"), inputs=[ws.clip], output=t / "out.mp4")  # fmt: skip


def _model_wrong_kind(t, ws):
    argv = ["propagate", ws.clip, "--keyframe-image", ws.key, "--model", ws.depth, "--depth-model", ws.depth, "-o", t / "out.mp4"]
    return Setup(argv=argv, says=("not a magicprop propagation model", "--model"), inputs=[ws.clip], output=t / "out.mp4")


def _depth_model_wrong_kind(t, ws):
    argv = _propagate(ws, ws.clip, t / "out.mp4", "--depth-model", ws.model / "image_encoder")
    return Setup(argv=argv, says=("not a depth model",), inputs=[ws.clip], output=t / "out.mp4")


def _unknown_home(t, ws):
    argv = _propagate(ws, ws.clip, t / "out.mp4", "--depth-model", "~nosuchuser/depth")
    return Setup(argv=argv, says=("~nosuchuser/depth", "not found"), inputs=[ws.clip], output=t / "out.mp4")


def _offline_missing(t, ws):
    argv = ["propagate", ws.clip, "--keyframe-image", ws.key, "--model", ws.model, "--depth-model", "nobody/no-such-depth-model",
            "-o", t / "out.mp4"]  # fmt: skip
    return Setup(argv=argv, code=1, says=("nobody/no-such-depth-model", "--depth-model"), inputs=[ws.clip], output=t / "out.mp4",
                 patch=lambda mp: mp.setenv("HF_HUB_OFFLINE", "1"), max_seconds=15)  # fmt: skip


def _pickle_refused(t, ws):
    model = pickle_only_model(ws.model, t / "bin-model")
    argv = ["propagate", ws.clip, "--keyframe-image", ws.key, "--model", model, "--depth-model", ws.depth, "-o", t / "out.mp4"]
    return Setup(argv=argv, says=("no .safetensors", "--allow-pickle"), inputs=[ws.clip, model], output=t / "out.mp4")


def _pickle_allowed(t, ws):
    model = pickle_only_model(ws.model, t / "bin-model")
    out = t / "out"
    argv = ["propagate", ws.clip, "--keyframe-image", ws.key, "--model", model, "--allow-pickle", *ws.stage2()[2:], "-o", out]
    return Setup(argv=argv, code=0, inputs=[ws.clip, model], check=_same_frames_as(out, 6, SIZE))


def _depth_pickle_refused(t, ws):
    depth = pickle_only_model(ws.depth, t / "bin-depth")
    argv = _propagate(ws, ws.clip, t / "out.mp4", "--depth-model", depth)
    return Setup(argv=argv, says=("depth model", "--allow-pickle"), inputs=[ws.clip, depth], output=t / "out.mp4")


def _depth_pickle_allowed(t, ws):
    depth = pickle_only_model(ws.depth, t / "bin-depth")
    out = t / "out"
    argv = _propagate(ws, ws.clip, out, "--depth-model", depth, "--allow-pickle")
    return Setup(argv=argv, code=0, inputs=[ws.clip, depth], check=_same_frames_as(out, 6, SIZE))


def _image_bomb(t, ws):
    """A PNG whose header claims 20000x20000 pixels (400 MP, over PIL's decompression-bomb limit)."""
    key = _file(t / "bomb.png", png_header_only(20000, 20000))
    return Setup(argv=_propagate(ws, ws.clip, t / "out.mp4", key=key, flow=True), says=("bomb.png",), inputs=[ws.clip, key],
                 output=t / "out.mp4")  # fmt: skip


def _no_cuda(t, ws):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    return Setup(argv=_propagate(ws, ws.clip, t / "out.mp4", "--device", "cuda"), says=("cuda", "not available"), inputs=[ws.clip],
                 output=t / "out.mp4")  # fmt: skip


# --- batch and the Python API -----------------------------------------------------------------------------------------
def _batch_garbage(t, ws):
    jobs = _file(t / "jobs.jsonl", "\n".join([
        "{not json",
        json.dumps(["a", "list"]),
        json.dumps({"video": str(ws.clip), "keyframe_image": str(ws.key), "propagator": "magic", "output": "a.mp4"}),
        json.dumps({"video": str(ws.clip), "keyframe_image": str(ws.key), "output": 5}),
        json.dumps({"video": str(ws.clip), "keyframe_image": str(ws.key), "propagator": "copy", "output": "ok.mp4"}),
    ]) + "\n")  # fmt: skip

    def check():
        assert (t / "ok.json").is_file()

    return Setup(argv=["batch", jobs], code=1, says=(), inputs=[jobs], error_line=re.compile(r"^jobs\.jsonl:\d+: error: "),
                 error_lines=4, check=check)  # fmt: skip


def _api_array_of_floats(t, ws):
    from magicprop.pipeline import MagicPropPipeline

    pipe = MagicPropPipeline(propagator="flow")
    frames = np.zeros((3, 32, 48, 3), np.float32)
    return Setup(call=lambda: pipe(frames, keyframe_image=np.zeros((32, 48, 3), np.uint8)), says=("uint8",))


def _api_read_text_as_video(t, ws):
    f = _file(t / "notes.webm", "not a video\n")
    return Setup(call=lambda: read_video(f), says=("not a readable video",), inputs=[f])


CASES: list[Case] = [
    Case("missing_file", "input path that does not exist", _missing),
    Case("name_too_long", "keyframe file name of 300 characters (ENAMETOOLONG)", _name_too_long),
    Case("name_too_long_info", "`magicprop info` on a 300-character name", _name_too_long_info),
    Case("empty_file", "0-byte .mp4", _empty),
    Case("text_named_mp4", "a text file named .mp4", _text_mp4),
    Case("truncated_mp4", "mp4 cut at 60% (interrupted download): the frames that decode, with a warning", _truncated),
    Case("damaged_metadata", "good frames, a title tag that is not UTF-8 (found by fuzzing)", _bad_metadata),
    Case("zero_decodable_frames", "mp4 whose index survives but no frame", _zero_frames),
    Case("one_frame_clip", "a clip of one frame (nothing to propagate)", _one_frame),
    Case("huge_resolution", "2560x1440 clip with --max-pixels 4096: models see the working size only", _huge),
    Case("odd_size", "33x47 frames (PNG folder in and out, exact size kept)", _odd_size),
    Case("portrait", "96x32 portrait clip", _portrait),
    Case("extreme_aspect_wide", "16x256 strip through PropDPM", _extreme_aspect),
    Case("extreme_aspect_tall", "256x16 strip", _extreme_aspect_tall),
    Case("grayscale_video", "gray pixel format video", _grayscale),
    Case("rgba_video_rgba_keyframe", "RGBA video and RGBA keyframe image", _rgba),
    Case("gray16_keyframe", "16-bit grayscale keyframe PNG", _gray_keyframe),
    Case("gif_input", "animated GIF input", _gif),
    Case("variable_frame_rate", "mp4 with alternating 50/10 ms frame gaps", _vfr),
    Case("rotation_metadata", "phone video with 90 degree rotation metadata", _rotated),
    Case("keyframe_index_out_of_range", "--keyframe-index 99 on a 6-frame clip", _key_index),
    Case("keyframe_not_an_image", "text file named key.png", _key_not_image),
    Case("keyframe_empty_file", "0-byte keyframe image", _key_empty),
    Case("mask_other_size", "per-frame masks at half the video's size (resized, warned)", _mask_other_size),
    Case("mask_all_zero", "per-frame masks that are all empty", _mask_all_zero),
    Case("mask_count_mismatch", "2 masks for a 6-frame clip", _mask_count),
    Case("depth_not_npz", "--depth file that is not a .npz", _depth_not_npz),
    Case("depth_wrong_frames", "--depth with 3 frames for a 6-frame clip", _depth_frames),
    Case("config_not_json", "--config that is not valid JSON", _config_not_json),
    Case("config_wrong_type", '--config with "seed": "zero"', _config_wrong_type),
    Case("zero_steps", "--steps 0", _zero_steps),
    Case("output_equals_input", "-o the input file", _output_is_input),
    Case("output_parent_is_a_file", "-o file.txt/out.mp4", _output_under_file),
    Case("output_dir_not_writable", "-o into a chmod 0500 folder", _output_dir_readonly, skip=_is_root),
    Case("disk_full_on_rename", "ENOSPC when the finished output is renamed into place", _disk_full_rename),
    Case("disk_full_mid_frames", "ENOSPC on the third frame of a PNG-folder output", _disk_full_frames),
    Case("disk_full_work_folder", "ENOSPC saving a propagation step to the work folder", _disk_full_work),
    Case("unknown_propagator", "--propagator magic", _unknown_propagator),
    Case("model_wrong_kind", "--model pointing at a depth model folder", _model_wrong_kind),
    Case("depth_model_wrong_kind", "--depth-model pointing at a CLIP folder", _depth_model_wrong_kind),
    Case("home_of_unknown_user", "--depth-model ~nosuchuser/depth (a home folder that cannot be resolved)", _unknown_home),
    Case("offline_missing_weights", "HF_HUB_OFFLINE=1 and a hub id not in the cache", _offline_missing),
    Case("pickle_only_model", ".bin-only model folder without --allow-pickle", _pickle_refused),
    Case("pickle_only_model_allowed", ".bin-only model folder with --allow-pickle", _pickle_allowed),
    Case("depth_model_pickle_only", ".bin-only depth model folder without --allow-pickle", _depth_pickle_refused),
    Case("depth_model_pickle_only_allowed", ".bin-only depth model folder with --allow-pickle", _depth_pickle_allowed),
    Case("keyframe_decompression_bomb", "keyframe PNG whose header claims 20000x20000 pixels", _image_bomb),
    Case("no_cuda", "--device cuda on a machine without CUDA", _no_cuda),
    Case("batch_garbage_lines", "batch file with bad JSON, a list, a bad propagator, a numeric output, and one good job", _batch_garbage),
    Case("api_float_frames", "MagicPropPipeline on float32 frames", _api_array_of_floats),
    Case("api_text_as_video", "read_video on a text file named .webm", _api_read_text_as_video),
    Case("api_huge_array", "MagicPropPipeline on 3840x2160 frames: copy at full size, flow capped by max_pixels", res.api_huge_array),
    # full resolution (tests/badinput_resolution.py)
    Case("keyframe_other_aspect", "a square keyframe for a 3:2 clip (stretched, warned)", res.keyframe_other_aspect),
    Case("larger_than_8k", "an 8200x4400 clip without --max-pixels (refused before decoding)", res.larger_than_8k),
    Case("larger_than_8k_capped", "the same clip with --max-pixels 262144 (works, back at 8200x4400)", res.larger_than_8k_capped),
    Case("odd_size_1081", "1081x97 frames at full resolution (kept; the mp4 padded, warned)", res.odd_size_1081),
    Case("keyframe_thumbnail", "a 40x30 keyframe image for a 128x96 clip (under 64 px)", res.keyframe_thumbnail),
    Case("max_pixels_below_minimum", "--max-pixels 10", res.max_pixels_below_minimum),
    Case("crf_out_of_range", "--crf 60", res.crf_out_of_range),
    # damaged work folders and checkpoints (tests/badinput_work.py): resumed to the identical result, or refused
    Case("resume_truncated_step", "--resume after step 2 of a killed run was cut to half its size", work.truncated_step),
    Case("resume_zero_byte_step", "--resume after step 3 of a killed run became a 0-byte file", work.zero_byte_step),
    Case("resume_deleted_middle_step", "--resume after step 2 of 4 saved steps was deleted", work.deleted_middle_step),
    Case("resume_garbage_job_json", "--resume into a work folder whose job.json is garbage", work.garbage_job_json),
    Case("resume_foreign_format", "--resume into a work folder of another format version", work.foreign_format),
    Case("train_resume_damaged_newest", "train --resume latest, newest checkpoint's weights cut short", work.damaged_newest_checkpoint),
    Case("train_resume_damaged_path", "train --resume PATH to a checkpoint whose weights are garbage", work.damaged_checkpoint_path),
]
