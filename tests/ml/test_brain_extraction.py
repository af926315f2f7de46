"""deepbet brain extraction on the real raw TCGA case (issue 13)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from napari_ssseg.core.case import Geometry, Orientation
from napari_ssseg.core.working_grid import make_working_grid, resample_to

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real"
RAW = REAL / "TCGA-FG-6692-raw"


def _geometry(img: sitk.Image) -> Geometry:
    return Geometry(img.GetSpacing(), img.GetOrigin(), img.GetDirection())


def test_missing_t1_is_named():
    from napari_ssseg.ml.brain_extraction import BrainExtractionError, extract_brain_case

    with pytest.raises(BrainExtractionError, match="T1-weighted"):
        extract_brain_case(np.zeros((1, 4, 4, 4), np.float32), ["flair"], (1, 1, 1))


@pytest.mark.slow
@pytest.mark.skipif(not RAW.is_dir(), reason="shared/data/real/TCGA-FG-6692-raw is absent")
def test_deepbet_on_raw_t1_gives_plausible_brain():
    pytest.importorskip("deepbet", reason="deepbet (the clinical extra) is not installed")
    from napari_ssseg.ml.brain_extraction import extract_brain_case

    files = sorted(RAW.glob("*.nii.gz"))
    flair = sitk.ReadImage(str(next(f for f in files if "FLAIR" in f.name)))
    t1 = sitk.ReadImage(str(next(f for f in files if f.name.startswith("T1_AX"))))
    ref = _geometry(flair)
    wg = make_working_grid(ref, sitk.GetArrayViewFromImage(flair).shape, 1.0)
    t1w = resample_to(t1, None, wg.geometry, wg.shape)
    orient = Orientation.from_geometry(wg.geometry)
    canon = orient.to_canonical(t1w)
    mask, info = extract_brain_case(canon[None], ["t1"], (1.0, 1.0, 1.0))
    vol_l = mask.sum() / 1e6
    assert 1.0 <= vol_l <= 1.8, info
    assert info["check"]["inside_head"] > 0.97
    assert info["sequence"] == "t1"


def test_loading_deepbet_raises_no_jit_deprecation_warning():
    """deepbet's own ``torch.jit.load`` deprecation warning is not passed on (napari would show
    it as a notification at the first brain extraction); other warnings still are."""
    pytest.importorskip("deepbet", reason="deepbet (the clinical extra) is not installed")
    import warnings

    import napari_ssseg.ml.brain_extraction as be

    saved = dict(be._MODEL)
    be._MODEL.clear()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            be._model("cpu")
            warnings.warn("another deprecation", DeprecationWarning, stacklevel=1)
    finally:
        be._MODEL.clear()
        be._MODEL.update(saved)
    texts = [str(w.message) for w in caught]
    assert not any("torch.jit.load" in t for t in texts), texts
    assert "another deprecation" in texts
