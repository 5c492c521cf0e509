"""The synthetic-propagation benchmark, on one short case: the numbers it reports are the metrics of what each method
returns, for the clips its seed options name."""

import argparse
import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("synthetic_propagation", ROOT / "benchmarks" / "synthetic_propagation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _args(**kw):
    base = dict(models=[("shipped", None)], clips=1, lengths=[6], positions=["middle"], edits=["global"],
                textures=["procedural"], motions=["normal"], keyframe_every=0, hybrid=True, first_seed=950_000, steps=2)  # fmt: skip
    return argparse.Namespace(**{**base, **kw})


def test_first_seed_picks_another_held_out_set(bench):
    default = [c["seed"] for c in bench.cases(2, [16], ["start", "middle"], ["global"], ["procedural"])]
    other = [c["seed"] for c in bench.cases(2, [16], ["start", "middle"], ["global"], ["procedural"], first_seed=950_000)]
    assert default == [900_000, 900_001, 900_100, 900_101]
    assert other == [950_000, 950_001, 950_100, 950_101] and not set(default) & set(other)


def test_hybrid_rows_score_what_each_method_returns(bench):
    from magicprop.baselines import propagate_copy, propagate_flow
    from magicprop.evaluation import psnr

    result = bench.run(_args())
    assert result["methods"] == ["shipped", "shipped hybrid", "flow", "copy"]
    rows = {r["method"]: r for r in result["rows"]}
    assert set(rows) == set(result["methods"]) and {r["seed"] for r in rows.values()} == {950_000}
    source, edited, _ = bench.render_case(rows["copy"])
    k = rows["copy"]["keyframe"]
    assert k == 3
    for method, frames in (("copy", propagate_copy(source, edited[k], k)), ("flow", propagate_flow(source, edited[k], k, progress=False))):
        expected = np.minimum(psnr(frames, edited), 100.0)
        assert rows[method]["psnr"] == pytest.approx(np.delete(expected, k).mean())
        assert rows[method]["psnr_per_frame"][k] == 100.0  # the given keyframe is exact (and left out of the mean)
    # the hybrid is PropDPM's run fused with flow: another result than PropDPM alone, still exact at the keyframe
    assert rows["shipped hybrid"]["psnr"] != rows["shipped"]["psnr"]
    assert rows["shipped hybrid"]["psnr_per_frame"][k] == 100.0
    summary = bench.summarise(result)
    assert summary["shipped hybrid"]["psnr"] == pytest.approx(rows["shipped hybrid"]["psnr"])
