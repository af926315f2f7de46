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


def _stub_extraction(monkeypatch, fails: set[int]):
    """``extract_brain`` stand-in: fails (implausible mask) on images whose first voxel is in
    ``fails``; else a mask of the voxels > 0. Records the images it was given."""
    import napari_ssseg.ml.brain_extraction as be

    seen: list[int] = []

    def extract(image, spacing_zyx, device="cpu", **_):
        key = int(image.flat[0])
        seen.append(key)
        if key in fails:
            raise be.BrainExtractionError("Brain extraction gave an implausible mask: 12 ml.")
        return np.asarray(image) > 0, {"volume_ml": 1500.0, "passed": True}

    monkeypatch.setattr(be, "extract_brain", extract)
    return seen


def test_a_t1_that_fails_falls_back_to_the_t1gd_and_says_so(monkeypatch):
    from napari_ssseg.ml.brain_extraction import extract_brain_case

    images = np.stack([np.full((4, 4, 4), v, np.float32) for v in (1, 2, 3)])  # t1, t1ce, flair
    seen = _stub_extraction(monkeypatch, fails={1})
    with pytest.warns(UserWarning, match=r"t1 failed .*implausible.*from t1ce instead"):
        mask, info = extract_brain_case(images, ["t1", "t1ce", "flair"], (1, 1, 1))
    assert seen == [1, 2]  # the T1 first, then the T1Gd; never the FLAIR
    assert info["sequence"] == "t1ce" and "implausible" in info["tried"]["t1"]
    assert mask.all()


def test_brain_extraction_failing_on_every_t1_weighted_series_names_each(monkeypatch):
    from napari_ssseg.ml.brain_extraction import BrainExtractionError, extract_brain_case

    images = np.stack([np.full((4, 4, 4), v, np.float32) for v in (1, 2)])
    _stub_extraction(monkeypatch, fails={1, 2})
    with pytest.raises(BrainExtractionError, match=r"every T1-weighted series: t1: .*; t1ce: "):
        extract_brain_case(images, ["t1", "t1ce"], (1, 1, 1))
