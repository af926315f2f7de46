"""Scribble panel driven as a user would: new scribble layer, paint, preview, accept, undo, save."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_ssseg._napari.layers import case_to_layer_data
from napari_ssseg._napari.widgets.scribble import ScribbleWidget
from napari_ssseg.core.preprocess import brain_mask
from napari_ssseg.core.provenance import PROVENANCE_KEY, SCRIBBLE
from napari_ssseg.core.scribbles import (
    BACKGROUND,
    TUMOUR,
    ScribblePropagator,
    simulate_scribbles,
)

pytestmark = pytest.mark.gui


@pytest.fixture
def errors(monkeypatch):
    shown: list[str] = []
    monkeypatch.setattr(
        "napari_ssseg._napari.widgets._common.show_error", lambda m: shown.append(m)
    )
    return shown


@pytest.fixture
def panel(make_napari_viewer, tiny_case):
    viewer = make_napari_viewer()
    from napari.layers import Layer

    empty = np.zeros(tiny_case.shape, np.uint8)
    for data, kwargs, layer_type in case_to_layer_data(tiny_case, labels=empty):
        viewer.add_layer(Layer.create(data, kwargs, layer_type))
    widget = ScribbleWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Scribble")
    return viewer, widget


def _click(qtbot, button):
    qtbot.mouseClick(button.native, Qt.MouseButton.LeftButton)


def _strokes(case):
    return simulate_scribbles(case.labels, brain_mask(case.images), n_slices=3, keep=0.5)


def test_propagate_without_scribble_layer_reports_an_error(panel, qtbot, errors):
    _, widget = panel
    _click(qtbot, widget.propagate_button)
    assert errors and "scribble layer" in errors[0]


def test_scribble_preview_accept_undo_save(panel, qtbot, errors, tmp_path, tiny_case):
    viewer, widget = panel
    _click(qtbot, widget.new_button)
    layer = widget.scribble_layer
    assert layer is not None and layer.data.shape == tiny_case.shape
    assert layer.brush_size == 2 and layer.selected_label == 2
    np.testing.assert_allclose(layer.scale, tiny_case.scale)
    strokes = _strokes(tiny_case)
    layer.data = strokes
    _click(qtbot, widget.propagate_button)
    qtbot.waitUntil(lambda: widget.result is not None, timeout=60_000)
    assert not errors
    preview = viewer.layers[f"{tiny_case.name} scribble preview"]
    expected = ScribblePropagator(tiny_case.images, tiny_case.modalities, None, tiny_case.scale)
    np.testing.assert_array_equal(preview.data, expected.update(strokes).labels)
    assert "%" in widget.effort.value
    # accept: one undoable step with provenance
    target = viewer.layers[f"{tiny_case.name} labels"]
    changed = widget.accept()
    assert changed is not None and changed.any()
    np.testing.assert_array_equal(target.data, preview.data)
    assert (target.metadata[PROVENANCE_KEY][changed] == SCRIBBLE).all()
    target.undo()
    assert not target.data.any()
    # save: case values + 255 for background strokes, case geometry
    out = tmp_path / "scr.nii.gz"
    widget.save_path.value = out
    _click(qtbot, widget.save_button)
    from napari_ssseg.io.readers import read_image

    arr, _ = read_image(out)
    arr = tiny_case.orientation.to_canonical(arr)
    assert (arr[strokes == BACKGROUND] == 255).all()
    assert set(np.unique(arr)) <= {0, 1, 2, 4, 255}
    assert (arr > 0).sum() == (strokes > 0).sum()


def test_live_preview_runs_after_painting(panel, qtbot, errors, tiny_case):
    _, widget = panel
    assert widget.live.value
    _click(qtbot, widget.new_button)
    layer = widget.scribble_layer
    strokes = _strokes(tiny_case)
    layer.data = strokes
    z, y, x = np.argwhere(strokes == 2)[0]
    layer.paint((z, y, x), 2)  # a user stroke: the paint event starts the debounce timer
    qtbot.waitUntil(lambda: widget.result is not None, timeout=60_000)
    assert not errors
    assert widget.result.labels[z, y, x] == 2


# ---------------------------------------------------------------- region mode
def _region(strokes):
    out = strokes.copy()
    out[np.isin(strokes, (1, 2, 3))] = TUMOUR
    return out


def test_region_mode_palette_and_keys(panel, qtbot, errors):
    _, widget = panel
    _click(qtbot, widget.new_button)
    layer = widget.scribble_layer
    assert layer.selected_label == 2
    widget.region.native.click()  # the user ticks "region mode"
    assert widget.region.value and layer.selected_label == TUMOUR
    from napari.utils.key_bindings import KeyBinding

    def press(key):
        layer.keymap[KeyBinding.from_str(key)](layer)
        return layer.selected_label

    assert [press(k) for k in "12345"] == [TUMOUR, TUMOUR, TUMOUR, BACKGROUND, TUMOUR]
    widget.region.native.click()  # back to class mode: shortcuts 1-4 select the classes
    assert not widget.region.value and layer.selected_label == 2
    assert [press(k) for k in "12345"] == [1, 2, 3, BACKGROUND, TUMOUR]
    assert not errors


def test_region_strokes_propagate_as_whole_tumour_and_save(
    panel, qtbot, errors, tmp_path, tiny_case
):
    viewer, widget = panel
    widget.live.value = False
    widget.region.native.click()
    _click(qtbot, widget.new_button)
    layer = widget.scribble_layer
    assert layer.selected_label == TUMOUR
    strokes = _region(_strokes(tiny_case))
    layer.data = strokes
    _click(qtbot, widget.propagate_button)
    qtbot.waitUntil(lambda: widget.result is not None, timeout=60_000)
    assert not errors
    labels = viewer.layers[f"{tiny_case.name} scribble preview"].data
    assert set(np.unique(labels)) == {0, 2}  # no class strokes, no model: the tumour is ED
    expected = ScribblePropagator(tiny_case.images, tiny_case.modalities, None, tiny_case.scale)
    np.testing.assert_array_equal(labels, expected.update(strokes).labels)
    out = tmp_path / "region.nii.gz"
    widget.save_path.value = out
    _click(qtbot, widget.save_button)
    from napari_ssseg.io.readers import read_image

    arr = tiny_case.orientation.to_canonical(read_image(out)[0])
    assert (arr[strokes == TUMOUR] == 254).all() and (arr[strokes == BACKGROUND] == 255).all()


# ---------------------------------------------------------------- model-assisted
def _probs(labels, noise=0.3, seed=0):
    rng = np.random.default_rng(seed)
    onehot = np.stack([labels == k for k in range(4)]).astype(np.float32)
    p = onehot + noise * rng.random(onehot.shape, dtype=np.float32)
    return p / p.sum(axis=0, keepdims=True)


def test_model_probabilities_from_a_docked_propose_panel(panel, qtbot, errors, tiny_case):
    viewer, widget = panel
    from napari_ssseg._napari.widgets.propose import ProposeWidget

    propose = ProposeWidget(viewer)
    viewer.window.add_dock_widget(propose, name="Propose")
    assert widget.model_probabilities() is None  # no proposal yet
    probs = _probs(tiny_case.labels)
    propose.last_result = {"probabilities": probs}
    propose._running_case = tiny_case
    assert widget.model_probabilities() is probs
    widget.live.value = False
    widget.use_model.native.click()
    widget.show_weights.native.click()
    _click(qtbot, widget.new_button)
    strokes = _strokes(tiny_case)
    widget.scribble_layer.data = strokes
    _click(qtbot, widget.propagate_button)
    qtbot.waitUntil(lambda: widget.result is not None, timeout=60_000)
    assert not errors
    assert widget.result.info["mode"] == "model-assisted"
    expected = ScribblePropagator(tiny_case.images, tiny_case.modalities, None, tiny_case.scale)
    exp = expected.update(strokes, probs)
    np.testing.assert_array_equal(widget.result.labels, exp.labels)
    weights = viewer.layers[f"{tiny_case.name} scribble 1 - weight"]
    np.testing.assert_allclose(weights.data, 1 - exp.weights)
    assert (weights.data[exp.ignore] == 1).all() and exp.ignore.any()
    assert weights.opacity < 1
    assert viewer.layers.selection.active is widget.scribble_layer
    widget.show_weights.native.click()  # hide the weight map
    assert f"{tiny_case.name} scribble 1 - weight" not in viewer.layers


def test_model_runs_once_in_the_worker_without_a_proposal(
    panel, qtbot, errors, tiny_case, monkeypatch
):
    _, widget = panel
    calls = []

    def fake_predict(case, checkpoint, *, device="auto", **kw):
        calls.append((case, checkpoint, device))
        return {"probabilities": _probs(case.labels, 0.2, seed=1)}

    monkeypatch.setattr("napari_ssseg.ml.inference.predict_case", fake_predict)
    widget.live.value = False
    widget.use_model.value = True
    _click(qtbot, widget.new_button)
    widget.scribble_layer.data = _strokes(tiny_case)
    for _ in range(2):
        widget.result = None
        _click(qtbot, widget.propagate_button)
        qtbot.waitUntil(lambda: widget.result is not None, timeout=60_000)
        qtbot.waitUntil(lambda: not widget.task.running, timeout=10_000)
    assert not errors
    assert widget.result.info["mode"] == "model-assisted"
    assert calls == [(tiny_case, None, "cpu")]  # cached after the first run
    assert widget.model_probabilities() is not None


def test_case_box_shows_the_case_name(panel, tiny_case):
    _, widget = panel
    assert widget.case_box.value is tiny_case
    assert widget.case_box.native.currentText() == tiny_case.name
    assert widget.native.sizeHint().width() < 1000  # not widened by a long repr


# ---------------------------------------------------------------- nothing lost on accept
def test_panel_opens_from_the_plugins_menu(make_napari_viewer):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-ssseg", "Scribble")
    assert isinstance(widget, ScribbleWidget)
    viewer.add_labels(np.zeros((4, 4, 4), np.uint8), name="x")
    assert [lyr.name for lyr in widget.viewer.layers] == ["x"]  # napari injected the viewer


def test_accept_merges_and_keeps_hand_paint_then_undo_restores_provenance(
    panel, qtbot, errors, tiny_case
):
    from napari_ssseg._napari.provenance import track
    from napari_ssseg.core.provenance import HUMAN

    viewer, widget = panel
    target = viewer.layers[f"{tiny_case.name} labels"]
    track(target)
    # the user paints by hand first, somewhere the propagation will label too
    strokes = _strokes(tiny_case)
    z, y, x = np.argwhere(strokes == 2)[0]
    target.brush_size = 3
    target.paint((z, y, x), 1)
    hand = target.data == 1
    n_hand = int(hand.sum())
    assert n_hand > 0 and (target.metadata[PROVENANCE_KEY][hand] == HUMAN).all()
    # and a label elsewhere that the preview leaves empty (merge must keep it)
    far = (0, 0, 0)
    target.paint(far, 3)
    assert target.data[far] == 3
    _click(qtbot, widget.new_button)
    widget.scribble_layer.data = strokes
    _click(qtbot, widget.propagate_button)
    qtbot.waitUntil(lambda: widget.result is not None, timeout=60_000)
    assert widget.result.labels[hand].any()  # the preview covers the hand-painted voxels
    assert widget.result.labels[far] == 0
    _click(qtbot, widget.accept_button)
    assert not errors
    assert (target.data[hand] == 1).all(), "hand-painted voxels were overwritten"
    assert target.data[far] == 3, "merge deleted a label the preview does not touch"
    prov = target.metadata[PROVENANCE_KEY]
    assert (prov[hand] == HUMAN).all()
    scribbled = prov == SCRIBBLE
    assert scribbled.any() and (target.data[scribbled] > 0).all()
    # one undo step reverts the accept and its provenance; the hand paint stays
    target.undo()
    assert not (target.metadata[PROVENANCE_KEY] == SCRIBBLE).any()
    assert (target.data[hand] == 1).all() and target.data[far] == 3
    target.redo()
    assert (target.metadata[PROVENANCE_KEY] == SCRIBBLE).sum() == scribbled.sum()
    # replace mode with hand paint unlocked: the preview wins everywhere
    target.undo()
    widget.accept_mode.value = "replace"
    widget.keep_human.value = False
    widget.accept()
    np.testing.assert_array_equal(target.data, widget.result.labels)


def test_superpixels_are_prepared_when_a_case_loads(
    make_napari_viewer, qtbot, errors, tiny_case, monkeypatch
):
    """The first preview must not wait for the superpixels: they are built in the background
    as soon as a case is loaded, with an elapsed-time status; a stroke drawn meanwhile is
    propagated once they are ready, with the propagator built then (not a second one)."""
    from napari.layers import Layer

    import napari_ssseg.core.scribbles as core_scribbles
    from napari_ssseg._napari.widgets import scribble as scribble_mod

    built: list[tuple] = []

    class Counting(ScribblePropagator):
        def __init__(self, images, *args, **kwargs):
            built.append(images.shape)
            super().__init__(images, *args, **kwargs)

    monkeypatch.setattr(core_scribbles, "ScribblePropagator", Counting)
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-ssseg", "Scribble")
    assert widget.prepare.value  # on by default
    empty = np.zeros(tiny_case.shape, np.uint8)
    for data, kwargs, layer_type in case_to_layer_data(tiny_case, labels=empty):
        viewer.add_layer(Layer.create(data, kwargs, layer_type))
    # started after a pause, for the case just loaded, before any stroke
    qtbot.waitUntil(lambda: widget.task is not None, timeout=10_000)
    assert widget._task_kind == "prepare"
    assert widget.status.value.startswith("preparing superpixels of tiny")
    # the user starts drawing before they are ready: the stroke waits, is not lost
    _click(qtbot, widget.new_button)
    widget.scribble_layer.data = _strokes(tiny_case)
    widget.propagate()
    qtbot.waitUntil(lambda: widget.result is not None, timeout=60_000)
    assert len(built) == 1, built  # the background propagator was used
    assert widget.result.labels.any() and not errors
    # unticked: no background work on the next load
    widget.prepare.value = False
    widget.task = None
    for data, kwargs, layer_type in case_to_layer_data(tiny_case, labels=empty):
        viewer.add_layer(Layer.create(data, kwargs, layer_type))
    qtbot.wait(scribble_mod.PREPARE_DELAY_MS + 300)
    assert widget.task is None and len(built) == 1


SLEEPER = "import time; time.sleep(120)"


@pytest.fixture
def slow_children(monkeypatch):
    """The preparation's child process replaced by one that sleeps (and records itself)."""
    import subprocess
    import sys

    from napari_ssseg._napari.widgets import scribble as scribble_mod

    started: list[subprocess.Popen] = []
    real_popen = subprocess.Popen

    def recording(cmd, *args, **kwargs):
        proc = real_popen(cmd, *args, **kwargs)
        if SLEEPER in cmd:  # other programs (e.g. xdpyinfo) start processes too
            started.append(proc)
        return proc

    monkeypatch.setattr(
        scribble_mod,
        "prefetch_command",
        lambda images, spec: [sys.executable, "-c", SLEEPER],
    )
    monkeypatch.setattr(subprocess, "Popen", recording)
    monkeypatch.setattr(scribble_mod, "PREPARE_DELAY_MS", 50)
    yield started
    for proc in started:  # never leave a sleeper behind, even when the test fails
        if proc.poll() is None:
            proc.kill()


def _load(viewer, case):
    from napari.layers import Layer

    empty = np.zeros(case.shape, np.uint8)
    for data, kwargs, layer_type in case_to_layer_data(case, labels=empty):
        viewer.add_layer(Layer.create(data, kwargs, layer_type))


def _preparing(qtbot, widget, started, n=1):
    qtbot.waitUntil(lambda: len(started) >= n and widget._task_kind == "prepare", timeout=20_000)
    assert started[-1].poll() is None  # the child runs


@pytest.mark.parametrize("how", ["untick", "close panel", "close viewer"])
def test_stopping_the_preparation_kills_its_child(
    make_napari_viewer, qtbot, errors, tiny_case, slow_children, how
):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-ssseg", "Scribble")
    _load(viewer, tiny_case)
    _preparing(qtbot, widget, slow_children)
    task, child = widget.task, slow_children[0]
    if how == "untick":
        widget.prepare.value = False
    elif how == "close panel":
        viewer.window.remove_dock_widget(widget.native)
        widget.native.deleteLater()
    else:
        viewer.close()
    qtbot.waitUntil(lambda: child.poll() is not None, timeout=10_000)
    qtbot.waitUntil(lambda: not task.running, timeout=10_000)
    assert child.returncode != 0  # killed, not finished
    assert errors == []
    if how == "untick":
        assert widget.status.value == "preparing the superpixels of tiny stopped"
        assert widget._state.get("propagator") is None


def test_loading_another_case_restarts_the_preparation_for_it(
    make_napari_viewer, qtbot, errors, tiny_case, tiny_phantom, slow_children
):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-ssseg", "Scribble")
    _load(viewer, tiny_case)
    _preparing(qtbot, widget, slow_children)
    first = slow_children[0]
    other = tiny_phantom.to_case(name="other")
    _load(viewer, other)
    qtbot.waitUntil(lambda: first.poll() is not None, timeout=10_000)  # the old one stopped
    _preparing(qtbot, widget, slow_children, n=2)  # and one started for the new case
    assert widget._prepare_case is other
    assert widget.status.value.startswith("preparing superpixels of other")
    assert errors == []
