"""`ssseg workspace ...` through napari_ssseg.cli.main."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_ssseg.cli import main
from napari_ssseg.core.phantom import make_phantom
from napari_ssseg.io.workspace import Workspace
from napari_ssseg.io.writers import write_case


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("src")
    for seed in range(3):
        write_case(make_phantom((16, 24, 24), seed=seed).to_case(name=f"p{seed}"), folder)
    return folder


@pytest.fixture
def ws_path(tmp_path, source) -> Path:
    assert main(["workspace", "init", str(tmp_path / "ws"), "--from", str(source)]) == 0
    return tmp_path / "ws"


def test_init_and_status_json(ws_path, capsys):
    capsys.readouterr()
    assert main(["workspace", "status", str(ws_path), "--json", "--verify"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_cases"] == 3 and out["status_counts"]["new"] == 3
    assert [c["case"] for c in out["cases"]] == ["p0", "p1", "p2"]
    assert out["problems"] == []


def test_status_table(ws_path, capsys):
    assert main(["workspace", "status", str(ws_path)]) == 0
    out = capsys.readouterr().out
    assert "3 case(s)" in out and "p1" in out


def test_suggest_uses_stored_scores_and_says_so(ws_path, capsys):
    with Workspace.open(ws_path) as ws:
        for cid, s in (("p0", 0.2), ("p1", 0.7)):
            ws.set_scores(cid, entropy=s)
    capsys.readouterr()
    assert main(["workspace", "suggest", str(ws_path), "--n", "3", "--json"]) == 0
    cap = capsys.readouterr()
    out = json.loads(cap.out)
    assert [s["case"] for s in out["suggestions"]] == ["p1", "p0", "p2"]
    assert "stored in the workspace" in cap.err and "ranked last" in cap.err


def test_suggest_without_scores_falls_back_to_random(ws_path, capsys):
    assert main(["workspace", "suggest", str(ws_path), "--n", "2"]) == 0
    cap = capsys.readouterr()
    assert "fell back to the random baseline" in cap.err
    assert len([ln for ln in cap.out.splitlines() if "random baseline" in ln]) == 2


def test_suggest_diversity_computes_features(ws_path, capsys):
    with Workspace.open(ws_path) as ws:
        for cid, s in (("p0", 0.2), ("p1", 0.7), ("p2", 0.5)):
            ws.set_scores(cid, entropy=s)
    assert main(["workspace", "suggest", str(ws_path), "--diversity", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["diversity"] == 0.5 and out["suggestions"][0]["case"] == "p1"


def test_export_evaluate_import(ws_path, tmp_path, capsys):
    with Workspace.open(ws_path) as ws:
        for cid in ws.case_ids[:2]:
            ws.save_labels(cid, ws.ground_truth(cid), source="human")
        ws.set_status("p0", "verified")
    out = tmp_path / "nn"
    assert main(["workspace", "export", str(ws_path), str(out), "--format", "nnunet"]) == 0
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == 1
    # a second export into the same folder is refused, exit 2, nothing replaced
    assert main(["workspace", "export", str(ws_path), str(out), "--format", "nnunet"]) == 2
    assert "Export refused" in capsys.readouterr().err
    assert main(["workspace", "export", str(ws_path), str(tmp_path / "b"), "--format", "brats",
                 "--all"]) == 0  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["p0", "p1"]
    capsys.readouterr()
    ev = tmp_path / "ev"
    assert main(["workspace", "evaluate", str(ws_path), "--out", str(ev)]) == 0
    text = capsys.readouterr().out
    assert "2 case(s) evaluated" in text and "skipped p2" in text
    assert (ev / "dice_boxplot.png").is_file() and (ev / "metrics.csv").is_file()
    assert main(["workspace", "import", str(out), str(tmp_path / "ws2")]) == 0
    with Workspace.open(tmp_path / "ws2", readonly=True) as w2:
        assert w2.case_ids == ["p0"] and w2.case("p0").status == "verified"


def test_snapshot_while_locked(ws_path, tmp_path, capsys):
    with Workspace.open(ws_path) as ws:  # another program holds the lock
        ws.save_labels("p0", np.zeros(ws.case("p0").shape, np.uint8), source="human")
        assert main(["workspace", "snapshot", str(ws_path), str(tmp_path / "snap")]) == 0
    assert (tmp_path / "snap" / "labels" / "p0.nii.gz").is_file()


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["workspace", "status", "{tmp}/nope"], "not a workspace"),
        (["workspace", "suggest", "{ws}", "--strategy", "magic"], "strategy"),
        (["workspace", "suggest", "{ws}", "--n", "0"], "at least 1"),
        (["workspace", "export", "{ws}", "{tmp}/o", "--format", "zip"], "format='zip'"),
        (["workspace", "export", "{ws}", "{tmp}/o", "--format", "msd"], "set-status WS verified"),
        (["workspace", "init", "{ws}", "--from", "{tmp}"], "already holds a workspace"),
        (["workspace"], "needs a subcommand"),
    ],
)
def test_bad_input_exit_2(ws_path, tmp_path, capsys, argv, match):
    argv = [a.format(tmp=tmp_path, ws=ws_path) for a in argv]
    assert main(argv) == 2
    assert match in capsys.readouterr().err


def test_suggest_lock_message_names_holder(ws_path, capsys):
    with Workspace.open(ws_path):
        code = main(["workspace", "suggest", str(ws_path), "--model", "x.pt"])
    assert code == 2
    assert "already open" in capsys.readouterr().err


def test_suggest_with_model_scores_and_stores_uncertainty(ws_path, capsys, monkeypatch):
    """--model predicts each candidate (fake predict_case: no torch needed here)."""
    import types

    calls = []

    def fake_predict_case(case, checkpoint, uncertainty="auto"):
        calls.append((case.name, checkpoint, uncertainty))
        lab = np.zeros(case.shape, np.uint8)
        lab[4:8, 4:8, 4:8] = 2
        u = np.full(case.shape, 0.05, np.float32)
        u[lab > 0] = {"p0": 0.3, "p1": 0.9, "p2": 0.6}[case.name]
        return {"labels": lab, "uncertainty": u}

    fake = types.ModuleType("napari_ssseg.ml.inference")
    fake.predict_case = fake_predict_case
    monkeypatch.setitem(sys.modules, "napari_ssseg.ml.inference", fake)
    code = main(["workspace", "suggest", str(ws_path), "--model", "m.pt", "--n", "2", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert [s["case"] for s in out["suggestions"]] == ["p1", "p2"]
    assert out["suggestions"][0]["score"] == pytest.approx(0.9)
    # the entropy map is asked for (a multi-network model's "auto" map is its disagreement)
    assert sorted(calls) == [(c, "m.pt", "entropy") for c in ("p0", "p1", "p2")]
    with Workspace.open(ws_path, readonly=True) as ws:  # stored for later runs and the panel
        assert ws.case("p1").scores["entropy"] == pytest.approx(0.9)
        assert ws.read_uncertainty("p1").max() == pytest.approx(0.9)


def test_suggest_model_without_ml_stack_says_so(ws_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "napari_ssseg.ml.inference", None)  # import fails
    assert main(["workspace", "suggest", str(ws_path), "--model", "m.pt"]) == 0
    err = capsys.readouterr().err
    assert "--model ignored" in err and "random baseline" in err


def test_runs_and_add_run_without_torch(ws_path, tmp_path, capsys):
    """`runs` on an empty list, `add-run` of a run folder written by hand, bad folders."""
    assert main(["workspace", "runs", str(ws_path)]) == 0
    assert "no training run recorded" in capsys.readouterr().out
    run = tmp_path / "run"
    run.mkdir()
    events = [
        {"event": "start", "strategy": "cps", "config": {"epochs": 3}},
        {"event": "error", "message": "Out of memory (CUDA). Reduce --patch-size"},
    ]
    (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    assert main(["workspace", "add-run", str(ws_path), str(run), "--name", "big-cps"]) == 0
    assert "run big-cps recorded: failed" in capsys.readouterr().out
    assert main(["workspace", "runs", str(ws_path)]) == 0
    out = capsys.readouterr().out
    assert "big-cps" in out and "failed" in out and "cps" in out and "Out of memory" in out
    (tmp_path / "plain").mkdir()
    assert main(["workspace", "add-run", str(ws_path), str(tmp_path / "plain")]) == 2
    assert "not a training run folder" in capsys.readouterr().err
    with Workspace.open(ws_path, readonly=True) as ws:
        assert [r["id"] for r in ws.runs] == ["big-cps"] and ws.models == []


# ------------------------------------------------------- workspace from a labelled dataset
def test_init_labels_as_verified_exports_at_once(source, tmp_path, capsys):
    ws = tmp_path / "wv"
    assert main(["workspace", "init", str(ws), "--from", str(source), "--labels-as",
                 "verified"]) == 0  # fmt: skip
    assert "imported the label files of 3 case(s)" in capsys.readouterr().out
    with Workspace.open(ws, readonly=True) as w:
        for rec in w.cases:
            assert rec.status == "verified" and rec.n_versions == 1
            assert w.versions(rec.case_id)[0].source == "import"
            np.testing.assert_array_equal(w.latest_labels(rec.case_id), w.ground_truth(rec.case_id))
    out = tmp_path / "nn"
    assert main(["workspace", "export", str(ws), str(out), "--format", "nnunet"]) == 0
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == 3


def test_init_labels_as_proposed_and_default_note(source, tmp_path, capsys):
    assert main(["workspace", "init", str(tmp_path / "wp"), "--from", str(source),
                 "--labels-as", "proposed"]) == 0  # fmt: skip
    with Workspace.open(tmp_path / "wp", readonly=True) as w:
        assert {r.status for r in w.cases} == {"proposed"}
    capsys.readouterr()
    assert main(["workspace", "init", str(tmp_path / "wd"), "--from", str(source)]) == 0
    assert "add-labels WS --from-ground-truth" in capsys.readouterr().out
    assert main(["workspace", "init", str(tmp_path / "wx"), "--from", str(source),
                 "--labels-as", "verifed"]) == 2  # fmt: skip
    assert "verified" in capsys.readouterr().err


def test_add_labels_and_set_status(ws_path, source, tmp_path, capsys):
    seg = next((source / "p1").glob("*seg*"))
    assert main(["workspace", "add-labels", str(ws_path), "p1", str(seg)]) == 0
    assert "version 1 (import) saved; status corrected" in capsys.readouterr().out
    assert main(["workspace", "set-status", str(ws_path), "verified", "p1"]) == 0
    with Workspace.open(ws_path, readonly=True) as w:
        assert w.case("p1").status == "verified"
        np.testing.assert_array_equal(w.latest_labels("p1"), w.ground_truth("p1"))
    # p0 has no label version: it cannot be verified, and the message names the command
    assert main(["workspace", "set-status", str(ws_path), "verified", "p0"]) == 2
    assert "ssseg workspace add-labels" in capsys.readouterr().err
    assert main(["workspace", "add-labels", str(ws_path), "--from-ground-truth",
                 "--cases", "p0", "p2"]) == 0  # fmt: skip
    with Workspace.open(ws_path, readonly=True) as w:
        assert [w.case(c).status for c in ("p0", "p1", "p2")] == ["verified"] * 3
    assert main(["workspace", "set-status", str(ws_path), "corrected", "--all"]) == 0
    assert "3 case(s) set to corrected" in capsys.readouterr().out
    assert main(["workspace", "set-status", str(ws_path), "done", "--all"]) == 2
    assert "verified" in capsys.readouterr().err
    assert main(["workspace", "add-labels", str(ws_path), "p0"]) == 2
    assert "needs CASE and FILE" in capsys.readouterr().err
    # a label file from another case's grid is refused
    other = tmp_path / "other.nii.gz"
    import SimpleITK as sitk

    sitk.WriteImage(sitk.Image(5, 5, 5, sitk.sitkUInt8), str(other))
    assert main(["workspace", "add-labels", str(ws_path), "p0", str(other)]) == 2
    assert "not on the grid of case 'p0'" in capsys.readouterr().err


def test_evaluate_lesion_wise_cli(ws_path, capsys):
    with Workspace.open(ws_path) as ws:
        ws.save_labels("p0", ws.ground_truth("p0"), source="human")
    assert main(["workspace", "evaluate", str(ws_path), "--lesion-wise", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["cases"]["p0"]["WT"]["lesion_wise"]["dice"] == 1.0
    assert main(["workspace", "evaluate", str(ws_path), "--lesion-wise"]) == 0
    assert "lesion-wise (BraTS-GLI 2023 rules" in capsys.readouterr().out
    assert main(["workspace", "evaluate", str(ws_path), "--lesion-wise", "--challenge",
                 "nope"]) == 2  # fmt: skip


def test_clinical_marks_and_unmarks_cases(ws_path, capsys):
    capsys.readouterr()
    args = ["workspace", "clinical", str(ws_path), "p0", "p2", "--brain-extraction", "on"]
    assert main([*args, "--resample", "1"]) == 0
    out = capsys.readouterr().out
    assert "p0: clinical: brain extraction on, register auto, working grid 1 mm" in out
    with Workspace.open(ws_path, readonly=True) as ws:
        assert ws.case("p0").clinical == {
            "brain_extraction": "on",
            "register": "auto",
            "resample": 1.0,
        }
        assert ws.case("p1").clinical is None
    assert main(["workspace", "clinical", str(ws_path), "--all", "--off"]) == 0
    assert "p2: used as its files are" in capsys.readouterr().out
    with Workspace.open(ws_path, readonly=True) as ws:
        assert all(r.clinical is None for r in ws.cases)
    assert main(["workspace", "clinical", str(ws_path)]) != 0
    assert "or give --all" in capsys.readouterr().err
