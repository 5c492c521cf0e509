"""Bad inputs, one test each (the table lives in tests/badinput_cases.py), plus the package-wide rules behind them.

Every case runs `magicprop ...` in-process (or a Python API call) on dummy models and checks: the exit status (2 usage,
1 runtime, 0 for odd inputs that must simply work), exactly one error line and no traceback, inputs byte-identical
afterwards, an earlier output at the same name intact, and no temporary file left behind. A few cases also go through a
real `python -m magicprop.cli` to see what reaches a terminal. The static checks below keep every write atomic and
every weight file unpickled unless the user opts in.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from badinput_cases import CASES
from badinputs import headless_mp4, make_workspace, run_case

from magicprop.cli import build_parser, main

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("workspace"))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case, ws, tmp_path, record_property):
    if reason := case.skip():
        pytest.skip(reason)
    record_property("bad_input", case.name)
    outcome = run_case(case, tmp_path, ws)
    record_property("clean", outcome.clean)
    assert outcome.clean, f"{case.name} ({case.what}): " + "; ".join(outcome.problems)


# ---------------------------------------------------------------------------------------------------------------------
# Through a real process: what a terminal shows
# ---------------------------------------------------------------------------------------------------------------------
def cli(*args, env=ENV) -> tuple[int, str, float]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "magicprop.cli", *map(str, args)], env=env, capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stderr, time.perf_counter() - t0


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if re.match(r"^magicprop [\w-]+: error: ", line)]


def test_subprocess_decode_error_is_one_line(ws, tmp_path, record_property):
    record_property("bad_input", "subprocess_zero_decodable_frames")
    video = headless_mp4(tmp_path / "headless.mp4")
    code, err, _ = cli("propagate", video, "--keyframe-image", ws.key, "--propagator", "flow", "-o", tmp_path / "out.mp4")
    assert code == 2 and "Traceback" not in err, err[-2000:]
    assert len(error_lines(err)) == 1 and "no decodable video frames" in error_lines(err)[0], err[-2000:]
    assert not list(tmp_path.glob("*out*"))
    record_property("clean", True)


def test_subprocess_offline_missing_model_is_fast_and_named(ws, tmp_path, record_property):
    record_property("bad_input", "subprocess_offline_missing_weights")
    code, err, seconds = cli("propagate", ws.clip, "--keyframe-image", ws.key, "--model", ws.model,
                             "--depth-model", "nobody/no-such-depth-model", "-o", tmp_path / "out.mp4")  # fmt: skip
    assert code == 1 and "Traceback" not in err, err[-2000:]
    lines = error_lines(err)
    assert len(lines) == 1 and "nobody/no-such-depth-model" in lines[0] and "--depth-model" in lines[0], err[-2000:]
    assert seconds < 60, seconds  # interpreter start and imports included; no retries against the hub
    record_property("clean", True)


def test_debug_shows_the_traceback(tmp_path, capsys):
    (tmp_path / "notes.mp4").write_text("not a video\n")
    assert main(["--debug", "info", str(tmp_path / "notes.mp4")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith("magicprop info: error:")
    assert main(["info", str(tmp_path / "notes.mp4"), "--debug"]) == 2  # after the command too
    assert "Traceback" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------------
# Weights a user did not create never unpickle: the .bin-only cases of the bad-input table check the refusal itself
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["edit", "propagate", "depth"])
def test_commands_that_load_user_weights_offer_allow_pickle(command):
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices[command]
    assert "--allow-pickle" in sub._option_string_actions


def test_batch_jobs_can_opt_in_to_pickle():
    from magicprop.jobs import EditJob

    assert EditJob.from_mapping({"video": "a.mp4", "output": "b.mp4", "allow_pickle": True}).allow_pickle is True
