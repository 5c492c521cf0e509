"""`magicprop demo` end to end, with the dummy propagation model standing in for the embedded one where noted."""

import json

import numpy as np
import pytest

from fixtures import save_dummy_propagation_models
from magicprop.cli import main
from magicprop.demo import DemoSettings, run_demo, score
from magicprop.models.bundle import EMBEDDED_TINY


def test_demo_writes_every_output_and_key(tmp_path):
    model = save_dummy_propagation_models(tmp_path / "model")
    settings = DemoSettings(frames=6, size=(32, 32), num_inference_steps=2, keyframe_index=2)
    summary = run_demo(tmp_path / "out", settings, model=str(model), progress=False)
    out = tmp_path / "out"
    for name in ("source.mp4", "ground_truth.mp4", "edited.mp4", "comparison.mp4", "comparison.png", "drift.png", "metrics.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    for method in ("propdpm", "hybrid", "flow", "copy"):
        assert set(metrics[method]) >= {"psnr", "ssim", "warp_error", "per_frame"}
        assert len(metrics[method]["per_frame"]["psnr"]) == 6
        # the keyframe is given, so every method is exact there
        assert metrics[method]["per_frame"]["psnr"][2] == pytest.approx(100.0)
    assert summary["propdpm"]["psnr"] == metrics["propdpm"]["psnr"]
    from magicprop.video import probe

    info = probe(out / "comparison.mp4")
    assert info.frames == 6 and info.width > 6 * 32 - 1  # source | truth | propdpm | hybrid | flow | copy
    from magicprop.video import load_image

    sheet = load_image(out / "comparison.png")  # frames 3, 4, 5 (keyframe 2, the far end is 5), shown at 2x
    assert sheet.shape[1] == 2 * info.width and sheet.shape[0] == 3 * 2 * info.height


def test_score_excludes_the_keyframe_and_ranks_a_perfect_method_first():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    noisy = np.clip(truth.astype(int) + rng.integers(-20, 21, truth.shape), 0, 255).astype(np.uint8)
    noisy[1] = truth[1]
    m = score({"perfect": truth, "noisy": noisy}, truth, truth, keyframe_index=1)
    assert m["perfect"]["psnr"] == pytest.approx(100.0)
    assert m["noisy"]["psnr"] < 30  # the exact keyframe (100 dB) is left out of the mean
    assert m["perfect"]["ssim"] == pytest.approx(1.0)


def test_demo_cli_rejects_a_one_frame_clip(capsys):
    assert main(["demo", "--frames", "1"]) == 2
    assert "at least 2" in capsys.readouterr().err


@pytest.mark.skipif(not (EMBEDDED_TINY / "propdpm" / "config.json").is_file(), reason="embedded tiny model not built")
def test_demo_cli_with_the_embedded_model(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--frames", "8", "--steps", "4"]) == 0
    printed = capsys.readouterr().out
    assert all(m in printed for m in ("propdpm", "hybrid", "flow", "copy"))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["model"].endswith("weights/tiny")
