"""A clinical study's labels in napari: read from the native label file onto the working grid,
and File > Save writes them back on the reference (FLAIR) series' exact native grid, keeping
the file's voxels exactly where the user did not paint (issue 13).

Tiny synthetic two-grid study (tests/clinical_study.py), 2 mm working grid on 2 mm / 3 mm series
(the T1 is moved, so registration runs and the case is shown on the working grid).
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from clinical_study import FINE, lesion_mask, make_study, write
from qtpy.QtCore import Qt

pytestmark = pytest.mark.gui


def _load(qtbot, loader):
    qtbot.mouseClick(loader.load_button.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: loader.task is not None and not loader.task.running, timeout=60_000)
    assert loader.status.value.startswith("loaded"), loader.status.value


def test_file_save_writes_a_clinical_case_on_the_native_grid(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    from napari.utils.notifications import notification_manager

    monkeypatch.setenv("NAPARI_SSSEG_CACHE", str(tmp_path / "cache"))
    messages: list[str] = []
    notification_manager.notification_ready.connect(lambda n: messages.append(str(n.message)))
    study = make_study(tmp_path / "study")
    native_seg = (lesion_mask((30, 32, 32), FINE) * 2).astype(np.uint8)  # ED (BraTS value 2)
    seg = write(tmp_path / "study" / "seg.nii.gz", native_seg, FINE)
    viewer = make_napari_viewer()
    _, loader = viewer.window.add_plugin_dock_widget("napari-ssseg", "Loader")
    for m, f in study.items():
        loader.file_edits[m].value = f
    loader.file_edits["seg"].value = seg
    loader.brain_extraction.value = "off"
    loader.registration.value = "on"
    loader.resample.value = "1.5"  # a working grid other than the native 2 mm
    _load(qtbot, loader)
    case = loader.last_case
    np.testing.assert_allclose(case.scale, (1.5, 1.5, 1.5), atol=1e-6)
    layer = next(x for x in viewer.layers if x.name == f"{case.name} labels")
    shown = np.asarray(layer.data)
    assert shown.shape == case.shape
    # the label file was read onto the working grid (not dropped): ED, about the lesion volume
    lesion_ml = native_seg.astype(bool).sum() * 8 / 1000
    assert np.unique(shown).tolist() == [0, 2]
    assert abs((shown == 2).sum() * 1.5**3 / 1000 - lesion_ml) < 0.25 * lesion_ml
    assert not any("was not loaded" in m for m in messages), messages

    # 1. saved untouched: the very same native voxels come back
    viewer.layers.selection.active = layer
    out = tmp_path / "saved.nii.gz"
    viewer.layers.save(str(out), selected=True, plugin="napari-ssseg")
    img = sitk.ReadImage(str(out))
    flair = sitk.ReadImage(str(study["flair"]))
    assert img.GetSize() == flair.GetSize()
    np.testing.assert_allclose(img.GetSpacing(), flair.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(img.GetOrigin(), flair.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(img.GetDirection(), flair.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), native_seg)
    assert any("native grid" in m for m in messages), messages

    # 2. the user paints a NCR blob far from the lesion: it is saved, the rest stays exact
    painted = shown.copy()
    painted[2:5, 2:5, 2:5] = 1
    layer.data = painted
    viewer.layers.save(str(out), selected=True, plugin="napari-ssseg")
    back = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    assert (back == 1).any(), "the painted voxels were not saved"
    far = np.ones(back.shape, bool)
    far[:8, :8, :8] = False  # the native voxels near the painted corner (file order z, y, x)
    np.testing.assert_array_equal(back[far], native_seg[far])
