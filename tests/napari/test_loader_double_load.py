"""Loading a case that is already open (Loader panel or File > Open) reuses its layers.

Also: a case without some modalities warns at load, and the Loader adds its layers one per
event-loop turn (the GUI is not frozen for the whole layer set).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from qtpy.QtCore import Qt, QTimer

from napari_ssseg._napari.layers import handle_of_layer

pytestmark = pytest.mark.gui

_REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real"


@pytest.fixture
def loader(make_napari_viewer):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-ssseg", "Loader")
    return viewer, widget


def _load(qtbot, widget, folder, timeout=60_000):
    widget.folder.value = folder
    qtbot.mouseClick(widget.load_button.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: widget.task is not None and not widget.task.running, timeout=timeout)


def _labels(viewer):
    return [x for x in viewer.layers if x.metadata.get("ssseg_role") == "labels"]


def test_loading_the_same_case_twice_reuses_layers_and_keeps_edits(loader, qtbot, case_folder):
    viewer, widget = loader
    _load(qtbot, widget, case_folder)
    first = list(viewer.layers)
    assert len(first) == 5
    labels = _labels(viewer)[0]
    # a hand edit, recorded in the layer's undo history as a brush stroke would be
    labels.selected_label = 3
    labels.brush_size = 3
    labels.paint((16, 20, 20), 3)
    edited = np.array(labels.data)
    assert (edited == 3).sum() > 0
    _load(qtbot, widget, case_folder)
    assert list(viewer.layers) == first  # the same layer objects, nothing stacked
    assert np.array_equal(labels.data, edited)  # the edit is still there
    assert widget.last_report.reused and widget.last_report.kept_labels == labels.name
    assert "your edited labels kept" in widget.status.value
    labels.undo()  # and its undo history still works
    assert not np.array_equal(labels.data, edited)


def test_reload_with_preprocessing_updates_images_and_readds_deleted(loader, qtbot, case_folder):
    viewer, widget = loader
    _load(qtbot, widget, case_folder)
    t1 = next(x for x in viewer.layers if x.metadata.get("ssseg_modality") == "t1")
    flair = next(x for x in viewer.layers if x.metadata.get("ssseg_modality") == "flair")
    raw_mean = float(np.mean(flair.data[flair.data != 0]))
    viewer.layers.remove(t1)
    widget.preprocessing.value = "brain mask + clip + z-score"
    _load(qtbot, widget, case_folder)
    assert len(viewer.layers) == 5
    assert flair in viewer.layers
    handle = handle_of_layer(flair)
    assert handle.preprocessed is not None
    assert all(handle_of_layer(x) is handle for x in viewer.layers)  # one shared handle
    brain = handle.preprocessed.uncrop(handle.preprocessed.mask.astype(np.uint8)).astype(bool)
    assert abs(float(np.mean(np.asarray(flair.data)[brain]))) < 0.2  # z-scored now
    assert raw_mean > 1.0
    assert sorted(x.metadata.get("ssseg_modality") or "" for x in viewer.layers) == [
        "",
        "flair",
        "t1",
        "t1ce",
        "t2",
    ]


def test_file_open_twice_does_not_stack(make_napari_viewer, case_folder):
    viewer = make_napari_viewer()
    viewer.open(str(case_folder), plugin="napari-ssseg")
    assert len(viewer.layers) == 5
    labels = _labels(viewer)[0]
    labels.data[10:12, 10:12, 10:12] = 1
    edited = np.array(labels.data)
    viewer.open(str(case_folder), plugin="napari-ssseg")
    assert len(viewer.layers) == 5
    assert _labels(viewer) == [labels]
    assert np.array_equal(labels.data, edited)


def test_reopening_one_modality_file_reuses_its_layer(make_napari_viewer, case_folder):
    viewer = make_napari_viewer()
    viewer.open(str(case_folder), plugin="napari-ssseg")
    labels = _labels(viewer)[0]
    loaded = np.array(labels.data)
    assert loaded.any()  # the case's label file
    flair_file = next(case_folder.glob("*_flair.nii.gz"))
    assert viewer.open(str(flair_file), plugin="napari-ssseg") == []
    assert len(viewer.layers) == 5
    assert np.array_equal(labels.data, loaded)  # a file without labels never clears them
    assert handle_of_layer(labels).case.modalities == ("t1", "t1ce", "t2", "flair")


def test_missing_modalities_warn_at_load(loader, qtbot, tmp_path, tiny_phantom, monkeypatch):
    from napari_ssseg.io.writers import case_from_arrays, write_case

    shown: list[str] = []
    monkeypatch.setattr(
        "napari_ssseg._napari.widgets._common.show_warning", lambda msg: shown.append(str(msg))
    )
    keep = [tiny_phantom.modalities.index(m) for m in ("t1ce", "flair")]
    case = case_from_arrays(
        tiny_phantom.images[keep], ("t1ce", "flair"), spacing_zyx=(2, 2, 2), name="half"
    )
    folder = write_case(case, tmp_path, naming="brats2021", name="Half_001")
    viewer, widget = loader
    _load(qtbot, widget, folder)
    assert len(viewer.layers) == 3
    notes = [m for m in shown if "has no" in m]
    assert len(notes) == 1
    assert "T1, T2" in notes[0] and "T1Gd" not in notes[0].split("(it has")[0]
    assert "whole tumour" in notes[0] and "zeros" in notes[0]


def test_missing_modalities_warn_on_file_open(make_napari_viewer, monkeypatch):
    case_dir = _REAL / "brats_2013_pat0001_1"
    if not case_dir.is_dir():
        pytest.skip(f"real MRI folder {case_dir} not present")
    shown: list[str] = []
    monkeypatch.setattr(
        "napari.utils.notifications.show_warning", lambda msg: shown.append(str(msg))
    )
    viewer = make_napari_viewer()
    viewer.open(str(case_dir), plugin="napari-ssseg")
    notes = [m for m in shown if "has no" in m]
    assert len(notes) == 1 and "T1, T2" in notes[0]
    assert "whole tumour" in notes[0]
    assert "enhancing" not in notes[0]  # T1Gd is there


def test_layers_are_added_one_per_event_loop_turn(loader, qtbot, case_folder):
    """Between two layers the event loop runs (a 1 ms timer ticks): the GUI is never
    blocked for the whole layer set."""
    viewer, widget = loader
    ticks: list[float] = []
    inserted: list[float] = []
    names: list[str] = []
    viewer.layers.events.inserted.connect(lambda e: inserted.append(time.perf_counter()))
    viewer.layers.events.inserted.connect(lambda e: names.append(e.value.name))
    timer = QTimer()
    timer.setInterval(1)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    try:
        _load(qtbot, widget, case_folder)
    finally:
        timer.stop()
    assert len(inserted) == 5
    for a, b in zip(inserted[:-1], inserted[1:]):
        assert any(a < t < b for t in ticks), "no event-loop turn between two layers"
    print(f"\nGUI time per layer (ms): {[round(g * 1000) for g in widget.add_gaps]}")
    assert len(widget.add_gaps) == 6  # 5 layers + the step that finds nothing left
    # what the user sees comes first; the final order is T1, T1Gd, T2, FLAIR, labels
    assert names[:2] == ["Tiny_001 FLAIR", "Tiny_001 labels"]
    assert [x.name.split()[-1] for x in viewer.layers] == ["T1", "T1Gd", "T2", "FLAIR", "labels"]
    assert viewer.layers.selection.active is viewer.layers["Tiny_001 labels"]


def test_closing_the_viewer_while_layers_are_added_stops_the_worker(
    make_napari_viewer, qtbot, case_folder
):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-ssseg", "Loader")
    inserted: list[str] = []
    viewer.layers.events.inserted.connect(lambda e: inserted.append(e.value.name))
    widget.folder.value = case_folder
    task = widget.load()
    qtbot.waitUntil(lambda: bool(inserted), timeout=60_000)
    viewer.close()
    t0 = time.perf_counter()
    qtbot.waitUntil(lambda: not task.running, timeout=10_000)  # not the 120 s hand-over limit
    assert task.stop_event.is_set()
    print(f"\nworker ended {time.perf_counter() - t0:.2f} s after the close")
