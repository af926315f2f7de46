"""Tests of the training engine (napari_ssseg.ml.train) and the ``ssseg train`` command."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from tiny_checkpoints import stop_after_steps

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from napari_ssseg.errors import InputError  # noqa: E402
from napari_ssseg.ml.train import TrainConfig, read_events, region_dice, train  # noqa: E402

TINY_MODS = ("t1", "t1ce", "t2", "flair")
TINY = {
    "name": "UNet",
    "in_channels": 4,
    "out_channels": 4,
    "channels": [4, 8, 16],
    "strides": [2, 2],
    "num_res_units": 0,
    "dropout": 0.1,
}


def write_phantoms(root, n_labelled=3, n_unlabelled=1, seed0=0):
    """Write tiny (32, 40, 40) 2 mm phantom case folders; return ``root``."""
    from napari_ssseg.core.phantom import make_phantom
    from napari_ssseg.io.writers import write_case

    root.mkdir(parents=True, exist_ok=True)
    for i in range(n_labelled + n_unlabelled):
        case = make_phantom((32, 40, 40), (2.0, 2.0, 2.0), seed=seed0 + i).to_case(name=f"c{i}")
        if i >= n_labelled:
            case = dataclasses.replace(case, labels=None)
        write_case(case, root)
    return root


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_phantoms(tmp_path_factory.mktemp("train_data") / "data")


def tiny_config(data, out, **kw):
    base = dict(
        data=str(data),
        out=str(out),
        epochs=2,
        iterations_per_epoch=2,
        device="cpu",
        patch_size=(16, 16, 16),
        network=dict(TINY),
        batch_size=2,
        seed=3,
    )
    base.update(kw)
    return TrainConfig(**base)


def weights(path):
    data = torch.load(path, map_location="cpu", weights_only=True)
    return data["networks"][0]


def test_events_and_checkpoints(data_dir, tmp_path):
    from napari_ssseg.io.readers import load_case
    from napari_ssseg.ml.checkpoint import load_checkpoint
    from napari_ssseg.ml.inference import predict_case

    out = tmp_path / "run"
    res = train(tiny_config(data_dir, out))
    assert res["status"] == "done" and res["step"] == 4
    ev = read_events(out / "events.jsonl")
    kinds = [e["event"] for e in ev]
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert kinds.count("epoch") == 2 and kinds.count("validation") == 2
    assert "checkpoint" in kinds
    start = ev[0]
    assert start["n_train"] + start["n_val"] == 3 and start["n_unlabelled"] == 1
    assert start["n_val"] == 1
    ep = [e for e in ev if e["event"] == "epoch"]
    assert all(np.isfinite(e["losses"]["loss"]) and e["lr"] > 0 for e in ep)
    assert ep[1]["lr"] < ep[0]["lr"]  # cosine decay
    val = [e for e in ev if e["event"] == "validation"][-1]["metrics"]
    assert set(val) == {"WT", "TC", "ET", "mean"}
    assert all(0.0 <= val[k] <= 1.0 for k in val)
    for name in ("best.pt", "last.pt"):
        ckpt = load_checkpoint(out / name)
        assert ckpt.config["channels"] == [4, 8, 16]
        assert ckpt.provenance["strategy"] == "supervised"
        assert list(ckpt.patch_size) == [16, 16, 16]
    result = predict_case(load_case(data_dir / "c0"), out / "best.pt", device="cpu")
    assert result["labels"].shape == (32, 40, 40)
    # the weights changed from the initialisation
    torch.manual_seed(3)
    from napari_ssseg.ml.networks import build_network

    init = build_network(TINY).state_dict()
    last = weights(out / "last.pt")
    assert any(not torch.equal(init[k], last[k]) for k in init)


def test_resume_equals_uninterrupted(data_dir, tmp_path):
    full = tmp_path / "full"
    part = tmp_path / "part"
    train(tiny_config(data_dir, full))
    res = train(tiny_config(data_dir, part), should_stop=stop_after_steps(3))
    assert res["status"] == "cancelled" and res["step"] == 3
    assert read_events(part / "events.jsonl")[-1]["event"] == "cancelled"
    res2 = train(tiny_config(data_dir, part, resume=True))
    assert res2["status"] == "done" and res2["step"] == 4
    a, b = weights(full / "last.pt"), weights(part / "last.pt")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    starts = [e for e in read_events(part / "events.jsonl") if e["event"] == "start"]
    assert starts[-1]["resumed_from_step"] == 3


def test_resume_refusals(data_dir, tmp_path, monkeypatch):
    from napari_ssseg.ml.strategies import base
    from napari_ssseg.ml.strategies.supervised import Supervised

    out = tmp_path / "run"
    with pytest.raises(InputError, match="does not exist"):
        train(tiny_config(data_dir, out, resume=True))
    train(tiny_config(data_dir, out, epochs=1))
    with pytest.raises(InputError, match="already holds a run"):
        train(tiny_config(data_dir, out, epochs=1))
    with pytest.raises(InputError, match="already finished"):
        train(tiny_config(data_dir, out, epochs=1, resume=True))

    class Other(Supervised):
        name = "other-test"

    monkeypatch.setitem(base.STRATEGIES, "other-test", Other)
    with pytest.raises(InputError, match="trained with 'supervised'"):
        train(tiny_config(data_dir, out, epochs=3, strategy="other-test", resume=True))
    assert read_events(out / "events.jsonl")[-1]["event"] == "error"
    # more epochs: resumes
    res = train(tiny_config(data_dir, out, epochs=2, resume=True))
    assert res["step"] == 4


def test_read_run_state(data_dir, tmp_path):
    from napari_ssseg.ml.train import read_run_state

    out = tmp_path / "run"
    with pytest.raises(InputError, match="does not exist"):
        read_run_state(out)
    train(tiny_config(data_dir, out), should_stop=stop_after_steps(3))
    state = read_run_state(out)
    assert state == read_run_state(out / "last.pt")
    assert state["strategy"] == "supervised" and state["step"] == 3 and state["seed"] == 3
    assert state["strategy_params"] == {} and isinstance(state["best_metric"], float)
    with pytest.raises(InputError, match="no training state"):
        read_run_state(out / "best.pt")  # a plain model checkpoint
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="cannot be read"):
        read_run_state(tmp_path / "junk.pt")
    # the resumed run reports its new step
    train(tiny_config(data_dir, out, resume=True))
    assert read_run_state(out)["step"] == 4


def test_no_labelled_case(tmp_path):
    data = write_phantoms(tmp_path / "data", n_labelled=0, n_unlabelled=1)
    out = tmp_path / "run"
    with pytest.raises(InputError, match="no labelled case.*sp3"):
        train(tiny_config(data, out))
    ev = read_events(out / "events.jsonl")
    assert ev[-1]["event"] == "error" and "no labelled case" in ev[-1]["message"]


def test_bad_case_skipped(tmp_path):
    data = write_phantoms(tmp_path / "data", n_labelled=2, n_unlabelled=0)
    bad = data / "broken"
    bad.mkdir()
    (bad / "broken_t1.nii.gz").write_bytes(b"not a nifti")
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="broken"):
        res = train(tiny_config(data, out, epochs=1))
    assert res["status"] == "done"
    ev = read_events(out / "events.jsonl")
    skipped = [e for e in ev if e["event"] == "skipped"]
    assert [e["case"] for e in skipped] == ["broken"]
    start = [e for e in ev if e["event"] == "start"][0]
    assert start["skipped"] == ["broken"]


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"epochs": 0}, "epochs"),
        ({"iterations_per_epoch": -1}, "iterations_per_epoch"),
        ({"patch_size": (16, 16)}, "patch_size"),
        ({"patch_size": (18, 16, 16)}, "multiple of 4"),
        ({"budget_minutes": 0}, "budget_minutes"),
        ({"strategy": "nope"}, "Unknown training strategy"),
        ({"strategy_params": {"bogus": 1}}, "no parameter"),
    ],
)
def test_bad_options(data_dir, tmp_path, kw, match):
    with pytest.raises(InputError, match=match):
        train(tiny_config(data_dir, tmp_path / "run", **kw))


def test_data_not_a_folder(tmp_path):
    with pytest.raises(InputError, match="not a folder"):
        train(tiny_config(tmp_path / "missing", tmp_path / "run"))


def test_region_dice():
    gt = np.zeros((4, 4, 4), np.uint8)
    gt[1:3, 1:3, 1:3] = 3
    d = region_dice(gt, gt)
    assert d == {"WT": 1.0, "TC": 1.0, "ET": 1.0}
    pred = gt.copy()
    pred[pred == 3] = 2  # ET predicted as oedema
    d = region_dice(pred, gt)
    assert d["WT"] == 1.0 and d["TC"] == 0.0 and d["ET"] == 0.0
    empty = np.zeros_like(gt)
    assert region_dice(empty, empty)["ET"] == 1.0


def _cli(*args):
    env = dict(os.environ)
    return [sys.executable, "-m", "napari_ssseg.commands.train", *map(str, args)], env


def test_cli_sigterm_cancels_and_saves(data_dir, tmp_path):
    from napari_ssseg.ml.checkpoint import load_checkpoint

    out = tmp_path / "run"
    cmd, env = _cli(
        data_dir, "--out", out, "--epochs", "200", "--iterations-per-epoch", "2",
        "--patch-size", "16", "--device", "cpu", "--network", json.dumps(TINY), "--quiet",
    )  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    events = out / "events.jsonl"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        if events.exists() and any(e["event"] == "epoch" for e in read_events(events)):
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read().decode()
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr.decode()
    ev = read_events(events)
    assert ev[-1]["event"] == "cancelled" and ev[-1]["reason"] == "SIGTERM"
    assert ev[-1]["step"] < 400
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt.provenance["strategy"] == "supervised"
    assert b"cancelled" in stdout


def test_cli_bad_input_exit_2(tmp_path):
    cmd, env = _cli(tmp_path / "nothing", "--out", tmp_path / "run", "--device", "cpu")
    proc = subprocess.run(cmd, env=env, capture_output=True, timeout=120)
    assert proc.returncode == 2
    assert b"not a folder" in proc.stderr


def _rank_errors(stderr: str) -> str:
    """The lines of a failed torchrun's stderr that say why a rank died, then its tail.

    A rank killed by a C++ abort (e.g. gloo's ``terminate called ...``) leaves its reason in
    the middle of the output, which torchrun's own traceback pushes out of a plain tail.
    """
    keys = ("terminate", "what()", "Error", "error", "Exception", "Traceback")
    why = [line for line in stderr.splitlines() if any(k in line for k in keys)]
    return "\n".join(why[:40]) + "\n---- tail ----\n" + stderr[-1500:]


def test_ddp_two_cpu_processes_gloo(data_dir, tmp_path):
    from napari_ssseg.ml.checkpoint import load_checkpoint

    out = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "napari_ssseg.commands.train", str(data_dir), "--out", str(out),
        "--epochs", "2", "--iterations-per-epoch", "2", "--patch-size", "16",
        "--device", "cpu", "--network", json.dumps(TINY), "--quiet",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, timeout=300)
    assert proc.returncode == 0, _rank_errors(proc.stderr.decode())
    ev = read_events(out / "events.jsonl")
    kinds = [e["event"] for e in ev]
    # rank 0 alone writes events: one start, two epochs, one done
    assert kinds.count("start") == 1 and kinds.count("epoch") == 2 and kinds[-1] == "done"
    assert ev[0]["world_size"] == 2
    assert proc.stdout.decode().count("done (finished)") == 1
    assert load_checkpoint(out / "best.pt").provenance["strategy"] == "supervised"
    # the averaged DDP gradients differ from a single-process run with the same seed
    single = tmp_path / "single"
    train(tiny_config(data_dir, single, seed=0))
    a, b = weights(out / "last.pt"), weights(single / "last.pt")
    assert any(not torch.allclose(a[k], b[k]) for k in a)


def test_budget_stops_with_done_and_checkpoints(data_dir, tmp_path):
    out = tmp_path / "run"
    res = train(tiny_config(data_dir, out, epochs=50, budget_minutes=1e-6))
    assert res["status"] == "done" and res["reason"] == "budget" and res["step"] == 1
    ev = read_events(out / "events.jsonl")
    assert ev[-1]["event"] == "done" and ev[-1]["reason"] == "budget"
    assert any(e["event"] == "validation" for e in ev)
    assert (out / "best.pt").exists() and (out / "last.pt").exists()


def test_failed_checkpoint_write_keeps_previous(data_dir, tmp_path, monkeypatch):
    from napari_ssseg.ml.checkpoint import load_checkpoint

    out = tmp_path / "run"
    train(tiny_config(data_dir, out, epochs=1))
    before = weights(out / "last.pt")
    real_save = torch.save

    def full_disk(obj, f, *a, **k):
        real_save(obj, f, *a, **k)  # partial file in the temporary path
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(InputError):
        train(tiny_config(data_dir, out, epochs=2, resume=True))
    monkeypatch.setattr(torch, "save", real_save)
    assert read_events(out / "events.jsonl")[-1]["event"] == "error"
    after = weights(out / "last.pt")
    assert all(torch.equal(before[k], after[k]) for k in before)
    load_checkpoint(out / "last.pt")
    assert sorted(p.name for p in out.glob("*.pt")) == ["best.pt", "last.pt"]


def test_init_from_checkpoint(data_dir, tmp_path):
    from napari_ssseg.ml.checkpoint import load_checkpoint

    first = tmp_path / "first"
    train(tiny_config(data_dir, first, epochs=1))
    second = tmp_path / "second"
    res = train(tiny_config(data_dir, second, epochs=1, init=str(first / "last.pt"), network=None))
    assert res["status"] == "done"
    assert load_checkpoint(second / "last.pt").config["channels"] == [4, 8, 16]


def test_train_from_workspace_and_snapshot(tmp_path):
    from napari_ssseg.io.readers import load_case
    from napari_ssseg.io.workspace import Workspace

    data = write_phantoms(tmp_path / "data", n_labelled=4, n_unlabelled=0)
    ws_dir = tmp_path / "ws"
    with Workspace.create(ws_dir, from_dir=data) as ws:
        for cid in ("c0", "c1"):
            gt = load_case(data / cid).labels
            ws.save_labels(cid, gt, source="human")
        strokes = np.zeros((32, 40, 40), np.uint8)
        strokes[16, 5:10, 5:10] = 4  # healthy tissue
        strokes[16, 20, 18:22] = 2  # oedema
        ws.save_scribbles("c2", strokes)
    out = tmp_path / "run"
    res = train(tiny_config(ws_dir, out, epochs=1))
    assert res["status"] == "done"
    start = read_events(out / "events.jsonl")[0]
    # c2 has scribbles (weak); c3 only a ground-truth file (evaluation only): unlabelled
    assert start["n_train"] + start["n_val"] == 3 and start["n_unlabelled"] == 1
    assert start["n_weak"] == 1 and "c2" in start["train_cases"]
    assert (out / "snapshot" / "snapshot.json").exists()
    # the frozen label version arrives on the same voxels as the folder's label file
    from napari_ssseg.ml.checkpoint import DEFAULT_NORMALIZATION
    from napari_ssseg.ml.data import prepare_case

    norm = dict(DEFAULT_NORMALIZATION, spacing_zyx=[2.0, 2.0, 2.0])
    ref = prepare_case(
        load_case(data / "c0"), tmp_path / "ref", modalities=TINY_MODS, normalization=norm
    )
    got = np.load(out / "cache" / "c0_label.npy")
    assert got.any() and np.array_equal(got, np.load(ref.label))
    assert not (out / "cache" / "c3_label.npy").exists()
    weak = np.load(out / "cache" / "c2_label.npy")
    assert set(np.unique(weak).tolist()) == {0, 2, 255}
    assert (weak == 255).mean() > 0.9
    # a saved snapshot is a data source too (all its cases are labelled)
    with Workspace.open(ws_dir, readonly=True) as ws:
        snap = ws.snapshot(tmp_path / "snap")
    res = train(tiny_config(snap, tmp_path / "run2", epochs=1))
    start = read_events(tmp_path / "run2" / "events.jsonl")[0]
    assert start["n_train"] + start["n_val"] == 2 and start["n_unlabelled"] == 0


@pytest.mark.parametrize(
    ("codes", "expected"),
    [([0, 1, 2, 3], [255, 1, 2, 3]), ([4, 255, 0], [0, 0, 255]), ([7], [255])],
)
def test_scribbles_to_target(codes, expected):
    from napari_ssseg.ml.data import scribbles_to_target

    arr = np.asarray(codes, np.uint8).reshape(1, 1, -1)
    assert scribbles_to_target(arr).ravel().tolist() == expected


def test_sigterm_during_data_preparation(data_dir, tmp_path, monkeypatch):
    from napari_ssseg.ml import data as data_mod

    real = data_mod.prepare_case
    calls = []

    def prepare_then_signal(*a, **k):
        calls.append(1)
        os.kill(os.getpid(), signal.SIGTERM)  # caught by train(): a flag, not an exit
        return real(*a, **k)

    monkeypatch.setattr(data_mod, "prepare_case", prepare_then_signal)
    out = tmp_path / "run"
    res = train(tiny_config(data_dir, out))
    assert res["status"] == "cancelled" and res["reason"] == "SIGTERM" and len(calls) == 1
    assert read_events(out / "events.jsonl")[-1]["event"] == "cancelled"
    assert not (out / "last.pt").exists()
    assert signal.getsignal(signal.SIGTERM) is not None  # handler restored
    monkeypatch.setattr(data_mod, "prepare_case", real)
    assert train(tiny_config(data_dir, out, epochs=1))["status"] == "done"


def test_data_preparation_stops_with_the_core_cancel_protocol(data_dir, tmp_path):
    """prepare_dataset takes the core's should_stop() and raises core's Cancelled (one
    protocol, issue 15); the cases seen before the stop are prepared, the others are not."""
    from napari_ssseg.core.progress import Cancelled
    from napari_ssseg.ml.data import CancelledError, prepare_dataset

    asked = []

    def should_stop():
        asked.append(1)
        return len(asked) > 2  # two cases prepared, then stop

    kwargs = dict(modalities=("t1", "t1ce", "t2", "flair"), normalization={"clip": [0.5, 99.5]})
    with pytest.raises(Cancelled, match="data preparation cancelled"):
        prepare_dataset(data_dir, tmp_path / "cache", should_stop=should_stop, **kwargs)
    assert len(asked) == 3
    assert CancelledError is Cancelled  # the old name still catches it
    cases, skipped = prepare_dataset(data_dir, tmp_path / "cache", **kwargs)
    assert len(cases) == len(list(data_dir.iterdir())) and not skipped
