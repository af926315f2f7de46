"""`ssseg refine` on a clinical study: pseudo-label and output on the FLAIR's native grid.

Issue 13.

The fast test uses the tiny synthetic two-grid study of tests/clinical_study.py (registered for
real, no brain extraction); the real-study test (TCGA-FG-6692-raw, deepbet) is slow-marked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from clinical_study import FINE, lesion_mask, make_study, write

from napari_ssseg.cli import main

RAW = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real" / "TCGA-FG-6692-raw"


def _series_args(study):
    return [a for m, f in study.items() for a in (f"--{m}", str(f))]


def _dice(a, b):
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def test_refine_works_on_the_working_grid_and_writes_on_the_native_flair_grid(tmp_path, capsys):
    study = make_study(tmp_path / "study")
    lesion = lesion_mask((30, 32, 32), FINE)
    core = lesion_mask((30, 32, 32), FINE)
    zz, yy, xx = np.indices(core.shape)
    core &= (xx % 3 != 0) | (zz % 2 != 0)  # a pseudo-label with holes and a rough edge
    pseudo = write(tmp_path / "pseudo.nii.gz", (core * 2).astype(np.uint8), FINE)
    gt = write(tmp_path / "gt.nii.gz", (lesion * 2).astype(np.uint8), FINE)
    out = tmp_path / "refined.nii.gz"
    args = ["refine", "-", *_series_args(study), "--pseudo", str(pseudo), "--gt", str(gt)]
    rc = main([*args, "--out", str(out), "--region", "wt", "--brain-extraction", "off"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "working grid" in captured.out and "flair's native grid" in captured.out
    res, flair = sitk.ReadImage(str(out)), sitk.ReadImage(str(study["flair"]))
    assert res.GetSize() == flair.GetSize()
    assert np.allclose(res.GetSpacing(), flair.GetSpacing(), atol=1e-6)
    assert np.allclose(res.GetOrigin(), flair.GetOrigin(), atol=1e-6)
    assert np.allclose(res.GetDirection(), flair.GetDirection(), atol=1e-9)
    refined = sitk.GetArrayFromImage(res) > 0
    assert _dice(refined, lesion) > 0.8
    assert refined[~lesion].sum() < 0.2 * lesion.sum()  # no leak over the head
    # the Dice printed is measured on the native grid against --gt
    wt = next(ln for ln in captured.out.splitlines() if ln.strip().startswith("WT "))
    before, after = (float(v) for v in wt.split()[1:3])
    assert before == pytest.approx(_dice(core, lesion), abs=1e-3)
    assert after == pytest.approx(_dice(refined, lesion), abs=1e-3)


def test_refine_refuses_a_pseudo_label_on_neither_grid(tmp_path, capsys):
    study = make_study(tmp_path / "study")
    bad = write(tmp_path / "bad.nii.gz", np.ones((7, 8, 9), np.uint8), FINE)
    args = ["refine", "-", *_series_args(study), "--pseudo", str(bad), "--out", "x.nii.gz"]
    rc = main([*args, "--brain-extraction", "off"])
    assert rc != 0
    err = capsys.readouterr().err
    assert "native grid" in err and "working grid" in err


@pytest.mark.slow  # deepbet + registration + superpixels on the 1 mm grid of the whole head
@pytest.mark.skipif(not RAW.is_dir(), reason="shared/data/real/TCGA-FG-6692-raw is absent")
def test_refine_raw_study_defaults(tmp_path, capsys):
    pytest.importorskip("deepbet", reason="deepbet (the clinical extra) is not installed")
    flair_path = next(RAW.glob("*FLAIR*.nii.gz"))
    flair = sitk.ReadImage(str(flair_path))
    arr = sitk.GetArrayFromImage(flair)
    pseudo = np.zeros(arr.shape, np.uint8)  # (26, 256, 208)
    # the FLAIR-bright lesion in the left posterior region (see docs/clinical-scans.md)
    pseudo[15:18, 152:168, 40:52] = 2
    img = sitk.GetImageFromArray(pseudo)
    img.CopyInformation(flair)
    path = tmp_path / "pseudo.nii.gz"
    sitk.WriteImage(img, str(path))
    out = tmp_path / "refined.nii.gz"
    rc = main(["refine", str(RAW), "--pseudo", str(path), "--out", str(out), "--region", "wt"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "does not look skull-stripped" in captured.err
    res = sitk.ReadImage(str(out))
    assert res.GetSize() == flair.GetSize()
    assert np.allclose(res.GetOrigin(), flair.GetOrigin(), atol=1e-4)
    assert np.allclose(res.GetDirection(), flair.GetDirection(), atol=1e-6)
    refined = sitk.GetArrayFromImage(res) > 0
    assert refined[pseudo > 0].mean() > 0.5
    air = arr < np.percentile(arr, 20)
    assert not refined[air].any()  # nothing on the FLAIR's background
