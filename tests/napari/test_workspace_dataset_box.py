"""Create a workspace and export a dataset from the Workspace panel, as a user would."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_ssseg.core.phantom import make_phantom
from napari_ssseg.io.workspace import Workspace
from napari_ssseg.io.writers import write_case

pytestmark = pytest.mark.gui

TIMEOUT_MS = 30000


def _panel(make_napari_viewer):
    viewer = make_napari_viewer()
    _, panel = viewer.window.add_plugin_dock_widget("napari-ssseg", "Workspace")
    return viewer, panel


def _wait(qtbot, panel, done=None):
    qtbot.waitUntil(lambda: not panel.running, timeout=TIMEOUT_MS)
    if done is not None:  # the result reaches the GUI thread after the worker stops
        qtbot.waitUntil(done, timeout=TIMEOUT_MS)


def test_create_from_labelled_folder_then_export_nnunet(make_napari_viewer, qtbot, tmp_path):
    src = tmp_path / "cases"
    for seed in range(2):
        write_case(make_phantom((16, 24, 24), seed=seed).to_case(name=f"p{seed}"), src)
    viewer, panel = _panel(make_napari_viewer)
    box = panel.dataset_box
    assert not box.export_btn.isEnabled()  # nothing open yet
    panel.path_edit.setText(str(tmp_path / "ws"))
    box.source_edit.setText(str(src))
    box.labels_combo.setCurrentIndex(1)  # verified labels
    box.create_btn.click()
    _wait(qtbot, panel, lambda: panel.ws is not None or "failed" in panel.status_label.text())
    assert panel.ws is not None, panel.status_label.text()
    assert panel.ws.root == (tmp_path / "ws").resolve()
    assert panel.table.rowCount() == 2
    assert {r.status for r in panel.ws.cases} == {"verified"}
    assert all(r.n_versions == 1 for r in panel.ws.cases)
    assert "2 case(s)" in panel.status_label.text()
    # the panel holds the lock (reopened on the GUI thread), so a second writer is refused
    with pytest.raises(Exception, match="lock|in use|open"):
        Workspace.open(tmp_path / "ws")
    # export: nnU-Net layout of the verified cases
    box.format_combo.setCurrentText("nnunet")
    box.out_edit.setText(str(tmp_path / "Dataset001_X"))
    assert box.export_btn.isEnabled()
    box.export_btn.click()
    _wait(qtbot, panel, lambda: "export" in panel.status_label.text())
    meta = json.loads((tmp_path / "Dataset001_X" / "dataset.json").read_text())
    assert meta["numTraining"] == 2
    labels = sorted((tmp_path / "Dataset001_X" / "labelsTr").glob("*.nii.gz"))
    assert len(labels) == 2
    assert "exported" in panel.status_label.text()
    # exporting again into the same folder is refused, nothing overwritten
    before = labels[0].stat().st_mtime_ns
    box.export_btn.click()
    _wait(qtbot, panel, lambda: "failed" in panel.status_label.text())
    assert "failed" in panel.status_label.text()
    assert labels[0].stat().st_mtime_ns == before


def test_create_errors_are_messages(make_napari_viewer, qtbot, tmp_path):
    viewer, panel = _panel(make_napari_viewer)
    box = panel.dataset_box
    box.create_btn.click()  # no workspace folder typed
    assert "folder" in panel.status_label.text()
    panel.path_edit.setText(str(tmp_path / "ws"))
    box.source_edit.setText(str(tmp_path / "missing"))
    box.create_btn.click()
    assert "is not a folder" in panel.status_label.text()
    assert panel.ws is None
    # an empty workspace (no cases folder) is fine
    box.source_edit.setText("")
    box.create_btn.click()
    _wait(qtbot, panel, lambda: panel.ws is not None or "failed" in panel.status_label.text())
    assert panel.ws is not None, panel.status_label.text()
    assert panel.table.rowCount() == 0
    assert np.isfinite(panel.ws.summary()["n_cases"])
