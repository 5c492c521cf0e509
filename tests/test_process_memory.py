"""What keeps a long 4K `magicprop propagate` small (issue 23): a weight-free run never imports diffusers or
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
code = main(sys.argv[1:])
print(json.dumps({"code": code, "loaded": sorted(m for m in ("diffusers", "transformers") if m in sys.modules)}))
"""


@pytest.mark.parametrize("propagator", ["flow", "chain"])
def test_a_weight_free_propagate_imports_neither_diffusers_nor_transformers(tmp_path, propagator):
    clip = render_clip(3, frames=4, size=(48, 64), edit="global")
    write_video(tmp_path / "clip.mp4", clip.source, 8)
    save_image(tmp_path / "key.png", clip.edited[0])
    args = ["propagate", tmp_path / "clip.mp4", "--keyframe-image", tmp_path / "key.png", "--keyframe-index", "0",
            "--propagator", propagator, "--seed", "0", "-o", tmp_path / "out.mp4"]  # fmt: skip
    out = subprocess.run([sys.executable, "-c", _CHILD, *map(str, args)], capture_output=True, text=True, timeout=600)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"code": 0, "loaded": []}, out.stderr[-2000:]
    environment = json.loads((tmp_path / "out.json").read_text())["environment"]  # versions from package metadata
    assert {"torch", "diffusers", "transformers"} <= environment.keys() and all(environment.values())
    assert len(Frames.open(tmp_path / "out.mp4")) == 4


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
