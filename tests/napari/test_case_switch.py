"""Case switches as a user makes them (Loader panel, Workspace "Next"), panels opened from the
Plugins menu: the previous case's proposal never stays drawn over the new case, and the
Propose "Case" box (and the Refine pseudo-label) follow the case just loaded."""

from __future__ import annotations

import time

import pytest
from qtpy.QtCore import Qt

pytest.importorskip("torch")
pytest.importorskip("monai")

from tiny_checkpoints import make_tiny_checkpoint as make_checkpoint  # noqa: E402

from napari_ssseg._napari.layers import case_of_layer  # noqa: E402
from napari_ssseg.core.phantom import make_phantom  # noqa: E402
from napari_ssseg.core.provenance import HUMAN, PROVENANCE_KEY  # noqa: E402
from napari_ssseg.io.writers import write_case  # noqa: E402

pytestmark = pytest.mark.gui

SHAPE = (32, 40, 40)


def _click(qtbot, button):
    qtbot.mouseClick(button.native, Qt.MouseButton.LeftButton)


def _names(viewer):
    return [layer.name for layer in viewer.layers]


@pytest.fixture
def errors(monkeypatch):
    shown: list[str] = []
    monkeypatch.setattr("napari_ssseg._napari.widgets._common.show_error", shown.append)
    return shown


def _panels(viewer, names, ckpt):
    out = {n: viewer.window.add_plugin_dock_widget("napari-ssseg", n)[1] for n in names}
    propose = out["Propose"]
    propose.model_source.value = "checkpoint file (.pt)"
    propose.checkpoint_file.value = ckpt
    propose.device.value = "cpu"
    return out


def _propose(qtbot, widget):
    _click(qtbot, widget.propose_button)
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    assert widget.status.value.startswith("proposed"), widget.status.value


def test_loader_switch_hides_old_proposal_and_case_box_follows(
    make_napari_viewer, qtbot, tmp_path, errors
):
    src = tmp_path / "data"
    for seed, name in ((0, "A_001"), (1, "B_001")):
        case = make_phantom(shape=SHAPE, spacing=(2.0, 2.0, 2.0), seed=seed).to_case(name=name)
        write_case(case, src, naming="brats2021", name=name)
    viewer = make_napari_viewer()
    panels = _panels(viewer, ["Loader", "Propose", "Refine"], make_checkpoint(tmp_path / "t.pt"))
    loader, propose, refine = panels["Loader"], panels["Propose"], panels["Refine"]

    def load(name):
        loader.folder.value = src / name
        _click(qtbot, loader.load_button)
        qtbot.waitUntil(lambda: loader.task is not None and not loader.task.running, timeout=30_000)
        qtbot.wait(50)
        return loader.last_case

    case_a = load("A_001")
    assert propose.case.value is case_a
    _propose(qtbot, propose)
    prop_a, unc_a = viewer.layers["A_001 proposal"], viewer.layers["A_001 uncertainty"]
    assert prop_a.visible and unc_a.visible

    case_b = load("B_001")
    assert propose.case.value is case_b, "the Case box still points at the previous case"
    assert not prop_a.visible and not unc_a.visible, "A's proposal is drawn over B"
    assert refine.labels_layer.value is viewer.layers["B_001 labels"]
    _propose(qtbot, propose)
    prop_b = viewer.layers["B_001 proposal"]
    assert case_of_layer(prop_b) is case_b and prop_b.visible and not prop_a.visible
    # picking A again in the box shows A's proposal again, and hides B's
    propose.case.value = case_a
    assert prop_a.visible and unc_a.visible and not prop_b.visible
    propose.case.value = case_b
    assert prop_b.visible and not prop_a.visible

    assert not errors


def test_workspace_next_case_removes_old_proposal_keeps_hand_work(
    make_napari_viewer, qtbot, tmp_path, errors
):
    from napari_ssseg.io.workspace import Workspace

    src = tmp_path / "src"
    for seed in range(2):
        write_case(make_phantom(SHAPE, seed=seed).to_case(name=f"p{seed}"), src)
    Workspace.create(tmp_path / "ws", from_dir=src).close()
    viewer = make_napari_viewer()
    panels = _panels(viewer, ["Workspace", "Propose"], make_checkpoint(tmp_path / "t.pt"))
    ws, propose = panels["Workspace"], panels["Propose"]
    ws.open_workspace(tmp_path / "ws")
    try:
        ws.open_case("p0")
        qtbot.waitUntil(lambda: not ws.running and ws.case_id == "p0", timeout=30_000)
        p0 = case_of_layer(ws.labels_layer)
        assert propose.case.value is p0
        _propose(qtbot, propose)
        assert {"p0 proposal", "p0 uncertainty"} <= set(_names(viewer))

        ws.next_btn.click()
        qtbot.waitUntil(lambda: not ws.running and ws.case_id == "p1", timeout=30_000)
        qtbot.waitUntil(lambda: "p0 proposal" not in _names(viewer), timeout=5_000)
        p1 = case_of_layer(ws.labels_layer)
        assert propose.case.value is p1, "the Case box still points at p0"
        assert not any(case_of_layer(lyr) is p0 for lyr in viewer.layers), _names(viewer)
        assert [name for name, _ in propose._case_choices()] == ["p1"]

        # a proposal corrected by hand on the proposal layer itself is never deleted
        _propose(qtbot, propose)
        prop = viewer.layers["p1 proposal"]
        prop.selected_label = 3
        prop.paint((16, 20, 20), 3)
        assert (prop.metadata[PROVENANCE_KEY] == HUMAN).any()
        ws.prev_btn.click()
        qtbot.waitUntil(lambda: not ws.running and ws.case_id == "p0", timeout=30_000)
        qtbot.waitUntil(lambda: "p1 uncertainty" not in _names(viewer), timeout=5_000)
        assert "p1 proposal (case closed)" in _names(viewer)
        kept = viewer.layers["p1 proposal (case closed)"]
        assert not kept.visible and (kept.metadata[PROVENANCE_KEY] == HUMAN).any()
        assert propose.case.value is case_of_layer(ws.labels_layer)
        assert not errors
    finally:
        ws.close_workspace()


def test_proposal_finishing_after_its_case_closed_is_dropped(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    import monai.inferers

    from napari_ssseg._napari.layers import case_to_layer_data

    original = monai.inferers.sliding_window_inference

    def slow_swi(inputs, roi_size, sw_batch_size, predictor, *args, **kwargs):
        def slow(window):
            time.sleep(0.05)
            return predictor(window)

        return original(inputs, roi_size, sw_batch_size, slow, *args, **kwargs)

    monkeypatch.setattr(monai.inferers, "sliding_window_inference", slow_swi)
    info: list[str] = []
    monkeypatch.setattr("napari_ssseg._napari.widgets.propose.notify_info", info.append)
    from napari.layers import Layer

    viewer = make_napari_viewer()
    propose = _panels(viewer, ["Propose"], make_checkpoint(tmp_path / "t.pt"))["Propose"]
    case = make_phantom(shape=SHAPE, spacing=(2.0, 2.0, 2.0), seed=0).to_case(name="gone")
    for data, kwargs, layer_type in case_to_layer_data(case):
        viewer.add_layer(Layer.create(data, kwargs, layer_type))
    _click(qtbot, propose.propose_button)
    qtbot.waitUntil(lambda: "Window batch" in propose.status.value, timeout=60_000)
    viewer.layers.clear()  # the user closes the case while the network runs
    qtbot.waitUntil(lambda: not propose.running, timeout=120_000)
    assert _names(viewer) == []
    assert propose.status.value.startswith("dropped")
    assert any("was dropped" in m for m in info)
