"""`magicprop train` end to end on dummy components: learning, exact resume (also after SIGKILL), two processes under
accelerate, the exported model, and one-line errors that leave the output folder untouched."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures import training_workspace, write_bad_videos
from safetensors.torch import load_file

from magicprop.cli import main
from magicprop.training.logs import read_log

# Dummy UNet/VAE/CLIP at 16x16 frames (8x8 latents); 8 sampled frames per clip, consecutive, so triplets vary a lot.
RECIPE = {
    "resolution": 16, "frames_per_clip": 8, "frame_stride": 1, "batch_size": 8, "lr": 3e-3, "warmup_steps": 2,
    "log_every": 1, "checkpoint_every": 4, "keep_checkpoints": 2, "num_workers": 0, "mixed_precision": "no",
    "use_ema": False, "seed": 0,
}  # fmt: skip
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """Three synthetic clips, an SD-shaped folder of dummy components, a CLIP folder and recipe files."""
    root = training_workspace(tmp_path_factory.mktemp("train"), 3, frames=12)
    (root / "recipe.json").write_text(json.dumps(RECIPE))
    (root / "recipe_ema.json").write_text(json.dumps({**RECIPE, "use_ema": True, "grad_accum": 2, "batch_size": 4}))
    # Batch 16 keeps the per-step loss noise (uniform timesteps) small: last/first ratio 0.58-0.70 over seeds 0-3.
    (root / "recipe_learn.json").write_text(json.dumps({**RECIPE, "batch_size": 16}))
    return root


def train_args(ws: Path, out: Path, *extra: str, recipe: str = "recipe.json", data: str | Path | None = None) -> list[str]:
    return ["train", "--config", "tiny-synthetic", "--recipe", str(ws / recipe), "--pretrained", str(ws / "sd"),
            "--image-encoder", str(ws / "clip"), "--data", str(data or ws / "clips"), "--output-dir", str(out), *extra]  # fmt: skip


def step_losses(out: Path) -> list[float]:
    by_step = {r["step"]: r["loss"] for r in read_log(out / "logs" / "train_log.jsonl") if "event" not in r}
    return [by_step[s] for s in sorted(by_step)]


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "final" / "propdpm" / "diffusion_pytorch_model.safetensors"))


def assert_same_weights(a: dict, b: dict, atol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= atol, f"largest weight difference {worst:.3g}"


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")} if folder.exists() else {}


@pytest.fixture(scope="module")
def reference_run(ws):
    """8 uninterrupted steps with EMA and gradient accumulation: what every interrupted run must reproduce."""
    out = ws / "run_reference"
    assert main(train_args(ws, out, "--max-steps", "8", recipe="recipe_ema.json")) == 0
    return out


def test_loss_decreases_and_the_export_propagates(ws):
    out = ws / "run_learn"
    assert main(train_args(ws, out, "--max-steps", "60", recipe="recipe_learn.json")) == 0
    losses = step_losses(out)
    assert len(losses) == 60
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    assert last < 0.8 * first, (first, last)
    log = read_log(out / "logs" / "train_log.jsonl")
    end = log[-1]
    assert end["event"] == "end" and end["steps"] == 60 and end["skipped_videos"] == 0 and end["world_size"] == 1
    assert {"step", "epoch", "loss", "lr", "samples_per_s", "skipped_videos"} <= set(log[1])
    assert [r["lr"] for r in log[1:4]] == pytest.approx([0.0, 1.5e-3, 3e-3])  # linear warm-up from 0 over 2 steps
    assert (out / "logs" / "loss.png").stat().st_size > 1000
    assert [p.name for p in sorted((out / "checkpoints").iterdir())] == ["step-0000056", "step-0000060"]  # keep 2

    from magicprop.models import PropagationModels
    from magicprop.propagation import PropagationSettings
    from magicprop.propagation.propdpm.sampling import propagate
    from magicprop.synthetic import render_clip

    models = PropagationModels.from_pretrained(out / "final")
    assert models.card["steps"] == 60 and models.card["recipe"]["lr"] == 3e-3 and "--max-steps 60" in models.card["command"]
    assert models.card["final_loss"] == pytest.approx(end["final_loss"])
    assert models.scheduler_config["rescale_betas_zero_snr"] and models.scheduler_config["prediction_type"] == "v_prediction"
    clip = render_clip(0, frames=4, size=(16, 16))
    frames = propagate(models, clip.depth, clip.source[0], 0, PropagationSettings(num_inference_steps=2), progress=False)
    assert frames.shape == (4, 16, 16, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames[0], clip.source[0])


def test_interrupted_then_resumed_matches_uninterrupted(ws, reference_run):
    out = ws / "run_resumed"
    assert main(train_args(ws, out, "--max-steps", "4", recipe="recipe_ema.json")) == 0
    assert main(["train", "--data", str(ws / "clips"), "--output-dir", str(out), "--resume", "latest", "--max-steps", "8"]) == 0
    assert_same_weights(final_weights(out), final_weights(reference_run))  # the EMA weights
    for run in (out, reference_run):  # and the raw training weights of the last checkpoint
        assert (run / "checkpoints" / "step-0000008" / "model.safetensors").is_file()
    assert_same_weights(*(load_file(str(r / "checkpoints" / "step-0000008" / "model.safetensors")) for r in (out, reference_run)))
    assert [r.get("event") for r in read_log(out / "logs" / "train_log.jsonl") if "event" in r] == ["start", "end", "resume", "end"]


def test_resumed_with_another_clip_cache_matches_uninterrupted(ws, reference_run):
    """The clip cache only keeps decoded clips (and their anchored warps) in memory: a run that ran out of memory may
    resume with a smaller one and still train the same steps (`make tiny-model` relies on it)."""
    out = ws / "run_recached"
    (ws / "recipe_ema_small_cache.json").write_text(json.dumps({**json.loads((ws / "recipe_ema.json").read_text()), "clip_cache": 1}))
    assert main(train_args(ws, out, "--max-steps", "4", recipe="recipe_ema.json")) == 0
    assert main(["train", "--data", str(ws / "clips"), "--output-dir", str(out), "--resume", "latest", "--max-steps", "8",
                 "--recipe", str(ws / "recipe_ema_small_cache.json")]) == 0  # fmt: skip
    assert_same_weights(final_weights(out), final_weights(reference_run))
    assert json.loads((out / "final" / "magicprop.json").read_text())["recipe"]["clip_cache"] == 1  # it took effect
    # a field that changes the steps is still refused, in one line
    (ws / "recipe_other_lr.json").write_text(json.dumps({**json.loads((ws / "recipe_ema.json").read_text()), "lr": 1e-4}))
    assert main(["train", "--data", str(ws / "clips"), "--output-dir", str(out), "--resume", "latest", "--max-steps", "9",
                 "--recipe", str(ws / "recipe_other_lr.json")]) == 2  # fmt: skip


def test_sigkill_after_first_checkpoint_then_resume_matches(ws, reference_run):
    out = ws / "run_killed"
    cmd = [sys.executable, "-m", "magicprop.cli", *train_args(ws, out, "--max-steps", "1000", recipe="recipe_ema.json")]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = out / "checkpoints" / "step-0000004" / "train_state.json"
    deadline = time.monotonic() + 120
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    latest = sorted((out / "checkpoints").glob("step-*"))[-1].name
    assert latest in ("step-0000004", "step-0000008"), latest  # killed long before step 1000
    assert main(["train", "--data", str(ws / "clips"), "--output-dir", str(out), "--resume", "latest", "--max-steps", "8"]) == 0
    assert_same_weights(final_weights(out), final_weights(reference_run))


def test_two_processes_under_accelerate_stay_identical(ws):
    out = ws / "run_ddp"
    with socket.socket() as s:  # a free port: other test runs may share this machine
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
           "-m", "magicprop.cli", *train_args(ws, out, "--max-steps", "3")]  # fmt: skip
    result = subprocess.run(cmd, env={**ENV, "ACCELERATE_USE_CPU": "1"}, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    log = read_log(out / "logs" / "train_log.jsonl")
    start, end = log[0], log[-1]
    assert start["event"] == "start" and start["world_size"] == 2
    assert end["world_size"] == 2 and len(end["param_checksums"]) == 2
    assert end["param_checksums"][0] == end["param_checksums"][1]
    assert len(step_losses(out)) == 3 and (out / "final" / "propdpm" / "config.json").is_file()
    state = json.loads((out / "checkpoints" / "step-0000003" / "train_state.json").read_text())
    assert state["samples_seen"] == 3 * 8 * 2  # steps x batch x processes


def test_precompute_then_train_from_the_cache(ws):
    cache, out = ws / "cache", ws / "run_cached"
    recipe = ["--config", "tiny-synthetic", "--recipe", str(ws / "recipe.json"), "--pretrained", str(ws / "sd"), "--image-encoder", str(ws / "clip")]
    assert main(["precompute", "--data", str(ws / "clips"), "--output-dir", str(cache), *recipe]) == 0
    clips = json.loads((cache / "index.json").read_text())["clips"]
    assert len(clips) == 6  # tiny-synthetic reads each synth folder's source.mp4 and edited.mp4 (same motion and depth)
    assert main(train_args(ws, out, "--max-steps", "3", data=cache)) == 0
    log = read_log(out / "logs" / "train_log.jsonl")
    assert log[0]["cached"] is True and len(step_losses(out)) == 3 and np.isfinite(step_losses(out)).all()


def test_warped_previous_trains_from_sd_and_the_export_needs_the_video(ws, tmp_path, capsys):
    (tmp_path / "warp.json").write_text(json.dumps({**RECIPE, "use_warped_previous": True}))
    out = tmp_path / "run"
    args = ["train", "--config", "tiny-synthetic", "--recipe", str(tmp_path / "warp.json"), "--pretrained", str(ws / "sd"),
            "--image-encoder", str(ws / "clip"), "--output-dir"]  # fmt: skip
    assert main([*args, str(out), "--data", str(ws / "clips"), "--max-steps", "3"]) == 0
    assert np.isfinite(step_losses(out)).all() and len(step_losses(out)) == 3
    weights = final_weights(out)
    assert weights["unet.conv_in.weight"].shape[1] == 14  # 4 noisy + 1 + 4 + 1 + 4 warped
    # a cache holds no flow: refused in one line before any work
    from magicprop.training.precompute import FORMAT, INDEX

    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / INDEX).write_text(json.dumps({"format": FORMAT, "clips": []}))
    assert main([*args, str(tmp_path / "run2"), "--data", str(tmp_path / "cache"), "--max-steps", "3"]) == 2
    assert "optical flow" in capsys.readouterr().err and not (tmp_path / "run2" / "checkpoints").exists()

    from magicprop.models import PropagationModels
    from magicprop.propagation import PropagationSettings
    from magicprop.propagation.propdpm.sampling import propagate
    from magicprop.synthetic import render_clip

    models = PropagationModels.from_pretrained(out / "final")
    assert models.propdpm.config.use_warped_previous
    clip = render_clip(0, frames=4, size=(16, 16))
    frames = propagate(models, clip.depth, clip.source[0], 0, PropagationSettings(num_inference_steps=2), progress=False,
                       video=clip.source)  # fmt: skip
    assert frames.shape == (4, 16, 16, 3)


def test_residual_model_trains_and_exports_its_config(ws, tmp_path, capsys):
    (tmp_path / "res.json").write_text(json.dumps({**RECIPE, "use_warped_previous": True, "predict_residual": True}))
    out = tmp_path / "run"
    assert main(train_args(ws, out, "--max-steps", "2", recipe=str(tmp_path / "res.json"))) == 0
    assert np.isfinite(step_losses(out)).all() and len(step_losses(out)) == 2
    from magicprop.models import PropagationModels

    config = PropagationModels.from_pretrained(out / "final").propdpm.config
    assert config.predict_residual and config.use_warped_previous
    capsys.readouterr()
    # without the warped previous latent there is nothing to take the residual from: a recipe error, before any work
    (tmp_path / "bad.json").write_text(json.dumps({**RECIPE, "predict_residual": True}))
    assert main(train_args(ws, tmp_path / "run2", "--max-steps", "2", recipe=str(tmp_path / "bad.json"))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "predict_residual needs use_warped_previous" in err[0]
    assert not (tmp_path / "run2").exists() or not list((tmp_path / "run2").rglob("*.safetensors"))


def test_bad_inputs_fail_with_one_line_and_touch_nothing(ws, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "gone.csv").write_text("path\nmissing/a.mp4\nmissing/b.mp4\n")
    write_bad_videos(tmp_path / "short_only")
    for p in ("empty.mp4", "notes.mp4"):
        (tmp_path / "short_only" / p).unlink()
    (tmp_path / "not_sd" / "unet").mkdir(parents=True)
    (tmp_path / "not_sd" / "unet" / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel", "in_channels": 3}))
    (tmp_path / "not_sd" / "vae").mkdir()
    (tmp_path / "raw").mkdir()
    shutil.copy(ws / "clips" / "clip0" / "source.mp4", tmp_path / "raw" / "v.mp4")  # a plain video: needs a depth model
    cases = [
        (train_args(ws, tmp_path / "o1", data=tmp_path / "empty"), "no videos found in"),
        (train_args(ws, tmp_path / "o2", data=tmp_path / "gone.csv"), "first missing: " + str(tmp_path / "missing" / "a.mp4")),
        (train_args(ws, tmp_path / "o3", data=tmp_path / "short_only"), "a triplet needs 3"),
        (train_args(ws, tmp_path / "o4", "--resume", "latest"), "no checkpoint"),
        ([*train_args(ws, tmp_path / "o5"), "--pretrained", str(tmp_path / "not_sd")], "not SD 1.x's 4-channel"),
        ([*train_args(ws, tmp_path / "o6"), "--pretrained", str(tmp_path / "empty")], "is not a Stable Diffusion 1.x folder"),
        ([*train_args(ws, tmp_path / "o7", data=tmp_path / "raw"), "--depth-model", str(tmp_path / "no_depth")], "depth model folder not found"),
    ]
    for i, (argv, message) in enumerate(cases, 1):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
        assert snapshot(tmp_path / f"o{i}") == {}, f"case {i} wrote into its output folder"


def test_never_overwrites_a_run(ws, reference_run, capsys):
    before = snapshot(reference_run)
    assert main(train_args(ws, reference_run, "--max-steps", "2", recipe="recipe_ema.json")) == 2
    assert "already holds a training run" in capsys.readouterr().err
    assert main(train_args(ws, reference_run, "--max-steps", "2", "--resume", "latest")) == 2  # recipe.json != recipe_ema
    assert "the recipe differs from the run's" in capsys.readouterr().err
    assert snapshot(reference_run) == before


def test_from_scratch_at_the_tiny_size(ws, tmp_path):
    """`--pretrained none`: PropDPM.from_config_name("tiny") with the tiny VAE (factor 4) and CLIP tower, 64x64 frames."""
    from diffusers import AutoencoderKL
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from magicprop.models import PropagationModels
    from magicprop.models.configs import PROPDPM_CONFIGS, TINY_CLIP_VISION_CONFIG, TINY_VAE_CONFIG

    torch.manual_seed(0)
    AutoencoderKL(**TINY_VAE_CONFIG).save_pretrained(tmp_path / "vae")
    CLIPVisionModelWithProjection(CLIPVisionConfig(**TINY_CLIP_VISION_CONFIG)).save_pretrained(tmp_path / "clip")
    (tmp_path / "r.json").write_text(json.dumps({**RECIPE, "resolution": 64, "batch_size": 2}))
    out = tmp_path / "run"
    argv = ["train", "--config", "tiny-synthetic", "--recipe", str(tmp_path / "r.json"), "--pretrained", "none",
            "--vae", str(tmp_path / "vae"), "--image-encoder", str(tmp_path / "clip"), "--data", str(ws / "clips"),
            "--output-dir", str(out), "--max-steps", "2"]  # fmt: skip
    assert main(argv) == 0
    models = PropagationModels.from_pretrained(out / "final")
    assert tuple(models.propdpm.config.block_out_channels) == PROPDPM_CONFIGS["tiny"]["block_out_channels"]
    assert len(step_losses(out)) == 2 and np.isfinite(step_losses(out)).all()


def test_continues_from_an_exported_model(ws, reference_run, tmp_path):
    """`--pretrained DIR/final` (a magicprop model, not SD-shaped) starts from its weights and trains them further."""
    out = tmp_path / "run"
    argv = ["train", "--config", "tiny-synthetic", "--recipe", str(ws / "recipe.json"), "--pretrained", str(reference_run / "final"),
            "--data", str(ws / "clips"), "--output-dir", str(out), "--max-steps", "2"]  # fmt: skip
    assert main(argv) == 0
    before, after = final_weights(reference_run), final_weights(out)
    assert before.keys() == after.keys()
    assert 0 < max((before[k] - after[k]).abs().max().item() for k in before) < 0.1  # moved, from those weights


def test_previous_noise_perturbs_only_the_previous_latent_with_a_cast_and_noise():
    """previous_noise = s: the model sees previous + s * (per-channel offset + per-element noise); s = 0 changes
    nothing, not even the random stream of the other draws."""
    from magicprop.schedulers import make_scheduler
    from magicprop.training.loop import EncodedBatch, diffusion_loss
    from magicprop.training.recipes import load_recipe

    g = torch.Generator().manual_seed(0)
    enc = EncodedBatch(*(torch.randn(4, 4, 16, 16, generator=g) for _ in range(3)), torch.randn(4, 5, 8, generator=g),
                       torch.rand(4, 1, 32, 32, generator=g), torch.rand(4, 1, 32, 32, generator=g))  # fmt: skip
    seen = []

    def model(target, noise, timesteps, target_depth, previous, *rest):
        seen.append((noise, timesteps, previous))
        return target, target

    scheduler = make_scheduler("ddpm")
    for scale in (0.0, 0.0, 0.5):
        recipe = load_recipe("tiny-synthetic", previous_noise=scale)
        diffusion_loss(model, scheduler, enc, recipe, torch.Generator().manual_seed(7))
    (n0, t0, p0), (n1, t1, p1), (n2, t2, p2) = seen
    assert torch.equal(p0, enc.previous_latent) and torch.equal(p0, p1)
    assert torch.equal(n0, n2) and torch.equal(t0, t2)  # the other draws are the same with or without it
    diff = (p2 - enc.previous_latent) / 0.5  # offset + jitter, each N(0, 1)
    cast = diff.mean(dim=(2, 3))  # (B, C): the per-channel offset (+ the jitter's mean, about 1/16 of a unit)
    assert cast.std() > 0.5 and (diff - cast[..., None, None]).std() == pytest.approx(1.0, abs=0.1)
    with pytest.raises(Exception, match="previous_noise must not be negative"):
        load_recipe("tiny-synthetic", previous_noise=-0.1)
