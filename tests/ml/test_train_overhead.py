"""Engine overhead vs a bare MONAI training loop at the default step size (slow benchmark).

Issue 6 asks for at most 10 % engine overhead over a hand-written MONAI loop on the same data.
This runs ``benchmarks/train_overhead.py`` at its ``realistic`` size (the default UNet, 64³
crops, batch 2, one torch thread) for 80 steps, the engine and the bare loop interleaved step
by step in one process (so load from other jobs on the shared CPU hits both alike), and
checks the median per-step ratio and its bootstrap 95 % interval. The full measurement
(more steps, plus the tiny size) is ``python benchmarks/train_overhead.py``; its numbers are in
docs/benchmarks/training.md.

Run: ``pytest tests/ml/test_train_overhead.py -m slow -s`` (60 s on a quiet 2-core CPU,
about 90 s under load).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("monai")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "train_overhead.py"


def _bench():
    spec = importlib.util.spec_from_file_location("_train_overhead_bench", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


@pytest.mark.slow
def test_engine_overhead_vs_bare_monai_loop_at_default_step_size(tmp_path):
    bench = _bench()
    r = bench.run("realistic", steps=80, iters=20, threads=1, workdir=tmp_path)
    lo, hi = r["median_ratio_ci95"]
    print(
        f"\nengine {r['engine_s_per_step']:.3f} s/step, bare MONAI loop "
        f"{r['bare_s_per_step']:.3f} s/step; per-step overhead {r['median_ratio'] - 1:+.1%} "
        f"[{lo - 1:+.1%}, {hi - 1:+.1%}], total (incl. epoch events and checkpoints) "
        f"{r['total_ratio'] - 1:+.1%}"
    )
    assert r["steps"] == 79 and len(r["bare_steps"]) == 80
    # both loops really trained the default network on 64³ crops (not a degenerate step)
    assert r["patch"] == [64, 64, 64] and r["network"]["channels"] == [16, 32, 64, 128]
    assert r["bare_s_per_step"] > 0.05
    # the 10 % target must not be clearly exceeded: the whole 95 % interval above 1.10 fails
    assert lo <= 1.10, f"per-step overhead {r['median_ratio'] - 1:+.1%}, 95 % CI above +10 %"
    # and a hard cap on the point estimate (noise on the shared CPU stays well below this)
    assert r["median_ratio"] < 1.15
    # per-epoch events and checkpoints (every 20 steps) must not dominate either
    assert r["total_ratio"] < 1.25
