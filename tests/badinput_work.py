"""Builders of the bad-input table's damaged work folders and checkpoints (the cases are listed in badinput_cases.py).

A resumed run meets a work folder a killed run left and something then damaged: a step cut short, emptied or deleted,
a garbled job.json, a folder of another format; or a training run whose newest checkpoint is damaged. Each either
resumes to exactly the uninterrupted run's result (with one warning line saying what is redone) or ends in one error
line. The killed run and the trained run are built once per workspace and copied into each case's folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from badinputs import Setup, Workspace

from magicprop.integrity import FORMAT
from magicprop.video import read_video

STEPS = 5  # ws.clip has 6 frames; keyframe 0: one chain of 5 steps
KILLED_AFTER = 4


class _Killed(KeyboardInterrupt):
    """What Ctrl-C does to a run; the CLI answers it with exit 130 and keeps the work folder."""


def _propagate_argv(ws: Workspace) -> list:
    return ["propagate", ws.clip, "--keyframe-image", ws.key, "--keyframe-index", "0", *ws.stage2()]


def killed_propagation(ws: Workspace) -> tuple[Path, Path]:
    """(the work folder of a PropDPM run killed after KILLED_AFTER of its STEPS steps, the uninterrupted run's output)."""
    from magicprop.cli import main
    from magicprop.propagation.store import LatentStore

    root = ws.root / "killed-propagation"
    work, reference = root / "killed.magicprop-work", root / "reference"
    if (root / "reference.json").is_file() and work.is_dir():
        return work, reference
    assert main([*map(str, _propagate_argv(ws)), "-o", str(reference)]) == 0
    real, saved = LatentStore.save_step, []

    def save_then_kill(self, step, *args, **kwargs):
        real(self, step, *args, **kwargs)
        saved.append(step)
        if len(saved) == KILLED_AFTER:
            raise _Killed

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(LatentStore, "save_step", save_then_kill)
        assert main([*map(str, _propagate_argv(ws)), "-o", str(root / "killed")]) == 130
    assert len(list((work / "propagation" / "steps").glob("*.safetensors"))) == KILLED_AFTER
    return work, reference


def _resumed(t: Path, ws: Workspace, damage, warns: tuple[str, ...] = (), code: int = 0, says: tuple[str, ...] = ()) -> Setup:
    """Copy the killed run's work folder beside t/out, damage it, and run `--resume` into t/out."""
    work, reference = killed_propagation(ws)
    out = t / "out"
    shutil.copytree(work, f"{out}.magicprop-work")
    damage(Path(f"{out}.magicprop-work") / "propagation")

    def check() -> None:
        np.testing.assert_array_equal(read_video(out)[0], read_video(reference)[0], err_msg="not the uninterrupted run's frames")
        assert not Path(f"{out}.magicprop-work").exists(), "the work folder was left behind"

    argv = [*_propagate_argv(ws), "-o", out, "--resume"]
    return Setup(argv=argv, code=code, warns=warns, says=says, inputs=[ws.clip, ws.key], check=check if code == 0 else None)


def _cut(path: Path, keep: float) -> None:
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])


def truncated_step(t, ws):
    """The issue's case: step 2 cut to half its size. Redone from step 1, identical."""
    return _resumed(t, ws, lambda w: _cut(w / "steps" / "00002.safetensors", 0.5),
                    warns=("step 2", "is damaged", "redoing from step 1"))  # fmt: skip


def zero_byte_step(t, ws):
    return _resumed(t, ws, lambda w: _cut(w / "steps" / "00003.safetensors", 0.0), warns=("step 3", "redoing from step 2"))


def deleted_middle_step(t, ws):
    return _resumed(t, ws, lambda w: (w / "steps" / "00002.safetensors").unlink(), warns=("step 2", "missing", "redoing from step 1"))


def garbage_job_json(t, ws):
    def damage(w: Path) -> None:
        (w / "job.json").write_bytes(b"\x00\x9c{{ this is not json")

    return _resumed(t, ws, damage, code=2, says=("--resume", "damaged", "run without --resume to start over"))


def foreign_format(t, ws):
    def damage(w: Path) -> None:
        job = json.loads((w / "job.json").read_text())
        (w / "job.json").write_text(json.dumps({**job, "format": FORMAT + 1}))

    return _resumed(t, ws, damage, code=2, says=("--resume", "another version", "run without --resume to start over"))


# ---------------------------------------------------------------------------------------------------------------------
# Training: a run of 8 steps with checkpoints at 4 and 8
# ---------------------------------------------------------------------------------------------------------------------
RECIPE = {
    "resolution": 16, "frames_per_clip": 8, "frame_stride": 1, "batch_size": 8, "lr": 3e-3, "warmup_steps": 2,
    "log_every": 1, "checkpoint_every": 4, "keep_checkpoints": 2, "num_workers": 0, "mixed_precision": "no",
    "use_ema": False, "seed": 0,
}  # fmt: skip
FINAL_WEIGHTS = Path("final") / "propdpm" / "diffusion_pytorch_model.safetensors"


def trained_run(ws: Workspace) -> Path:
    """The folder of an 8-step training run on dummy components (clips/, run/); built once per workspace."""
    from fixtures import save_dummy_image_encoder, save_dummy_sd_folder, write_training_clips

    from magicprop.cli import main

    root = ws.root / "training"
    if (root / "run" / FINAL_WEIGHTS).is_file():
        return root
    write_training_clips(root / "clips", 2, frames=12, size=(32, 32))
    save_dummy_sd_folder(root / "sd")
    save_dummy_image_encoder(root / "clip")
    (root / "recipe.json").write_text(json.dumps(RECIPE))
    argv = ["train", "--config", "tiny-synthetic", "--recipe", root / "recipe.json", "--pretrained", root / "sd",
            "--image-encoder", root / "clip", "--data", root / "clips", "--output-dir", root / "run", "--max-steps", "8"]  # fmt: skip
    assert main([str(a) for a in argv]) == 0
    return root


def _train_resume(t: Path, ws: Workspace, resume: str) -> tuple[Path, list]:
    root = trained_run(ws)
    run = shutil.copytree(root / "run", t / "run")
    argv = ["train", "--data", root / "clips", "--output-dir", run, "--resume", resume.format(run=run), "--max-steps", "8"]
    return run, argv


def damaged_newest_checkpoint(t, ws):
    """--resume latest with step 8's weights cut short: resumes from step 4, and ends with the same weights."""
    from safetensors.torch import load_file

    run, argv = _train_resume(t, ws, "latest")
    expected = load_file(str(run / FINAL_WEIGHTS))
    _cut(run / "checkpoints" / "step-0000008" / "model.safetensors", 0.5)

    def check() -> None:
        got = load_file(str(run / FINAL_WEIGHTS))
        assert got.keys() == expected.keys() and all(np.array_equal(got[k].numpy(), expected[k].numpy()) for k in got)

    return Setup(argv=argv, code=0, warns=("step-0000008 is damaged", "resuming from step-0000004"), check=check)


def damaged_checkpoint_path(t, ws):
    """--resume PATH to a checkpoint whose weights were overwritten with garbage of the same size: refused."""
    run, argv = _train_resume(t, ws, "{run}/checkpoints/step-0000008")
    weights = run / "checkpoints" / "step-0000008" / "model.safetensors"
    weights.write_bytes(np.random.default_rng(0).integers(0, 256, weights.stat().st_size, np.uint8).tobytes())
    return Setup(argv=argv, says=("--resume", "damaged", "model.safetensors"), inputs=[run / "checkpoints"])
