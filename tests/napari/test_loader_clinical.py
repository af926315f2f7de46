"""Loader panel on a raw clinical study (TCGA-FG-6692-raw): one Load gives the brain-extracted
working-grid case with a brain-mask layer, and a Propose run labels nothing outside the brain
(issue 13)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_ssseg._napari.layers import case_of_layer

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real"
RAW = REAL / "TCGA-FG-6692-raw"

pytestmark = pytest.mark.gui


def _click(qtbot, button):
    qtbot.mouseClick(button.native, Qt.MouseButton.LeftButton)


@pytest.mark.slow
@pytest.mark.skipif(not RAW.is_dir(), reason="shared/data/real/TCGA-FG-6692-raw is absent")
def test_raw_study_loads_brain_extracted_and_proposal_stays_in_brain(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    pytest.importorskip("deepbet", reason="deepbet (the clinical extra) is not installed")
    # its own cache: the mask corrected below must not reach later tests of the same study
    monkeypatch.setenv("NAPARI_SSSEG_CACHE", str(tmp_path / "cache"))
    import SimpleITK as sitk
    from napari.utils.notifications import notification_manager

    messages: list[str] = []
    notification_manager.notification_ready.connect(lambda n: messages.append(str(n.message)))
    viewer = make_napari_viewer()
    _, loader = viewer.window.add_plugin_dock_widget("napari-ssseg", "Loader")
    loader.folder.value = RAW
    assert "TCGA-FG-6692" in loader.detected.value, loader.detected.value
    loader.registration.value = "off"  # registration is tested in tests/core; saves ~40 s
    assert loader.brain_extraction.value == "auto" and loader.resample.value == "auto"
    _click(qtbot, loader.load_button)
    qtbot.waitUntil(lambda: loader.task is not None and not loader.task.running, timeout=300_000)
    assert loader.status.value.startswith("loaded"), loader.status.value

    assert any("does not look skull-stripped" in m for m in messages), messages
    mask_layers = [x for x in viewer.layers if x.metadata.get("ssseg_role") == "brain_mask"]
    assert len(mask_layers) == 1, [x.name for x in viewer.layers]
    mask = np.asarray(mask_layers[0].data) > 0
    case = loader.last_case
    voxel_ml = float(np.prod(case.scale)) / 1000
    assert 900 <= mask.sum() * voxel_ml <= 2100
    np.testing.assert_allclose(case.scale, (1.0, 1.0, 1.0), atol=1e-6)  # the 1 mm working grid
    images = [x for x in viewer.layers if x.metadata.get("ssseg_role") == "image"]
    assert len(images) == 4
    for layer in [*images, *mask_layers, *(x for x in viewer.layers if x.name.endswith("labels"))]:
        assert layer.data.shape == case.shape, layer.name
        np.testing.assert_allclose(layer.scale, case.scale, atol=1e-6)
        np.testing.assert_allclose(layer.translate, case.translate, atol=1e-4)
    for layer in images:
        assert case_of_layer(layer) is case
        data = np.asarray(layer.data)
        assert not data[~mask].any(), f"{layer.name} is not zero outside the brain mask"
        assert data[mask].any()
    # where the reference (native FLAIR) grid is
    flair = sitk.ReadImage(str(next(RAW.glob("*FLAIR*.nii.gz"))))
    grid = images[0].metadata["ssseg_working_grid"]
    assert grid["reference_shape_zyx"] == list(flair.GetSize()[::-1])
    np.testing.assert_allclose(grid["reference_spacing"], flair.GetSpacing(), atol=1e-5)

    # one Propose run with the shipped model: no tumour label outside the brain
    _, propose = viewer.window.add_plugin_dock_widget("napari-ssseg", "Propose")
    propose.device.value = "cpu"
    _click(qtbot, propose.propose_button)
    qtbot.waitUntil(lambda: propose.task is not None and not propose.running, timeout=300_000)
    proposal = next((x for x in viewer.layers if x.name == f"{case.name} proposal"), None)
    assert proposal is not None, propose.status.value
    labelled = np.asarray(proposal.data) > 0
    assert labelled.any(), "the proposal is empty"
    assert not (labelled & ~mask).any(), "the proposal labels voxels outside the brain"

    # saved back on the FLAIR's exact native grid
    labels_layer = next(x for x in viewer.layers if x.name == f"{case.name} labels")
    labels_layer.data = np.asarray(proposal.data).astype(labels_layer.data.dtype)
    out = loader.save_labels_native(tmp_path / "native.nii.gz")
    assert out is not None and out.is_file(), loader.status.value
    img = sitk.ReadImage(str(out))
    assert img.GetSize() == flair.GetSize()
    np.testing.assert_allclose(img.GetSpacing(), flair.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(img.GetOrigin(), flair.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(img.GetDirection(), flair.GetDirection(), atol=1e-6)
    native = sitk.GetArrayFromImage(img) > 0
    clin = loader.last_clinical
    brain_native = clin.native_case().to_file_order(clin.mask_to_native(mask)) > 0
    assert native.any() and native.shape == brain_native.shape
    assert not (native & ~brain_native).any(), "native labels outside the native brain mask"

    # a corrected brain mask: erase one slice, Apply: the images are zero there
    z = int(np.argmax(mask.sum(axis=(1, 2))))
    corrected = mask.astype(np.uint8)
    corrected[z] = 0
    mask_layers[0].data = corrected
    _click(qtbot, loader.apply_mask_button)
    flair_layer = next(x for x in images if x.metadata.get("ssseg_modality") == "flair")
    assert not np.asarray(flair_layer.data)[z].any()
    assert np.asarray(case.images)[:, z].max() == 0  # the case itself (Propose reads it)
    assert np.asarray(flair_layer.data)[z + 1][mask[z + 1]].any()


def _run(gen):
    """Drive a worker generator to its return value (no GUI)."""
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def test_auto_leaves_a_skull_stripped_case_alone(case_folder):
    from napari_ssseg._napari.widgets.loader import PREPROCESSING, load_job

    auto = {"brain_extraction": "auto", "register": "auto", "resample": None}
    pre = next(iter(PREPROCESSING))
    case, layers, extra = _run(load_job(str(case_folder), {}, None, pre, auto))
    plain, plain_layers, _ = _run(load_job(str(case_folder), {}, None, pre, None))
    assert extra["clinical"] is None and extra["skull_stripped"] is True
    assert extra["notes"] == []
    assert case.shape == plain.shape and case.geometry.allclose(plain.geometry)
    np.testing.assert_array_equal(case.images, plain.images)
    assert [kw["name"] for _, kw, _ in layers] == [kw["name"] for _, kw, _ in plain_layers]


@pytest.mark.skipif(not RAW.is_dir(), reason="shared/data/real/TCGA-FG-6692-raw is absent")
def test_brain_extraction_off_offers_it():
    from napari_ssseg._napari.widgets.loader import PREPROCESSING, load_job

    opts = {"brain_extraction": "off", "register": "off", "resample": None}
    case, _, extra = _run(load_job(str(RAW), {}, None, next(iter(PREPROCESSING)), opts))
    assert extra["skull_stripped"] is False
    assert extra["clinical"] is None  # every option off: loaded as it is, as the CLI does
    assert any(
        "does not look skull-stripped" in n and "set 'Brain extraction'" in n
        for n in extra["notes"]
    ), extra["notes"]
