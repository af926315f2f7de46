"""Every real case in ``../shared/data/real`` reads correctly, by its own naming and convention.

Each case is read once per module (module-scoped fixtures): these are 240 x 240 x 155 volumes.
The folder lives beside the clone (never inside it); the tests skip when it is absent.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from napari_ssseg.core.case import MODALITIES
from napari_ssseg.io.readers import find_case_files, load_case

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real"

UPENN = ("UPENN-GBM-00002_11", "UPENN-GBM-00008_11", "UPENN-GBM-00011_11", "UPENN-GBM-00075_11")


def _case_dir(name: str) -> Path:
    folder = REAL / name
    if not folder.is_dir():
        pytest.skip(f"real case {name} not found at {folder} (../shared/data/real is absent)")
    return folder


def _load(name: str, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        case = load_case(_case_dir(name), **kwargs)
    return case, [str(w.message) for w in caught]


@pytest.fixture(scope="module", params=UPENN)
def upenn(request):
    return request.param, *_load(request.param)


def _sitk_geometry(path: str) -> tuple:
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.ReadImageInformation()
    return reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection(), reader.GetSize()


# ------------------------------------------------------------------------------- UPENN-GBM
def test_upenn_naming_four_modalities_and_labels(upenn) -> None:
    name, case, notes = upenn
    folder = _case_dir(name)
    assert case.naming == "upenn"
    assert case.name == name
    assert case.modalities == MODALITIES
    assert Path(case.sources["t1ce"]).name == f"{name}_T1GD.nii.gz"
    assert Path(case.sources["t1"]).name == f"{name}_T1.nii.gz"
    assert Path(case.sources["seg"]).name == f"{name}_segm.nii.gz"
    assert case.convention.name == "brats2021"  # UPENN values 1 NCR, 2 ED, 4 ET
    assert notes == []
    # labels: the file's values 1, 2, 4 decoded to internal 1, 2, 3, voxel for voxel
    raw = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / f"{name}_segm.nii.gz")))
    raw = case.orientation.to_canonical(raw)
    assert set(np.unique(raw).tolist()) <= {0, 1, 2, 4}
    for file_value, internal in ((1, 1), (2, 2), (4, 3)):
        assert np.array_equal(raw == file_value, case.labels == internal)
    # images: each channel is the file's voxels, untouched (all on the reference grid)
    t1gd = sitk.GetArrayFromImage(sitk.ReadImage(case.sources["t1ce"])).astype(np.float32)
    assert np.array_equal(case.orientation.to_canonical(t1gd), case.channel("t1ce"))


def test_upenn_geometry_matches_simpleitk(upenn) -> None:
    _, case, _ = upenn
    spacing, origin, direction, size = _sitk_geometry(case.sources["flair"])
    np.testing.assert_allclose(case.geometry.spacing, spacing, atol=1e-6)
    np.testing.assert_allclose(case.geometry.origin, origin, atol=1e-6)
    np.testing.assert_allclose(case.geometry.direction, direction, atol=1e-6)
    assert case.file_shape == tuple(int(s) for s in size[::-1])


def test_upenn_files_found_without_reading_voxels() -> None:
    cf = find_case_files(_case_dir(UPENN[0]))
    assert cf.naming == "upenn"
    assert set(cf.files) == set(MODALITIES)
    assert cf.seg is not None and cf.seg.name.endswith("_segm.nii.gz")
