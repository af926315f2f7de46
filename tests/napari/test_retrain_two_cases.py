"""Retrain panel with a workspace and several cases open: the data defaults to the open
workspace, and the re-proposal after training reaches the current case even when the
Propose panel is busy (it used to be dropped silently)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("monai")

from napari_ssseg.io.readers import load_case  # noqa: E402
from napari_ssseg.io.workspace import Workspace  # noqa: E402


@pytest.fixture
def captured(monkeypatch):
    out: dict[str, list[str]] = {"error": [], "info": []}
    monkeypatch.setattr(
        "napari_ssseg._napari.widgets.retrain._notify_error",
        lambda exc: out["error"].append(str(exc)),
    )
    monkeypatch.setattr(
        "napari_ssseg._napari.widgets.retrain.notify_info", lambda m: out["info"].append(m)
    )
    return out


def _add_case(viewer, case):
    from napari.layers import Layer

    from napari_ssseg._napari.layers import case_to_layer_data

    for data, kwargs, layer_type in case_to_layer_data(case):
        viewer.add_layer(Layer.create(data, kwargs, layer_type))


@pytest.mark.gui
def test_data_defaults_to_the_workspace_open_in_the_workspace_panel(
    make_napari_viewer, tmp_path, data_dir, captured
):
    viewer = make_napari_viewer()
    _, wsw = viewer.window.add_plugin_dock_widget("napari-ssseg", "Workspace")
    with Workspace.create(tmp_path / "ws", from_dir=data_dir):
        pass
    _, retrain = viewer.window.add_plugin_dock_widget("napari-ssseg", "Retrain")
    assert retrain.data.value == ""
    wsw.open_workspace(tmp_path / "ws")
    _add_case(viewer, load_case(data_dir / "P_002"))  # a case loaded: the default is chosen
    # the open workspace, not the folder the case's images came from
    assert retrain.data.value == str(wsw.ws.root)
    assert "workspace" in retrain.summary.value.lower() or "labelled" in retrain.summary.value
    # a folder the user typed is never replaced by a default
    retrain.data.value = str(data_dir)
    _add_case(viewer, load_case(data_dir / "P_003"))
    assert retrain.data.value == str(data_dir)
    wsw.close_workspace()


@pytest.mark.gui
def test_data_defaults_to_the_case_parent_without_a_workspace(
    make_napari_viewer, data_dir, captured
):
    viewer = make_napari_viewer()
    _, retrain = viewer.window.add_plugin_dock_widget("napari-ssseg", "Retrain")
    _add_case(viewer, load_case(data_dir / "P_002"))
    assert retrain.data.value == str(data_dir.resolve())


@pytest.mark.gui
def test_reproposal_with_two_cases_waits_for_a_busy_propose_panel(
    make_napari_viewer, qtbot, data_dir, captured
):
    from napari_ssseg._napari.widgets.retrain import default_model_path

    viewer = make_napari_viewer()
    _add_case(viewer, load_case(data_dir / "P_002"))
    _add_case(viewer, load_case(data_dir / "P_003"))
    _, propose = viewer.window.add_plugin_dock_widget("napari-ssseg", "Propose")
    propose.device.value = "cpu"
    _, retrain = viewer.window.add_plugin_dock_widget("napari-ssseg", "Retrain")
    p2 = next(c for c in propose.case.choices if c.name == "P_002")
    p3 = next(c for c in propose.case.choices if c.name == "P_003")
    # the user proposes P_002 ...
    propose.case.value = p2
    assert propose.propose() is not None and propose.running
    # ... while looking at P_003 when training ends
    viewer.layers.selection.active = viewer.layers["P_003 labels"]
    retrain.active_model = default_model_path()  # as if a run had just finished
    note = retrain._repropose()
    assert "P_003" in note and "once the current prediction ends" in note
    assert note in retrain.status.value
    qtbot.waitUntil(
        lambda: propose.last_result is not None and not propose.running, timeout=120_000
    )
    # the first prediction finished; the re-proposal of P_003 starts from the timer
    qtbot.waitUntil(lambda: "re-proposing P_003" in retrain.status.value, timeout=10_000)
    assert propose.case.value is p3
    qtbot.waitUntil(lambda: not propose.running, timeout=120_000)
    assert str(propose.checkpoint_file.value) == str(default_model_path())
    names = [la.name for la in viewer.layers]
    assert "P_002 proposal" in names and "P_003 proposal" in names
    assert captured["error"] == []
