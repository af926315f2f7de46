"""``ssseg --help`` starts fast and imports no heavy dependency.

Run with ``-s`` to see the measured start-up time.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from napari_ssseg.cli import COMMANDS

HEAVY = (
    "torch",
    "monai",
    "napari",
    "qtpy",
    "PyQt5",
    "PyQt6",
    "PySide2",
    "PySide6",
    "magicgui",
    "superqt",
    "vispy",
    "SimpleITK",
    "skimage",
    "scipy",
    "numpy",
)
#: ``torch``/``napari``/Qt are forbidden by the issue; the rest because command modules may
#: import only the standard library at module level (they are imported by ``ssseg --help``).

#: Start-up budget in seconds (the issue asks < 1 s; slack for slow, shared CI machines).
BUDGET_S = 1.5


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONSTARTUP", None)
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    return env


def _available_commands() -> list[str]:
    return [
        name
        for name, module, _ in COMMANDS
        if importlib.util.find_spec(f"napari_ssseg.commands.{module}") is not None
    ]


def test_help_exits_0_and_lists_the_commands():
    proc = subprocess.run(
        [sys.executable, "-m", "napari_ssseg", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: ssseg")
    commands = _available_commands()
    assert "evaluate" in commands
    for name in commands:
        assert f"    {name} " in proc.stdout, f"{name!r} missing from --help:\n{proc.stdout}"


def test_help_imports_no_heavy_package():
    # run ``python -m napari_ssseg --help`` inside a wrapper that reports sys.modules at exit
    wrapper = textwrap.dedent(
        f"""
        import json, runpy, sys
        sys.argv = ["ssseg", "--help"]
        code = 0
        try:
            runpy.run_module("napari_ssseg", run_name="__main__", alter_sys=True)
        except SystemExit as exc:
            code = exc.code or 0
        heavy = sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY!r}))
        sys.stderr.write("@@HEAVY@@" + json.dumps({{"code": code, "heavy": heavy}}) + "\\n")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", wrapper], capture_output=True, text=True, timeout=60, env=_env()
    )
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("@@HEAVY@@")]
    assert line, proc.stderr
    result = json.loads(line[-1][len("@@HEAVY@@") :])
    assert result["code"] == 0
    assert result["heavy"] == [], (
        f"`ssseg --help` imported {result['heavy']}; command modules must import only the "
        "standard library at module level (import heavy packages inside run())"
    )
    assert "usage: ssseg" in proc.stdout


def test_every_subcommand_help_is_light():
    """``ssseg CMD --help`` parses without importing heavy packages either."""
    commands = _available_commands()
    script = textwrap.dedent(
        f"""
        import json, sys
        from napari_ssseg.cli import main
        heavy = {{}}
        for name in {commands!r}:
            try:
                main([name, "--help"])
            except SystemExit as exc:
                assert not exc.code, (name, exc.code)
            heavy[name] = sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY!r}))
        sys.stderr.write("@@HEAVY@@" + json.dumps(heavy) + "\\n")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=_env()
    )
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("@@HEAVY@@")]
    assert proc.returncode == 0 and line, proc.stderr
    heavy = json.loads(line[-1][len("@@HEAVY@@") :])
    assert heavy == {name: [] for name in commands}


def _time_help(argv: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=_env())
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    return elapsed


def test_help_starts_fast():
    argv = [sys.executable, "-m", "napari_ssseg", "--help"]
    _time_help(argv)  # warm the file cache and .pyc files
    times = [_time_help(argv) for _ in range(3)]
    median = statistics.median(times)
    # a bare interpreter start, measured the same way, for context on slow machines
    bare = statistics.median(_time_help([sys.executable, "-c", "pass"]) for _ in range(3))
    print(
        f"\n`python -m napari_ssseg --help`: median {median:.3f} s of "
        f"{[round(t, 3) for t in times]} (bare python: {bare:.3f} s)"
    )
    assert median < BUDGET_S, (
        f"`ssseg --help` took {median:.2f} s (median of 3; bare interpreter {bare:.2f} s); "
        f"the budget is {BUDGET_S} s (target 1 s)"
    )


def test_console_script_help():
    script = shutil.which("ssseg", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the ssseg console script is not installed next to this interpreter")
    proc = subprocess.run(
        [script, "--help"], capture_output=True, text=True, timeout=60, env=_env()
    )
    assert proc.returncode == 0, proc.stderr
    assert "evaluate" in proc.stdout


def test_every_listed_command_is_in_the_help():
    from napari_ssseg.cli import COMMANDS, build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == {name for name, _, _ in COMMANDS}
