"""Loader panel driven as a user would: set paths, press Load, wait for the layers."""

from __future__ import annotations

import gzip
import shutil
import time

import numpy as np
import pytest
from qtpy.QtCore import Qt, QTimer

from napari_ssseg._napari.layers import case_of_layer
from napari_ssseg._napari.widgets.loader import PREPROCESSING, LoaderWidget

pytestmark = pytest.mark.gui


@pytest.fixture
def loader(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = LoaderWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Loader")
    return viewer, widget


def _click_load(qtbot, widget):
    qtbot.mouseClick(widget.load_button.native, Qt.MouseButton.LeftButton)


def _wait_done(qtbot, widget, timeout=20_000):
    qtbot.waitUntil(lambda: widget.task is not None and not widget.task.running, timeout=timeout)


def test_load_folder_adds_layers_with_geometry(loader, qtbot, case_folder, tiny_case):
    viewer, widget = loader
    widget.folder.value = case_folder
    assert "BraTS 2019-2021" in widget.detected.value
    assert "Tiny_001" in widget.detected.value
    _click_load(qtbot, widget)
    _wait_done(qtbot, widget)
    names = [layer.name for layer in viewer.layers]
    assert names == [
        "Tiny_001 T1",
        "Tiny_001 T1Gd",
        "Tiny_001 T2",
        "Tiny_001 FLAIR",
        "Tiny_001 labels",
    ]
    for layer in viewer.layers:
        np.testing.assert_allclose(layer.scale, tiny_case.scale, atol=1e-5)
        np.testing.assert_allclose(layer.translate, tiny_case.translate, atol=1e-4)
    labels = viewer.layers["Tiny_001 labels"]
    np.testing.assert_array_equal(labels.data, tiny_case.labels)
    np.testing.assert_allclose(
        viewer.layers["Tiny_001 T1Gd"].data, tiny_case.channel("t1ce"), rtol=1e-6
    )
    assert case_of_layer(labels) is widget.last_case
    assert widget.load_button.enabled and not widget.cancel_button.enabled
    assert widget.status.value.startswith("loaded Tiny_001")


def test_load_explicit_files_subset(loader, qtbot, case_folder):
    viewer, widget = loader
    widget.file_edits["flair"].value = case_folder / "Tiny_001_flair.nii.gz"
    widget.file_edits["t1ce"].value = case_folder / "Tiny_001_t1ce.nii.gz"
    assert "explicit" in widget.detected.value
    _click_load(qtbot, widget)
    _wait_done(qtbot, widget)
    assert [layer.name for layer in viewer.layers] == [
        "Tiny_001 T1Gd",
        "Tiny_001 FLAIR",
        "Tiny_001 labels",
    ]
    assert not viewer.layers["Tiny_001 labels"].data.any()  # no label file given


def test_corrupt_file_notifies_and_keeps_layers(loader, qtbot, case_folder, tmp_path, monkeypatch):
    viewer, widget = loader
    widget.folder.value = case_folder
    _click_load(qtbot, widget)
    _wait_done(qtbot, widget)
    before = [layer.name for layer in viewer.layers]
    assert len(before) == 5

    bad = tmp_path / "bad" / "Bad_001"
    shutil.copytree(case_folder, bad)
    for f in bad.iterdir():
        f.rename(f.with_name(f.name.replace("Tiny_001", "Bad_001")))
    t2 = bad / "Bad_001_t2.nii.gz"
    raw = gzip.decompress(t2.read_bytes())
    t2.write_bytes(gzip.compress(raw[: len(raw) // 3]))  # truncated volume

    shown = []
    monkeypatch.setattr(
        "napari_ssseg._napari.widgets._common.show_error", lambda msg: shown.append(msg)
    )
    widget.folder.value = bad
    _click_load(qtbot, widget)
    _wait_done(qtbot, widget)
    assert len(shown) == 1, shown
    assert "Bad_001_t2.nii.gz" in shown[0]
    assert [layer.name for layer in viewer.layers] == before
    assert widget.status.value.startswith("failed")
    assert widget.load_button.enabled


def test_nothing_chosen_notifies(loader, qtbot, monkeypatch):
    viewer, widget = loader
    shown = []
    monkeypatch.setattr(
        "napari_ssseg._napari.widgets._common.show_error", lambda msg: shown.append(msg)
    )
    _click_load(qtbot, widget)
    assert widget.task is None
    assert shown and "Nothing to load" in shown[0]
    assert len(viewer.layers) == 0


@pytest.mark.parametrize("choice", list(PREPROCESSING)[1:])
def test_load_with_preprocessing_zscores_brain(
    loader, qtbot, case_folder, tiny_case, choice, tmp_path
):
    viewer, widget = loader
    widget.folder.value = case_folder
    widget.preprocessing.value = choice
    _click_load(qtbot, widget)
    _wait_done(qtbot, widget, timeout=60_000)
    flair = viewer.layers["Tiny_001 FLAIR"]
    assert flair.data.shape == tiny_case.shape
    np.testing.assert_allclose(flair.translate, tiny_case.translate, atol=1e-4)
    brain = np.any(tiny_case.images != 0, axis=0)
    values = flair.data[brain]
    assert abs(float(values.mean())) < 0.2 and 0.7 < float(values.std()) < 1.3
    labels = viewer.layers["Tiny_001 labels"]
    assert labels.data.shape == tiny_case.shape
    # painting on a preprocessed (cropped + uncropped) case still saves on the source grid
    from napari_ssseg.io.readers import read_labels

    zyx = (2, 3, 4)  # outside the brain's bounding box: the crop must not shift it
    labels.data_setitem(tuple(np.array([v]) for v in zyx), 1)
    out = tmp_path / "painted.nii.gz"
    viewer.layers.selection = {labels}
    viewer.layers.save(str(out), selected=True, plugin="napari-ssseg")
    back = read_labels(out, widget.last_case)
    assert back[zyx] == 1
    np.testing.assert_array_equal(back, labels.data)


def test_cancel_stops_loading_and_adds_nothing(loader, qtbot, case_folder, monkeypatch):
    import time

    calls = []

    def slow_load_case(path=None, progress=None, **kwargs):
        for i in range(500):
            calls.append(i)
            progress(i / 500, f"reading slice {i}")
            time.sleep(0.01)
        raise AssertionError("should have been cancelled")

    monkeypatch.setattr("napari_ssseg.io.readers.load_case", slow_load_case)
    viewer, widget = loader
    widget.folder.value = case_folder
    _click_load(qtbot, widget)
    qtbot.waitUntil(lambda: widget.status.value.startswith("reading slice"), timeout=5000)
    assert not widget.load_button.enabled and widget.cancel_button.enabled
    qtbot.mouseClick(widget.cancel_button.native, Qt.MouseButton.LeftButton)
    _wait_done(qtbot, widget)
    assert widget.status.value == "cancelled"
    assert len(viewer.layers) == 0
    n = len(calls)
    qtbot.wait(200)
    assert len(calls) <= n + 1, "the load function kept running after the cancel"
    assert n < 500
    assert widget.load_button.enabled and not widget.cancel_button.enabled


def test_oblique_case_warns_and_keeps_geometry(loader, qtbot, tiny_phantom, tmp_path, monkeypatch):
    from napari_ssseg.io.writers import case_from_arrays, write_case

    angle = np.deg2rad(10.0)
    rot = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    )
    case = case_from_arrays(
        tiny_phantom.images,
        tiny_phantom.modalities,
        spacing_zyx=(2, 2, 2),
        direction=rot,
        labels=tiny_phantom.labels,
        name="Obl",
    )
    folder = write_case(case, tmp_path, naming="brats2021")
    warned = []
    monkeypatch.setattr(
        "napari.utils.notifications.notification_manager.receive_warning",
        lambda *args, **kwargs: warned.append(str(args[0])),
    )
    viewer, widget = loader
    widget.folder.value = folder
    _click_load(qtbot, widget)
    _wait_done(qtbot, widget)
    assert any("oblique" in w for w in warned), warned
    loaded = widget.last_case
    assert loaded.is_oblique
    np.testing.assert_allclose(loaded.geometry.direction_matrix, rot, atol=1e-5)
    assert len(viewer.layers) == 5


@pytest.mark.parametrize(
    ("naming", "expected"),
    [
        ("brats2021", "BraTS 2019-2021 naming"),
        ("brats2023", "BraTS 2023+ naming"),
        ("msd", "MSD Task01"),
    ],
)
def test_detected_naming_and_load(loader, qtbot, tiny_case, tmp_path, naming, expected):
    from napari_ssseg.io.writers import write_case

    viewer, widget = loader
    folder = write_case(tiny_case, tmp_path, naming=naming, name="N_001")
    widget.folder.value = folder
    assert widget.detected.value.startswith(expected), widget.detected.value
    _click_load(qtbot, widget)
    _wait_done(qtbot, widget)
    np.testing.assert_array_equal(viewer.layers["N_001 labels"].data, tiny_case.labels)


def test_detected_shows_problem_for_unrecognised_folder(loader, tmp_path):
    _, widget = loader
    (tmp_path / "notes.txt").write_text("x")
    widget.folder.value = tmp_path
    assert widget.detected.value.startswith("No images found")
    assert "BraTS 2021 names" in widget.detected.tooltip  # the full message


def test_event_loop_ticks_while_a_case_loads(loader, qtbot, tmp_path, monkeypatch):
    """A 20 ms QTimer never waits more than 250 ms while the worker reads a case, and the
    progress bar never reaches 100 % (napari's bar at 100 % can cost ~0.2 s of GUI time;
    it is closed when the load ends anyway)."""
    from napari.layers import Layer

    from napari_ssseg.core.phantom import make_phantom
    from napari_ssseg.io.writers import write_case

    case = make_phantom(shape=(96, 128, 128), spacing=(1.5, 1.5, 1.5), seed=1).to_case(name="t")
    folder = write_case(case, tmp_path, naming="brats2021")
    viewer, widget = loader
    widget.folder.value = folder
    # the worker phase ends when the GUI thread starts adding the layers (napari's own work)
    adding: list[float] = []
    create = Layer.create

    def timed_create(*args, **kwargs):
        adding.append(time.perf_counter())
        return create(*args, **kwargs)

    monkeypatch.setattr(Layer, "create", staticmethod(timed_create))
    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(20)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    qtbot.wait(100)
    timer.start()
    t0 = time.perf_counter()
    _click_load(qtbot, widget)
    qtbot.waitUntil(lambda: bool(adding), timeout=60_000)
    timer.stop()
    gaps = np.diff([t0, *[t for t in ticks if t < adding[0]], adding[0]])
    read = adding[0] - t0
    print(f"\nread {read:.2f} s, {gaps.size} ticks, longest gap {gaps.max() * 1000:.0f} ms")
    _wait_done(qtbot, widget, timeout=60_000)
    assert len(viewer.layers) == 5
    assert gaps.size >= 5
    assert gaps.max() < 0.25
    pbar = widget.task.pbar
    assert pbar.total == 1000 and 900 <= pbar.n < pbar.total
