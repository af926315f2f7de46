"""``ssseg demo --case PATH``: the demo's stages on a real case folder instead of the phantom."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_ssseg.cli import main

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real"
CASE = REAL / "BraTS-GLI-00000-000"


def _fast(out: Path) -> list[str]:
    # the heavy optional stages are left out; propose, refine and evaluate run
    return ["--headless", "--out", str(out), "--no-retrain", "--no-screenshot"]


def test_demo_on_a_real_labelled_case(tmp_path):
    if not CASE.is_dir():
        pytest.skip(f"real cases not available ({CASE} is absent)")
    before = sorted(p.name for p in CASE.iterdir())
    # the scribbles (the slowest stage on a full case) run in the unlabelled-case test below
    args = [*_fast(tmp_path), "--workspace-cases", "0", "--no-scribble"]
    code = main(["demo", "--case", str(CASE), *args])
    summary = json.loads((tmp_path / "summary.json").read_text())
    statuses = {name: rec["status"] for name, rec in summary["stages"].items()}
    assert code == 0, statuses
    assert statuses == {
        "case": "ok",
        "load": "ok",
        "propose": "ok",
        "refine": "ok",
        "evaluate": "ok",
    }
    assert summary["case"] == "BraTS-GLI-00000-000"
    assert summary["source"] == "case folder"
    assert summary["shape"] == [155, 240, 240]
    assert summary["stages"]["load"]["naming"] == "brats2023"
    assert summary["stages"]["load"]["labels"] == "yes"
    # no phantom was generated, and the real case folder was only read
    assert not (tmp_path / "cases").exists()
    assert sorted(p.name for p in CASE.iterdir()) == before
    # measured against the case's own labels: real numbers, and the model finds the tumour
    for key in ("proposal", "refined"):
        wt = summary["metrics"][key]["WT"]["dice"]
        assert 0.2 < wt <= 1.0, (key, wt)
    assert "Real case" in (tmp_path / "summary.md").read_text()
    assert "against the case's labels" in (tmp_path / "summary.md").read_text()


def test_demo_on_an_unlabelled_case_skips_metrics(tmp_path):
    from napari_ssseg.core.phantom import make_phantom
    from napari_ssseg.io.writers import write_case

    phantom = make_phantom(shape=(48, 64, 64), spacing=(2.0, 2.0, 2.0), seed=5)
    case_dir = write_case(phantom.to_case(name="Unlabelled_001"), tmp_path / "in", "brats2021")
    (case_dir / "Unlabelled_001_seg.nii.gz").unlink()
    out = tmp_path / "out"
    code = main(["demo", "--case", str(case_dir), *_fast(out), "--workspace-cases", "1"])
    summary = json.loads((out / "summary.json").read_text())
    stages = summary["stages"]
    assert code == 0, stages
    assert stages["load"]["labels"] == "none"
    assert stages["evaluate"]["status"] == "skipped"
    assert "no labels" in stages["evaluate"]["reason"]
    assert summary["metrics"] == {}
    # the scripted strokes come from the proposal when there is no ground truth
    assert stages["scribble"]["status"] == "ok"
    assert "proposal" in stages["scribble"]["source"]
    assert stages["workspace"]["status"] == "ok"
    assert "Unlabelled_001" in stages["workspace"]["cases"]
    assert (out / "proposal.nii.gz").is_file() and (out / "refined.nii.gz").is_file()
    # the input folder was not written to
    assert sorted(p.name for p in case_dir.iterdir()) == [
        f"Unlabelled_001_{m}.nii.gz" for m in ("flair", "t1", "t1ce", "t2")
    ]


def test_demo_case_that_does_not_exist(tmp_path, capsys):
    missing = tmp_path / "no-such-case"
    assert main(["demo", "--case", str(missing), *_fast(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "no such file or folder" in err
    assert "BraTS 2023" in err  # says what a case looks like
    assert not (tmp_path / "out").exists()


def test_demo_case_folder_without_images(tmp_path, capsys):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "readme.txt").write_text("not an image")
    assert main(["demo", "--case", str(folder), *_fast(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert str(folder) in err and "is not a case" in err and "No images found" in err


def test_demo_case_refuses_phantom_options(tmp_path, capsys):
    args = ["demo", "--case", str(tmp_path), "--shape", "64", "64", "64", *_fast(tmp_path)]
    assert main(args) == 2
    assert "--shape" in capsys.readouterr().err


@pytest.mark.gui
def test_demo_viewer_opens_the_given_case(qtbot, tmp_path, make_napari_viewer):
    from napari_ssseg._napari.launch import launch_demo_viewer
    from napari_ssseg.core.phantom import make_phantom
    from napari_ssseg.io.writers import write_case

    phantom = make_phantom(shape=(40, 56, 56), spacing=(2.0, 2.0, 2.0), seed=2)
    case_dir = write_case(phantom.to_case(name="Given_007"), tmp_path, "brats2023")
    viewer = launch_demo_viewer(case=case_dir, run=False, viewer=make_napari_viewer())
    try:
        names = [layer.name for layer in viewer.layers]
        assert "Given_007 FLAIR" in names and "Given_007 labels" in names
        assert not any("Phantom" in n for n in names)
        assert tuple(viewer.layers["Given_007 FLAIR"].scale) == (2.0, 2.0, 2.0)
    finally:
        viewer.close()


def test_demo_case_with_an_unusable_label_file_goes_on_without_metrics(tmp_path):
    import nibabel as nib

    from napari_ssseg.core.phantom import make_phantom
    from napari_ssseg.io.writers import write_case

    phantom = make_phantom(shape=(40, 56, 56), spacing=(2.0, 2.0, 2.0), seed=4)
    case_dir = write_case(phantom.to_case(name="BadSeg_001"), tmp_path / "in", "brats2021")
    seg = case_dir / "BadSeg_001_seg.nii.gz"
    img = nib.load(seg)
    data = np.asarray(img.dataobj).astype(np.uint8)
    data[data > 0] = 7  # a value of no label convention
    nib.save(nib.Nifti1Image(data, img.affine, img.header), seg)
    out = tmp_path / "out"
    args = [*_fast(out), "--workspace-cases", "0", "--no-propose", "--no-scribble"]
    assert main(["demo", "--case", str(case_dir), *args]) == 0
    summary = json.loads((out / "summary.json").read_text())
    stages = summary["stages"]
    assert stages["load"]["labels"] == "none"
    assert any("7" in w for w in stages["load"]["warnings"])  # the warning names the value
    assert stages["refine"]["status"] == "skipped"  # no proposal and no usable labels
    assert stages["evaluate"]["status"] == "skipped"


def test_demo_case_with_flair_and_t1c_only(tmp_path):
    from napari_ssseg.core.phantom import make_phantom
    from napari_ssseg.io.writers import write_case

    phantom = make_phantom(shape=(40, 56, 56), spacing=(2.0, 2.0, 2.0), seed=6)
    case_dir = write_case(phantom.to_case(name="TwoMod_001"), tmp_path / "in", "brats2021")
    for m in ("t1", "t2"):
        (case_dir / f"TwoMod_001_{m}.nii.gz").unlink()
    out = tmp_path / "out"
    args = [*_fast(out), "--workspace-cases", "1", "--no-scribble"]
    assert main(["demo", "--case", str(case_dir), *args]) == 0
    summary = json.loads((out / "summary.json").read_text())
    stages = summary["stages"]
    assert stages["load"]["modalities"] == ["t1ce", "flair"]
    propose = stages["propose"]
    if propose["status"] == "ok":  # a model trained with modality dropout: zero-filled inputs
        assert propose["missing_modalities"] == ["t1", "t2"]
        assert stages["refine"]["source"] == "model proposal"
    else:  # a model that needs all four inputs: said, and the demo goes on without it
        assert propose["status"] == "skipped"
        assert "missing t1, t2" in propose["reason"]
        assert stages["refine"]["source"].startswith("degraded ground truth")
    assert stages["refine"]["status"] == "ok" and stages["evaluate"]["status"] == "ok"
    assert stages["workspace"]["status"] == "ok"
    assert stages["workspace"]["export_format"] == "BraTS"  # nnU-Net needs all four inputs
