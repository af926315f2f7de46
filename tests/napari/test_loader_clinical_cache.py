"""Loader + clinical cache: a second Load reads the study's preparation from the cache, and the
brain mask the user corrected and applied is the one the next Load shows (issue 13).

Tiny synthetic two-grid study (tests/clinical_study.py); deepbet is replaced by a counting
stand-in (it is tested in tests/ml/test_brain_extraction.py and, on the real study, in
tests/napari/test_loader_clinical.py).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from clinical_study import fake_brain_extraction, make_study
from qtpy.QtCore import Qt

pytestmark = pytest.mark.gui


def _click(qtbot, button):
    qtbot.mouseClick(button.native, Qt.MouseButton.LeftButton)


def _load(qtbot, loader):
    _click(qtbot, loader.load_button)
    qtbot.waitUntil(lambda: loader.task is not None and not loader.task.running, timeout=60_000)
    assert loader.status.value.startswith("loaded"), loader.status.value


def test_second_load_uses_the_cache_and_keeps_the_corrected_mask(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    monkeypatch.setenv("NAPARI_SSSEG_CACHE", str(tmp_path / "cache"))
    calls = fake_brain_extraction(monkeypatch)
    study = make_study(tmp_path / "study")
    viewer = make_napari_viewer()
    _, loader = viewer.window.add_plugin_dock_widget("napari-ssseg", "Loader")
    for m, f in study.items():
        loader.file_edits[m].value = f
    loader.brain_extraction.value = "on"
    loader.resample.value = "2"
    _load(qtbot, loader)
    assert len(calls) == 1 and "from the cache" not in loader.status.value
    layer = loader.brain_mask_layer()
    corrected = np.asarray(layer.data) > 0
    assert corrected.any()
    corrected[:, :, : corrected.shape[2] // 2] = False  # the user erases half of it
    layer.data = corrected.astype(np.uint8)
    _click(qtbot, loader.apply_mask_button)
    assert "kept for the next load" in loader.status.value, loader.status.value

    _load(qtbot, loader)
    assert len(calls) == 1  # nothing recomputed
    assert "from the cache" in loader.status.value, loader.status.value
    np.testing.assert_array_equal(np.asarray(loader.brain_mask_layer().data) > 0, corrected)
    case = loader.last_case
    assert case.images[:, ~corrected].max() == 0
    assert case.images[:, corrected].max() > 0


def test_a_corrected_unapplied_mask_survives_reload_and_closing_the_viewer(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    from napari.utils.notifications import notification_manager

    monkeypatch.setenv("NAPARI_SSSEG_CACHE", str(tmp_path / "cache"))
    messages: list[str] = []
    notification_manager.notification_ready.connect(lambda n: messages.append(str(n.message)))
    fake_brain_extraction(monkeypatch)
    study = make_study(tmp_path / "study")

    def open_loader():
        viewer = make_napari_viewer()
        _, loader = viewer.window.add_plugin_dock_widget("napari-ssseg", "Loader")
        for m, f in study.items():
            loader.file_edits[m].value = f
        loader.brain_extraction.value = "on"
        loader.resample.value = "2"
        return viewer, loader

    viewer, loader = open_loader()
    _load(qtbot, loader)
    first = np.asarray(loader.brain_mask_layer().data) > 0
    # 1. corrected, not applied, then Load again: the correction is what the reload shows
    corrected = first.copy()
    corrected[:, :, : corrected.shape[2] // 2] = False
    loader.brain_mask_layer().data = corrected.astype(np.uint8)
    _load(qtbot, loader)
    np.testing.assert_array_equal(np.asarray(loader.brain_mask_layer().data) > 0, corrected)
    assert any("not applied" in m for m in messages), messages
    # 2. corrected again, not applied, and the viewer is closed: the next session has it
    again = corrected.copy()
    again[: again.shape[0] // 2] = False
    loader.brain_mask_layer().data = again.astype(np.uint8)
    messages.clear()
    viewer.close()
    assert any("not applied" in m and "cache" in m for m in messages), messages
    viewer, loader = open_loader()
    _load(qtbot, loader)
    assert "from the cache" in loader.status.value, loader.status.value
    np.testing.assert_array_equal(np.asarray(loader.brain_mask_layer().data) > 0, again)


REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real"
RAW = REAL / "TCGA-FG-6692-raw"


@pytest.mark.slow  # registration + deepbet on the real study, then the cached Load
@pytest.mark.skipif(not RAW.is_dir(), reason="shared/data/real/TCGA-FG-6692-raw is absent")
def test_real_study_second_load_takes_seconds(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    pytest.importorskip("deepbet", reason="deepbet (the clinical extra) is not installed")
    monkeypatch.setenv("NAPARI_SSSEG_CACHE", str(tmp_path / "cache"))
    viewer = make_napari_viewer()
    _, loader = viewer.window.add_plugin_dock_widget("napari-ssseg", "Loader")
    loader.folder.value = RAW
    assert loader.registration.value == "auto" and loader.brain_extraction.value == "auto"
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        _load(qtbot, loader)
        times.append(time.perf_counter() - t0)
    print(f"TCGA-FG-6692-raw Load (Register auto): cold {times[0]:.1f} s, warm {times[1]:.1f} s")
    assert "from the cache" in loader.status.value
    assert set(loader.last_clinical.report["registration"]) == {"t1", "t1ce", "t2"}
    assert times[1] < times[0] / 2
