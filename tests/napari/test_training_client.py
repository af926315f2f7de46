"""Training client without the GUI: strategy choice by name, resume arguments, OOM advice,
and the child stopping itself when the program that started it dies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from napari_ssseg._napari.training_client import (
    DataSummary,
    TrainingProcess,
    choose_strategy,
    failure_advice,
    resume_args,
)
from napari_ssseg.errors import InputError

#: Every strategy of issue 6 (the names alone: these tests do not need them registered).
ALL = [
    "cps",
    "mean-teacher",
    "pseudo-label",
    "pseudo-label-superpixel",
    "self-training",
    "sp3",
    "supervised",
    "uamt",
]


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ((2, 0, 5), "pseudo-label-superpixel"),
        ((2, 3, 5), "sp3"),
        ((0, 3, 5), "sp3"),
        ((0, 3, 0), "sp3"),
        ((4, 0, 0), "supervised"),
    ],
)
def test_one_click_choice_with_every_strategy(counts, expected):
    name, why = choose_strategy(DataSummary("workspace", *counts), ALL, semi_supervised=True)
    assert name == expected
    assert "not available" not in why
    assert why.endswith(".")


def test_one_click_default_is_supervised_with_unlabelled_cases():
    name, why = choose_strategy(DataSummary("workspace", 2, 0, 5), ALL)
    assert name == "supervised"
    assert "5 unlabelled" in why and "Advanced" in why
    assert choose_strategy(DataSummary("workspace", 2, 3, 5), ALL)[0] == "sp3"


def test_fallbacks_say_what_is_missing():
    name, why = choose_strategy(
        DataSummary("folder", 2, 0, 5), ["supervised", "pseudo-label"], semi_supervised=True
    )
    assert name == "pseudo-label" and "'pseudo-label-superpixel' is not available" in why
    name, why = choose_strategy(DataSummary("folder", 0, 2, 0), ["supervised"])
    assert name == "supervised" and "'sp3' is not available" in why
    with pytest.raises(InputError, match="no labelled case"):
        choose_strategy(DataSummary("folder", 0, 0, 3), ALL)


# ----------------------------------------------------------------------------- resume
def _run_folder(root, *events, last=True):
    root.mkdir(parents=True)
    with open(root / "events.jsonl", "w") as f:
        for e in events:
            f.write(json.dumps(e) + "\n")
    if last:
        (root / "last.pt").write_bytes(b"w")
    return root


CONFIG = {
    "data": "/data/cases",
    "strategy": "uamt",
    "epochs": 12,
    "iterations_per_epoch": 7,
    "budget_minutes": None,
    "device": "cpu",
    "seed": 5,
    "batch_size": 3,
    "lr": 0.001,
    "val_fraction": 0.2,
    "amp": False,
    "gradient_checkpointing": True,
    "strategy_params": {"passes": 4},
}


def test_resume_args_from_the_start_event(tmp_path):
    run = _run_folder(
        tmp_path / "run",
        {"event": "start", "strategy": "uamt", "config": CONFIG},
        {"event": "epoch", "step": 7},
        {"event": "cancelled", "step": 9},
    )
    args, strategy, info = resume_args(run, data="/elsewhere")
    assert strategy == "uamt" and info["state"] == "cancelled"
    assert args[0] == "/data/cases"  # the run's own data, not the panel's field
    pairs = dict(zip(args[1::2], args[2::2]))
    assert pairs["--strategy"] == "uamt" and pairs["--epochs"] == "12"
    assert pairs["--iterations-per-epoch"] == "7" and pairs["--seed"] == "5"
    assert pairs["--batch-size"] == "3" and pairs["--device"] == "cpu"
    assert "--gradient-checkpointing" in args and "--amp" not in args
    assert "--budget-minutes" not in args and "--param" not in args  # restored from last.pt
    assert args[-3:] == ["--out", str(run), "--resume"]


def test_resume_args_without_events_and_refusals(tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "last.pt").write_bytes(b"w")
    args, strategy, _ = resume_args(bare, data="/d")
    assert strategy is None and "--strategy" not in args  # the child reads last.pt
    assert args == ["/d", "--out", str(bare), "--resume"]
    with pytest.raises(InputError, match="does not name its training data"):
        resume_args(bare)
    no_last = _run_folder(tmp_path / "nolast", {"event": "start", "config": CONFIG}, last=False)
    with pytest.raises(InputError, match="no last.pt"):
        resume_args(no_last)
    with pytest.raises(InputError, match="not a folder"):
        resume_args(tmp_path / "missing")
    active = _run_folder(tmp_path / "active", {"event": "start", "config": CONFIG})
    with pytest.raises(InputError, match="still training"):
        resume_args(active)
    old = time.time() - 3600
    os.utime(active / "events.jsonl", (old, old))  # killed an hour ago: resumable
    args, strategy, info = resume_args(active)
    assert strategy == "uamt" and args[0] == "/data/cases" and info["state"] == "running"


# ----------------------------------------------------------------------------- OOM
OOM_MESSAGE = (
    "Out of memory (CUDA out of memory. Tried to allocate 2.00 GiB). Reduce --patch-size or "
    "--batch-size, or use a smaller network."
)


def test_out_of_memory_error_event_gets_memory_advice(tmp_path):
    """A real child (``--help``, exits at once) and a fake events file fed to the parser."""
    run = tmp_path / "run"
    proc = TrainingProcess(["--help"], run)
    assert proc.wait(60) == 0
    with open(run / "events.jsonl", "w") as f:
        f.write(json.dumps({"event": "start", "total_steps": 10}) + "\n")
        f.write(json.dumps({"event": "error", "message": OOM_MESSAGE}) + "\n")
    assert [e["event"] for e in proc.poll_events()] == ["start", "error"]
    assert proc.error_text() == OOM_MESSAGE
    advice = failure_advice(proc.error_text())
    for option in ("--patch-size", "--batch-size", "--amp", "--gradient-checkpointing"):
        assert option in advice
    assert failure_advice("RuntimeError: shapes do not match") == ""
    assert failure_advice("torch.OutOfMemoryError: CUDA out of memory.") != ""


# ----------------------------------------------------------------------------- orphan
_STARTER = """
import sys, time
from napari_ssseg._napari.training_client import TrainingProcess
p = TrainingProcess(sys.argv[2:], sys.argv[1])
print(p.pid, flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_child_stops_when_the_program_that_started_it_dies(tmp_path):
    """napari crashes (SIGKILL): the training child notices, saves last.pt, writes
    ``cancelled`` and exits instead of training on for hours."""
    pytest.importorskip("torch")
    from napari_ssseg.core.phantom import make_phantom
    from napari_ssseg.io.writers import write_case

    data = tmp_path / "data"
    for i in range(2):
        write_case(make_phantom((32, 40, 40), (2.0, 2.0, 2.0), seed=i).to_case(name=f"o{i}"), data)
    net = {"name": "UNet", "in_channels": 4, "out_channels": 4, "channels": [4, 8, 16],
           "strides": [2, 2], "num_res_units": 0}  # fmt: skip
    run = tmp_path / "run"
    starter = subprocess.Popen(
        [sys.executable, "-c", _STARTER, str(run), str(data), "--epochs", "500",
         "--iterations-per-epoch", "2", "--patch-size", "16", "--device", "cpu",
         "--network", json.dumps(net), "--quiet"],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    child = int(starter.stdout.readline())
    try:
        events = run / "events.jsonl"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if events.exists() and '"epoch"' in events.read_text():
                break
            time.sleep(0.2)
        else:
            pytest.fail("the training child did not start")
        starter.kill()  # like a napari crash: no chance to stop the child
        starter.wait(30)
        deadline = time.monotonic() + 60
        ended = None
        while time.monotonic() < deadline:
            lines = [json.loads(x) for x in events.read_text().splitlines() if x.strip()]
            ended = next((e for e in lines if e["event"] in ("cancelled", "done", "error")), None)
            if ended is not None:
                break
            time.sleep(0.2)
        assert ended is not None and ended["event"] == "cancelled", ended
        assert ended["reason"] == "SIGTERM" and ended["step"] < 1000
        assert (run / "last.pt").is_file()
        assert "has exited; stopping" in (run / "train.stderr.log").read_text()
    finally:
        if starter.poll() is None:
            starter.kill()
        time.sleep(0.5)
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            pass
        else:  # still alive after a failure: do not leave it training
            os.kill(child, signal.SIGKILL)
