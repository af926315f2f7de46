"""Training runs recorded in a workspace: record_run, read_run, record_run_in and the lock."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from napari_ssseg.core.phantom import make_phantom
from napari_ssseg.errors import InputError
from napari_ssseg.io.workspace import (
    MANIFEST_NAME,
    Workspace,
    WorkspaceLockedError,
    read_run,
    record_run_in,
)
from napari_ssseg.io.writers import write_case


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("runs_src")
    for seed in range(2):
        write_case(make_phantom((16, 24, 24), seed=seed).to_case(name=f"r{seed}"), folder)
    return folder


@pytest.fixture
def ws_root(tmp_path, source) -> Path:
    with Workspace.create(tmp_path / "ws", from_dir=source):
        pass
    return tmp_path / "ws"


def write_events(run: Path, *events: dict, best: bool = True, last: bool = True) -> Path:
    """A run folder as ``ssseg train`` leaves it (events, optional best.pt / last.pt)."""
    run.mkdir(parents=True, exist_ok=True)
    with open(run / "events.jsonl", "a", encoding="utf-8") as f:
        for e in events:
            f.write(json.dumps({"time": time.time(), **e}) + "\n")
    if best:
        (run / "best.pt").write_bytes(b"best weights")
    if last:
        (run / "last.pt").write_bytes(b"last weights")
    return run


START = {"event": "start", "strategy": "pseudo-label", "config": {"data": "/d", "epochs": 2}}
VAL = {"event": "validation", "epoch": 1, "step": 2, "metrics": {"WT": 0.5, "mean": 0.4}}
DONE = {
    "event": "done",
    "reason": "finished",
    "step": 4,
    "metrics": {"WT": 0.7, "TC": 0.6, "ET": 0.5, "mean": 0.6},
}


# ----------------------------------------------------------------------------- read_run
def test_read_run_states(tmp_path):
    run = write_events(tmp_path / "a", START, VAL)
    info = read_run(run)
    assert info["state"] == "running" and info["strategy"] == "pseudo-label"
    assert info["metrics"] == {"WT": 0.5, "mean": 0.4} and info["step"] == 2
    assert info["data"] == "/d" and info["best"] == str(run / "best.pt")
    write_events(run, DONE)
    info = read_run(run)
    assert (info["state"], info["reason"], info["step"]) == ("done", "finished", 4)
    assert info["metrics"]["mean"] == 0.6
    # a refused --resume (error without a new start) leaves the run done
    write_events(run, {"event": "error", "message": "Cannot resume ... strategy"})
    assert read_run(run)["state"] == "done"
    # a resumed run that is cancelled
    write_events(run, {**START, "resumed_from_step": 4}, {"event": "cancelled", "step": 5})
    assert read_run(run)["state"] == "cancelled" and read_run(run)["step"] == 5
    # refused before any start event
    refused = {"event": "error", "message": "no labelled case"}
    bad = write_events(tmp_path / "b", refused, best=False)
    info = read_run(bad)
    assert info["state"] == "failed" and info["message"] == "no labelled case"
    assert info["best"] is None and info["strategy"] is None


def test_read_run_ignores_a_torn_last_line_and_refuses_non_runs(tmp_path):
    run = write_events(tmp_path / "a", START)
    with open(run / "events.jsonl", "a") as f:
        f.write('{"event": "done", "ste')
    assert read_run(run)["state"] == "running"
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="not a training run folder"):
        read_run(tmp_path / "empty")


# ----------------------------------------------------------------------------- record_run
def test_record_run_is_keyed_by_folder_and_idempotent(ws_root, tmp_path):
    run = write_events(tmp_path / "run", START, VAL)
    with Workspace.open(ws_root) as ws:
        e = ws.record_run(run, state="running", strategy="pseudo-label", config={"epochs": 2})
        assert (e["id"], e["state"], e["dir"]) == ("run-001", "running", str(run))
        write_events(run, DONE, best=False)
        e = ws.record_run_from_dir(run)
        assert e["state"] == "done" and e["model"] == "model-001"
        assert e["metrics"]["mean"] == 0.6 and e["config"] == START["config"]
        assert ws.models[0]["path"] == str(run / "best.pt")
        assert ws.models[0]["info"]["run"] == "run-001"
        text = (ws_root / MANIFEST_NAME).read_text()
        again = ws.record_run_from_dir(run)  # recorded by the child and by the panel
        assert again == e
        assert (ws_root / MANIFEST_NAME).read_text() == text  # nothing written
        # resumed and finished again: same entry, same model id (updated), history of resumes
        ws.record_run(run, state="running")
        write_events(run, {**START, "resumed_from_step": 4}, {**DONE, "step": 8})
        e = ws.record_run_from_dir(run)
        assert len(ws.runs) == 1 and len(ws.models) == 1
        assert e["step"] == 8 and len(e["resumed"]) == 1 and e["model"] == "model-001"
        # another run gets the next id
        other = write_events(tmp_path / "other", START, {"event": "error", "message": "boom"})
        e2 = ws.record_run_from_dir(other)
        assert (e2["id"], e2["state"], e2["message"], e2["model"]) == (
            "run-002",
            "failed",
            "boom",
            None,
        )
        assert ws.find_run(other)["id"] == "run-002" and ws.find_run("run-001")["step"] == 8
    with Workspace.open(ws_root, readonly=True) as ws:  # persisted
        assert [r["state"] for r in ws.runs] == ["done", "failed"]
        with pytest.raises(InputError, match="read-only"):
            ws.record_run(run, state="done")


def test_record_run_bad_input(ws_root, tmp_path):
    with Workspace.open(ws_root) as ws:
        with pytest.raises(InputError, match="state"):
            ws.record_run(tmp_path / "r", state="finished")
        with pytest.raises(InputError, match="does not exist"):
            ws.record_run(tmp_path / "r", state="done", checkpoint=tmp_path / "nope.pt")
        with pytest.raises(InputError, match="run name"):
            ws.record_run(tmp_path / "r", state="running", name="../evil")
        assert ws.runs == []


def test_begin_run_without_snapshot_in_an_outside_folder(ws_root, tmp_path):
    with Workspace.open(ws_root) as ws:
        run = ws.begin_run(snapshot=False, run_dir=tmp_path / "out", strategy="sp3")
        assert run.run_dir == tmp_path / "out" and not run.snapshot.exists()
        assert ws.runs[0]["strategy"] == "sp3" and ws.runs[0]["state"] == "running"
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "best.pt").write_bytes(b"w")
        ws.finish_run(run.run_id, checkpoint=tmp_path / "out" / "best.pt", state="cancelled")
        assert ws.runs[0]["state"] == "cancelled" and ws.runs[0]["model"] == "model-001"
        with pytest.raises(InputError, match="already has a training run"):
            ws.begin_run(run.run_id, snapshot=False)


# ----------------------------------------------------------------------------- the lock
_HOLDER = """
import sys, time
from napari_ssseg.io.workspace import Workspace
ws = Workspace.open(sys.argv[1])
print("locked", flush=True)
sys.stdin.readline()
ws.save_labels("r0", __import__("numpy").zeros(ws.case("r0").shape, "uint8"), source="human")
ws.close()
"""


def test_record_run_in_never_waits_for_a_holder_and_never_corrupts(ws_root, tmp_path):
    """Another process (the annotator's napari) holds the lock: recording fails quickly with
    the holder named; the holder's later saves keep a valid manifest; add-run works after."""
    run = write_events(tmp_path / "run", START, DONE)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(ws_root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = (ws_root / MANIFEST_NAME).read_text()
        t0 = time.monotonic()
        with pytest.raises(WorkspaceLockedError, match=f"process {holder.pid}"):
            record_run_in(ws_root, run, attempts=3, delay=0.1)
        assert time.monotonic() - t0 < 2.0
        assert (ws_root / MANIFEST_NAME).read_text() == before
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.wait(60) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
    with Workspace.open(ws_root, readonly=True) as ws:
        assert ws.runs == [] and ws.case("r0").n_versions == 1
    entry = record_run_in(ws_root, run)  # free now
    assert entry["state"] == "done" and entry["model"] == "model-001"
    with Workspace.open(ws_root, readonly=True) as ws:
        assert ws.runs[0]["metrics"]["mean"] == 0.6 and ws.case("r0").n_versions == 1
        assert ws.verify() == []


def test_record_run_in_waits_for_a_short_holder(ws_root, tmp_path):
    """A program that opens and closes the workspace at that moment is waited for."""
    import threading

    run = write_events(tmp_path / "run", START, DONE)
    ws = Workspace.open(ws_root)
    threading.Timer(0.2, ws.close).start()
    entry = record_run_in(ws_root, run, attempts=10, delay=0.1)
    assert entry["state"] == "done"


# ----------------------------------------------------------------------------- crashed parents
def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_run_whose_process_died_is_settled_on_open(ws_root, tmp_path):
    """napari crashed while its training child was killed: the run must not stay running."""
    run = write_events(tmp_path / "run", START, VAL)  # no end event: killed mid-run
    with Workspace.open(ws_root) as ws:
        ws.record_run(run, state="running", strategy="pseudo-label", pid=_dead_pid())
        assert ws.runs[0]["state"] == "running" and "pid" in ws.runs[0]
    # the next session opens the workspace: the dead process is noticed
    with Workspace.open(ws_root) as ws:
        (entry,) = ws.runs
        assert entry["state"] == "failed" and entry["reason"] == "interrupted"
        assert "ended without recording an end" in entry["message"]
        assert "--resume" in entry["message"] and str(run) in entry["message"]
        assert entry["step"] == 2 and "pid" not in entry and entry.get("model") is None


def test_a_run_that_ended_after_its_parent_died_gets_its_end_recorded(ws_root, tmp_path):
    run = write_events(tmp_path / "run", START, VAL)
    with Workspace.open(ws_root) as ws:
        ws.record_run(run, state="running", pid=_dead_pid())
    write_events(run, DONE)  # the child finished after the panel that recorded it was gone
    with Workspace.open(ws_root) as ws:
        (entry,) = ws.runs
        assert entry["state"] == "done" and entry["model"] == "model-001"
        assert entry["metrics"]["mean"] == 0.6


def test_a_live_or_unknown_run_stays_running(ws_root, tmp_path):
    import os

    live = write_events(tmp_path / "live", START)
    old = write_events(tmp_path / "old", START)  # recorded by an older version: no pid
    with Workspace.open(ws_root) as ws:
        ws.record_run(live, state="running", pid=os.getpid())
        ws.record_run(old, state="running")
    with Workspace.open(ws_root) as ws:
        assert [r["state"] for r in ws.runs] == ["running", "running"]
        assert ws.reconcile_runs() == []
    # read-only opening never writes
    (tmp_path / "old" / "events.jsonl").unlink()
    with Workspace.open(ws_root, readonly=True) as ws:
        assert [r["state"] for r in ws.runs] == ["running", "running"]
    # a run folder deleted by hand: settled as failed, saying so
    import shutil

    shutil.rmtree(tmp_path / "live")
    with Workspace.open(ws_root) as ws:
        states = {Path(r["dir"]).name: (r["state"], r.get("message", "")) for r in ws.runs}
    assert states["live"][0] == "failed" and "is missing" in states["live"][1]
    assert states["old"][0] == "running"
