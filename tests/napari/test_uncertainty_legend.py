"""The uncertainty layer of the Propose panel has a legend: a colour bar (napari's per-layer
colorbar overlay), a text overlay naming the map and its scale, and the same text in the
panel; it follows the layer's visibility."""

from __future__ import annotations

import os

import numpy as np
import pytest
from qtpy.QtCore import Qt

pytest.importorskip("torch")
pytest.importorskip("monai")

from tiny_checkpoints import make_tiny_checkpoint as make_checkpoint  # noqa: E402

from napari_ssseg._napari.layers import case_to_layer_data  # noqa: E402
from napari_ssseg._napari.widgets.propose import (  # noqa: E402
    LEGEND_OVERLAY_KEY,
    MODEL_SOURCES,
    ProposeWidget,
    legend_text,
)

pytestmark = pytest.mark.gui


def test_legend_text_names_the_kind_and_the_scale():
    assert "predictive entropy" in legend_text("entropy", 1.0)
    assert "0 = certain" in legend_text("entropy", 1.0)
    assert "1 = most uncertain" in legend_text("entropy", 1.0)
    assert "stretched" not in legend_text("entropy", 1.0)
    assert "0 - 0.42" in legend_text("mutual_information", 0.42)
    assert "mutual information" in legend_text("mutual_information", 0.42)
    assert "disagreement" in legend_text("disagreement", 1.0)


def test_uncertainty_layer_has_a_readable_legend(make_napari_viewer, qtbot, tiny_case, tmp_path):
    from napari.layers import Layer

    viewer = make_napari_viewer(show=True)
    for data, kwargs, layer_type in case_to_layer_data(tiny_case):
        viewer.add_layer(Layer.create(data, kwargs, layer_type))
    widget = ProposeWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Propose")
    viewer.window._qt_window.resize(1400, 900)
    widget.model_source.value = list(MODEL_SOURCES)[1]
    widget.checkpoint_file.value = make_checkpoint(tmp_path / "tiny.pt")
    widget.device.value = "cpu"
    qtbot.mouseClick(widget.propose_button.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    unc = viewer.layers["tiny uncertainty"]
    kind = unc.metadata["ssseg_prediction"]["uncertainty"]
    assert kind == "entropy"
    assert unc.colorbar.visible
    overlay = viewer.canvas.overlays[LEGEND_OVERLAY_KEY]
    assert overlay.visible
    assert overlay.text.startswith("tiny uncertainty:\npredictive entropy")
    assert "0 = certain" in overlay.text and "1 = most uncertain" in overlay.text
    assert "predictive entropy" in widget.legend.value
    # the screenshot shows the bar and the text (bright pixels top right, none without)
    viewer.layers["tiny labels"].visible = False
    shot = viewer.screenshot(canvas_only=True, flash=False)
    out = os.environ.get("SSSEG_SHOT_DIR")
    if out:
        from imageio.v3 import imwrite

        imwrite(os.path.join(out, "uncertainty_legend.png"), shot)
    h, w = shot.shape[:2]
    corner = shot[: h // 3, 2 * w // 3 :, :3].astype(int)
    unc.visible = False
    assert not overlay.visible
    assert "no uncertainty layer shown" in widget.legend.value
    shot_off = viewer.screenshot(canvas_only=True, flash=False)
    corner_off = shot_off[: h // 3, 2 * w // 3 :, :3].astype(int)
    assert np.abs(corner - corner_off).sum(axis=-1).astype(bool).sum() > 500
    unc.visible = True
    assert overlay.visible
