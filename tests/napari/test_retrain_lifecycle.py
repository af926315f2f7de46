"""Retrain panel: closing stops the child, resuming an earlier run folder, out-of-memory
advice, and recording the run in the workspace open in the Workspace panel."""

from __future__ import annotations

import json
import time

import pytest

pytest.importorskip("torch")
pytest.importorskip("monai")

#: Short runs: 2 steps per epoch on 32^3 crops, CPU (as in test_retrain_panel.py).
FAST = ["--iterations-per-epoch", "2", "--patch-size", "32", "--device", "cpu", "--quiet"]
OOM_MESSAGE = (
    "Out of memory (CUDA out of memory. Tried to allocate 2.00 GiB). Reduce --patch-size or "
    "--batch-size, or use a smaller network."
)


from napari_ssseg._napari.training_client import TrainingProcess  # noqa: E402
from napari_ssseg.io.readers import load_case  # noqa: E402
from napari_ssseg.io.workspace import Workspace, read_run  # noqa: E402


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


def _fast(widget, epochs):
    widget.epochs.value = epochs
    widget.iterations.value = 2
    widget.patch.value = 32
    widget.device.value = "cpu"


def _events(run):
    path = run / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip().endswith("}")]


def _wait_for_end(proc: TrainingProcess, timeout: float = 90.0) -> int:
    """Block (test only) until the child exits; returns its exit code."""
    return proc.wait(timeout)


def _long_run(widget, run_dir):
    """Start a supervised run long enough to be stopped from outside."""
    _fast(widget, epochs=500)
    widget.init.value = None  # random weights: no checkpoint read
    widget.advanced.value = True
    widget.strategy.value = "supervised"
    widget.run_folder.value = str(run_dir)
    proc = widget.start()
    assert proc is not None
    return proc


@pytest.mark.gui
@pytest.mark.slow
@pytest.mark.parametrize("how", ["close viewer", "remove panel", "delete widget"])
def test_closing_stops_the_training_child(
    make_napari_viewer, qtbot, data_dir, tmp_path, captured, how
):
    from napari_ssseg._napari.widgets.retrain import RetrainWidget

    viewer = make_napari_viewer()
    widget = RetrainWidget(viewer)
    widget.data.value = str(data_dir)
    if how != "delete widget":
        dock = viewer.window.add_dock_widget(widget, name="Retrain")
    proc = _long_run(widget, tmp_path / "run")
    qtbot.waitUntil(lambda: any(e["event"] == "epoch" for e in proc.events), timeout=120_000)
    if how == "close viewer":
        viewer.close()
    elif how == "remove panel":  # napari's dock close button
        viewer.window.remove_dock_widget(dock)
    else:  # a panel that was never docked is destroyed
        widget.native.deleteLater()
    qtbot.waitUntil(lambda: proc.returncode is not None, timeout=60_000)
    assert _wait_for_end(proc) == 0
    end = _events(proc.run_dir)[-1]
    assert end["event"] == "cancelled" and end["reason"] == "SIGTERM", end
    assert end["step"] < 1000 and (proc.run_dir / "last.pt").is_file()


@pytest.mark.gui
@pytest.mark.slow
def test_resume_a_run_folder_of_an_earlier_session(
    make_napari_viewer, qtbot, data_dir, tmp_path, captured
):
    from napari_ssseg._napari.widgets.retrain import RetrainWidget

    # an earlier session: a pseudo-label run, cancelled after its first epoch
    run = tmp_path / "earlier"
    first = TrainingProcess(
        [str(data_dir), "--strategy", "pseudo-label", "--epochs", "3", "--seed", "4", *FAST],
        run,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(e["event"] == "epoch" for e in _events(run)):
        time.sleep(0.2)
    first.cancel()
    assert _wait_for_end(first) == 0
    cancelled = _events(run)[-1]
    assert cancelled["event"] == "cancelled"

    # a new session: nothing typed but the run folder
    viewer = make_napari_viewer()
    widget = RetrainWidget(viewer)
    assert widget.data.value == ""
    assert widget.resume_previous() is None  # no folder picked: refused with a message
    assert "Earlier run" in captured["error"][-1]
    widget.previous_run.value = str(tmp_path / "nowhere")
    assert widget.resume_previous() is None and "not a folder" in captured["error"][-1]
    widget.previous_run.value = str(run)
    assert widget.status.value.startswith(
        f"earlier run: pseudo-label, cancelled at step {cancelled['step']}"
    )
    proc = widget.resume_previous()
    assert proc is not None and "--resume" in proc.args
    assert proc.args[proc.args.index("--strategy") + 1] == "pseudo-label"
    assert proc.args[proc.args.index("--seed") + 1] == "4"
    assert widget.data.value == str(data_dir)  # the run's own data
    assert widget.loss_plot.n_points >= 1  # the earlier session's curves are redrawn
    qtbot.waitUntil(lambda: not widget.running, timeout=180_000)
    assert widget.outcome == "done", (widget.status.value, captured)
    start = next(e for e in proc.events if e["event"] == "start")
    assert start["resumed_from_step"] == cancelled["step"] and start["strategy"] == "pseudo-label"
    assert proc.events[-1]["step"] == 6
    assert widget.active_model == run / "best.pt"
    assert widget.resume_button.enabled  # this session can continue it again
    widget.timer.stop()


@pytest.mark.gui
def test_out_of_memory_failure_shows_the_memory_options(make_napari_viewer, tmp_path, captured):
    from napari_ssseg._napari.widgets.retrain import RetrainWidget

    widget = RetrainWidget(make_napari_viewer())
    run = tmp_path / "run"
    proc = TrainingProcess(["--help"], run)  # a real child that exits at once
    assert proc.wait(60) == 0
    with open(run / "events.jsonl", "w") as f:  # what an OOM run leaves
        f.write(json.dumps({"event": "start", "total_steps": 10, "config": {}}) + "\n")
        f.write(json.dumps({"event": "error", "message": OOM_MESSAGE}) + "\n")
    widget.process = proc
    widget.poll()  # the timer slot: reads the events, sees the exit, finishes
    assert widget.outcome == "error"
    status = widget.status.value
    assert status.startswith("failed: Out of memory")
    for option in ("Patch size", "--amp", "Gradient checkpointing", "batch size"):
        assert option in status, status
    assert len(captured["error"]) == 1 and "--gradient-checkpointing" in captured["error"][0]
    # the options the advice names exist in the panel and reach the command line
    widget.amp.value = True
    widget.grad_ckpt.value = True
    widget.batch.value = 1
    widget.init.value = None
    args = widget.build_args("supervised", str(tmp_path))
    assert "--amp" in args and "--gradient-checkpointing" in args
    assert args[args.index("--batch-size") + 1] == "1"


@pytest.fixture
def workspace(tmp_path, data_dir):
    """A workspace of the 4 phantom cases; 2 with a label version (latest labels)."""
    root = tmp_path / "ws"
    with Workspace.create(root, from_dir=data_dir) as ws:
        for cid in ("P_000", "P_001"):
            ws.save_labels(cid, load_case(data_dir / cid).labels, source="human")
    return root


@pytest.mark.gui
@pytest.mark.slow
def test_run_is_recorded_through_the_open_workspace_panel(
    make_napari_viewer, qtbot, workspace, tmp_path, captured
):
    from napari_ssseg._napari.widgets.retrain import RetrainWidget
    from napari_ssseg._napari.widgets.workspace import WorkspaceWidget

    viewer = make_napari_viewer()
    wsw = WorkspaceWidget(viewer)
    viewer.window.add_dock_widget(wsw, name="Workspace")
    wsw.open_workspace(workspace)  # holds the write lock, as while annotating
    widget = RetrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Retrain")
    widget.data.value = str(workspace)
    assert widget.open_workspace_of(workspace) is wsw.ws
    _fast(widget, epochs=1)
    widget.init.value = None
    widget.run_folder.value = str(tmp_path / "run")
    widget.advanced.value = True
    widget.strategy.value = "supervised"
    recording: list[float] = []  # GUI-thread time of each workspace record
    original = widget._record_in_workspace

    def timed(*args, **kwargs):
        t = time.perf_counter()
        original(*args, **kwargs)
        recording.append(time.perf_counter() - t)

    widget._record_in_workspace = timed
    proc = widget.start()
    assert proc is not None
    (running,) = wsw.ws.runs  # recorded at once through the panel's open workspace
    assert running["state"] == "running" and running["strategy"] == "supervised"
    qtbot.waitUntil(lambda: not widget.running, timeout=180_000)
    assert widget.outcome == "done", (widget.status.value, captured)
    (run,) = wsw.ws.runs
    assert run["id"] == running["id"] and run["state"] == "done"
    assert run["metrics"] == read_run(proc.run_dir)["metrics"] and run["metrics"]
    assert run["model"] == "model-001" and wsw.ws.models[0]["path"] == str(proc.run_dir / "best.pt")
    assert widget.workspace_run["id"] == run["id"]
    assert len(recording) == 2 and max(recording) < 0.5, recording
    print(f"\nworkspace records on the GUI thread: {[round(t * 1000) for t in recording]} ms")
    assert f"recorded in the workspace as {run['id']}, model model-001" in widget.status.value
    # the child could not take the lock (napari holds it) and said so, without failing
    assert "could not be recorded" in (proc.run_dir / "train.stderr.log").read_text()
    # the record is on disk, not only in the panel's memory
    with Workspace.open(workspace, readonly=True) as ws:
        assert ws.runs[0]["state"] == "done"
    widget.timer.stop()
    wsw.close_workspace()


@pytest.mark.gui
@pytest.mark.slow
def test_run_on_a_workspace_no_panel_holds_is_recorded_by_the_child(
    make_napari_viewer, qtbot, workspace, tmp_path, captured
):
    from napari_ssseg._napari.widgets.retrain import RetrainWidget

    widget = RetrainWidget(make_napari_viewer())
    widget.data.value = str(workspace)
    _fast(widget, epochs=1)
    widget.init.value = None
    widget.run_folder.value = str(tmp_path / "run")
    widget.advanced.value = True
    widget.strategy.value = "supervised"
    proc = widget.start()
    qtbot.waitUntil(lambda: not widget.running, timeout=180_000)
    assert widget.outcome == "done", (widget.status.value, captured)
    assert "recorded as done" in (proc.run_dir / "train.stderr.log").read_text()
    with Workspace.open(workspace, readonly=True) as ws:
        (run,) = ws.runs
        assert run["state"] == "done" and run["model"] == "model-001"
    assert widget.workspace_run["id"] == run["id"]  # the panel's own record changed nothing
    assert "recorded in the workspace" in widget.status.value
    widget.timer.stop()


@pytest.mark.gui
@pytest.mark.slow
def test_one_click_on_a_scribbled_workspace_trains_sp3(
    make_napari_viewer, qtbot, workspace, tmp_path, captured
):
    """Scribbles present -> sp3 (when registered), trained to the end from one click."""
    import numpy as np

    from napari_ssseg._napari.widgets.retrain import RetrainWidget, available_strategies

    if "sp3" not in available_strategies():
        pytest.skip("sp3 is not registered in this installation")
    with Workspace.open(workspace) as ws:
        strokes = np.zeros(ws.case("P_002").shape, np.uint8)
        strokes[16, 5:10, 5:10] = 4  # healthy tissue
        strokes[16, 18:21, 18:22] = 2  # oedema
        ws.save_scribbles("P_002", strokes)
    widget = RetrainWidget(make_napari_viewer())
    widget.data.value = str(workspace)
    assert "1 with scribbles only" in widget.summary.value
    _fast(widget, epochs=1)
    widget.run_folder.value = str(tmp_path / "run")
    proc = widget.retrain()
    assert proc is not None and proc.args[proc.args.index("--strategy") + 1] == "sp3"
    assert "Strategy 'sp3'" in widget.summary.value
    assert "not available" not in widget.summary.value
    qtbot.waitUntil(lambda: not widget.running, timeout=240_000)
    assert widget.outcome == "done", (widget.status.value, captured)
    start = next(e for e in proc.events if e["event"] == "start")
    assert start["strategy"] == "sp3" and start["n_weak"] == 1
    with Workspace.open(workspace, readonly=True) as ws:
        assert ws.runs[0]["strategy"] == "sp3" and ws.runs[0]["state"] == "done"
    widget.timer.stop()
