"""A real SIGKILL in the middle of `magicprop propagate` and `magicprop edit`, then `--resume`: the result equals an
uninterrupted run's in another process, frame for frame, and only the unfinished propagation steps run again.

Outputs are folders of PNGs (lossless), so "equal" is exact. The killed run and the uninterrupted one are child
processes with one thread, as the in-process resumed runs are (conftest), so all compute with the same floating-point
reduction order; the uninterrupted one also with other heap contents and hash seed (tests/other_process.py).
`magicprop train` is covered the same way by tests/test_training.py::test_sigkill_after_first_checkpoint_then_resume_matches.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from badinputs import frames_of, make_workspace
from other_process import ENV, run_cli

import magicprop.propagation.propdpm.sampling
from magicprop.cli import main
from magicprop.video import load_image, read_video, save_image, write_video

FRAMES = 12  # keyframe 0: one chain of 11 steps
STEPS = 40  # denoising steps per frame: long enough (a few seconds) to be killed midway


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    ws = make_workspace(tmp_path_factory.mktemp("workspace"))
    ws.clip = write_video(ws.root / "long", frames_of(FRAMES, 32, 48), 8.0)  # a PNG folder: decoded identically everywhere
    ws.key = save_image(ws.root / "long_key.png", frames_of(1, 32, 48, seed=7)[0])
    return ws


def step_files(out: Path) -> list[Path]:
    return sorted((Path(f"{out}.magicprop-work") / "propagation" / "steps").glob("[0-9]*.safetensors"))


def kill_after_first_step(argv: list[str], out: Path, total: int, log: Path) -> int:
    """Start `magicprop ARGV`, SIGKILL it as soon as a propagation step is saved; return the steps saved by then."""
    with open(log, "wb") as err:  # a file, not a pipe: progress bars would fill a pipe and stall the child
        proc = subprocess.Popen([sys.executable, "-m", "magicprop.cli", *map(str, argv)], env=ENV, stdout=err, stderr=err)
        deadline = time.monotonic() + 180
        while not step_files(out) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"exit {proc.returncode} before it could be killed:\n{log.read_text()[-2000:]}"
    done = len(step_files(out))
    assert 1 <= done < total, f"killed after {done} of {total} steps: not in the middle"
    return done


def resume_counting_steps(argv: list[str], monkeypatch) -> int:
    """Run `magicprop ARGV --resume` in-process; return how many propagation steps it computed."""
    calls = []
    real = magicprop.propagation.propdpm.sampling.denoise

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(magicprop.propagation.propdpm.sampling, "denoise", counting)
    assert main([*map(str, argv), "--resume"]) == 0
    monkeypatch.undo()
    return len(calls)


def assert_same_result(out: Path, reference: Path) -> None:
    a, b = read_video(out)[0], read_video(reference)[0]
    assert a.shape == b.shape == (FRAMES, 32, 48, 3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(load_image(f"{out}.keyframe.png"), load_image(f"{reference}.keyframe.png"))
    assert not Path(f"{out}.magicprop-work").exists()


def test_propagate_killed_then_resumed_matches(ws, tmp_path, monkeypatch, caplog, record_property):
    record_property("resume", "propagate")
    argv = ["propagate", ws.clip, "--keyframe-image", ws.key, "--keyframe-index", "0", *ws.stage2()]
    argv[argv.index("--steps") + 1] = str(STEPS)
    reference, out = tmp_path / "reference", tmp_path / "resumed"
    run_cli([*argv, "-o", reference])

    done = kill_after_first_step([*argv, "-o", out], out, FRAMES - 1, tmp_path / "killed.log")
    with caplog.at_level(logging.INFO):
        redone = resume_counting_steps([*argv, "-o", out], monkeypatch)
    assert redone == FRAMES - 1 - done, (done, redone)
    assert f"resuming: {done} of {FRAMES - 1} steps already done" in caplog.text
    assert_same_result(out, reference)
    record_property("identical", True)


def test_edit_killed_then_resumed_matches(ws, tmp_path, monkeypatch, caplog, record_property):
    from fixtures import save_tiny_controlnet, save_tiny_sd

    record_property("resume", "edit")
    sd, controlnet = save_tiny_sd(tmp_path / "sd"), save_tiny_controlnet(tmp_path / "controlnet")
    argv = ["edit", ws.clip, "--prompt", "a red cat", "--steps", "2", "--keyframe-index", "0", "--seed", "0",
            "--propagation-steps", str(STEPS), "--base-model", sd, "--controlnet", controlnet,
            "--model", ws.model, "--depth-model", ws.depth]  # fmt: skip
    reference, out = tmp_path / "reference", tmp_path / "resumed"
    run_cli([*argv, "-o", reference])

    done = kill_after_first_step([*argv, "-o", out], out, FRAMES - 1, tmp_path / "killed.log")
    with caplog.at_level(logging.INFO):
        redone = resume_counting_steps([*argv, "-o", out], monkeypatch)
    assert redone == FRAMES - 1 - done, (done, redone)
    assert "reusing the edited keyframe" in caplog.text  # stage I is not painted again
    assert_same_result(out, reference)
    record_property("identical", True)


def test_plain_command_killed_then_resumed_keeps_its_seed(ws, tmp_path, monkeypatch, caplog, record_property):
    """No --seed: the killed run drew one; `--resume` alone continues with it and equals a run given that seed."""
    record_property("resume", "propagate_without_seed")
    argv = ["propagate", ws.clip, "--keyframe-image", ws.key, "--keyframe-index", "0", *ws.stage2()]
    argv[argv.index("--steps") + 1] = str(STEPS)
    del argv[argv.index("--seed") : argv.index("--seed") + 2]
    out, reference = tmp_path / "resumed", tmp_path / "reference"
    done = kill_after_first_step([*argv, "-o", out], out, FRAMES - 1, tmp_path / "killed.log")
    seed = json.loads((Path(f"{out}.magicprop-work") / "propagation" / "job.json").read_text())["seed"]
    with caplog.at_level(logging.INFO):
        assert resume_counting_steps([*argv, "-o", out], monkeypatch) == FRAMES - 1 - done
    assert f"resuming with seed {seed}, the seed the killed run recorded" in caplog.text
    run_cli([*argv, "--seed", seed, "-o", reference])
    assert_same_result(out, reference)
    record_property("identical", True)
