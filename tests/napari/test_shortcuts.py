"""Keyboard shortcuts of the loop, sent as real key events to the napari canvas: they act
only while their panel is open, clash with none of napari's keys, and napari's own keys
still work."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_ssseg._napari.layers import case_to_layer_data
from napari_ssseg._napari.shortcuts import SHORTCUTS, napari_default_keys, panel_is_open

pytestmark = pytest.mark.gui

CTRL_SHIFT = Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier


@pytest.fixture
def errors(monkeypatch):
    out: list[str] = []
    monkeypatch.setattr("napari_ssseg._napari.widgets._common.show_error", out.append)
    return out


def press(qtbot, viewer, action):
    """Send the action's key (Ctrl+Shift+<letter>) to the canvas, as a user would."""
    key = SHORTCUTS[action][0]
    letter = key.rsplit("+", 1)[-1]
    canvas = viewer.window._qt_viewer.canvas.native
    canvas.setFocus()
    qtbot.keyClick(canvas, getattr(Qt.Key, f"Key_{letter}"), CTRL_SHIFT)


def dock(qtbot, viewer, widget, name):
    viewer.window.add_dock_widget(widget, name=name)
    qtbot.waitUntil(lambda: panel_is_open(widget), timeout=5000)


def _viewer_with_case(make_napari_viewer, case):
    from napari.layers import Layer

    viewer = make_napari_viewer(show=True)
    for data, kwargs, layer_type in case_to_layer_data(case):
        viewer.add_layer(Layer.create(data, kwargs, layer_type))
    return viewer


def test_keys_clash_with_no_napari_key(make_napari_viewer):
    make_napari_viewer()  # registers napari's menu actions and their keys
    defaults = napari_default_keys()
    # the list is napari's: menu actions, layer keys, Labels' own undo/redo
    assert {"Ctrl+Shift+P", "Ctrl+S", "P", "Ctrl+Z", "Ctrl+Shift+Z"} <= defaults
    keys = [k for k, _ in SHORTCUTS.values()]
    assert len(set(keys)) == len(keys)
    assert not set(keys) & defaults


def test_propose_and_take_by_key(make_napari_viewer, qtbot, tiny_case, tmp_path, errors):
    pytest.importorskip("torch")
    pytest.importorskip("monai")
    from test_uncertainty_legend import make_checkpoint

    from napari_ssseg._napari.widgets.propose import MODEL_SOURCES, ProposeWidget

    viewer = _viewer_with_case(make_napari_viewer, tiny_case)
    widget = ProposeWidget(viewer)
    dock(qtbot, viewer, widget, "Propose")
    assert "Ctrl+Shift+R" in widget.propose_button.tooltip
    assert "Ctrl+Shift+L" in widget.take_button.tooltip
    labels = viewer.layers["tiny labels"]
    labels.data = np.zeros_like(labels.data)
    press(qtbot, viewer, "take_proposal")  # nothing proposed yet: the panel says so
    assert errors and "No proposal for tiny" in errors[-1]
    widget.model_source.value = list(MODEL_SOURCES)[1]
    widget.checkpoint_file.value = make_checkpoint(tmp_path / "tiny.pt")
    widget.device.value = "cpu"
    press(qtbot, viewer, "propose")
    assert widget.task is not None
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    proposal = viewer.layers["tiny proposal"]
    press(qtbot, viewer, "take_proposal")
    np.testing.assert_array_equal(labels.data, proposal.data)
    assert viewer.layers.selection.active is labels
    canvas = viewer.window._qt_viewer.canvas.native
    assert np.any(proposal.data)  # napari's Ctrl+Z on the labels layer undoes the take
    qtbot.keyClick(canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert not np.any(labels.data)
    # napari's own keys still work: the labels paint-mode key (from napari's keymap)
    from napari.utils.shortcuts import default_shortcuts

    paint_key = str(default_shortcuts["napari:activate_labels_paint_mode"][0])
    viewer.layers.selection.active = labels
    labels.mode = "pan_zoom"
    qtbot.keyClick(canvas, getattr(Qt.Key, f"Key_{paint_key}"))
    assert labels.mode == "paint"
    # a closed panel's keys do nothing, and are unbound
    n_errors = len(errors)
    viewer.window.remove_dock_widget(widget.native)
    qtbot.wait(50)
    press(qtbot, viewer, "take_proposal")
    assert len(errors) == n_errors
    assert any(str(k) == "Ctrl+Shift+R" for k in viewer.keymap)
    widget.native.deleteLater()  # a deleted panel's keys are unbound
    qtbot.waitUntil(lambda: not any(str(k) == "Ctrl+Shift+R" for k in viewer.keymap), timeout=5000)


def test_refine_and_scribble_accept_by_key(make_napari_viewer, qtbot, tiny_case, errors):
    from napari_ssseg._napari.widgets.refine import RefineWidget
    from napari_ssseg._napari.widgets.scribble import ScribbleWidget

    viewer = _viewer_with_case(make_napari_viewer, tiny_case)
    refine = RefineWidget(viewer)
    scribble = ScribbleWidget(viewer)
    dock(qtbot, viewer, refine, "Refine")
    dock(qtbot, viewer, scribble, "Scribble")
    assert "Ctrl+Shift+F" in refine.accept_button.tooltip
    assert "Ctrl+Shift+A" in scribble.accept_button.tooltip
    press(qtbot, viewer, "refine_accept")
    assert refine.status.value.startswith("nothing to accept yet")
    press(qtbot, viewer, "scribble_accept")
    assert errors and "propagate the scribbles first" in errors[-1]
    # hidden (not closed) panel: its key does nothing
    n = len(errors)
    parent = scribble.native.parentWidget()
    while parent is not None and not hasattr(parent, "toggleViewAction"):
        parent = parent.parentWidget()
    parent.toggleViewAction().trigger()
    qtbot.waitUntil(lambda: not panel_is_open(scribble), timeout=5000)
    press(qtbot, viewer, "scribble_accept")
    assert len(errors) == n


def test_workspace_keys(make_napari_viewer, qtbot, tmp_path):
    from napari_ssseg._napari.widgets.workspace import WorkspaceWidget
    from napari_ssseg.core.phantom import make_phantom
    from napari_ssseg.io.workspace import Workspace
    from napari_ssseg.io.writers import write_case

    src = tmp_path / "src"
    for seed in range(2):
        write_case(make_phantom((16, 24, 24), seed=seed).to_case(name=f"p{seed}"), src)
    Workspace.create(tmp_path / "ws", from_dir=src).close()
    viewer = make_napari_viewer(show=True)
    panel = WorkspaceWidget(viewer)
    dock(qtbot, viewer, panel, "Workspace")
    assert "Ctrl+Shift+N" in panel.next_btn.toolTip()
    try:
        panel.open_workspace(tmp_path / "ws")
        ids = panel.ws.case_ids
        press(qtbot, viewer, "next_case")
        qtbot.waitUntil(lambda: not panel.running and panel.case_id is not None, timeout=30_000)
        first = panel.case_id
        press(qtbot, viewer, "next_case")
        qtbot.waitUntil(lambda: not panel.running and panel.case_id != first, timeout=30_000)
        assert panel.case_id == ids[(ids.index(first) + 1) % len(ids)]
        press(qtbot, viewer, "previous_case")
        qtbot.waitUntil(lambda: not panel.running and panel.case_id == first, timeout=30_000)
        n_versions = len(panel.ws.versions(first))
        layer = panel.labels_layer
        layer.data_setitem((np.array([0]), np.array([0]), np.array([0])), 2)
        press(qtbot, viewer, "workspace_save")
        assert len(panel.ws.versions(first)) == n_versions + 1
    finally:
        panel.close_workspace()
