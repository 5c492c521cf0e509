"""`benchmarks/soak.py` at small scale: 12 jobs of `magicprop batch` (7 of them bad, each its own way), killed twice
with SIGKILL and restarted with --resume until it finishes. Nothing is lost, repeated, left behind, or leaked."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_soak():
    spec = importlib.util.spec_from_file_location("soak", ROOT / "benchmarks" / "soak.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["soak"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_soak_of_batch_loses_nothing(tmp_path, record_property):
    soak = load_soak()
    code = soak.main(["--jobs", "12", "--kills", "2", "--seed", "1", "--workdir", str(tmp_path), "--json", str(tmp_path / "soak.json")])
    report = json.loads((tmp_path / "soak.json").read_text())
    record_property("soak", {k: v for k, v in report.items() if k != "runs"})
    assert report["jobs"] == 12 and set(report["bad_kinds"]) == set(soak.BAD_KINDS)
    assert report["kills"] == 2 and report["runs"][-1]["killed"] is False
    assert report["good_completed_once_identical"] == report["good"] == 5, report
    assert report["bad_reported_once"] == report["bad"] == 7, report
    assert not report["good_rewritten"] and not report["good_reported_as_failed"] and not report["bad_reported_twice_in_a_run"]
    assert report["tracebacks"] == 0 and report["leftover_count"] == 0, report["leftovers"]
    assert report["rss_flat"], (report["peak_rss_mb_per_run"], report["longest_run_rss_growth_mb"])
    assert code == 0 and report["ok"]


def test_flatness_tells_a_leak_from_restarts_that_ran_different_jobs():
    soak = load_soak()

    def rss(peaks, growth):
        return {"peak_rss_mb_per_run": peaks, "peak_rss_spread": round(max(peaks) / min(peaks), 3),
                "longest_run_rss_growth_mb": growth}  # fmt: skip

    assert soak.is_flat(rss([352.6, 414.4, 414.7], 0.1))  # a run killed after its first, smaller job: 62 MB apart
    assert soak.is_flat(rss([2000.0, 2250.0], 5.0))  # 12.5% apart
    assert not soak.is_flat(rss([350.0, 600.0], 0.1))  # restarts that grow with the work done
    assert not soak.is_flat(rss([400.0, 410.0], 60.0))  # a run that grows as it goes
