"""The io layer imports only numpy, SimpleITK, nibabel (and the standard library)."""

from __future__ import annotations

from io_helpers import imported_heavy_modules


def test_io_does_not_import_torch_napari_or_qt() -> None:
    bad = ("torch", "monai", "napari", "qtpy", "PyQt5", "magicgui", "superqt")
    imports = "napari_ssseg.io, napari_ssseg.io.readers, napari_ssseg.io.writers"
    assert imported_heavy_modules(imports, bad) == []
