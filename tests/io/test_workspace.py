"""Workspace on disk: cases, versions, restore, snapshot, lock, faults."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from napari_ssseg.core.phantom import make_phantom
from napari_ssseg.errors import GeometryError, InputError
from napari_ssseg.io.readers import load_case
from napari_ssseg.io.workspace import (
    BACKUP_NAME,
    LOCK_NAME,
    MANIFEST_NAME,
    SCHEMA_VERSION,
    Autosaver,
    Workspace,
    WorkspaceLockedError,
    read_snapshot,
)
from napari_ssseg.io.writers import case_from_arrays, write_case

SHAPE = (24, 32, 32)
RAS = (-1, 0, 0, 0, -1, 0, 0, 0, 1)
PSL = (0, 0, 1, 1, 0, 0, 0, 1, 0)


def make_source(folder: Path) -> Path:
    """Three phantom cases: BraTS 2021 (LPS), BraTS 2023 (RAS), BraTS 2021 (PSL direction)."""
    specs = [("caseA", "brats2021", None), ("caseB", "brats2023", RAS), ("caseC", "brats2021", PSL)]
    for seed, (name, naming, direction) in enumerate(specs):
        ph = make_phantom(SHAPE, seed=seed)
        case = case_from_arrays(
            ph.images,
            ph.modalities,
            spacing_zyx=(1.2, 1.0, 0.9),
            origin=(3.0, -2.0, 5.0),
            direction=direction,
            labels=ph.labels,
            convention=naming,
            name=name,
        )
        write_case(case, folder, naming=naming)
    return folder


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return make_source(tmp_path_factory.mktemp("src"))


@pytest.fixture
def ws(tmp_path, source):
    w = Workspace.create(tmp_path / "ws", from_dir=source)
    yield w
    w.close()


def _labels(w: Workspace, cid: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 4, size=w.case(cid).shape).astype(np.uint8)


# ----------------------------------------------------------------------------- basics
def test_create_lists_cases_without_loading_images(ws, source):
    ids = ws.case_ids
    assert ids == ["caseA", "caseB", "caseC"]
    m = json.loads((ws.root / MANIFEST_NAME).read_text())
    assert m["schema_version"] == SCHEMA_VERSION
    recs = {r.case_id: r for r in ws.cases}
    assert recs["caseB"].convention == "brats2023"
    assert recs["caseA"].ground_truth is not None
    assert all(r.status == "new" and r.n_versions == 0 and not r.missing for r in recs.values())
    # canonical shapes come from the header geometry (PSL case is transposed)
    for cid in ids:
        case = load_case(source / cid)
        assert ws.case(cid).shape == case.shape


def test_create_refuses_existing_workspace(ws):
    ws.close()
    with pytest.raises(InputError, match="already holds a workspace"):
        Workspace.create(ws.root)


@pytest.mark.parametrize("cid", ["caseA", "caseB", "caseC"])
def test_save_read_roundtrip_on_source_grid(ws, source, cid):
    lab = _labels(ws, cid)
    prov = np.full(lab.shape, 4, np.uint8)
    prov[0] = 1
    v = ws.save_labels(cid, lab, source="human", note="painted", provenance=prov)
    assert v.version == 1 and v.file.is_file() and v.source == "human" and v.note == "painted"
    np.testing.assert_array_equal(ws.latest_labels(cid), lab)
    np.testing.assert_array_equal(ws.read_provenance(cid), prov)
    # the version file lies on the source grid: read_labels with the source case agrees
    from napari_ssseg.io.readers import read_labels

    case = load_case(source / cid)
    np.testing.assert_array_equal(read_labels(v.file, case, "brats2023"), lab)
    loaded = ws.load_case(cid)
    np.testing.assert_array_equal(loaded.labels, lab)
    assert loaded.name == cid and loaded.convention.name == ws.case(cid).convention
    assert ws.case(cid).status == "corrected"


def test_versions_restore_and_history(ws):
    a, b = _labels(ws, "caseA", 1), _labels(ws, "caseA", 2)
    ws.save_labels("caseA", a, source="model")
    assert ws.case("caseA").status == "proposed"
    ws.save_labels("caseA", b, source="superpixel")
    assert ws.case("caseA").status == "refined"
    r = ws.restore("caseA", 1)
    assert r.version == 3 and r.source == "restore" and r.restored_from == 1
    np.testing.assert_array_equal(ws.latest_labels("caseA"), a)
    np.testing.assert_array_equal(ws.read_version("caseA", 2), b)
    assert [v.version for v in ws.versions("caseA")] == [1, 2, 3]
    # status never moves backwards on save
    ws.set_status("caseA", "verified")
    ws.save_labels("caseA", b, source="model")
    assert ws.case("caseA").status == "verified"
    with pytest.raises(InputError, match="no label version 9"):
        ws.restore("caseA", 9)


def test_reopen_keeps_everything(ws):
    lab = _labels(ws, "caseB")
    ws.save_labels("caseB", lab, source="human")
    ws.save_scribbles("caseB", (lab == 3).astype(np.uint8) * 2, note="ET strokes")
    ws.set_status("caseB", "verified", note="checked")
    root = ws.root
    ws.close()
    with Workspace.open(root) as w2:
        assert w2.case("caseB").status == "verified"
        np.testing.assert_array_equal(w2.latest_labels("caseB"), lab)
        np.testing.assert_array_equal(w2.latest_scribbles("caseB"), (lab == 3) * 2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"labels": np.zeros((3, 3, 3), np.uint8), "source": "human"}, "shape"),
        ({"labels": None, "source": "human", "bad": 7}, "values from 0 to 7"),
        ({"labels": None, "source": "alien"}, "source='alien'"),
        ({"labels": None, "source": "human", "float": True}, "integers"),
    ],
)
def test_save_labels_bad_input(ws, kwargs, match):
    lab = np.zeros(ws.case("caseA").shape, np.uint8)
    if "bad" in kwargs:
        lab[0, 0, 0] = kwargs.pop("bad")
    if kwargs.pop("float", False):
        lab = lab.astype(np.float32) + 0.5
    if kwargs["labels"] is None:
        kwargs["labels"] = lab
    with pytest.raises(InputError, match=match):
        ws.save_labels("caseA", **kwargs)
    assert ws.versions("caseA") == []


def test_unknown_case_suggests_close_name(ws):
    with pytest.raises(InputError, match="Did you mean 'caseA'"):
        ws.case("casA")


def test_readonly_refuses_writes(ws):
    root = ws.root
    ws.close()
    with Workspace.open(root, readonly=True) as r:
        with pytest.raises(InputError, match="read-only"):
            r.save_labels("caseA", np.zeros(r.case("caseA").shape, np.uint8), source="human")
        assert not (root / LOCK_NAME).exists()


# ----------------------------------------------------------------------------- snapshot
def test_snapshot_is_frozen_while_annotation_goes_on(ws, tmp_path):
    a = _labels(ws, "caseA", 3)
    ws.save_labels("caseA", a, source="human", provenance=np.full(a.shape, 4, np.uint8))
    snap = ws.snapshot(tmp_path / "snap")
    info = read_snapshot(snap)
    assert [c["id"] for c in info["cases"]] == ["caseA"]
    entry = info["cases"][0]
    before = entry["labels"].read_bytes()
    ws.save_labels("caseA", _labels(ws, "caseA", 4), source="human")  # annotation goes on
    assert entry["labels"].read_bytes() == before
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(entry["labels"])))
    np.testing.assert_array_equal(arr, a)  # caseA is LPS: file order = canonical
    assert entry["version"] == 1 and entry["provenance"].is_file()
    with pytest.raises(InputError, match="not empty"):
        ws.snapshot(tmp_path / "snap")


def test_begin_and_finish_run_registers_model(ws, tmp_path):
    ws.save_labels("caseA", _labels(ws, "caseA"), source="human")
    run = ws.begin_run(config={"epochs": 1})
    assert (run.snapshot / "snapshot.json").is_file()
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"weights")
    ws.finish_run(run.run_id, checkpoint=ckpt, metrics={"dice": 0.5})
    assert ws.runs[0]["state"] == "done" and ws.runs[0]["model"] == "model-001"
    assert ws.models[0]["path"] == str(ckpt)


# ----------------------------------------------------------------------------- faults
def test_newer_schema_is_refused_and_file_untouched(ws):
    root = ws.root
    ws.close()
    m = json.loads((root / MANIFEST_NAME).read_text())
    m["schema_version"] = SCHEMA_VERSION + 1
    text = json.dumps(m)
    (root / MANIFEST_NAME).write_text(text)
    with pytest.raises(InputError, match="newer than this napari-ssseg understands"):
        Workspace.open(root)
    assert (root / MANIFEST_NAME).read_text() == text
    assert not (root / LOCK_NAME).exists()


def test_missing_images_mark_case_missing_rest_works(tmp_path, source):
    src = tmp_path / "src"
    shutil.copytree(source, src)
    with Workspace.create(tmp_path / "ws", from_dir=src) as w:
        (src / "caseB" / "caseB-t2w.nii.gz").unlink()
        assert w.case("caseB").missing and not w.case("caseA").missing
        with pytest.raises(InputError, match="missing"):
            w.load_case("caseB")
        case = w.load_case("caseA")  # the rest works
        w.save_labels("caseA", np.zeros(case.shape, np.uint8), source="human")
        assert w.summary()["missing"] == ["caseB"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("version", "../../etc/passwd"),
        ("version", "/etc/passwd"),
        ("image", "../../etc/hosts"),
        ("id", "../../etc"),
    ],
)
def test_path_traversal_in_manifest_is_refused(ws, field, value):
    ws.save_labels("caseA", _labels(ws, "caseA"), source="human")
    root = ws.root
    ws.close()
    m = json.loads((root / MANIFEST_NAME).read_text())
    c = m["cases"][0]
    if field == "version":
        c["versions"][0]["file"] = value
    elif field == "image":
        c["images"]["t1"] = value
    else:
        c["id"] = value
    (root / MANIFEST_NAME).write_text(json.dumps(m))
    (root / BACKUP_NAME).unlink(missing_ok=True)
    with pytest.raises(InputError, match="outside the workspace|not valid"):
        Workspace.open(root)


def test_corrupt_manifest_restored_from_backup(ws):
    ws.save_labels("caseA", _labels(ws, "caseA"), source="human")
    ws.save_labels("caseA", _labels(ws, "caseA", 5), source="human")
    root = ws.root
    ws.close()
    mpath = root / MANIFEST_NAME
    mpath.write_bytes(mpath.read_bytes()[:100])  # truncated
    with pytest.warns(UserWarning, match="corrupt .*restored the previous version"):
        w = Workspace.open(root)
    with w:
        assert len(w.versions("caseA")) == 1  # the backup is the manifest before the last save
        assert w.verify() == []
    json.loads(mpath.read_text())  # manifest rewritten and valid
    assert list(root.glob(f"{MANIFEST_NAME}.corrupt-*"))


def test_corrupt_manifest_without_backup_clear_message(ws):
    root = ws.root
    ws.close()
    (root / MANIFEST_NAME).write_text("{not json")
    (root / BACKUP_NAME).unlink(missing_ok=True)
    with pytest.raises(InputError, match="is corrupt .*backup"):
        Workspace.open(root)


def test_disk_full_during_label_write_keeps_previous(ws, monkeypatch):
    first = _labels(ws, "caseA")
    ws.save_labels("caseA", first, source="human")
    manifest_before = (ws.root / MANIFEST_NAME).read_text()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(sitk, "WriteImage", full)
    with pytest.raises(InputError, match="No space left on device.*nothing was lost"):
        ws.save_labels("caseA", _labels(ws, "caseA", 9), source="human")
    monkeypatch.undo()
    assert (ws.root / MANIFEST_NAME).read_text() == manifest_before
    assert [v.version for v in ws.versions("caseA")] == [1]
    np.testing.assert_array_equal(ws.latest_labels("caseA"), first)
    assert not list((ws.root / "cases" / "caseA" / "labels").glob(".*tmp*"))
    ws.save_labels("caseA", first, source="human")  # works again afterwards
    assert ws.versions("caseA")[-1].version == 2


def test_disk_full_during_manifest_write_keeps_previous(ws, monkeypatch):
    ws.save_labels("caseA", _labels(ws, "caseA"), source="human")
    manifest_before = (ws.root / MANIFEST_NAME).read_text()
    real = Path.write_bytes

    def full(self, data):
        if MANIFEST_NAME in self.name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(InputError, match="manifest still lists the previous versions"):
        ws.save_labels("caseA", _labels(ws, "caseA", 2), source="human")
    monkeypatch.undo()
    assert (ws.root / MANIFEST_NAME).read_text() == manifest_before
    assert len(ws.versions("caseA")) == 1  # in-memory state rolled back too
    with Workspace.open(ws.root, readonly=True) as r:
        assert len(r.versions("caseA")) == 1 and r.verify() == []


def test_unwritable_location(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="Cannot create the output folder|not a folder"):
        Workspace.create(blocker / "ws")


def test_unwritable_workspace_folder_suggests_readonly(ws, monkeypatch):
    root = ws.root
    ws.close()
    real = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: False if Path(p) == root and mode & os.W_OK else real(p, mode)
    )
    with pytest.raises(InputError, match="not writable.*read-only"):
        Workspace.open(root)
    with Workspace.open(root, readonly=True) as r:
        assert r.case_ids


HOLDER = textwrap.dedent(
    """
    import sys, time
    from napari_ssseg.io.workspace import Workspace
    ws = Workspace.open(sys.argv[1])
    print("locked", flush=True)
    time.sleep(60)
    """
)


def test_lock_stops_second_process_and_names_holder(ws):
    root = ws.root
    ws.close()
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(root)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(WorkspaceLockedError, match=f"in use by process {proc.pid} on host"):
            Workspace.open(root)
        with Workspace.open(root, readonly=True) as r:  # reading still works
            assert r.case_ids
    finally:
        proc.kill()
        proc.wait()
    # the holder died without closing: its lock is stale and taken over with a warning
    with pytest.warns(UserWarning, match="stale lock"), Workspace.open(root):
        assert json.loads((root / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not (root / LOCK_NAME).exists()


def test_lock_of_other_host_is_not_stolen(ws):
    root = ws.root
    ws.close()
    (root / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere", "time": "t"}))
    with pytest.raises(WorkspaceLockedError, match="host 'elsewhere'"):
        Workspace.open(root)
    assert socket.gethostname() != "elsewhere"


def test_second_open_in_same_process_refused(ws):
    with pytest.raises(WorkspaceLockedError, match="already open"):
        Workspace.open(ws.root)


def test_images_changed_on_disk_detected(tmp_path, source):
    src = tmp_path / "src"
    shutil.copytree(source, src)
    with Workspace.create(tmp_path / "ws", from_dir=src) as w:
        ph = make_phantom((20, 32, 32), seed=3).to_case(name="caseA")
        shutil.rmtree(src / "caseA")
        write_case(ph, src, naming="brats2021")
        with pytest.raises(GeometryError, match="changed on disk"):
            w.load_case("caseA")


def test_copy_images_makes_workspace_self_contained(tmp_path, source):
    src = tmp_path / "src"
    shutil.copytree(source, src)
    with Workspace.create(tmp_path / "ws", from_dir=src, copy_images=True) as w:
        pass
    shutil.rmtree(src)
    with Workspace.open(tmp_path / "ws") as w:
        assert not any(r.missing for r in w.cases)
        assert w.load_case("caseC").shape == w.case("caseC").shape
        m = json.loads((w.root / MANIFEST_NAME).read_text())
        assert all(not Path(p).is_absolute() for p in m["cases"][0]["images"].values())


def test_uncertainty_scores_and_features(ws):
    shape = ws.case("caseA").shape
    lab = np.zeros(shape, np.uint8)
    lab[5:10, 5:10, 5:10] = 2
    u = np.full(shape, 0.1, np.float32)
    u[lab > 0] = 0.8
    score = ws.save_uncertainty("caseA", u, labels=lab)
    assert score == pytest.approx(0.8, abs=1e-6)
    assert ws.case("caseA").scores["entropy"] == pytest.approx(0.8, abs=1e-6)
    np.testing.assert_allclose(ws.read_uncertainty("caseA"), u)
    ws.set_features("caseA", [1.0, 2.0])
    np.testing.assert_array_equal(ws.features("caseA"), [1.0, 2.0])


# ----------------------------------------------------------------------------- autosave
class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_autosaver_interval_dirty_and_case_switch():
    saved: list[str] = []
    clock = FakeClock()
    a = Autosaver(lambda: saved.append("A"), interval=30, clock=clock)
    assert not a.maybe_save()  # clean
    a.mark_dirty()
    clock.t = 10
    assert not a.maybe_save() and a.dirty  # interval not elapsed
    clock.t = 31
    assert a.maybe_save() and saved == ["A"] and not a.dirty
    clock.t = 100
    assert not a.maybe_save()  # nothing new
    a.mark_dirty()
    assert a.switch_case(lambda: saved.append("B")) and saved == ["A", "A"]
    a.mark_dirty()
    clock.t = 105
    assert a.flush() and saved[-1] == "B"


def test_autosaver_failure_keeps_dirty():
    clock = FakeClock()

    def boom():
        raise InputError("disk full")

    a = Autosaver(boom, interval=1, clock=clock)
    a.mark_dirty()
    clock.t = 5
    with pytest.raises(InputError, match="disk full"):
        a.maybe_save()
    assert a.dirty


@pytest.mark.parametrize("interval", [0, -1, float("nan")])
def test_autosaver_bad_interval(interval):
    with pytest.raises(InputError, match="interval"):
        Autosaver(lambda: None, interval=interval)
