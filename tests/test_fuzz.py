"""Property-based fuzzing of everything that parses a user's file: the video loader, the image and mask loaders, the
batch-jobs file, training manifests and --config files. Whatever the bytes, the only exceptions allowed out are the
project's own MagicPropError/UsageError (one line for the user); anything else is a crash.

Bounded for CI: 60-100 examples per property, no deadline (the machine is shared). Each test records how many inputs it
tried (`fuzz_cases`, read by benchmarks/reliability.py).
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import string
from pathlib import Path

import numpy as np
import pytest
from badinputs import frames_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from magicprop.errors import MagicPropError, UsageError
from magicprop.video import load_image, load_mask, probe, read_video, write_video

# derandomize: the same inputs on every run (a failure reproduces; CI does not flake); `count` is per test on purpose.
_BASE = settings(
    deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)  # fmt: skip


def fuzz(examples: int) -> settings:
    return settings(_BASE, max_examples=examples)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:PIL", "ignore::PIL.Image.DecompressionBombWarning")
COUNTS: dict[str, int] = {}
_names = itertools.count()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def valid_clips(scratch):
    """Bytes of small valid clips in each container we write: the seeds of truncation and corruption."""
    clips = {}
    for suffix in (".mp4", ".gif", ".webm"):
        path = write_video(scratch / f"valid{suffix}", frames_of(8, 32, 32), 8.0)
        clips[suffix] = path.read_bytes()
    return clips


@pytest.fixture(autouse=True)
def quiet():
    """Damaged files log a warning each; hundreds of them would only slow the run down."""
    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)


def new_file(folder: Path, suffix: str, data: bytes) -> Path:
    path = folder / f"f{next(_names)}{suffix}"
    path.write_bytes(data)
    return path


def tried(name: str) -> None:
    COUNTS[name] = COUNTS.get(name, 0) + 1


@pytest.fixture
def count(request, record_property):
    """Counts the examples a test tried and records the number for the benchmark."""
    name = request.node.name
    COUNTS[name] = 0
    yield lambda: tried(name)
    record_property("fuzz_cases", COUNTS[name])
    print(f"{name}: {COUNTS[name]} inputs")


def load_video_or_usage_error(path: Path) -> None:
    try:
        info = probe(path)
        frames, fps = read_video(path, max_frames=4)
    except UsageError:
        return
    assert info.frames >= 1 and fps > 0
    assert frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[3] == 3 and 1 <= len(frames) <= 4


# ---------------------------------------------------------------------------------------------------------------------
# Videos
# ---------------------------------------------------------------------------------------------------------------------
VIDEO_SUFFIXES = [".mp4", ".mov", ".mkv", ".webm", ".avi", ".gif"]
MAGIC = [b"", b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2", b"GIF89a", b"\x1aE\xdf\xa3", b"RIFF\x00\x00\x00\x00AVI "]


@fuzz(100)
@given(suffix=st.sampled_from(VIDEO_SUFFIXES), magic=st.sampled_from(MAGIC), body=st.binary(max_size=2048))
def test_random_bytes_named_as_video(scratch, count, suffix, magic, body):
    count()
    load_video_or_usage_error(new_file(scratch, suffix, magic + body))


@fuzz(100)
@given(data=st.data())
def test_truncated_and_corrupted_clips(scratch, valid_clips, count, data):
    count()
    suffix = data.draw(st.sampled_from(sorted(valid_clips)), label="container")
    clip = bytearray(valid_clips[suffix])
    cut = data.draw(st.integers(0, len(clip)), label="cut")
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(clip) - 1), st.integers(0, 255)), max_size=6), label="flips")
    for position, value in flips:
        clip[position] = value
    load_video_or_usage_error(new_file(scratch, suffix, bytes(clip[:cut])))


# ---------------------------------------------------------------------------------------------------------------------
# Images and masks
# ---------------------------------------------------------------------------------------------------------------------
PNG = b"\x89PNG\r\n\x1a\n"


@fuzz(80)
@given(suffix=st.sampled_from([".png", ".jpg", ".tif"]), magic=st.sampled_from([b"", PNG, b"\xff\xd8\xff\xe0", b"II*\x00"]),
       body=st.binary(max_size=1024))  # fmt: skip
def test_random_bytes_named_as_image(scratch, count, suffix, magic, body):
    count()
    path = new_file(scratch, suffix, magic + body)
    for load in (load_image, lambda p: load_mask(p, (8, 8))):
        try:
            load(path)
        except UsageError:
            pass


# Modes PIL saves as PNG, and the rest as TIFF; each with the dtype and channels Image.fromarray wants for it.
MODES = {
    "1": (".png", np.bool_, 0), "L": (".png", np.uint8, 0), "LA": (".png", np.uint8, 2), "P": (".png", np.uint8, 0),
    "RGB": (".png", np.uint8, 3), "RGBA": (".png", np.uint8, 4), "I;16": (".png", np.uint16, 0), "I": (".tif", np.int32, 0),
    "F": (".tif", np.float32, 0), "CMYK": (".tif", np.uint8, 4), "YCbCr": (".tif", np.uint8, 3), "LAB": (".tif", np.uint8, 3),
}  # fmt: skip


@st.composite
def odd_images(draw):
    mode = draw(st.sampled_from(sorted(MODES)))
    suffix, dtype, channels = MODES[mode]
    h, w = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    shape = (h, w, channels) if channels else (h, w)
    elements = st.floats(-1e6, 1e6, width=32) if dtype == np.float32 else None
    pixels = draw(arrays(dtype, shape, elements=elements))
    return mode, suffix, pixels


@fuzz(80)
@given(image=odd_images(), target=st.tuples(st.integers(1, 16), st.integers(1, 16)))
def test_random_arrays_in_odd_image_modes(scratch, count, image, target):
    count()
    mode, suffix, pixels = image
    path = scratch / f"f{next(_names)}{suffix}"
    im = Image.fromarray(pixels, mode) if mode not in ("1", "I;16") else Image.fromarray(pixels)
    if mode == "P":
        im.putpalette(list(range(256)) * 3)
    im.save(path)
    h, w = pixels.shape[:2]
    try:
        rgb = load_image(path)
        mask = load_mask(path, target)
    except UsageError:  # LAB (no conversion to RGB in PIL), or a tiny TIFF PIL writes but cannot read back
        assert mode in ("LAB", "YCbCr", "CMYK", "I", "F"), mode
        return
    assert rgb.shape == (h, w, 3) and rgb.dtype == np.uint8
    assert mask.shape == target and mask.dtype == bool


# ---------------------------------------------------------------------------------------------------------------------
# Batch jobs, training manifests, --config files
# ---------------------------------------------------------------------------------------------------------------------
JOB_KEYS = ["video", "output", "prompt", "keyframe_image", "keyframe_index", "seed", "propagator", "masks", "steps",
            "max_pixels", "allow_pickle", "resume", "device", "feather", "mask_points", "strength", "bogus"]  # fmt: skip
PATHISH = st.sampled_from(["", ".", "..", "/", "~", "~nosuchuser/x.mp4", "a\x00b", "x" * 300, "clip.mp4", "*.png"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=12) | PATHISH,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
job_objects = st.dictionaries(st.sampled_from(JOB_KEYS), json_values, max_size=6)
job_lines = st.one_of(job_objects.map(json.dumps), json_values.map(json.dumps), st.text(max_size=40).map(lambda s: s.replace("\n", " ")))


@fuzz(60)
@given(lines=st.lists(job_lines, max_size=4), raw=st.booleans(), junk=st.binary(max_size=64))
def test_batch_jobs_file(scratch, count, lines, raw, junk):
    from magicprop.cli import main

    count()
    folder = scratch / f"batch{next(_names)}"
    folder.mkdir()
    data = junk if raw else ("\n".join(lines) + "\n").encode()
    jobs = new_file(folder, ".jsonl", data)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["batch", str(jobs), "--output-dir", str(folder / "out")])
    assert code in (0, 1, 2) and "Traceback" not in err.getvalue()


manifest_text = st.one_of(
    st.lists(st.lists(st.text(string.printable, max_size=8), max_size=3).map(",".join), max_size=5).map("\n".join),
    st.lists(st.one_of(st.dictionaries(st.sampled_from(["path", "caption", "name", "x"]), json_values, max_size=3).map(json.dumps),
                       json_values.map(json.dumps)), max_size=4).map("\n".join),  # fmt: skip
    st.text(max_size=80),
)


@fuzz(80)
@given(suffix=st.sampled_from([".csv", ".jsonl"]), header=st.sampled_from(["", "path,caption\n", "caption,path\n"]), text=manifest_text)
def test_training_manifests(scratch, count, suffix, header, text):
    from magicprop.training.sources import discover_clips

    count()
    path = new_file(scratch, suffix, (header + text).encode("utf-8", "surrogatepass"))
    try:
        found = discover_clips(path)
    except UsageError:
        return
    assert all(Path(c.path).is_file() for c in found.clips)


@fuzz(80)
@given(suffix=st.sampled_from([".json", ".yaml"]),
       text=st.one_of(st.dictionaries(st.sampled_from([*JOB_KEYS, "settings"]), json_values, max_size=5).map(json.dumps),
                      json_values.map(json.dumps), st.text(max_size=60)))  # fmt: skip
def test_config_files(scratch, count, suffix, text):
    from magicprop.jobs import EditJob, load_config

    count()
    path = new_file(scratch, suffix, text.encode("utf-8", "surrogatepass"))
    try:
        settings_ = load_config(path)
        EditJob.from_mapping({**settings_, "video": "v.mp4", "output": "o.mp4"}, where="fuzz")
    except UsageError:
        pass
    except MagicPropError:
        pass
