"""The io layer imports only numpy, SimpleITK, nibabel (and the standard library)."""

from __future__ import annotations

import subprocess
import sys


def test_io_does_not_import_torch_napari_or_qt() -> None:
    code = (
        "import sys, napari_ssseg.io, napari_ssseg.io.readers, napari_ssseg.io.writers\n"
        "bad = [m for m in ('torch', 'monai', 'napari', 'qtpy', 'PyQt5', 'magicgui', 'superqt')"
        " if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == ""
