"""Workspace panel driven as a user would: open, paint, autosave, next, restore, suggest,
evaluate, export; loads, suggestions and evaluations run in workers (waited for)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from qtpy.QtCore import QTimer

from napari_ssseg._napari.widgets.workspace import WorkspaceWidget, metrics_rows
from napari_ssseg.core.phantom import make_phantom
from napari_ssseg.core.provenance import HUMAN, PROVENANCE_KEY
from napari_ssseg.io.workspace import Workspace
from napari_ssseg.io.workspace_export import evaluate_workspace
from napari_ssseg.io.writers import write_case

pytestmark = pytest.mark.gui

TIMEOUT_MS = 15000


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _make_ws(tmp_path, shape, n=3):
    src = tmp_path / "src"
    for seed in range(n):
        write_case(make_phantom(shape, seed=seed).to_case(name=f"p{seed}"), src)
    Workspace.create(tmp_path / "ws", from_dir=src).close()
    return tmp_path / "ws"


@pytest.fixture
def ws_path(tmp_path):
    return _make_ws(tmp_path, (16, 24, 24))


def _panel(make_napari_viewer, path):
    viewer = make_napari_viewer()
    w = WorkspaceWidget(viewer)
    clock = FakeClock()
    w.autosaver._clock = clock
    w.clock = clock
    w.open_workspace(path)
    return w


@pytest.fixture
def panel(make_napari_viewer, ws_path):
    w = _panel(make_napari_viewer, ws_path)
    yield w
    w.close_workspace()


def wait(qtbot, panel):
    qtbot.waitUntil(lambda: not panel.running, timeout=TIMEOUT_MS)


def open_and_wait(qtbot, panel, case_id):
    panel.open_case(case_id)
    wait(qtbot, panel)
    assert panel.case_id == case_id


def test_open_paint_autosave_and_switch(panel, qtbot):
    assert panel.table.rowCount() == 3
    panel.table.selectRow(0)
    panel.open_btn.click()
    assert panel.running and not panel.next_btn.isEnabled()  # navigation off while loading
    wait(qtbot, panel)
    assert panel.case_id == "p0" and panel.next_btn.isEnabled()
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
    # edit again and switch case: saved before the switch starts
    data2 = data.copy()
    data2[0, 0, 0] = 1
    panel.labels_layer.data = data2
    panel.next_btn.click()
    assert len(panel.ws.versions("p0")) == 2
    assert panel.case_id == "p0"  # still showing p0 while p1 loads
    # an edit made while p1 loads is saved at the switch, not lost
    data3 = data2.copy()
    data3[1, 1, 1] = 3
    panel.labels_layer.data = data3
    wait(qtbot, panel)
    assert panel.case_id == "p1"
    assert len(panel.ws.versions("p0")) == 3
    np.testing.assert_array_equal(panel.ws.latest_labels("p0"), data3)
    assert len(panel.viewer.layers) == 5  # p0's layers replaced by p1's
    assert panel.ws.case("p0").status == "corrected"


def test_second_open_cancels_the_first(panel, qtbot):
    first = panel.open_case("p0")
    panel.open_case("p2")
    wait(qtbot, panel)
    assert not first.running
    assert panel.case_id == "p2" and len(panel.viewer.layers) == 5
    assert {lyr.name for lyr in panel.viewer.layers} == {lyr.name for lyr in panel._layers}


def test_failed_load_keeps_current_layers(panel, qtbot, monkeypatch):
    shown = []
    monkeypatch.setattr("napari_ssseg._napari.widgets._common.show_error", shown.append)
    open_and_wait(qtbot, panel, "p0")
    before = list(panel.viewer.layers)
    labels = panel.labels_layer
    # the images of p1 vanish from disk after the workspace was opened
    for path in panel.ws.case("p1").images.values():
        path.unlink()
    panel.open_case("p1")
    wait(qtbot, panel)
    assert panel.case_id == "p0"
    assert list(panel.viewer.layers) == before and panel.labels_layer is labels
    assert shown, "the failure is shown as a notification"
    assert "failed" in panel.status_label.text()
    assert panel.next_btn.isEnabled()


def test_cancel_keeps_current_case(panel, qtbot):
    open_and_wait(qtbot, panel, "p0")
    layers = list(panel.viewer.layers)
    panel.open_case("p1")
    panel.cancel_btn.click()
    wait(qtbot, panel)
    qtbot.wait(50)
    assert panel.case_id == "p0" and list(panel.viewer.layers) == layers


def test_event_loop_ticks_while_a_case_loads(make_napari_viewer, tmp_path, qtbot):
    shape = (128, 160, 160)
    path = _make_ws(tmp_path, shape, n=2)
    panel = _panel(make_napari_viewer, path)
    try:
        # a saved version with provenance, so that every reading step runs
        gt = panel.ws.ground_truth("p1")
        panel.ws.save_labels("p1", gt, source="human", provenance=(gt > 0).astype(np.uint8))
        ticks: list[float] = []
        timer = QTimer()
        timer.setInterval(20)
        timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
        timer.start()
        t0 = time.perf_counter()
        task = panel.open_case("p1")
        # the worker phase (reading images, labels, provenance, contrast limits) ends when its
        # result arrives; adding the layers afterwards is napari's own GUI-thread work
        done: list[float] = []
        task.worker.returned.connect(lambda *_: done.append(time.perf_counter()))
        qtbot.waitUntil(lambda: bool(done), timeout=TIMEOUT_MS)
        timer.stop()
        read_s = done[0] - t0
        gaps = np.diff([t0, *[t for t in ticks if t < done[0]], done[0]])
        print(f"read {read_s:.2f} s, {len(gaps)} ticks, longest gap {gaps.max() * 1000:.0f} ms")
        print("GAPS", np.round(gaps * 1000).astype(int).tolist())
        assert panel.last_load_seconds is not None and panel.last_load_seconds > 0.1
        assert len(gaps) >= 5
        assert gaps.max() < 0.25
        wait(qtbot, panel)
        assert panel.case_id == "p1" and panel.labels_layer.data.shape == shape
        np.testing.assert_array_equal(panel.labels_layer.data, gt)
        assert (panel.labels_layer.metadata[PROVENANCE_KEY] == (gt > 0)).all()
    finally:
        panel.close_workspace()


def test_event_loop_turns_between_the_layers_of_an_opened_case(panel, qtbot):
    """Between two layers of a case being shown the event loop takes its timers (and so
    repaints and input): the layers are not added back to back in one long freeze."""
    ticks: list[float] = []
    inserted: list[float] = []
    panel.viewer.layers.events.inserted.connect(lambda e: inserted.append(time.perf_counter()))
    timer = QTimer()
    timer.setInterval(1)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    try:
        open_and_wait(qtbot, panel, "p0")
    finally:
        timer.stop()
    assert len(inserted) == 5  # four modalities + labels
    for a, b in zip(inserted[:-1], inserted[1:]):
        assert any(a < t < b for t in ticks), "no event-loop turn between two layers"


def test_restore_and_verify(panel, qtbot):
    open_and_wait(qtbot, panel, "p1")
    first = panel.labels_layer.data.copy()
    first[2, 2, 2] = 3
    panel.labels_layer.data = first
    panel.save_btn.click()
    second = first.copy()
    second[3, 3, 3] = 1
    panel.labels_layer.data = second
    panel.save_now()
    assert panel.version_combo.count() == 2
    panel.restore_version(1)
    np.testing.assert_array_equal(panel.labels_layer.data, first)
    assert [v.source for v in panel.ws.versions("p1")] == ["human", "human", "restore"]
    assert not panel.autosaver.dirty
    panel.verify_btn.click()
    assert panel.ws.case("p1").status == "verified"
    assert panel.labels_layer.metadata[PROVENANCE_KEY][2, 2, 2] == HUMAN
    # reopening shows the restored labels and their provenance
    open_and_wait(qtbot, panel, "p0")
    open_and_wait(qtbot, panel, "p1")
    np.testing.assert_array_equal(panel.labels_layer.data, first)
    assert panel.labels_layer.metadata[PROVENANCE_KEY][2, 2, 2] == HUMAN


def test_suggest_uses_stored_scores(panel, qtbot):
    panel.ws.set_scores("p2", entropy=0.9)
    panel.ws.set_scores("p0", entropy=0.1)
    ranked = panel.suggest(n=3)
    assert [s.case_id for s in ranked] == ["p2", "p0", "p1"]
    assert panel._selected_id() == "p2"
    panel.diversity_box.setChecked(True)
    panel.suggest_btn.click()
    assert panel.running
    wait(qtbot, panel)
    assert panel.last_suggestion[0].case_id == "p2"
    assert panel.ws.features("p0") is not None and panel.ws.features("p2") is not None
    panel.diversity_box.setChecked(False)
    panel.random_box.setChecked(True)
    assert {s.case_id for s in panel.suggest(n=3)} == {"p0", "p1", "p2"}


def test_evaluation_table_matches_evaluate_workspace(panel, qtbot, tmp_path):
    gt0 = panel.ws.ground_truth("p0")
    panel.ws.save_labels("p0", gt0, source="human")
    wrong = panel.ws.ground_truth("p1").copy()
    wrong[wrong == 3] = 1  # no ET, TC and WT unchanged
    wrong[:, :, :8] = 0
    panel.ws.save_labels("p1", wrong, source="human")
    panel.evaluate_btn.click()
    assert panel.running and not panel.evaluate_btn.isEnabled()
    wait(qtbot, panel)
    ref = evaluate_workspace(panel.ws, None)
    assert set(panel.last_report["cases"]) == {"p0", "p1"} == set(ref["cases"])
    assert panel.last_report["skipped"] == ref["skipped"] == {"p2": "no label version"}
    header, rows = metrics_rows(ref)
    t = panel.metrics_table
    assert [t.horizontalHeaderItem(j).text() for j in range(t.columnCount())] == header
    assert t.rowCount() == len(rows) == 4
    assert [t.item(i, 0).text() for i in range(4)] == ["p0", "p1", "mean", "median"]
    for i, row in enumerate(rows):
        for j, v in enumerate(row[1:], start=1):
            text = t.item(i, j).text()
            if v is None:
                assert text == "-"
            else:
                assert float(text) == pytest.approx(v, rel=1e-3, abs=1e-9)
    j = header.index("WT Dice")
    assert float(t.item(0, j).text()) == pytest.approx(1.0)
    assert float(t.item(1, j).text()) < 0.99
    assert panel.last_report["summary"]["WT"]["dice"]["mean"] == pytest.approx(
        ref["summary"]["WT"]["dice"]["mean"]
    )
    # export to a typed folder
    out = tmp_path / "metrics"
    panel.export_edit.setText(str(out))
    panel.export_btn.click()
    wait(qtbot, panel)
    assert {p.name for p in out.iterdir()} == {"metrics.csv", "metrics.json", "dice_boxplot.png"}
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["summary"]["WT"]["dice"]["mean"] == pytest.approx(
        ref["summary"]["WT"]["dice"]["mean"]
    )
    assert (out / "dice_boxplot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_errors_as_messages(panel, qtbot, monkeypatch):
    shown = []
    monkeypatch.setattr("napari_ssseg._napari.widgets._common.show_error", shown.append)
    panel.table.clearSelection()
    panel.open_btn.click()
    assert shown and "Select a case" in shown[-1]
    panel.export_edit.setText("")
    panel.export_btn.click()
    assert "export folder" in shown[-1]
    panel.evaluate_btn.click()
    wait(qtbot, panel)
    assert panel.metrics_table.rowCount() == 2  # only mean and median rows, no case


# ---------------------------------------------------------------- nothing lost on close
def test_closing_the_viewer_saves_unsaved_edits_and_releases_the_lock(
    make_napari_viewer, ws_path, qtbot, recwarn
):
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-ssseg", "Workspace")
    w.open_workspace(ws_path)
    open_and_wait(qtbot, w, "p0")
    layer = w.labels_layer
    layer.brush_size = 2
    layer.paint((8, 12, 12), 2)  # a hand edit, not saved (autosave interval not reached)
    painted = np.asarray(layer.data) == 2
    assert painted.any() and w.autosaver.dirty
    assert (layer.metadata[PROVENANCE_KEY][painted] == HUMAN).all()  # recorded at once
    assert w.ws.versions("p0") == []
    viewer.close()
    # reopen the workspace as the next session would: the edit is there, no stale lock
    with Workspace.open(ws_path) as ws:
        assert len(ws.versions("p0")) == 1
        np.testing.assert_array_equal(ws.latest_labels("p0") == 2, painted)
        assert (ws.read_provenance("p0")[painted] == HUMAN).all()
    assert not any("stale" in str(r.message) for r in recwarn)


def test_deleting_the_labels_layer_saves_its_edits(panel, qtbot):
    open_and_wait(qtbot, panel, "p1")
    layer = panel.labels_layer
    layer.paint((8, 12, 12), 3)
    painted = np.asarray(layer.data) == 3
    panel.viewer.layers.remove(layer)
    np.testing.assert_array_equal(panel.ws.latest_labels("p1") == 3, painted)


def test_lesion_wise_columns_when_ticked(panel, qtbot):
    gt = panel.ws.ground_truth("p0")
    pred = gt.copy()
    # a spurious far-away lesion: whole-volume WT Dice stays high, lesion-wise drops
    pred[-3:, -3:, -3:] = 2
    panel.ws.save_labels("p0", pred, source="human")
    panel.evaluate_btn.click()
    wait(qtbot, panel)
    t = panel.metrics_table
    header = [t.horizontalHeaderItem(j).text() for j in range(t.columnCount())]
    assert "WT LW Dice" not in header
    panel.lesion_box.setChecked(True)
    panel.evaluate_btn.click()
    wait(qtbot, panel)
    header = [t.horizontalHeaderItem(j).text() for j in range(t.columnCount())]
    assert {"WT LW Dice", "TC LW HD95", "ET LW Dice"} <= set(header)
    ref = evaluate_workspace(panel.ws, None, cases=["p0"], lesion_wise=True)
    lw = ref["cases"]["p0"]["WT"]["lesion_wise"]["dice"]
    j = header.index("WT LW Dice")
    assert float(t.item(0, j).text()) == pytest.approx(lw, rel=1e-3)
    whole = float(t.item(0, header.index("WT Dice")).text())
    assert lw < whole  # the spurious lesion counts as a whole lesion scored 0
    assert t.item(t.rowCount() - 2, 0).text() == "mean"
    assert t.item(t.rowCount() - 2, j).text() != "-"
