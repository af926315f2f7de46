"""The plugin's modules import neither torch nor MONAI (napari start-up stays light)."""

from __future__ import annotations

import subprocess
import sys

MODULES = [
    "napari_ssseg._napari.reader",
    "napari_ssseg._napari.writer",
    "napari_ssseg._napari.sample_data",
    "napari_ssseg._napari.layers",
    "napari_ssseg._napari.workers",
    "napari_ssseg._napari.widgets.loader",
    "napari_ssseg._napari.widgets.propose",
    "napari_ssseg._napari.widgets.refine",
    "napari_ssseg._napari.widgets.scribble",
    "napari_ssseg._napari.widgets.workspace",
    "napari_ssseg._napari.widgets.retrain",
    "napari_ssseg._napari.training_client",
    "napari_ssseg._napari.screenshot",
    "napari_ssseg._napari.launch",
]


def test_plugin_modules_do_not_import_torch():
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in MODULES)
        + "print(sorted(m for m in ('torch', 'monai') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_reader_lookup_imports_no_napari_qt_or_torch():
    """npe2 calls get_reader for every dropped path: it must be cheap to import."""
    code = (
        "import sys\nfrom napari_ssseg._napari.reader import get_reader\n"
        "print(sorted(m for m in ('torch', 'monai', 'napari', 'qtpy') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
