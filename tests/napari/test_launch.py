"""`ssseg demo` with a display opens napari with a sample case and every panel docked."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.gui


def test_demo_viewer_has_the_case_and_every_panel(qtbot, make_napari_viewer):
    from napari_ssseg._napari.launch import launch_demo_viewer
    from napari_ssseg._napari.widgets import PANELS

    viewer = launch_demo_viewer(
        shape=(48, 64, 64), spacing=(2.0, 2.0, 2.0), run=False, viewer=make_napari_viewer()
    )
    try:
        names = [layer.name for layer in viewer.layers]
        assert "SSSEG_Phantom_00000 FLAIR" in names
        assert "SSSEG_Phantom_00000 labels" in names
        docked = set(viewer.window.dock_widgets)
        assert {title for title, _ in PANELS} <= docked
        flair = viewer.layers["SSSEG_Phantom_00000 FLAIR"]
        assert tuple(flair.scale) == (2.0, 2.0, 2.0)
    finally:
        viewer.close()
