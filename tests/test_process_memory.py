"""What keeps a long 4K `magicprop propagate` small (issue 23): a weight-free run never imports torch, diffusers or
transformers, glibc hands freed frames back, x264's lookahead shrinks above 1080p, decoders use slice threads."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from magicprop.synthetic import render_clip
from magicprop.video import Frames, save_image, write_video
from magicprop.video.writing import _lookahead

# Runs `magicprop ARGS` in this fresh process and prints which heavy packages it imported.
_CHILD = """
import json, sys
from magicprop.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:  # --help
    code = exc.code
print(json.dumps({"code": code, "loaded": sorted(m for m in ("torch", "diffusers", "transformers") if m in sys.modules)}))
"""


def _run_child(*args) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, *map(str, args)], capture_output=True, text=True, timeout=600)
    assert out.stdout.strip(), out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1]) | {"stderr": out.stderr[-2000:]}


@pytest.mark.parametrize("propagator", ["flow", "chain", "lut", "copy"])
def test_a_weight_free_propagate_imports_no_torch_diffusers_or_transformers(tmp_path, propagator):
    clip = render_clip(3, frames=4, size=(48, 64), edit="global")
    write_video(tmp_path / "clip.mp4", clip.source, 8)
    save_image(tmp_path / "key.png", clip.edited[0])
    # flow and chain keep their frames in the work folder (`integrity.write_piece`), which needs no torch either
    args = ["propagate", tmp_path / "clip.mp4", "--keyframe-image", tmp_path / "key.png", "--keyframe-index", "0",
            "--propagator", propagator, "--seed", "0", "-o", tmp_path / "out.mp4"]  # fmt: skip
    result = _run_child(*args)
    assert result["code"] == 0 and result["loaded"] == [], result["stderr"]
    record = json.loads((tmp_path / "out.json").read_text())
    environment = record["environment"]  # versions from package metadata
    assert {"torch", "diffusers", "transformers"} <= environment.keys() and all(environment.values())
    assert (environment["device"], environment["dtype"], record["settings"]["seed"]) == ("cpu", "float32", 0)
    assert len(Frames.open(tmp_path / "out.mp4")) == 4


def test_a_weight_free_output_does_not_depend_on_the_seed(tmp_path):
    # why a weight-free job is given no torch.Generator: the seed is recorded, and nothing it makes depends on it
    clip = render_clip(4, frames=5, size=(48, 64), edit="global")
    write_video(tmp_path / "clip.mp4", clip.source, 8)
    save_image(tmp_path / "key.png", clip.edited[2])
    outputs = []
    for seed in ("0", "12345"):
        out = tmp_path / f"seed{seed}.mp4"
        result = _run_child("propagate", tmp_path / "clip.mp4", "--keyframe-image", tmp_path / "key.png", "--seed", seed, "-o", out)
        assert result["code"] == 0 and result["loaded"] == [], result["stderr"]
        assert json.loads(out.with_suffix(".json").read_text())["settings"]["seed"] == int(seed)
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]


def test_keyframes_and_help_import_no_torch(tmp_path):
    clip = render_clip(5, frames=6, size=(48, 64), edit="global")
    write_video(tmp_path / "clip.mp4", clip.source, 8)
    result = _run_child("keyframes", tmp_path / "clip.mp4", "--max", "2", "-o", tmp_path / "plan.json")
    assert result["code"] == 0 and result["loaded"] == [], result["stderr"]
    assert len(json.loads((tmp_path / "plan.json").read_text())["coverage"]) == 6
    help_run = _run_child("--help")  # every command's parser is built: none may load torch (`magicprop --help` stays fast)
    assert help_run["code"] == 0 and help_run["loaded"] == [], help_run["stderr"]


def test_a_weight_free_batch_imports_no_torch(tmp_path):
    # accelerate's PartialState (which imports torch) is asked only under a launcher of several processes
    clip = render_clip(6, frames=4, size=(48, 64), edit="global")
    write_video(tmp_path / "clip.mp4", clip.source, 8)
    save_image(tmp_path / "key.png", clip.edited[0])
    jobs = [{"video": "clip.mp4", "keyframe_image": "key.png", "keyframe_index": 0, "propagator": p, "output": f"{p}.mp4"}
            for p in ("flow", "copy")]  # fmt: skip
    (tmp_path / "jobs.jsonl").write_text("\n".join(json.dumps(job) for job in jobs) + "\n")
    result = _run_child("batch", tmp_path / "jobs.jsonl")
    assert result["code"] == 0 and result["loaded"] == [], result["stderr"]
    assert len(Frames.open(tmp_path / "flow.mp4")) == len(Frames.open(tmp_path / "copy.mp4")) == 4


def test_x264_lookahead_is_its_default_up_to_1080p_and_falls_above():
    assert _lookahead(1080, 1920) == _lookahead(720, 1280) == 40  # these clips' bytes are what they were
    assert _lookahead(1440, 2560) == 13
    assert _lookahead(2160, 3840) == _lookahead(4320, 7680) == 4


_FREED_CHILD = """
import numpy as np
from magicprop.allocator import return_freed_memory

def resident_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024

assert return_freed_memory()
block = np.ones(30 * 2**20, np.uint8)  # by default, freeing it would raise glibc's mmap threshold to 30 MB
del block
before = resident_mb()
frames, kept = [], []
for _ in range(8):  # 4K frames (25 MB each) with small arrays that outlive them, as a run makes them
    frames.append(np.ones((2160, 3840, 3), np.uint8))
    kept.append(np.ones(64 * 1024, np.uint8))
grown = resident_mb() - before
del frames
print(grown, resident_mb() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_frames_go_back_to_the_system_between_arrays_that_stay():
    # a fresh process: the allocator's state is per process, and a full-resolution render earlier in this one may
    # have left free heap pages (allocator.keep_freed_pages) that large blocks are served from before any mmap
    out = subprocess.run([sys.executable, "-c", _FREED_CHILD], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    grown, left = (float(v) for v in out.stdout.split())
    assert grown > 150
    assert left < 50  # without the fixed threshold: the heap keeps all 200 MB (measured)
