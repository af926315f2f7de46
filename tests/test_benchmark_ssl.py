"""Smoke test of ``benchmarks/ssl.py`` (the semi-supervised training benchmark) in tiny mode."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "ssl.py"


@pytest.mark.slow
def test_ssl_benchmark_tiny_runs_measures_and_reports(tmp_path):
    results = tmp_path / "results"
    report = tmp_path / "ssl.md"
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--tiny",
        "--strategies",
        "supervised,no-such-strategy,supervised+scribbles",
        "--work",
        str(tmp_path / "work"),
        "--results",
        str(results),
        "--out",
        str(report),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SKIP no-such-strategy" in proc.stderr

    for key, weak in (("supervised_seed0", 0), ("supervised_scribbles_seed0", 2)):
        res = json.loads((results / f"{key}.json").read_text())
        assert res["status"] == "done", res.get("error")
        assert res["steps_done"] == res["steps_requested"] == 6
        assert res["n_weak"] == weak  # the scribbled workspace gives weak cases
        assert res["train"]["peak_rss_mb"] > 50  # torch alone is more than that
        assert res["train"]["wall_seconds"] > 0
        assert res["test"]["n_cases"] == 2
        for region in ("WT", "TC", "ET"):
            assert 0.0 <= res["test"]["mean"][region]["dice"] <= 1.0
            assert res["test"]["mean"][region]["hd95"] >= 0.0

    text = report.read_text()
    assert "| `supervised` | folders | 0 | 6 |" in text
    assert "| `supervised+scribbles` | workspace | 0 | 6 |" in text
    assert "`no-such-strategy`: skipped" in text

    # --report alone rebuilds the same tables from the JSON files
    out2 = tmp_path / "again.md"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--report", "--results", str(results), "--out", str(out2)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out2.read_text() == text
