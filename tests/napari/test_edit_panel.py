"""Edit tools panel opened through the Plugins menu path and driven as a user would."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_ssseg._napari.layers import case_to_layer_data
from napari_ssseg.core.provenance import HUMAN, PROVENANCE_KEY

pytestmark = pytest.mark.gui


@pytest.fixture
def panel(make_napari_viewer, tiny_case):
    from napari.layers import Layer

    viewer = make_napari_viewer()
    empty = np.zeros(tiny_case.shape, np.uint8)
    for data, kwargs, layer_type in case_to_layer_data(tiny_case, labels=empty):
        viewer.add_layer(Layer.create(data, kwargs, layer_type))
    _, widget = viewer.window.add_plugin_dock_widget("napari-ssseg", "Edit tools")
    return viewer, widget, viewer.layers["tiny labels"]


def _click(qtbot, button):
    qtbot.mouseClick(button.native, Qt.MouseButton.LeftButton)


def test_fill_between_slices_undo_and_provenance(panel, qtbot):
    viewer, widget, layer = panel
    from napari_ssseg._napari.widgets.edit import EditWidget

    assert isinstance(widget, EditWidget) and widget.layer_box.value is layer
    layer.data_setitem(
        np.nonzero(np.pad(np.ones((1, 6, 6), bool), ((10, 21), (17, 17), (17, 17)))), 2
    )
    layer.data_setitem(
        np.nonzero(np.pad(np.ones((1, 6, 6), bool), ((16, 15), (17, 17), (17, 17)))), 2
    )
    before = layer.data.copy()
    widget.klass.value = "ED (2)"
    _click(qtbot, widget.fill_button)
    assert widget.viewing_axis() == 0
    added = (layer.data == 2) & (before == 0)
    assert added[11:16].sum() == 5 * 36 and added.sum() == 5 * 36
    assert (layer.metadata[PROVENANCE_KEY][added] == HUMAN).all()
    assert "ED 0." in widget.volumes.value or "ED" in widget.volumes.value
    layer.undo()
    np.testing.assert_array_equal(layer.data, before)


def test_islands_undo_and_volume_table(panel, qtbot):
    _, widget, layer = panel
    data = np.zeros(layer.data.shape, np.uint8)
    data[5:10, 5:10, 5:10] = 2
    data[20, 20, 20] = 2
    layer.data = data
    qtbot.wait(widget._timer.interval() + 100)
    vol = widget.update_volumes()
    assert vol["ED"] == pytest.approx(126 * 0.008)
    widget.island_mode.value = "keep largest"
    widget.island_target.value = "each class"
    _click(qtbot, widget.island_button)
    assert layer.data[20, 20, 20] == 0 and layer.data[7, 7, 7] == 2
    assert widget.update_volumes()["ED"] == pytest.approx(125 * 0.008)
    layer.undo()
    assert layer.data[20, 20, 20] == 2


def test_brush_in_mm_and_sphere(panel):
    _, widget, layer = panel
    widget.brush_mm.value = 10.0  # 2 mm voxels
    assert layer.brush_size == 5 and layer.n_edit_dimensions == 2
    widget.sphere.value = True
    assert layer.n_edit_dimensions == 3


def test_screenshot(make_napari_viewer, tiny_case, tmp_path):
    from napari.layers import Layer

    viewer = make_napari_viewer(show=True)
    for data, kwargs, layer_type in case_to_layer_data(tiny_case):
        viewer.add_layer(Layer.create(data, kwargs, layer_type))
    viewer.window.add_plugin_dock_widget("napari-ssseg", "Edit tools")
    shot = viewer.screenshot(canvas_only=False, flash=False)
    assert shot[..., :3].std() > 10
    import os

    if os.environ.get("SSSEG_KEEP_SCREENSHOTS"):
        from skimage.io import imsave

        imsave(tmp_path / "edit_tools.png", shot)
