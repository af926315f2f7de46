"""Every panel opens the way a user opens it: Plugins menu -> napari-ssseg -> panel name.

napari builds the widget from the manifest and injects the viewer by parameter name
(``napari_viewer``) or annotation; a panel whose constructor asks for something else cannot be
opened from the menu (the Scribble panel once could not). The list of panels is read from the
packaged manifest, so a new panel is tested without editing this file.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.gui

_MANIFEST = Path(__file__).resolve().parents[2] / "src" / "napari_ssseg" / "napari.yaml"
_PANELS = [
    w["display_name"] for w in yaml.safe_load(_MANIFEST.read_text())["contributions"]["widgets"]
]


def test_manifest_lists_the_panels():
    assert {"Loader", "Propose", "Refine", "Scribble", "Retrain", "Workspace"} <= set(_PANELS)


@pytest.mark.parametrize("name", _PANELS)
def test_panel_opens_from_the_plugins_menu(make_napari_viewer, name):
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget("napari-ssseg", name)
    assert widget is not None and dock is not None
