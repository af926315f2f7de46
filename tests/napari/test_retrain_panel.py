"""Retrain panel and the training child-process client (real short ``ssseg train`` runs)."""

from __future__ import annotations

import json
import time

import pytest

pytest.importorskip("torch")
pytest.importorskip("monai")

from napari_ssseg._napari.training_client import (  # noqa: E402
    DataSummary,
    TrainingProcess,
    choose_strategy,
    summarize_data,
)
from napari_ssseg.core.phantom import make_phantom  # noqa: E402
from napari_ssseg.errors import InputError  # noqa: E402
from napari_ssseg.io.writers import write_case  # noqa: E402

TINY = (32, 40, 40)
#: Short run: 2 steps per epoch on 32^3 crops, CPU.
FAST = ["--iterations-per-epoch", "2", "--patch-size", "32", "--device", "cpu", "--quiet"]


# ----------------------------------------------------------------------------- pure logic
@pytest.mark.parametrize(
    ("counts", "available", "expected"),
    [
        ((2, 0, 2), ["supervised", "pseudo-label", "mean-teacher"], "pseudo-label"),
        (
            (2, 0, 2),
            ["supervised", "pseudo-label", "pseudo-label-superpixel"],
            "pseudo-label-superpixel",
        ),  # noqa: E501
        ((2, 0, 2), ["supervised", "mean-teacher"], "mean-teacher"),
        ((3, 0, 0), ["supervised", "pseudo-label"], "supervised"),
        ((1, 2, 5), ["supervised", "pseudo-label"], "supervised"),
        ((0, 2, 5), ["supervised", "pseudo-label", "sp3"], "sp3"),
        ((0, 2, 0), ["supervised"], "supervised"),
    ],
)
def test_choose_strategy(counts, available, expected):
    name, why = choose_strategy(DataSummary("folder", *counts), available, semi_supervised=True)
    assert name == expected
    if counts[1] and "sp3" not in available:
        assert "sp3" in why  # says that it falls back


@pytest.mark.parametrize(("n_labelled", "warned"), [(0, False), (1, True), (2, True), (3, False)])
def test_few_labelled_cases_get_a_caution(n_labelled, warned):
    caution = DataSummary("workspace", n_labelled, 0, 3).caution()
    assert bool(caution) is warned
    if warned:
        assert f"Only {n_labelled} labelled" in caution and "previous model" in caution


def test_choose_strategy_refuses_data_without_labels():
    with pytest.raises(InputError, match="no labelled case"):
        choose_strategy(DataSummary("folder", 0, 0, 4), ["supervised", "pseudo-label"])


def test_panel_modules_import_no_torch_and_find_the_registered_strategies():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from napari_ssseg._napari.widgets.retrain import available_strategies\n"
        "print(','.join(available_strategies()))\n"
        "print(sorted(m for m in ('torch', 'monai') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    names, imported = out.stdout.strip().splitlines()
    assert imported == "[]", out.stdout + out.stderr
    from napari_ssseg.ml.strategies.base import STRATEGIES, get_strategy

    get_strategy("supervised")  # imports (registers) every strategy module

    assert names.split(",") == sorted(STRATEGIES)


def test_summarize_data(data_dir, tmp_path):
    s = summarize_data(data_dir)
    assert (s.kind, s.n_labelled, s.n_scribbled, s.n_unlabelled) == ("folder", 2, 0, 2)
    with pytest.raises(InputError, match="not a folder"):
        summarize_data(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no case folders"):
        summarize_data(tmp_path / "empty")


def test_poll_events_tails_by_offset_and_waits_for_partial_lines(tmp_path):
    run = tmp_path / "run"
    proc = TrainingProcess(["--help"], run)  # a quick child: prints the help, exits 0
    assert proc.wait(60) == 0
    assert proc.poll_events() == []
    lines = [json.dumps({"event": "start", "total_steps": 4}), json.dumps({"event": "epoch"})]
    with open(run / "events.jsonl", "w") as f:
        f.write(lines[0] + "\n" + lines[1][:7])  # second line torn mid-write
    proc.proc.returncode = None  # pretend the child still runs: the torn line must wait
    proc.proc.poll = lambda: None
    assert [e["event"] for e in proc.poll_events()] == ["start"]
    with open(run / "events.jsonl", "a") as f:
        f.write(lines[1][7:] + "\nnot json\n")
    assert [e["event"] for e in proc.poll_events()] == ["epoch"]
    assert proc.poll_events() == []
    assert [e["event"] for e in proc.events] == ["start", "epoch"]


def test_error_text_is_the_stderr_tail_when_the_child_dies(tmp_path):
    proc = TrainingProcess(["data", "--epochs", "many"], tmp_path / "run")
    assert proc.wait(60) == 2
    assert proc.poll_events() == [] and proc.end_event is None
    assert "--epochs" in proc.error_text() and "invalid int value" in proc.error_text()


def test_training_process_runs_a_real_short_training(data_dir, tmp_path):
    run = tmp_path / "run"
    proc = TrainingProcess([str(data_dir), "--strategy", "supervised", "--epochs", "1", *FAST], run)
    seen: list[dict] = []
    deadline = time.monotonic() + 120
    while proc.running and time.monotonic() < deadline:
        seen += proc.poll_events()
        time.sleep(0.1)
    seen += proc.poll_events()
    assert proc.returncode == 0, proc.error_text()
    kinds = [e["event"] for e in seen]
    assert kinds[0] == "start" and kinds[-1] == "done", kinds
    assert "epoch" in kinds and "validation" in kinds
    assert proc.error_text() == ""
    assert (run / "best.pt").is_file() and (run / "last.pt").is_file()


# ----------------------------------------------------------------------------- panel
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


def _fast(widget, epochs):
    widget.epochs.value = epochs
    widget.iterations.value = 2
    widget.patch.value = 32
    widget.device.value = "cpu"


@pytest.mark.gui
@pytest.mark.slow
def test_panel_cancel_resume_done_reproposes(make_napari_viewer, qtbot, data_dir, captured):
    from qtpy.QtCore import QTimer

    from napari_ssseg._napari.widgets.propose import ProposeWidget
    from napari_ssseg._napari.widgets.retrain import RetrainWidget
    from napari_ssseg.io.readers import load_case

    viewer = make_napari_viewer()
    _add_case(viewer, load_case(data_dir / "P_002"))
    propose = ProposeWidget(viewer)
    propose.device.value = "cpu"
    viewer.window.add_dock_widget(propose, name="Propose")
    widget = RetrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Retrain")
    # default data folder: the parent of the loaded case's folder
    assert widget.data.value == str(data_dir.resolve())
    assert "2 labelled" in widget.summary.value
    widget.run_folder.value = str(data_dir.parent / "run")
    _fast(widget, epochs=2)
    # 2 x 10 steps: long enough that the cancel (sent once the panel's 500 ms poll has seen
    # the start event) always lands before the end; 2 x 2 steps could finish first
    widget.iterations.value = 10

    ticks: list[float] = []
    beat = QTimer()
    beat.setInterval(20)

    def on_beat():
        ticks.append(time.perf_counter())
        if widget.process is not None and widget.process.returncode is not None:
            beat.stop()

    beat.timeout.connect(on_beat)

    # 1. one click: labelled + unlabelled -> supervised (semi-supervised strategies did not
    # beat it on real scans at a one-click budget); cancel once it has started
    from napari_ssseg._napari.widgets.retrain import available_strategies

    expected, _ = choose_strategy(DataSummary("folder", 2, 0, 2), available_strategies())
    assert expected == "supervised"  # the one-click default on labelled + unlabelled data
    proc = widget.retrain()
    assert proc is not None and proc.args[proc.args.index("--strategy") + 1] == expected
    beat.start()
    qtbot.waitUntil(lambda: any(e["event"] == "start" for e in proc.events), timeout=90_000)
    widget.cancel()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert widget.outcome == "cancelled", (widget.status.value, captured)
    assert "cancelled" in widget.status.value
    assert proc.returncode == 0
    last = widget.run_dir / "last.pt"
    assert last.is_file()
    import torch

    state = torch.load(last, map_location="cpu", weights_only=False)
    step_cancel = state["training_state"]["step"]
    assert 1 <= step_cancel < 20
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    assert len(gaps) > 20 and max(gaps) < 0.25, max(gaps)
    print(f"\ncancelled run: {len(gaps)} heartbeat gaps, longest {max(gaps) * 1000:.0f} ms")

    # 2. resume: continues from last.pt to the end (2 epochs x 10 steps)
    assert widget.resume_button.enabled
    ticks.clear()
    proc2 = widget.resume()
    assert proc2 is not proc and "--resume" in proc2.args
    beat.start()
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    assert widget.outcome == "done", (widget.status.value, captured)
    start = next(e for e in proc2.events if e["event"] == "start")
    assert start["resumed_from_step"] == step_cancel
    assert widget.active_model == widget.run_dir / "best.pt"
    assert widget.active_model.is_file()
    assert widget.loss_plot.n_points >= 1
    assert widget.dice_plot.n_points >= 3  # WT, TC, ET
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    assert len(gaps) > 20 and max(gaps) < 0.25, max(gaps)
    print(f"resumed run: {len(gaps)} heartbeat gaps, longest {max(gaps) * 1000:.0f} ms")
    assert captured["error"] == []
    assert any("new model" in m for m in captured["info"])

    # 3. the docked Propose panel now uses the new model and re-proposes the current case
    assert widget.find_propose_widget() is propose
    assert str(propose.checkpoint_file.value) == str(widget.active_model)
    qtbot.waitUntil(lambda: not propose.running, timeout=120_000)
    assert propose.last_result is not None
    assert propose.last_result["info"]["model"] is not None
    assert any(layer.name.endswith("proposal") for layer in viewer.layers)

    # 4. two labelled cases: the panel warned; "Back to previous model" restores the model
    # the Propose panel used before (the shipped default) and re-proposes with it
    assert "Only 2 labelled cases" in widget.summary.value
    assert any("Only 2 labelled cases" in m for m in captured["info"])
    assert widget.revert_button.enabled
    new_result = propose.last_result
    widget.revert_button.native.click()
    assert propose.model_source.value == "default model (shipped)"
    assert str(propose.checkpoint_file.value) != str(widget.run_dir / "best.pt")
    assert widget.active_model is None and not widget.revert_button.enabled
    assert "previous model" in widget.status.value
    qtbot.waitUntil(
        lambda: propose.last_result is not new_result and not propose.running, timeout=120_000
    )
    # the shipped model's description, not the retrained one's (no training provenance)
    assert propose.last_result["info"]["model"] != new_result["info"]["model"]
    assert "strategy supervised" in new_result["info"]["model"]
    widget.timer.stop()


@pytest.mark.gui
def test_panel_reports_a_crashing_run(make_napari_viewer, qtbot, tmp_path, captured):
    from napari_ssseg._napari.widgets.retrain import RetrainWidget

    bad = tmp_path / "bad"
    for name in ("A_001", "A_002"):
        (bad / name).mkdir(parents=True)
        (bad / name / f"{name}_t1.nii.gz").write_bytes(b"not a nifti")
        (bad / name / f"{name}_seg.nii.gz").write_bytes(b"not a nifti")
    widget = RetrainWidget(make_napari_viewer())
    widget.data.value = str(bad)
    widget.run_folder.value = str(tmp_path / "run")
    _fast(widget, epochs=1)
    widget.advanced.value = True
    widget.strategy.value = "supervised"
    proc = widget.start()
    assert proc is not None
    qtbot.waitUntil(lambda: not widget.running, timeout=90_000)
    assert widget.outcome == "error"
    assert len(captured["error"]) == 1 and "Retraining failed" in captured["error"][0]
    assert str(bad) in captured["error"][0]  # the child's own message reaches the user
    assert widget.status.value.startswith("failed")
    assert widget.retrain_button.enabled


def tiny_case_on_disk(tmp_path):
    from napari_ssseg.io.readers import load_case

    case = make_phantom(shape=TINY, spacing=(2.0, 2.0, 2.0), seed=5).to_case(name="T")
    return load_case(write_case(case, tmp_path / "d", naming="brats2021", name="T_001"))


@pytest.mark.gui
def test_panel_refuses_a_missing_data_folder(make_napari_viewer, tmp_path, captured):
    from napari_ssseg._napari.widgets.retrain import RetrainWidget

    viewer = make_napari_viewer()
    widget = RetrainWidget(viewer)
    assert widget.data.value == ""
    _add_case(viewer, tiny_case_on_disk(tmp_path))
    assert widget.data.value == str((tmp_path / "d").resolve())  # filled in once a case loads
    widget.data.value = str(tmp_path / "nowhere")
    assert "not a folder" in widget.summary.value
    assert widget.retrain() is None
    assert widget.process is None
    assert len(captured["error"]) == 1 and "not a folder" in captured["error"][0]


@pytest.mark.gui
def test_new_model_without_a_docked_propose_panel_uses_a_hidden_one(
    make_napari_viewer, qtbot, data_dir, captured
):
    from napari_ssseg._napari.widgets.retrain import RetrainWidget, default_model_path
    from napari_ssseg.io.readers import load_case

    viewer = make_napari_viewer()
    _add_case(viewer, load_case(data_dir / "P_003"))
    widget = RetrainWidget(viewer)
    assert widget.find_propose_widget() is None
    widget.active_model = default_model_path()  # as if a run had just finished
    widget._repropose()
    hidden = widget.propose_widget
    assert hidden is not None and str(hidden.checkpoint_file.value) == str(default_model_path())
    assert hidden.task is not None
    qtbot.waitUntil(lambda: not hidden.running, timeout=120_000)
    assert hidden.last_result is not None
    assert [la.name for la in viewer.layers if la.name.endswith("proposal")] == ["P_003 proposal"]
