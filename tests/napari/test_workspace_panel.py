"""Workspace panel driven as a user would: open, paint, autosave, next, restore, suggest."""

from __future__ import annotations

import numpy as np
import pytest

from napari_ssseg._napari.widgets.workspace import WorkspaceWidget
from napari_ssseg.core.phantom import make_phantom
from napari_ssseg.core.provenance import HUMAN, PROVENANCE_KEY
from napari_ssseg.io.workspace import Workspace
from napari_ssseg.io.writers import write_case

pytestmark = pytest.mark.gui


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def ws_path(tmp_path):
    src = tmp_path / "src"
    for seed in range(3):
        write_case(make_phantom((16, 24, 24), seed=seed).to_case(name=f"p{seed}"), src)
    Workspace.create(tmp_path / "ws", from_dir=src).close()
    return tmp_path / "ws"


@pytest.fixture
def panel(make_napari_viewer, ws_path):
    viewer = make_napari_viewer()
    w = WorkspaceWidget(viewer)
    clock = FakeClock()
    w.autosaver._clock = clock
    w.clock = clock
    w.open_workspace(ws_path)
    yield w
    w.close_workspace()


def test_open_paint_autosave_and_switch(panel, ws_path):
    assert panel.table.rowCount() == 3
    panel.open_case("p0")
    assert panel.labels_layer is not None and len(panel.viewer.layers) == 5
    data = panel.labels_layer.data.copy()
    data[4:6, 4:8, 4:8] = 2
    panel.labels_layer.data = data  # an edit: marks the case dirty
    assert panel.autosaver.dirty
    panel.clock.t = 10
    assert not panel.autosave_tick()  # interval (60 s) not elapsed
    panel.clock.t = 61
    assert panel.autosave_tick()
    v = panel.ws.versions("p0")
    assert len(v) == 1 and v[0].source == "human"
    np.testing.assert_array_equal(panel.ws.latest_labels("p0"), data)
    prov = panel.ws.read_provenance("p0")
    assert (prov[4:6, 4:8, 4:8] == HUMAN).all() and prov.sum() == HUMAN * 2 * 4 * 4
    # edit again and switch case: saved on switch
    data2 = data.copy()
    data2[0, 0, 0] = 1
    panel.labels_layer.data = data2
    panel.next_case()
    assert panel.case_id == "p1"
    assert len(panel.ws.versions("p0")) == 2
    assert len(panel.viewer.layers) == 5  # p0's layers replaced by p1's
    assert panel.ws.case("p0").status == "corrected"


def test_restore_and_verify(panel):
    panel.open_case("p1")
    first = panel.labels_layer.data.copy()
    first[2, 2, 2] = 3
    panel.labels_layer.data = first
    panel.save_now()
    second = first.copy()
    second[3, 3, 3] = 1
    panel.labels_layer.data = second
    panel.save_now()
    assert panel.version_combo.count() == 2
    panel.restore_version(1)
    np.testing.assert_array_equal(panel.labels_layer.data, first)
    assert [v.source for v in panel.ws.versions("p1")] == ["human", "human", "restore"]
    assert not panel.autosaver.dirty
    panel.mark_verified()
    assert panel.ws.case("p1").status == "verified"
    assert panel.labels_layer.metadata[PROVENANCE_KEY][2, 2, 2] == HUMAN


def test_suggest_uses_stored_scores(panel):
    panel.ws.set_scores("p2", entropy=0.9)
    panel.ws.set_scores("p0", entropy=0.1)
    ranked = panel.suggest(n=3)
    assert [s.case_id for s in ranked] == ["p2", "p0", "p1"]
    assert panel._selected_id() == "p2"
    panel.random_box.setChecked(True)
    assert {s.case_id for s in panel.suggest(n=3)} == {"p0", "p1", "p2"}


def test_evaluate_and_errors_as_messages(panel, monkeypatch):
    shown = []
    monkeypatch.setattr("napari_ssseg._napari.widgets._common.show_error", shown.append)
    panel.open_case("p0")
    panel.ws.save_labels("p0", panel.ws.ground_truth("p0"), source="human")
    rep = panel.evaluate()
    assert rep["cases"]["p0"]["WT"]["dice"] == pytest.approx(1.0)
    assert "WT Dice 1.000" in panel.status_label.text()
    panel.table.clearSelection()
    panel._guard(panel.open_selected)
    assert shown and "Select a case" in shown[-1]
