"""Closing the viewer or a panel while Propose or Refine work runs: no "wrapped C/C++ object
... has been deleted" error, no spurious notification (e.g. "pseudo-label is empty"), and the
worker stops."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_ssseg._napari.layers import case_to_layer_data

pytestmark = pytest.mark.gui


@pytest.fixture
def problems(monkeypatch):
    """Everything that went wrong: error notifications, uncaught exceptions (sys.excepthook,
    where Qt slots' exceptions go), napari notification records of errors."""
    from napari.utils.notifications import notification_manager

    out: list[str] = []
    monkeypatch.setattr(
        "napari_ssseg._napari.widgets._common.show_error", lambda m: out.append(str(m))
    )
    previous = sys.excepthook

    def hook(kind, value, tb):
        out.append(f"{kind.__name__}: {value}")

    monkeypatch.setattr(sys, "excepthook", hook)
    n_records = len(notification_manager.records)
    yield out
    for record in notification_manager.records[n_records:]:
        if str(getattr(record, "severity", "")).lower() in ("error", "notificationseverity.error"):
            out.append(str(record.message))
    sys.excepthook = previous


def _viewer_with_case(make_napari_viewer, case, labels=None):
    from napari.layers import Layer

    viewer = make_napari_viewer(show=True)
    for data, kwargs, layer_type in case_to_layer_data(case, labels=labels):
        viewer.add_layer(Layer.create(data, kwargs, layer_type))
    return viewer


def _propose_panel(qtbot, viewer, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("monai")
    from test_uncertainty_legend import make_checkpoint

    from napari_ssseg._napari.widgets.propose import MODEL_SOURCES, ProposeWidget

    widget = ProposeWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Propose")
    widget.model_source.value = list(MODEL_SOURCES)[1]
    widget.checkpoint_file.value = make_checkpoint(tmp_path / "tiny.pt")
    widget.device.value = "cpu"
    widget.mc_samples.value = 8  # long enough to close meanwhile
    return widget


def _settle(qtbot, task, timeout=120_000):
    qtbot.waitUntil(lambda: not task.running, timeout=timeout)
    qtbot.wait(200)


@pytest.mark.parametrize("what", ["viewer", "panel"])
def test_close_while_proposing(make_napari_viewer, qtbot, tiny_case, tmp_path, problems, what):
    viewer = _viewer_with_case(make_napari_viewer, tiny_case)
    widget = _propose_panel(qtbot, viewer, tmp_path)
    qtbot.mouseClick(widget.propose_button.native, Qt.MouseButton.LeftButton)
    task = widget.task
    qtbot.waitUntil(lambda: task.state.get("last") is not None, timeout=60_000)
    assert task.running
    if what == "viewer":
        viewer.close()
    else:
        viewer.window.remove_dock_widget(widget.native)
        widget.native.deleteLater()
    _settle(qtbot, task)
    assert task.stop_event.is_set()  # closing stopped the network
    assert problems == []


def _refine_panel(make_napari_viewer, tiny_case):
    from napari_ssseg._napari.widgets.refine import RefineWidget

    labels = np.asarray(tiny_case.labels).copy()
    labels[labels == 2] = 0  # a rough pseudo-label
    viewer = _viewer_with_case(make_napari_viewer, tiny_case, labels=labels)
    widget = RefineWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Refine")
    return viewer, widget


@pytest.mark.parametrize("what", ["viewer", "panel"])
def test_close_while_refining(make_napari_viewer, qtbot, tiny_case, problems, what):
    viewer, widget = _refine_panel(make_napari_viewer, tiny_case)
    widget.n_segments.value = 2000  # slower superpixels
    qtbot.mouseClick(widget.compute_button.native, Qt.MouseButton.LeftButton)
    task = widget.task
    assert task is not None and task.running
    if what == "viewer":
        viewer.close()
    else:
        viewer.window.remove_dock_widget(widget.native)
        widget.native.deleteLater()
    _settle(qtbot, task)
    assert problems == []


@pytest.mark.parametrize("what", ["viewer", "panel"])
def test_close_refine_after_computing(make_napari_viewer, qtbot, tiny_case, problems, what):
    """With a preview shown and the sliders moved (a debounced preview pending), closing
    raises nothing (no "pseudo-label is empty" either)."""
    from napari_ssseg._napari.widgets import refine as refine_module

    infos: list[str] = []
    viewer, widget = _refine_panel(make_napari_viewer, tiny_case)
    qtbot.mouseClick(widget.compute_button.native, Qt.MouseButton.LeftButton)
    _settle(qtbot, widget.task)
    assert widget.setup is not None and widget.preview_layer is not None
    refine_module.notify_info, saved = infos.append, refine_module.notify_info
    try:
        widget.last_preview_seconds = 10.0  # the next slider move goes through the debounce
        widget.sim0.value = 0.5
        assert widget._debounce.isActive()
        if what == "panel":
            viewer.window.remove_dock_widget(widget.native)
            widget.native.deleteLater()
            qtbot.wait(300)
            # the viewer goes on: removing the case's layers must not reach the dead panel
            for layer in list(viewer.layers):
                viewer.layers.remove(layer)
        viewer.close()
        qtbot.wait(600)
    finally:
        refine_module.notify_info = saved
    assert problems == []
    assert not [m for m in infos if "empty" in m]


@pytest.mark.parametrize("where", ["below", "above"])
def test_closing_with_an_empty_labels_layer_of_the_case(
    make_napari_viewer, qtbot, tiny_case, problems, where
):
    """Closing removes the layers one by one: when the pseudo-label goes, the box falls back to
    another labels layer of the case (here an empty proposal); the panel must not try to fit
    it ("the pseudo-label is empty")."""
    from napari.layers import Labels

    from napari_ssseg._napari.layers import CASE_KEY

    viewer, widget = _refine_panel(make_napari_viewer, tiny_case)
    labels = viewer.layers["tiny labels"]
    empty = Labels(
        np.zeros_like(labels.data),
        name="tiny proposal",
        scale=labels.scale,
        translate=labels.translate,
        metadata={CASE_KEY: labels.metadata[CASE_KEY], "ssseg_role": "proposal"},
    )
    if where == "below":
        viewer.layers.insert(0, empty)
    else:
        viewer.add_layer(empty)
    widget.labels_layer.value = labels
    qtbot.mouseClick(widget.compute_button.native, Qt.MouseButton.LeftButton)
    _settle(qtbot, widget.task)
    assert widget.setup is not None
    viewer.close()
    qtbot.wait(600)
    assert not [m for m in problems if "empty" in m]
    assert problems == []
