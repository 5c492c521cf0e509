"""Real footage from ../shared/samples, when present (skipped otherwise: the project passes on its own).

The bear clip (16 frames, 854x480) with its keyframe edited into an elephant (512x512) goes through `magicprop
propagate --propagator flow` end to end; no depth model or diffusion weights can be loaded here, so PropDPM itself is
not run on it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import SAMPLES

from magicprop.propagation.baselines import propagate_copy
from magicprop.cli import main
from magicprop.evaluation import warp_error
from magicprop.video import load_image, read_video, resize_frames

BEAR = SAMPLES / "bear"


@pytest.mark.skipif(not (BEAR / "frames").is_dir(), reason=f"{BEAR} is not present")
def test_bear_to_elephant_with_flow(tmp_path, caplog):
    out = tmp_path / "elephant.mp4"
    key = BEAR / "edited_keyframe_000.png"
    assert main(["propagate", str(BEAR / "frames"), "--keyframe-image", str(key), "--keyframe-index", "0",
                 "--propagator", "flow", "--seed", "0", "-o", str(out)]) == 0  # fmt: skip
    assert "stretches" in caplog.text  # the 512x512 edit is fitted to the 16:9 clip, with a warning
    source, _ = read_video(BEAR / "frames")
    edited, _ = read_video(out)
    assert edited.shape == source.shape == (16, 480, 854, 3)  # the source's size, not the working size
    assert json.loads((tmp_path / "elephant.json").read_text())["working_size"] == [384, 680]  # 16:9 within 512x512 pixels
    # the edit follows the bear's motion: far smoother along the source's flow than pasting the keyframe on every frame
    copied = propagate_copy(source, resize_frames(load_image(key), source.shape[1:3]), 0)
    assert warp_error(edited, source).mean() < 0.5 * warp_error(copied, source).mean()
    # and it is the elephant: the first frame is the edited keyframe (up to the mp4's compression), not the bear
    first = resize_frames(load_image(key), (480, 854)).astype(float)
    assert np.abs(edited[0] - first).mean() < 0.5 * np.abs(source[0] - first).mean()
