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


# ---------------------------------------------------------------- every real case, geometry
ALL_LABELLED = {
    "BraTS-GLI-00000-000": ("brats2023", "brats2023", MODALITIES),
    "BraTS-GLI-00012-000": ("brats2023", "brats2023", MODALITIES),
    "brats_2013_pat0001_1": ("brats2021", "brats2013", ("t1ce", "flair")),
}
UNLABELLED = ("BraTS-GLI-00001-000", "BraTS-GLI-00027-000", "BraTS-GLI-00028-000")


@pytest.mark.parametrize("name", list(ALL_LABELLED) + list(UNLABELLED) + ["BraTS-MET-00110-000"])
def test_case_files_naming(name: str) -> None:
    """Header-only: every preprocessed real case is recognised by its own naming."""
    cf = find_case_files(_case_dir(name))
    naming, _, modalities = ALL_LABELLED.get(name, ("brats2023", None, MODALITIES))
    assert cf.naming == naming
    assert cf.modalities == modalities
    assert (cf.seg is not None) == (name in ALL_LABELLED)
    for path in cf.files.values():  # BraTS-preprocessed: SRI24 grid, 1 mm, 240 x 240 x 155
        spacing, _, _, size = _sitk_geometry(str(path))
        assert size == (240, 240, 155)
        np.testing.assert_allclose(spacing, (1.0, 1.0, 1.0), atol=1e-6)


@pytest.fixture(scope="module")
def brats2013():
    return _load("brats_2013_pat0001_1")


def test_brats2013_legacy_labels(brats2013) -> None:
    case, notes = brats2013
    assert case.modalities == ("t1ce", "flair")
    assert case.convention.name == "brats2013"
    assert any("brats2013" in n for n in notes)
    raw = sitk.GetArrayFromImage(sitk.ReadImage(case.sources["seg"]))
    raw = case.orientation.to_canonical(raw)
    assert set(np.unique(raw).tolist()) == {0, 1, 2, 3, 4}
    # 1 necrosis and 3 non-enhancing -> NCR (tumour core), 2 -> ED, 4 -> ET
    assert np.array_equal(np.isin(raw, (1, 3)), case.labels == 1)
    assert np.array_equal(raw == 2, case.labels == 2)
    assert np.array_equal(raw == 4, case.labels == 3)
    spacing, origin, direction, _ = _sitk_geometry(case.sources["flair"])
    np.testing.assert_allclose(case.geometry.origin, origin, atol=1e-6)
    np.testing.assert_allclose(case.geometry.direction, direction, atol=1e-6)


def test_brats2013_zscored_brain_mask(brats2013) -> None:
    """Background is a negative constant (z-scored): the mask is the non-background region."""
    from napari_ssseg.core.preprocess import background_value, brain_mask

    case, _ = brats2013
    backgrounds = [background_value(ch) for ch in case.images]
    assert all(b < -1 for b in backgrounds)  # not 0: the old rule took the whole grid
    region = np.zeros(case.shape, bool)
    for ch in case.images:
        values, counts = np.unique(ch, return_counts=True)
        region |= ch != values[np.argmax(counts)]
    mask = brain_mask(case.images)
    dice = 2 * int((mask & region).sum()) / int(mask.sum() + region.sum())
    assert dice > 0.99, dice  # measured 0.9993
    assert 0.10 < mask.mean() < 0.30  # a brain, not the 240 x 240 x 155 grid
    assert np.all(mask[case.labels > 0])  # the whole tumour lies inside


# --------------------------------------------------------------------- TCGA / PACS naming
def test_tcga_folder_is_one_case_by_sequence_keywords() -> None:
    folder = _case_dir("TCGA-FG-6692-raw")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cf = find_case_files(folder)
    assert not caught
    assert cf.naming == "pacs"
    assert cf.modalities == MODALITIES
    assert "_FLAIR_" in cf.files["flair"].name
    assert "POST_GAD" in cf.files["t1ce"].name
    assert "_T2_" in cf.files["t2"].name
    assert cf.files["t1"].name.startswith("T1_AX")
    assert cf.matched_by["t1ce"] == "T1 POST GAD T1C"
    assert cf.seg is None


def test_tcga_study_without_its_t2_is_still_read_by_sequence_keywords(tmp_path: Path) -> None:
    """Without the T2 only the T1's name ends like a BraTS suffix ('..._t1'): the study is
    still read whole (T1, T1 POST GAD, FLAIR), with a warning giving the mapping."""
    folder = _case_dir("TCGA-FG-6692-raw")
    study = tmp_path / "TCGA-no-T2"
    study.mkdir()
    for f in folder.glob("*.nii.gz"):
        if "_T2_" not in f.name:
            (study / f.name).symlink_to(f.resolve())
    with pytest.warns(UserWarning, match="sequence keywords"):
        cf = find_case_files(study)
    assert cf.naming == "pacs" and cf.modalities == ("t1", "t1ce", "flair")
    assert "POST_GAD" in cf.files["t1ce"].name and "_FLAIR_" in cf.files["flair"].name


def test_tcga_info_prints_the_mapping(capsys) -> None:
    from napari_ssseg.cli import main

    folder = _case_dir("TCGA-FG-6692-raw")
    code = main(["info", str(folder)])
    out = capsys.readouterr().out
    assert code == 0
    assert "naming      pacs" in out
    assert "t1ce   <- MRHR_T1_AX_POST_GAD" in out and "[T1 POST GAD T1C]" in out


def test_tcga_explicit_modality_settles_a_choice(tmp_path: Path) -> None:
    """--modality MOD=FILE given for a modality: the keyword match for it is not used."""
    folder = _case_dir("TCGA-FG-6692-raw")
    t1 = next(folder.glob("T1_AX*"))
    cf = find_case_files(folder, t1ce=t1)  # deliberately odd: the user decides
    assert cf.files["t1ce"] == t1
    assert "t1" not in cf.files or cf.files["t1"] != t1


def test_tcga_geometry_is_the_flair_grid() -> None:
    """Each series has its own oblique grid: the case keeps the FLAIR's exactly."""
    case, notes = _load("TCGA-FG-6692-raw")
    assert case.naming == "pacs" and case.modalities == MODALITIES
    spacing, origin, direction, size = _sitk_geometry(case.sources["flair"])
    np.testing.assert_allclose(case.geometry.spacing, spacing, atol=1e-6)
    np.testing.assert_allclose(case.geometry.origin, origin, atol=1e-6)
    np.testing.assert_allclose(case.geometry.direction, direction, atol=1e-6)
    assert case.file_shape == tuple(int(s) for s in size[::-1])
    assert case.is_oblique
    assert any("resampled onto the reference grid" in n for n in notes)  # other grids named
