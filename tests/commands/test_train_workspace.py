"""`ssseg train WS` records its run in the workspace; `ssseg workspace runs / add-run`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("monai")

from napari_ssseg.cli import main  # noqa: E402
from napari_ssseg.core.phantom import make_phantom  # noqa: E402
from napari_ssseg.io.readers import load_case  # noqa: E402
from napari_ssseg.io.workspace import Workspace, read_run  # noqa: E402
from napari_ssseg.io.writers import write_case  # noqa: E402

TINY_NET = {
    "name": "UNet",
    "in_channels": 4,
    "out_channels": 4,
    "channels": [4, 8, 16],
    "strides": [2, 2],
    "num_res_units": 0,
}
FAST = [
    "--epochs", "1", "--iterations-per-epoch", "2", "--patch-size", "16", "--device", "cpu",
    "--network", json.dumps(TINY_NET), "--quiet",
]  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train_ws") / "data"
    for i in range(3):
        case = make_phantom((32, 40, 40), (2.0, 2.0, 2.0), seed=i).to_case(name=f"c{i}")
        write_case(case, root)
    return root


@pytest.fixture
def ws_root(tmp_path, data) -> Path:
    with Workspace.create(tmp_path / "ws", from_dir=data) as ws:
        for cid in ("c0", "c1"):
            ws.save_labels(cid, load_case(data / cid).labels, source="human")
    return tmp_path / "ws"


def test_train_on_a_free_workspace_records_the_run(ws_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", str(ws_root), "--out", str(out), *FAST]) == 0
    err = capsys.readouterr().err
    assert "recorded as running" in err and "recorded as done" in err
    with Workspace.open(ws_root, readonly=True) as ws:
        (run,) = ws.runs
        models = ws.models
    assert run["state"] == "done" and run["strategy"] == "supervised"
    assert run["dir"] == str(out) and run["reason"] == "finished" and run["step"] == 2
    assert run["config"]["epochs"] == 1 and run["config"]["data"] == str(ws_root)
    assert set(run["metrics"]) >= {"WT", "TC", "ET", "mean"}
    assert run["metrics"] == read_run(out)["metrics"]
    assert run["model"] == models[0]["id"] and models[0]["path"] == str(out / "best.pt")

    # `ssseg workspace runs` lists it
    assert main(["workspace", "runs", str(ws_root)]) == 0
    table = capsys.readouterr().out
    assert "run-001" in table and "done" in table and "supervised" in table
    assert f"{run['metrics']['WT']:.3f}" in table and "model-001" in table
    assert main(["workspace", "runs", str(ws_root), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed[0]["model_path"] == str(out / "best.pt")

    # resume without --strategy: the run's own; the same record is updated
    assert main(["train", str(ws_root), "--out", str(out), *FAST[:1], "2", *FAST[2:],
                 "--resume"]) == 0  # fmt: skip
    with Workspace.open(ws_root, readonly=True) as ws:
        (run,) = ws.runs
        assert run["state"] == "done" and run["step"] == 4 and len(run["resumed"]) == 1
        assert len(ws.models) == 1


def test_refused_runs_do_not_touch_an_existing_record(ws_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", str(ws_root), "--out", str(out), *FAST]) == 0
    with Workspace.open(ws_root, readonly=True) as ws:
        before = ws.runs
    # a new run in the same folder is refused by the engine: no record change
    assert main(["train", str(ws_root), "--out", str(out), *FAST]) == 2
    # resuming with another strategy is refused: the run stays done
    assert main(["train", str(ws_root), "--out", str(out), *FAST, "--resume",
                 "--strategy", "mean-teacher"]) == 2  # fmt: skip
    capsys.readouterr()
    with Workspace.open(ws_root, readonly=True) as ws:
        after = ws.runs
    assert [r["state"] for r in after] == ["done"]
    assert after[0]["step"] == before[0]["step"] and after[0]["model"] == before[0]["model"]


_HOLDER = """
import sys
from napari_ssseg.io.workspace import Workspace
ws = Workspace.open(sys.argv[1])
print("locked", flush=True)
sys.stdin.readline()
ws.close()
"""


def test_train_while_another_program_holds_the_workspace(ws_root, tmp_path):
    """The annotator's napari holds the lock: training runs, warns, and add-run records it."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(ws_root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    out = tmp_path / "run"
    try:
        assert holder.stdout.readline().strip() == "locked"
        manifest = (ws_root / "workspace.json").read_text()
        proc = subprocess.run(
            [sys.executable, "-m", "napari_ssseg", "train", str(ws_root), "--out", str(out),
             *FAST],
            capture_output=True,
            text=True,
            timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert read_run(out)["state"] == "done"
        assert proc.stderr.count("could not be recorded") == 1  # warned once, not per attempt
        assert f"in use by process {holder.pid}" in proc.stderr
        assert f"ssseg workspace add-run {ws_root} {out}" in " ".join(proc.stderr.split())
        assert (ws_root / "workspace.json").read_text() == manifest  # untouched
        # add-run while still locked: refused with the holder's name, nothing written
        assert main(["workspace", "add-run", str(ws_root), str(out)]) == 2
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.wait(60) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
    assert main(["workspace", "add-run", str(ws_root), str(out)]) == 0
    with Workspace.open(ws_root, readonly=True) as ws:
        (run,) = ws.runs
        assert run["state"] == "done" and run["model"] == "model-001"
        assert run["strategy"] == "supervised" and run["metrics"]["mean"] is not None
        assert ws.verify() == []


def test_resume_without_strategy_reads_it_from_last_pt(data, tmp_path, capsys):
    """No --strategy on --resume: the run's own, from events.jsonl or else from last.pt."""
    out = tmp_path / "run"
    assert main(["train", str(data), "--out", str(out), "--strategy", "mean-teacher", *FAST]) == 0
    (out / "events.jsonl").unlink()  # e.g. copied without it: only last.pt tells
    more = [*FAST[:1], "2", *FAST[2:]]
    assert main(["train", str(data), "--out", str(out), *more, "--resume"]) == 0
    capsys.readouterr()
    (start,) = [e for e in map(json.loads, (out / "events.jsonl").open()) if e["event"] == "start"]
    assert start["strategy"] == "mean-teacher" and start["resumed_from_step"] == 2
