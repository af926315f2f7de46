"""Sample-data contribution, the manifest, the dock widget, and a real screenshot."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from napari_ssseg._napari.layers import case_of_layer
from napari_ssseg._napari.sample_data import phantom_layer_data
from napari_ssseg.core.case import CLASS_COLORS


def test_manifest_is_valid_and_top_level_path_resolves():
    from npe2 import PluginManifest

    root = Path(__file__).resolve().parents[2]
    top = root / "napari.yaml"
    packaged = root / "src" / "napari_ssseg" / "napari.yaml"
    assert top.resolve() == packaged.resolve()
    manifest = PluginManifest.from_file(top)
    manifest.validate_imports()
    assert manifest.name == "napari-ssseg"
    keys = {s.key for s in manifest.contributions.sample_data}
    assert keys == {"phantom_small", "phantom_brats"}
    (writer,) = manifest.contributions.writers
    assert set(writer.filename_extensions) == {".nii.gz", ".nii", ".nrrd", ".mha"}


def test_phantom_layer_data_is_a_case():
    data = phantom_layer_data((32, 40, 40), (2.0, 2.0, 2.0), seed=0, name="p")
    case = data[0][1]["metadata"]["ssseg_case"].case
    assert case.shape == (32, 40, 40) and case.scale == (2.0, 2.0, 2.0)
    labels = data[-1][0]
    assert set(np.unique(labels)) == {0, 1, 2, 3}


@pytest.mark.gui
def test_open_small_sample(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-ssseg", "phantom_small")
    assert [layer.name for layer in viewer.layers] == [
        "phantom T1",
        "phantom T1Gd",
        "phantom T2",
        "phantom FLAIR",
        "phantom labels",
    ]
    labels = viewer.layers["phantom labels"]
    assert labels.data.shape == (96, 120, 120)
    np.testing.assert_allclose(labels.scale, (2.0, 2.0, 2.0))
    assert case_of_layer(labels).name == "phantom"


@pytest.mark.gui
def test_dock_widget_from_manifest(make_napari_viewer):
    from napari_ssseg._napari.widgets.loader import LoaderWidget

    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-ssseg", "Loader")
    assert isinstance(widget, LoaderWidget)


@pytest.mark.gui
def test_screenshot_is_not_blank(make_napari_viewer, tiny_case, tmp_path):
    from napari_ssseg._napari.layers import case_to_layer_data

    viewer = make_napari_viewer(show=True)
    for data, kwargs, kind in case_to_layer_data(tiny_case):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    z = int(np.argmax((tiny_case.labels > 0).sum(axis=(1, 2))))
    viewer.dims.set_point(0, viewer.layers[0].data_to_world((z, 0, 0))[0])
    viewer.reset_view()
    canvas = viewer.screenshot(canvas_only=True, flash=False)
    assert canvas.ndim == 3 and canvas.shape[2] == 4
    rgb = canvas[..., :3].astype(float)
    assert rgb.std() > 10, "canvas screenshot is blank"
    # the tumour colours are rendered: some pixels are strongly yellow (ET) or green (ED)
    yellow = (rgb[..., 0] > 150) & (rgb[..., 1] > 150) & (rgb[..., 2] < 100)
    green = (rgb[..., 1] > 120) & (rgb[..., 0] < 100) & (rgb[..., 2] < 100)
    assert yellow.sum() + green.sum() > 20, CLASS_COLORS
    window = viewer.screenshot(canvas_only=False, flash=False)
    assert window.shape[0] > canvas.shape[0] and window[..., :3].std() > 10
    if os.environ.get("SSSEG_KEEP_SCREENSHOTS"):
        from skimage.io import imsave

        imsave(tmp_path / "window.png", window)
