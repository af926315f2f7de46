"""Scripts in ``benchmarks/`` run as ``python benchmarks/X.py``: nothing there may shadow stdlib.

Python puts a script's folder first on ``sys.path``, so ``benchmarks/ssl.py`` (the file name
issue 6 asks for) would be imported in place of the standard library's ``ssl`` by every
benchmark script that imports torch (torch -> ... -> ``ssl``). ``benchmarks/ssl.py`` hands the
import over to the real module when it is imported under the name ``ssl``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def test_ssl_name_resolves_to_the_standard_library_from_the_benchmarks_folder():
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import ssl; "
        "assert hasattr(ssl, 'SSLContext') and hasattr(ssl, 'SSLWantReadError'), ssl.__file__; "
        "import urllib.request; "
        "sys.path.remove(sys.argv[1]); sys.path.append(sys.argv[1]); print(ssl.__file__)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(BENCH)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "benchmarks" not in proc.stdout


def test_every_benchmark_script_starts():
    """``--help`` of each script: imports work from the script's own folder."""
    for script in sorted(BENCH.glob("*.py")):
        if script.name.startswith("_"):
            continue
        proc = subprocess.run(
            [sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, f"{script.name}: {proc.stderr[-1500:]}"


def test_real_loop_plan_is_nested_and_adds_the_semi_supervised_arm():
    """benchmarks/real_loop.py: the k cases of a ranking are nested (an annotator corrects
    more of the same list), every random seed gets its own ranking, and ``--semi`` trains
    the suggested cases once more with the unlabelled real cases."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("real_loop", BENCH / "real_loop.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    scores = {name: {"entropy_score": float(i)} for i, name in enumerate(mod.POOL)}
    plan = mod.selections(scores, [0, 1], [1, 2, 4], "cps")
    suggested = [r for r in plan if r["choice"] == "suggested" and r["strategy"] == "supervised"]
    # highest entropy first
    assert [r["cases"] for r in suggested][0] == [mod.POOL[-1]]
    for how in ("suggested", "random_seed0", "random_seed1"):
        rows = [r for r in plan if r["choice"] == how and r["strategy"] == "supervised"]
        assert [r["k"] for r in rows] == [1, 2, 4]
        assert set(rows[0]["cases"]) <= set(rows[1]["cases"]) <= set(rows[2]["cases"])
    semi = [r for r in plan if r["strategy"] == "cps"]
    assert [r["cases"] for r in semi] == [r["cases"] for r in suggested]
    assert all(r["unlabelled"] == list(mod.UNLABELLED) for r in semi)
    assert mod.run_key(semi[0]["cases"], "cps") != mod.run_key(semi[0]["cases"])
