"""Reliability report: the bad-input table, crash-and-resume runs, reruns in other processes and fuzzing, counted in
one run.

Runs the tests that define them (tests/test_reliability.py, tests/test_crash_resume.py, tests/test_damaged_work.py,
tests/test_determinism.py, tests/test_fuzz.py and, unless --no-train, tests/test_training.py's SIGKILL case) under
pytest with a small plugin that collects each outcome and the properties the tests record, then prints

    {"bad_inputs": N, "clean_errors": N, "resumes_identical": N, "resumes_tried": N, "damaged_work": N,
     "damaged_work_handled": N, "reruns_identical": N, "reruns_tried": N, "fuzz_cases": N}

bad_inputs: table cases run (skipped ones, e.g. chmod as root, are listed apart); clean_errors: those handled cleanly
(the expected exit status, one error line, no traceback, inputs and earlier outputs untouched, no temporary left);
resumes_*: killed-then-`--resume` runs tried, and those whose output equals an uninterrupted run's (made in another
process); reruns_*: runs repeated in another process (other heap contents and hash seed; PropDPM's under load), and
those that wrote the same bytes; fuzz_cases: inputs the property-based tests tried without finding a crash other than
MagicPropError/UsageError; damaged_work: resumes from
a damaged work folder or checkpoint (a step cut short, emptied, garbled or deleted, a garbage or foreign job.json, a
damaged newest checkpoint: tests/test_damaged_work.py and the table's `resume_*`/`train_resume_*` cases), and
damaged_work_handled: those that resumed to the identical result or ended in one clean line.

    python benchmarks/reliability.py --json outputs/reliability.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = ["tests/test_reliability.py", "tests/test_crash_resume.py", "tests/test_damaged_work.py", "tests/test_determinism.py",
         "tests/test_fuzz.py"]
DAMAGED_CASES = ("resume_", "train_resume_")  # names of the bad-input table's damaged-folder cases start so
TRAIN_RESUME = "tests/test_training.py::test_sigkill_after_first_checkpoint_then_resume_matches"


class Collector:
    """Outcome, duration and recorded properties of every test, by node id."""

    def __init__(self) -> None:
        self.tests: dict[str, dict] = {}

    def pytest_runtest_logreport(self, report) -> None:
        entry = self.tests.setdefault(report.nodeid, {"outcome": "passed", "seconds": 0.0, "properties": {}})
        entry["seconds"] += report.duration
        entry["properties"].update(dict(report.user_properties))
        if report.outcome != "passed" and entry["outcome"] == "passed":  # the first failure or skip, in any phase
            entry["outcome"] = report.outcome
            if report.outcome == "failed":
                entry["message"] = str(report.longrepr).strip().splitlines()[-1][:300]
            elif report.outcome == "skipped" and isinstance(report.longrepr, tuple):
                entry["message"] = report.longrepr[2]


def summarize(tests: dict[str, dict]) -> dict:
    table = {n: t for n, t in tests.items() if "bad_input" in t["properties"] or "test_bad_input[" in n}
    ran = {n: t for n, t in table.items() if t["outcome"] != "skipped"}
    resumes = {n: t for n, t in tests.items() if "resume" in t["properties"] or n.endswith(TRAIN_RESUME.split("::")[1])}
    resumes = {n: t for n, t in resumes.items() if t["outcome"] != "skipped"}
    reruns = {n: t for n, t in tests.items() if "rerun" in t["properties"] and t["outcome"] != "skipped"}
    damaged = {n: t for n, t in tests.items() if t["outcome"] != "skipped" and (
        "damaged_work" in t["properties"] or str(t["properties"].get("bad_input", "")).startswith(DAMAGED_CASES))}  # fmt: skip
    return {
        "bad_inputs": len(ran),
        "clean_errors": sum(t["outcome"] == "passed" for t in ran.values()),
        "resumes_identical": sum(t["outcome"] == "passed" for t in resumes.values()),
        "resumes_tried": len(resumes),
        "damaged_work": len(damaged),
        "damaged_work_handled": sum(t["outcome"] == "passed" for t in damaged.values()),
        "reruns_identical": sum(t["outcome"] == "passed" for t in reruns.values()),
        "reruns_tried": len(reruns),
        "fuzz_cases": sum(int(t["properties"].get("fuzz_cases", 0)) for t in tests.values()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="PATH", help="write the summary and every case's outcome here")
    parser.add_argument("--no-train", action="store_true", help=f"leave out {TRAIN_RESUME} (about a minute)")
    args = parser.parse_args()

    os.chdir(ROOT)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    collector = Collector()
    targets = FILES + ([] if args.no_train else [TRAIN_RESUME])
    t0 = time.perf_counter()
    code = pytest.main(["-q", "-p", "no:cacheprovider", *targets], plugins=[collector])
    seconds = round(time.perf_counter() - t0, 1)
    summary = summarize(collector.tests)
    print(json.dumps(summary))
    not_clean = {n: t.get("message", t["outcome"]) for n, t in collector.tests.items() if t["outcome"] == "failed"}
    skipped = {n: t.get("message", "") for n, t in collector.tests.items() if t["outcome"] == "skipped"}
    if args.json:
        sys.path.insert(0, str(ROOT / "src"))
        from magicprop.fileio import atomic_write_json

        atomic_write_json(args.json, {**summary, "seconds": seconds, "pytest_exit_code": int(code), "failed": not_clean,
                                      "skipped": skipped, "tests": collector.tests})  # fmt: skip
    return 0 if not not_clean else 1


if __name__ == "__main__":
    sys.exit(main())
