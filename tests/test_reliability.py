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

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "magicprop"
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
# Package-wide rules, checked on the source
# ---------------------------------------------------------------------------------------------------------------------
WRITES = re.compile(
    r"\bopen\([^)]*[\"'](?:w|a|x|wb|ab|xb)[\"']|\.write_text\(|\.write_bytes\(|np\.save|savefig\(|imwrite\(|save_file\(|"
    r"torch\.save\(|\.save_pretrained\(|save_state\(|\.save\(tmp"
)
# Writes that are not wrapped in fileio.atomic_path, and why each is safe.
NOT_WRAPPED = {
    ("fileio.py", "tmp.write_bytes("): "the atomic helper itself (writes the temporary)",
    ("fileio.py", "open(tmp, \"wb\")"): "the atomic helper itself (writes the temporary)",
    ("training/logs.py", "open(self.path, \"a\")"): "append-only training log, one short write per line (history, not an output)",
    ("training/checkpoint.py", "accelerator.save_state("): "into .step-N.partial/, renamed when train_state.json is in",
    ("training/checkpoint.py", "models.save_pretrained(partial"): "export into .final.partial/, renamed when complete",
    ("training/autoencoder.py", ".save_pretrained("): "developer tool that builds the embedded tiny model's VAE and CLIP tower",
    ("models/bundle.py", "save_pretrained(root /"): "a whole folder; commands call it on a partial folder (export_final)",
    ("training/data.py", "tmp.write(data)"): "a NamedTemporaryFile for the decoder, never an output",
}


def test_every_write_goes_through_the_atomic_helpers():
    unexplained = []
    for file in sorted(PACKAGE.rglob("*.py")):
        rel = file.relative_to(PACKAGE).as_posix()
        lines = file.read_text().splitlines()
        for i, line in enumerate(lines):
            if not WRITES.search(line) or line.lstrip().startswith(("#", "def ", "from ", "import ")):
                continue
            if any(f == rel and snippet in line for (f, snippet) in NOT_WRAPPED):
                continue
            if any("atomic_path(" in previous for previous in lines[max(0, i - 3) : i]):
                continue  # written to the temporary of an atomic_path block
            unexplained.append(f"{rel}:{i + 1}: {line.strip()}")
    assert not unexplained, "non-atomic writes:\n" + "\n".join(unexplained)


def test_no_unsafe_unpickling_in_the_package():
    offenders = []
    for file in PACKAGE.rglob("*.py"):
        text = file.read_text()
        for m in re.finditer(r"torch\.load\((.*)", text):
            if "weights_only=True" not in m.group(1):
                offenders.append(f"{file.name}: torch.load({m.group(1)[:60]}")
        if re.search(r"^\s*import pickle|pickle\.loads?\(", text, re.M):
            offenders.append(f"{file.name}: pickle")
        if "use_safetensors=False" in text:
            offenders.append(f"{file.name}: use_safetensors=False")
    assert not offenders, offenders


@pytest.mark.parametrize("command", ["edit", "propagate", "depth"])
def test_commands_that_load_user_weights_offer_allow_pickle(command):
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices[command]
    assert "--allow-pickle" in sub._option_string_actions


def test_batch_jobs_can_opt_in_to_pickle():
    from magicprop.jobs import EditJob

    assert EditJob.from_mapping({"video": "a.mp4", "output": "b.mp4", "allow_pickle": True}).allow_pickle is True
