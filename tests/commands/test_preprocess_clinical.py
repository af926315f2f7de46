"""`ssseg preprocess` on a raw clinical study and on a skull-stripped BraTS case (issue 13)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from napari_ssseg.cli import main

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real"
RAW = REAL / "TCGA-FG-6692-raw"
BRATS = REAL / "BraTS-GLI-00000-000"


def _series():
    files = sorted(RAW.glob("*.nii.gz"))
    pick = {
        "flair": next(f for f in files if "FLAIR" in f.name),
        "t1": next(f for f in files if f.name.startswith("T1_AX")),
        "t1ce": next(f for f in files if "POST_GAD" in f.name),
        "t2": next(f for f in files if "_T2_" in f.name),
    }
    return [a for m, f in pick.items() for a in (f"--{m}", str(f))], pick["flair"]


@pytest.mark.skipif(not RAW.is_dir(), reason="shared/data/real/TCGA-FG-6692-raw is absent")
def test_raw_study_brain_mask_lands_on_flair_native_grid(tmp_path, capsys):
    pytest.importorskip("deepbet", reason="deepbet (the clinical extra) is not installed")
    args, flair = _series()
    # registration is tested in tests/core/test_clinical_grid.py; off here to save time
    rc = main(["preprocess", "--out", str(tmp_path), "--register", "off", *args])
    assert rc == 0
    err = capsys.readouterr().err
    assert "does not look skull-stripped" in err
    # it says what was done about it, not to run what just ran
    assert "the brain was extracted with deepbet on t1" in err and "run brain extraction" not in err
    meta = json.loads((tmp_path / "preprocess.json").read_text())
    assert meta["clinical"]["skull_stripped"]["stripped"] is False
    native = next(tmp_path.glob("*_brainmask_native.nii.gz"))
    img, ref = sitk.ReadImage(str(native)), sitk.ReadImage(str(flair))
    assert img.GetSize() == ref.GetSize()
    assert np.allclose(img.GetSpacing(), ref.GetSpacing(), atol=1e-5)
    assert np.allclose(img.GetOrigin(), ref.GetOrigin(), atol=1e-4)
    assert np.allclose(img.GetDirection(), ref.GetDirection(), atol=1e-6)
    vol_l = sitk.GetArrayFromImage(img).sum() * np.prod(ref.GetSpacing()) / 1e6
    assert 1.0 <= vol_l <= 1.8


@pytest.mark.skipif(not BRATS.is_dir(), reason="BraTS-GLI-00000-000 is absent")
def test_brats_case_is_left_alone(tmp_path, capsys):
    rc = main(["preprocess", str(BRATS), "--out", str(tmp_path)])
    assert rc == 0
    assert "skull-stripped" not in capsys.readouterr().err
    meta = json.loads((tmp_path / "preprocess.json").read_text())
    assert "clinical" not in meta
    assert meta["full_shape_zyx"] == [155, 240, 240]


def _args(case, **kw):
    import argparse

    ns = dict(brain_extraction="auto", register="auto", resample=None)
    ns.update(t1=None, t1ce=None, t2=None, flair=None, case=str(case))
    ns.update(kw)
    return argparse.Namespace(**ns)


@pytest.mark.skipif(not RAW.is_dir(), reason="shared/data/real/TCGA-FG-6692-raw is absent")
def test_load_case_clinical_raw_folder_maps_labels_back_to_flair_grid():
    pytest.importorskip("deepbet", reason="deepbet (the clinical extra) is not installed")
    from napari_ssseg.commands._clinical import load_case_clinical

    case, out_case, to_native = load_case_clinical(_args(RAW, register="off"))
    assert np.allclose(case.canonical_geometry.spacing, 1.0)
    flair = sitk.ReadImage(str(next(RAW.glob("*FLAIR*.nii.gz"))))
    assert out_case.file_shape == sitk.GetArrayViewFromImage(flair).shape
    assert out_case.geometry.allclose(
        type(out_case.geometry)(flair.GetSpacing(), flair.GetOrigin(), flair.GetDirection())
    )
    brain = case.images[0] != 0
    lab = np.zeros(case.shape, np.uint8)
    lab[brain] = 2
    native = to_native(lab)
    assert native.shape == out_case.shape
    vol_l = (native == 2).sum() * np.prod(flair.GetSpacing()) / 1e6
    assert 1.0 <= vol_l <= 1.8
    prob = to_native(brain.astype(np.float32))
    assert prob.shape == out_case.shape and 0 <= prob.min() and prob.max() <= 1.0001


@pytest.mark.skipif(not BRATS.is_dir(), reason="BraTS-GLI-00000-000 is absent")
def test_load_case_clinical_leaves_brats_unchanged():
    from napari_ssseg.commands._clinical import load_case_clinical
    from napari_ssseg.io.readers import load_case

    case, out_case, to_native = load_case_clinical(_args(BRATS))
    ref = load_case(str(BRATS))
    assert out_case is case and case.shape == ref.shape
    assert np.array_equal(case.images, ref.images)
    lab = np.ones(case.shape, np.uint8)
    assert to_native(lab) is lab
