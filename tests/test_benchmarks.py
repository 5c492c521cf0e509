"""The synthetic-propagation benchmark, on one short case: the numbers it reports are the metrics of what each method
returns, for the clips its seed options name."""

import argparse
from pathlib import Path

import numpy as np
import pytest

import fixtures

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    return fixtures.load_benchmark("synthetic_propagation")


def _args(**kw):
    base = dict(models=[("shipped", None)], clips=1, lengths=[6], positions=["middle"], edits=["global"],
                textures=["procedural"], motions=["normal"], keyframe_every=0, hybrid=True, latent_warp=True,
                first_seed=950_000, steps=2, invalid=False)  # fmt: skip
    return argparse.Namespace(**{**base, **kw})


def test_first_seed_picks_another_held_out_set(bench):
    default = [c["seed"] for c in bench.cases(2, [16], ["start", "middle"], ["global"], ["procedural"])]
    other = [c["seed"] for c in bench.cases(2, [16], ["start", "middle"], ["global"], ["procedural"], first_seed=950_000)]
    assert default == [900_000, 900_001, 900_100, 900_101]
    assert other == [950_000, 950_001, 950_100, 950_101] and not set(default) & set(other)


def test_hybrid_rows_score_what_each_method_returns(bench):
    from magicprop.propagation.baselines import propagate_copy, propagate_flow
    from magicprop.evaluation import psnr

    result = bench.run(_args())
    assert result["methods"] == ["shipped", "shipped hybrid", "latent warp", "flow", "chain", "lut", "copy"]
    rows = {r["method"]: r for r in result["rows"]}
    assert set(rows) == set(result["methods"]) and {r["seed"] for r in rows.values()} == {950_000}
    source, edited, _ = bench.render_case(rows["copy"])
    k = rows["copy"]["keyframe"]
    assert k == 3
    for method, frames in (("copy", propagate_copy(source, edited[k], k)), ("chain", propagate_flow(source, edited[k], k, progress=False))):
        expected = np.minimum(psnr(frames, edited), 100.0)
        assert rows[method]["psnr"] == pytest.approx(np.delete(expected, k).mean())
        assert rows[method]["psnr_per_frame"][k] == 100.0  # the given keyframe is exact (and left out of the mean)
    # latent warp: no network, so one frame on is the keyframe latent warped by the source's flow, decoded
    import torch

    from magicprop.motion.flow import optical_flow
    from magicprop.models import PropagationModels
    from magicprop.models.propdpm import warp_latent
    from magicprop.models.encoders import images_to_tensor, tensor_to_images, vae_decode, vae_encode

    m = PropagationModels.from_pretrained(None)
    with torch.no_grad():
        flow = torch.from_numpy(optical_flow(source[k + 1], source[k])).permute(2, 0, 1)[None]
        z = warp_latent(vae_encode(m.vae, images_to_tensor(edited[k], "cpu", torch.float32)), flow)
        expected = psnr(tensor_to_images(vae_decode(m.vae, z)), edited[k + 1 : k + 2])[0]
    assert rows["latent warp"]["psnr_per_frame"][k + 1] == pytest.approx(expected, abs=1e-3)
    # the hybrid is PropDPM's run fused with flow: another result than PropDPM alone, still exact at the keyframe
    assert rows["shipped hybrid"]["psnr"] != rows["shipped"]["psnr"]
    assert rows["shipped hybrid"]["psnr_per_frame"][k] == 100.0
    summary = bench.summarise(result)
    assert summary["shipped hybrid"]["psnr"] == pytest.approx(rows["shipped hybrid"]["psnr"])


def test_invalid_pixel_psnr_scores_only_those_pixels(bench):
    truth = np.zeros((3, 16, 16, 3), np.uint8)
    frames = truth.copy()
    frames[:, :8] = 10  # wrong only in the top half
    invalid = np.zeros((3, 16, 16), bool)
    invalid[:, 8:] = True  # ... so the bottom half, the "invalid" pixels, is exact
    assert bench.score(frames, truth, truth, 0, invalid)["psnr_invalid"] == pytest.approx(100.0)
    invalid[:, :8] = True
    assert bench.score(frames, truth, truth, 0, invalid)["psnr_invalid"] == pytest.approx(10 * np.log10(255**2 / 50.0))
    assert "psnr_invalid" not in bench.score(frames, truth, truth, 0)


def test_drift_and_wins_compare_the_right_frames_and_cases(bench):
    def row(method, seed, psnr_per_frame, keyframe=0):
        return {"method": method, "seed": seed, "frames": len(psnr_per_frame), "keyframe": keyframe, "edit": "global",
                "position": "start",
                "textures": "procedural", "motion": "normal", "psnr": float(np.mean(psnr_per_frame[1:])), "ssim": 0.0,
                "warp_error": 0.0, "color_shift": 0.0, "sharpness_ratio": 1.0, "psnr_per_frame": psnr_per_frame}  # fmt: skip

    curve = [100.0] + [30.0] * 16 + [25.0] * 31 + [20.0] * 16  # 64 frames: 30 dB near the keyframe, 20 dB far
    flat = [100.0] + [26.0] * 63
    result = {"methods": ["model", "flow"], "rows": [row("model", 1, curve), row("flow", 1, flat),
                                                     row("model", 2, flat), row("flow", 2, curve)]}  # fmt: skip
    summary = bench.summarise(result)
    assert summary["model"]["near"] == pytest.approx(28.0) and summary["model"]["far"] == pytest.approx(23.0)
    assert summary["model"]["drift"] == pytest.approx(5.0)
    assert (summary["model"]["wins"], summary["model"]["cases"]) == (1, 2) and "wins" not in summary["flow"]
    middle = [26.0] * 32 + [100.0] + [26.0] * 31  # a keyframe in the middle is never 48 frames from anything
    assert bench.distance_mean([row("m", 3, middle, keyframe=32)], 48, 63) is None
    assert "| 28.00 | 23.00 | 5.00 | 1/2 |" in bench.markdown(summary)


def test_anchored_speed_keyframe_edits():
    speed = fixtures.load_benchmark("anchored_speed")
    frame = fixtures.panning_clip(1, 32, (0, 0))[0]
    np.testing.assert_array_equal(speed.keyframe_edit(frame, "invert"), (255 - frame)[..., ::-1])
    from magicprop.evaluation.appearance_edits import EDITS

    np.testing.assert_array_equal(speed.keyframe_edit(frame, "cartoon"), EDITS["cartoon"](frame))
    with pytest.raises(SystemExit, match="unknown --edit 'toon'; use invert or one of"):
        speed.keyframe_edit(frame, "toon")
