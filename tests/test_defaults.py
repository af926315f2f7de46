"""napari_ssseg.defaults is the one source of the shared default values (issue 15 item 4):
standard library only, and core, the CLI and the strategies read their defaults from it."""

from __future__ import annotations

import argparse
import ast
import inspect
import subprocess
import sys
from pathlib import Path

from napari_ssseg import defaults

SRC = Path(__file__).resolve().parents[1] / "src" / "napari_ssseg"


def test_defaults_imports_only_the_standard_library():
    tree = ast.parse((SRC / "defaults.py").read_text())
    imported = {
        (n.module or "").split(".")[0] if isinstance(n, ast.ImportFrom) else a.name.split(".")[0]
        for n in ast.walk(tree)
        if isinstance(n, ast.Import | ast.ImportFrom)
        for a in n.names
    }
    assert imported <= {"__future__"}, imported
    code = (
        "import sys, napari_ssseg.defaults; "
        "print(sorted(m for m in ('numpy', 'scipy', 'torch', 'napari', 'qtpy') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_core_and_strategies_use_the_shared_values():
    from napari_ssseg.core import refine, scribbles, superpixels
    from napari_ssseg.core.superpixels import slic_superpixels

    assert refine.DEFAULT_N_SEGMENTS == defaults.N_SEGMENTS == 350
    assert refine.DEFAULT_SIM0 == scribbles.DEFAULT_SIM0 == defaults.SIM0
    assert refine.DEFAULT_NC == scribbles.DEFAULT_NC == defaults.NC
    assert refine.DEFAULT_FILL == defaults.FILL
    assert refine.DEFAULT_FILL_EDGE == defaults.FILL_EDGE
    assert scribbles.DEFAULT_N_SEGMENTS == defaults.SCRIBBLE_N_SEGMENTS
    assert scribbles.DEFAULT_BACKGROUND_LABEL == defaults.SCRIBBLE_BACKGROUND_LABEL
    assert scribbles.DEFAULT_TUMOUR_LABEL == defaults.SCRIBBLE_TUMOUR_LABEL
    for fn in (slic_superpixels, refine.refine_case):
        p = inspect.signature(fn).parameters
        assert p["n_segments"].default == defaults.N_SEGMENTS
        assert p["compactness"].default == defaults.COMPACTNESS
        assert p["sigma"].default == defaults.SIGMA
    assert superpixels.REGION_MODALITIES is not None


def test_strategies_use_the_shared_values():
    from napari_ssseg.ml.strategies.pseudo_label import PseudoLabelSuperpixel
    from napari_ssseg.ml.strategies.sp3 import SP3

    assert PseudoLabelSuperpixel.defaults["n_segments"] == defaults.N_SEGMENTS
    assert SP3.defaults["n_segments"] == defaults.SCRIBBLE_N_SEGMENTS


def _help(module) -> str:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return " ".join(parser.format_help().split())


def test_cli_help_prints_the_shared_values():
    from napari_ssseg.commands import propagate
    from napari_ssseg.commands import refine as refine_cmd

    text = _help(refine_cmd)
    assert f"(default: {defaults.N_SEGMENTS})" in text
    assert f"(default: {defaults.NC})" in text
    assert f"(default: {defaults.COMPACTNESS})" in text
    assert f"(default: {defaults.SIGMA:g})" in text
    text = _help(propagate)
    assert f"(default: {defaults.SCRIBBLE_N_SEGMENTS})" in text
    assert f"(default: {defaults.SCRIBBLE_TUMOUR_LABEL})" in text
    assert f"(default: {defaults.SCRIBBLE_BACKGROUND_LABEL})" in text
