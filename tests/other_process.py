"""Runs that must agree with each other happen in separate processes, so a result that depends on the process (hash
randomisation, heap contents, thread timing) cannot pass by agreeing with itself.

A child differs from the test process on purpose: another PYTHONHASHSEED, and glibc's MALLOC_PERTURB_ fills freshly
allocated and freed memory with a byte of its own, so a read of uninitialised memory (x264's AVX-512 path did one, see
magicprop.video.writing) gives other numbers there. The child computes with one torch thread, as the test process
does (conftest), so both reduce in the same order.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def child_env(perturb: int = 165, hash_seed: int = 12345, threads: int | None = 1) -> dict[str, str]:
    """The environment of a child: threads=None leaves torch its default number of threads (a user's run)."""
    env = {**ENV, "MALLOC_PERTURB_": str(perturb), "PYTHONHASHSEED": str(hash_seed)}
    if threads is None:
        del env["OMP_NUM_THREADS"]
    else:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def run_cli(argv: list, *, perturb: int = 165, hash_seed: int = 12345, threads: int | None = 1, timeout: float = 600) -> str:
    """`magicprop ARGV` in a child process; its output, after asserting that it succeeded."""
    proc = subprocess.run([sys.executable, "-m", "magicprop.cli", *map(str, argv)], env=child_env(perturb, hash_seed, threads),
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip
    assert proc.returncode == 0, f"magicprop {' '.join(map(str, argv[:2]))} failed:\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def run_python(code: str, *, perturb: int = 165, hash_seed: int = 12345, timeout: float = 600) -> str:
    """Python `code` in a child process that imports the tests' conftest first (offline, one torch thread) and can
    import the tests' modules; its output, after asserting that it succeeded."""
    prelude = f"import sys; sys.path.insert(0, {str(TESTS)!r}); import conftest\n"
    proc = subprocess.run([sys.executable, "-c", prelude + code], env=child_env(perturb, hash_seed), capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip
    assert proc.returncode == 0, f"the child process failed:\n{proc.stderr[-3000:]}"
    return proc.stdout


class BusyCores:
    """A process that keeps every core busy (torch matmuls on all of them) while the block runs: other load must not
    change a result."""

    CODE = "import os, torch\ntorch.set_num_threads(os.cpu_count())\na = torch.randn(512, 512)\nwhile True:\n    a = (a @ a).tanh()\n"

    def __enter__(self) -> "BusyCores":
        self.proc = subprocess.Popen([sys.executable, "-c", self.CODE], env={**ENV, "OMP_NUM_THREADS": str(os.cpu_count())},
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        return self

    def __exit__(self, *exc) -> None:
        self.proc.kill()
        self.proc.wait()
