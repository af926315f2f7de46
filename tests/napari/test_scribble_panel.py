"""Scribble panel driven as a user would: new scribble layer, paint, preview, accept, undo, save."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_ssseg._napari.layers import case_to_layer_data
from napari_ssseg._napari.widgets.scribble import ScribbleWidget
from napari_ssseg.core.preprocess import brain_mask
from napari_ssseg.core.provenance import PROVENANCE_KEY, SCRIBBLE
from napari_ssseg.core.scribbles import BACKGROUND, ScribblePropagator, simulate_scribbles

pytestmark = pytest.mark.gui


@pytest.fixture
def errors(monkeypatch):
    shown: list[str] = []
    monkeypatch.setattr(
        "napari_ssseg._napari.widgets._common.show_error", lambda m: shown.append(m)
    )
    return shown


@pytest.fixture
def panel(make_napari_viewer, tiny_case):
    viewer = make_napari_viewer()
    from napari.layers import Layer

    empty = np.zeros(tiny_case.shape, np.uint8)
    for data, kwargs, layer_type in case_to_layer_data(tiny_case, labels=empty):
        viewer.add_layer(Layer.create(data, kwargs, layer_type))
    widget = ScribbleWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Scribble")
    return viewer, widget


def _click(qtbot, button):
    qtbot.mouseClick(button.native, Qt.MouseButton.LeftButton)


def _strokes(case):
    return simulate_scribbles(case.labels, brain_mask(case.images), n_slices=3, keep=0.5)


def test_propagate_without_scribble_layer_reports_an_error(panel, qtbot, errors):
    _, widget = panel
    _click(qtbot, widget.propagate_button)
    assert errors and "scribble layer" in errors[0]


def test_scribble_preview_accept_undo_save(panel, qtbot, errors, tmp_path, tiny_case):
    viewer, widget = panel
    _click(qtbot, widget.new_button)
    layer = widget.scribble_layer
    assert layer is not None and layer.data.shape == tiny_case.shape
    assert layer.brush_size == 2 and layer.selected_label == 2
    np.testing.assert_allclose(layer.scale, tiny_case.scale)
    strokes = _strokes(tiny_case)
    layer.data = strokes
    _click(qtbot, widget.propagate_button)
    qtbot.waitUntil(lambda: widget.result is not None, timeout=60_000)
    assert not errors
    preview = viewer.layers[f"{tiny_case.name} scribble preview"]
    expected = ScribblePropagator(tiny_case.images, tiny_case.modalities, None, tiny_case.scale)
    np.testing.assert_array_equal(preview.data, expected.update(strokes).labels)
    assert "%" in widget.effort.value
    # accept: one undoable step with provenance
    target = viewer.layers[f"{tiny_case.name} labels"]
    changed = widget.accept()
    assert changed is not None and changed.any()
    np.testing.assert_array_equal(target.data, preview.data)
    assert (target.metadata[PROVENANCE_KEY][changed] == SCRIBBLE).all()
    target.undo()
    assert not target.data.any()
    # save: case values + 255 for background strokes, case geometry
    out = tmp_path / "scr.nii.gz"
    widget.save_path.value = out
    _click(qtbot, widget.save_button)
    from napari_ssseg.io.readers import read_image

    arr, _ = read_image(out)
    arr = tiny_case.orientation.to_canonical(arr)
    assert (arr[strokes == BACKGROUND] == 255).all()
    assert set(np.unique(arr)) <= {0, 1, 2, 4, 255}
    assert (arr > 0).sum() == (strokes > 0).sum()


def test_live_preview_runs_after_painting(panel, qtbot, errors, tiny_case):
    _, widget = panel
    assert widget.live.value
    _click(qtbot, widget.new_button)
    layer = widget.scribble_layer
    strokes = _strokes(tiny_case)
    layer.data = strokes
    z, y, x = np.argwhere(strokes == 2)[0]
    layer.paint((z, y, x), 2)  # a user stroke: the paint event starts the debounce timer
    qtbot.waitUntil(lambda: widget.result is not None, timeout=60_000)
    assert not errors
    assert widget.result.labels[z, y, x] == 2
