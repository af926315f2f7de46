"""`ssseg propagate` on a raw clinical study: scribbles and output on the FLAIR's native grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from napari_ssseg.cli import main

RAW = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real" / "TCGA-FG-6692-raw"


@pytest.mark.slow  # brain extraction + 2000 superpixels on the 1 mm working grid: minutes
@pytest.mark.skipif(not RAW.is_dir(), reason="shared/data/real/TCGA-FG-6692-raw is absent")
def test_scribbles_on_the_native_flair_grid_propagate_through_the_working_grid(tmp_path, capsys):
    pytest.importorskip("deepbet", reason="deepbet (the clinical extra) is not installed")
    flair_path = next(RAW.glob("*FLAIR*.nii.gz"))
    flair = sitk.ReadImage(str(flair_path))
    scr = np.zeros(sitk.GetArrayViewFromImage(flair).shape, np.uint8)  # (26, 256, 208) z, y, x
    # the lesion is FLAIR-bright in the left posterior region around slice 16 (see the
    # images in docs/clinical-scans.md); an oedema stroke across it, healthy strokes elsewhere
    scr[16, 156:167, 44:49] = 2
    scr[16, 100:104, 120:140] = 255
    scr[12, 120:124, 140:160] = 255
    img = sitk.GetImageFromArray(scr)
    img.CopyInformation(flair)
    path = tmp_path / "scribbles.nii.gz"
    sitk.WriteImage(img, str(path))
    out = tmp_path / "dense.nii.gz"
    rc = main(
        ["propagate", str(RAW), "--scribbles", str(path), "--out", str(out), "--register", "off"]
    )
    assert rc == 0, capsys.readouterr().err
    res = sitk.ReadImage(str(out))
    assert res.GetSize() == flair.GetSize()
    assert np.allclose(res.GetOrigin(), flair.GetOrigin(), atol=1e-4)
    assert np.allclose(res.GetDirection(), flair.GetDirection(), atol=1e-6)
    dense = sitk.GetArrayFromImage(res)
    assert (dense[scr == 2] > 0).mean() > 0.9  # the stroke's voxels are tumour
    assert (dense[scr == 255] == 0).mean() > 0.9  # the healthy strokes are not
    tumour_ml = (dense > 0).sum() * np.prod(flair.GetSpacing()) / 1e3
    assert 0.5 < tumour_ml < 200.0  # spread beyond the stroke, not over the head
    # nothing outside the head: the FLAIR's background (air) gets no label
    air = sitk.GetArrayFromImage(flair) < np.percentile(sitk.GetArrayFromImage(flair), 20)
    assert not (dense[air] > 0).any()
