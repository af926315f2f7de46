"""A raw clinical study in a workspace (issue 13): the Workspace panel opens a case marked
clinical on its working grid (registration / brain extraction / resampling cached in the
workspace), and every saved version goes back to the reference (FLAIR) series' native grid,
keeping the stored voxels exactly where the user did not paint.

Tiny synthetic two-grid study (tests/clinical_study.py; the T1 is moved, so registration runs).
"""

from __future__ import annotations

import numpy as np
import pytest
from clinical_study import FINE, fake_brain_extraction, lesion_mask, make_study

from napari_ssseg.errors import InputError
from napari_ssseg.io.workspace import Workspace

TIMEOUT_MS = 60_000
OPTIONS = {"brain_extraction": "off", "register": "on", "resample": 1.5}


@pytest.fixture
def clinical_ws(tmp_path):
    study = make_study(tmp_path / "study")
    with Workspace.create(tmp_path / "ws") as ws:
        rec = ws.add_case(case_id="s1", clinical=OPTIONS, **study)
        assert rec.clinical == OPTIONS
        o = ws._grid("s1")[1]
        native = o.to_canonical((lesion_mask((30, 32, 32), FINE) * 2).astype(np.uint8))
        ws.save_labels("s1", native, source="import")
    return tmp_path / "ws", native


def test_clinical_options_are_checked_and_recorded(clinical_ws):
    path, _ = clinical_ws
    with Workspace.open(path) as ws:
        with pytest.raises(InputError, match="must be one of"):
            ws.set_clinical("s1", {"brain_extraction": "maybe"})
        with pytest.raises(InputError, match="voxel size in mm"):
            ws.set_clinical("s1", {"resample": -1})
        with pytest.raises(InputError, match="Unknown clinical option"):
            ws.set_clinical("s1", {"skull": "on"})
        assert ws.case("s1").clinical == OPTIONS  # unchanged by the refused calls
        assert ws.clinical_cache_dir("s1") == ws.root / "cases" / "s1" / "clinical"
        ws.set_clinical("s1", None)
        assert ws.case("s1").clinical is None
        ws.set_clinical("s1", {"register": "on"})
        assert ws.case("s1").clinical == {
            "brain_extraction": "auto",
            "register": "on",
            "resample": None,
        }


@pytest.mark.gui
def test_workspace_panel_opens_a_clinical_case_and_saves_on_the_native_grid(
    make_napari_viewer, qtbot, clinical_ws
):
    path, native = clinical_ws
    viewer = make_napari_viewer()
    _, panel = viewer.window.add_plugin_dock_widget("napari-ssseg", "Workspace")
    panel.open_workspace(path)
    panel.open_case("s1")
    qtbot.waitUntil(lambda: not panel.running and panel.case_id == "s1", timeout=TIMEOUT_MS)
    layer = panel.labels_layer
    assert layer is not None
    np.testing.assert_allclose(layer.scale, (1.5, 1.5, 1.5), atol=1e-6)  # the working grid
    shown = np.asarray(layer.data)
    assert shown.shape != native.shape
    assert np.unique(shown).tolist() == [0, 2]  # version 1, mapped onto the working grid
    lesion_ml = (native > 0).sum() * 8 / 1000
    assert abs((shown == 2).sum() * 1.5**3 / 1000 - lesion_ml) < 0.25 * lesion_ml
    cache = path / "cases" / "s1" / "clinical"
    assert cache.is_dir() and any(cache.iterdir()), "the preparation is not cached in the ws"

    # paint a necrosis blob in a corner, save: version 2 on the native grid
    painted = shown.copy()
    painted[1:4, 1:4, 1:4] = 1
    layer.data = painted
    panel.save_now()
    with Workspace.open(path, readonly=True) as ws:
        v2 = ws.read_version("s1", 2)
        assert v2.shape == native.shape
        assert (v2 == 1).any(), "the painted voxels were not saved"
        near = np.zeros(v2.shape, bool)
        near[:7, :7, :7] = True  # native voxels within a working voxel of the blob
        np.testing.assert_array_equal(v2[~near], native[~near])
        np.testing.assert_array_equal(v2 == 2, native == 2)  # the lesion is untouched

    # reopened: the same labels come back on the working grid
    panel.close_workspace()
    panel.open_workspace(path)
    panel.open_case("s1")
    qtbot.waitUntil(lambda: not panel.running and panel.case_id == "s1", timeout=TIMEOUT_MS)
    again = np.asarray(panel.labels_layer.data)
    assert (again == 1).sum() > 0 and (again == 2).sum() == (shown == 2).sum()
    panel.close_workspace()


def test_a_pacs_series_folder_is_added_as_a_clinical_case(tmp_path):
    from pathlib import Path

    raw = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real"
    raw = raw / "TCGA-FG-6692-raw"
    if not raw.is_dir():
        pytest.skip("shared/data/real/TCGA-FG-6692-raw is absent")
    with Workspace.create(tmp_path / "ws") as ws:
        rec = ws.add_case(raw)
        assert rec.clinical == {"brain_extraction": "auto", "register": "auto", "resample": None}


@pytest.mark.gui
def test_a_clinical_case_shows_its_brain_mask_and_keeps_a_correction(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    """Brain extraction on (deepbet replaced by a threshold, as in
    tests/napari/test_loader_clinical_cache.py): the Workspace panel shows the mask as a layer
    of the case; a correction left there is kept in the workspace's cache when the case is
    opened again, and the images are zero outside the corrected mask."""

    calls = fake_brain_extraction(monkeypatch)
    study = make_study(tmp_path / "study")
    options = {"brain_extraction": "on", "register": "off", "resample": 2}
    with Workspace.create(tmp_path / "ws") as ws:
        ws.add_case(case_id="s1", clinical=options, **study)
    viewer = make_napari_viewer()
    _, panel = viewer.window.add_plugin_dock_widget("napari-ssseg", "Workspace")
    panel.open_workspace(tmp_path / "ws")

    def open_s1():
        panel.open_case("s1")
        qtbot.waitUntil(
            lambda: not panel.running and panel.case_id == "s1" and not panel._steps,
            timeout=TIMEOUT_MS,
        )
        masks = [x for x in viewer.layers if x.metadata.get("ssseg_role") == "brain_mask"]
        assert len(masks) == 1, [x.name for x in viewer.layers]
        return masks[0]

    layer = open_s1()
    assert len(calls) == 1
    corrected = np.asarray(layer.data) > 0
    assert corrected.any()
    corrected[:, :, : corrected.shape[2] // 2] = False  # the user erases half of it
    layer.data = corrected.astype(np.uint8)
    layer = open_s1()  # the old layers go (the correction is kept), the case is prepared again
    assert len(calls) == 1, "deepbet ran again instead of reading the workspace cache"
    np.testing.assert_array_equal(np.asarray(layer.data) > 0, corrected)
    images = [x for x in viewer.layers if x.metadata.get("ssseg_role") == "image"]
    assert images and all(not np.asarray(x.data)[~corrected].any() for x in images)
    assert any((tmp_path / "ws" / "cases" / "s1" / "clinical").iterdir())
    panel.close_workspace()


@pytest.mark.gui
def test_workspace_apply_brain_mask_button_zeroes_outside_the_correction(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    """The Workspace panel's "Apply brain mask" (as the Loader's): clicked after correcting
    the brain-mask layer, the case's images are zero outside the correction at once and the
    correction is what the next open of the case starts from; an empty mask is refused with
    a message, the images untouched."""
    from qtpy.QtCore import Qt

    calls = fake_brain_extraction(monkeypatch)
    study = make_study(tmp_path / "study")
    options = {"brain_extraction": "on", "register": "off", "resample": 2}
    with Workspace.create(tmp_path / "ws") as ws:
        ws.add_case(case_id="s1", clinical=options, **study)
        ws.add_case(case_id="plain", **study)  # not clinical: no mask to apply
    viewer = make_napari_viewer()
    _, panel = viewer.window.add_plugin_dock_widget("napari-ssseg", "Workspace")
    panel.open_workspace(tmp_path / "ws")
    panel.open_case("s1")
    qtbot.waitUntil(
        lambda: not panel.running and panel.case_id == "s1" and not panel._steps,
        timeout=TIMEOUT_MS,
    )
    assert panel.apply_mask_btn.isEnabled()
    (layer,) = [x for x in viewer.layers if x.metadata.get("ssseg_role") == "brain_mask"]
    images = [x for x in viewer.layers if x.metadata.get("ssseg_role") == "image"]
    before = [np.array(x.data) for x in images]

    errors: list[str] = []
    monkeypatch.setattr(
        "napari_ssseg._napari.widgets.workspace.notify_error",
        lambda exc, *a, **k: errors.append(str(exc)),
        raising=False,
    )
    layer.data = np.zeros_like(layer.data)  # erased everything: refused
    qtbot.mouseClick(panel.apply_mask_btn, Qt.LeftButton)
    assert errors and "empty" in errors[-1]
    for x, b in zip(images, before, strict=True):
        np.testing.assert_array_equal(np.asarray(x.data), b)

    corrected = before[0] != 0
    corrected[:, :, : corrected.shape[2] // 2] = False  # the user erases half of the brain
    layer.data = corrected.astype(np.uint8)
    qtbot.mouseClick(panel.apply_mask_btn, Qt.LeftButton)
    assert "brain mask applied" in panel.status_label.text()
    for x in images:
        data = np.asarray(x.data)
        assert not data[~corrected].any() and data[corrected].any()
    panel.close_workspace()
    panel.open_workspace(tmp_path / "ws")
    panel.open_case("s1")
    qtbot.waitUntil(
        lambda: not panel.running and panel.case_id == "s1" and not panel._steps,
        timeout=TIMEOUT_MS,
    )
    assert len(calls) == 1  # the kept mask, not deepbet again
    (layer,) = [x for x in viewer.layers if x.metadata.get("ssseg_role") == "brain_mask"]
    np.testing.assert_array_equal(np.asarray(layer.data) > 0, corrected)
    panel.open_case("plain")
    qtbot.waitUntil(lambda: not panel.running and panel.case_id == "plain", timeout=TIMEOUT_MS)
    assert not panel.apply_mask_btn.isEnabled()
    panel.close_workspace()
