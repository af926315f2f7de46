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
