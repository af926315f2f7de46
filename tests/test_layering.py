"""The package's import layering, checked in fresh interpreters.

* ``napari_ssseg``, ``napari_ssseg.cli``, ``napari_ssseg.errors``, and every module of
  ``napari_ssseg.core``, ``napari_ssseg.io`` and ``napari_ssseg.commands`` import none of
  torch, MONAI, napari, Qt, magicgui, superqt or vispy;
* every module of ``napari_ssseg.ml`` imports none of napari, Qt, magicgui, superqt or vispy;
* the modules named in the napari manifest (``napari.yaml``) do not import torch or MONAI,
  so napari's plugin discovery and the reader/writer/widget contributions stay light;
* core and io work (import and compute) with torch, MONAI and napari made unimportable.

Modules are discovered from the source tree without importing them, so new modules are
covered automatically.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import napari_ssseg

PACKAGE_DIR = Path(napari_ssseg.__file__).parent
MANIFEST = PACKAGE_DIR / "napari.yaml"

GUI = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "superqt", "vispy")
ML = ("torch", "monai")


def discover(subpackage: str) -> list[str]:
    """Dotted names of a subpackage and all its modules, found on disk (nothing imported)."""
    base = f"napari_ssseg.{subpackage}"
    root = PACKAGE_DIR.joinpath(*subpackage.split("."))
    if not (root / "__init__.py").exists():
        return []
    names = [base]

    def walk(path: Path, prefix: str) -> None:
        for info in pkgutil.iter_modules([str(path)]):
            if info.name.startswith("_napari"):
                continue
            names.append(f"{prefix}.{info.name}")
            if info.ispkg:
                walk(path / info.name, f"{prefix}.{info.name}")

    walk(root, base)
    return sorted(names)


# The probe runs in a fresh interpreter: it imports each module in turn and records which
# forbidden top-level packages appeared in sys.modules after each import (so the first module
# that pulls one in is the one reported). ``BLOCK`` makes packages unimportable.
PROBE = textwrap.dedent(
    """
    import importlib, json, sys, traceback
    MODULES, FORBIDDEN, BLOCK = json.loads(sys.argv[1])

    class _Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCK:
                raise ModuleNotFoundError(f"{name} is blocked by the layering test", name=name)
            return None

    if BLOCK:
        sys.meta_path.insert(0, _Blocker())
    report = {"offenders": {}, "errors": {}}
    seen = set()
    for name in MODULES:
        try:
            importlib.import_module(name)
        except BaseException:
            report["errors"][name] = traceback.format_exc(limit=6)
            continue
        loaded = {m.split(".")[0] for m in sys.modules}
        new = sorted((loaded & set(FORBIDDEN)) - seen)
        if new:
            report["offenders"][name] = new
            seen.update(new)
    print("@@REPORT@@" + json.dumps(report))
    """
)


def run_probe(
    modules: list[str], forbidden: tuple[str, ...], block: tuple[str, ...] = (), extra: str = ""
) -> dict:
    """Import ``modules`` in a fresh interpreter; return offenders and import errors."""
    code = PROBE + textwrap.dedent(extra)
    env = dict(os.environ)
    env.pop("PYTHONSTARTUP", None)
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps([modules, list(forbidden), list(block)])],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    marker = [ln for ln in proc.stdout.splitlines() if ln.startswith("@@REPORT@@")]
    assert proc.returncode == 0 and marker, (
        f"probe failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    )
    report = json.loads(marker[-1][len("@@REPORT@@") :])
    report["stdout"] = proc.stdout
    return report


def _format(report: dict) -> str:
    lines = [f"{m} imports {', '.join(p)}" for m, p in report["offenders"].items()]
    lines += [f"{m} failed to import:\n{tb}" for m, tb in report["errors"].items()]
    return "\n".join(lines)


LIGHT_LAYERS = {
    "top": ["napari_ssseg", "napari_ssseg.cli", "napari_ssseg.errors", "napari_ssseg.__main__"],
    "core": discover("core"),
    "io": discover("io"),
    "commands": discover("commands"),
}


def test_discovery_finds_the_known_modules():
    assert "napari_ssseg.core.case" in LIGHT_LAYERS["core"]
    assert "napari_ssseg.core.metrics" in LIGHT_LAYERS["core"]
    assert "napari_ssseg.commands.evaluate" in LIGHT_LAYERS["commands"]
    assert not any("_napari" in m for layer in LIGHT_LAYERS.values() for m in layer)


@pytest.mark.parametrize("layer", sorted(LIGHT_LAYERS))
def test_light_layers_import_no_ml_and_no_gui(layer):
    modules = LIGHT_LAYERS[layer]
    report = run_probe(modules, ML + GUI)
    assert not report["offenders"] and not report["errors"], (
        f"layer {layer!r} must not import torch, MONAI, napari or Qt at module level:\n"
        + _format(report)
    )


def test_the_probe_detects_a_heavy_import():
    # guard against a probe that can never fail: json is always there, so "forbid" it
    report = run_probe(["napari_ssseg.core.case"], ("numpy",))
    assert report["offenders"] == {"napari_ssseg.core.case": ["numpy"]}


def test_ml_imports_no_gui():
    pytest.importorskip("torch")
    pytest.importorskip("monai")
    modules = discover("ml")
    report = run_probe(modules, GUI)
    assert not report["offenders"] and not report["errors"], (
        "napari_ssseg.ml must not import napari or Qt:\n" + _format(report)
    )


def test_core_and_io_work_without_torch_or_napari():
    modules = LIGHT_LAYERS["core"] + LIGHT_LAYERS["io"] + LIGHT_LAYERS["top"]
    extra = """
        import numpy as np
        from napari_ssseg.core.metrics import region_metrics
        gt = np.zeros((10, 12, 14), np.uint8); gt[2:8, 3:9, 4:10] = 2; gt[4:6, 5:7, 6:8] = 3
        pred = np.roll(gt, 1, axis=2)
        r = region_metrics(pred, gt, (2.0, 1.0, 1.0))
        print("@@METRICS@@" + json.dumps(r))
    """
    report = run_probe(modules, ML + GUI, block=ML + GUI, extra=extra)
    assert not report["errors"], _format(report)
    line = [ln for ln in report["stdout"].splitlines() if ln.startswith("@@METRICS@@")]
    assert line, report["stdout"]
    result = json.loads(line[0][len("@@METRICS@@") :])
    assert 0 < result["WT"]["dice"] < 1


def _require(name: str) -> None:
    """Skip unless ``name`` is installed (without importing it into the test process)."""
    if importlib.util.find_spec(name) is None:
        pytest.skip(f"{name} is not installed")


def _manifest_modules() -> list[str]:
    yaml = pytest.importorskip("yaml")
    if not MANIFEST.exists():
        pytest.skip("no napari.yaml manifest yet")
    manifest = yaml.safe_load(MANIFEST.read_text())
    commands = (manifest.get("contributions") or {}).get("commands") or []
    names = sorted({c["python_name"].split(":")[0] for c in commands if "python_name" in c})
    if not names:
        pytest.skip("the manifest names no python modules")
    return names


def test_napari_contributions_do_not_import_torch():
    modules = _manifest_modules()
    _require("napari")
    report = run_probe(modules, ML)
    assert not report["errors"], "manifest modules must import:\n" + _format(report)
    assert not report["offenders"], (
        "modules named in napari.yaml must not import torch/MONAI at module level (napari "
        "imports them when the plugin's reader, writer, sample data or widgets are used):\n"
        + _format(report)
    )


def test_napari_manifest_python_names_resolve():
    _require("napari")
    _manifest_modules()
    import yaml

    manifest = yaml.safe_load(MANIFEST.read_text())
    targets = [c["python_name"] for c in manifest["contributions"]["commands"]]
    extra = f"""
        missing = []
        for target in {targets!r}:
            mod, _, attr = target.partition(":")
            obj = importlib.import_module(mod)
            for part in attr.split("."):
                obj = getattr(obj, part, None)
            if obj is None:
                missing.append(target)
        print("@@MISSING@@" + json.dumps(missing))
    """
    report = run_probe([], (), extra=extra)
    line = [ln for ln in report["stdout"].splitlines() if ln.startswith("@@MISSING@@")]
    assert line and json.loads(line[0][len("@@MISSING@@") :]) == [], report["stdout"]


def test_npe2_plugin_discovery_does_not_import_torch():
    _require("npe2")
    _manifest_modules()
    extra = """
        from npe2 import PluginManager
        pm = PluginManager()
        pm.discover()
        names = sorted(m.name for m in pm.iter_manifests())
        heavy = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "monai"})
        print("@@NPE2@@" + json.dumps({"plugins": names, "heavy": heavy}))
    """
    report = run_probe([], (), extra=extra)
    line = [ln for ln in report["stdout"].splitlines() if ln.startswith("@@NPE2@@")]
    assert line, report["stdout"]
    result = json.loads(line[0][len("@@NPE2@@") :])
    assert "napari-ssseg" in result["plugins"]
    assert result["heavy"] == [], f"npe2 discovery imported {result['heavy']}"
