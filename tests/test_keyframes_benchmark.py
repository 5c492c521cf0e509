"""benchmarks/keyframes.py on a tiny samples folder of synthetic clips: what it counts is what find_keyframe and flow
return for those cases."""

import json
from pathlib import Path

import numpy as np
import pytest
import fixtures
from fixtures import panning_clip

from magicprop.evaluation.appearance_edits import EDITS
from magicprop.video import save_image, write_video

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    return fixtures.load_benchmark("keyframes")


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    """samples/real/{pan,tilt}.mp4 and samples/edits/{pan2.mp4, pan2_sketch_000.png}: three unrelated textures."""
    root = tmp_path_factory.mktemp("samples")
    (root / "real").mkdir()
    (root / "edits").mkdir()
    write_video(root / "real" / "pan.mp4", panning_clip(12, (64, 64), (0, 4), seed=1), 8.0)
    write_video(root / "real" / "tilt.mp4", panning_clip(12, (64, 64), (4, 0), seed=2), 8.0)
    other = panning_clip(8, (64, 64), (2, 2), seed=3)
    write_video(root / "edits" / "pan2.mp4", other, 8.0)
    save_image(root / "edits" / "pan2_sketch_000.png", EDITS["sketch"](other[0]))
    return root


def test_detection_and_suggestions_rows(bench, samples, tmp_path):
    out = tmp_path / "k.json"
    argv = ["--samples", str(samples), "--size", "64", "--detection-edits", "cartoon", "sketch", "--clips", "pan",
            "--edits", "cartoon", "--budgets", "2", "--pictures", str(tmp_path), "--json", str(out)]  # fmt: skip
    assert bench.main(argv) == 0
    result = json.loads(out.read_text())
    detection = result["detection"]["summary"]
    assert detection["real_motion"] == {"cases": 4, "right": 4} and detection["image_editor"] == {"cases": 1, "right": 1}
    assert detection["other_clip"]["cases"] == 5 * 2 and detection["other_clip"]["confident"] == 0
    rows = result["suggestions"]["rows"]
    assert [r["method"] for r in rows] == ["frame 0", "even 2", "suggested 2"]
    assert rows[1]["keyframes"] == [3, 9] and all(r["psnr_new"] is not None and r["psnr"] > 10 for r in rows)
    summary = result["suggestions"]["summary"]["budget 2 psnr_new"]
    assert summary["mean_gain"] == pytest.approx(rows[2]["psnr_new"] - rows[1]["psnr_new"])
    assert (tmp_path / "keyframes-pan2.png").is_file() and "| detection |" in Path(f"{out.with_suffix('')}.md").read_text()


def test_masked_psnr(bench):
    a, b = np.zeros((2, 4, 4, 3), np.uint8), np.zeros((2, 4, 4, 3), np.uint8)
    b[0, 0, 0] = 255
    mask = np.zeros((2, 4, 4), bool)
    assert bench.masked_psnr(a, b, mask) is None
    mask[0, 0, :2] = True  # one wrong pixel of two: MSE 255^2 / 2
    assert bench.masked_psnr(a, b, mask) == pytest.approx(10 * np.log10(2))
