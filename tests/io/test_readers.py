"""Reading cases: naming schemes, formats, subsets, resampling and label conventions."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from io_helpers import (
    DIRECTIONS,
    SHAPE,
    random_volume,
    seg_blocks,
    write_brats_case,
    write_dicom_series,
    write_volume,
)

from napari_ssseg.core.case import MODALITIES, Geometry
from napari_ssseg.io import (
    detect_convention,
    find_case_files,
    load_case,
    match_modality,
    read_image,
    read_labels,
)

RAS = Geometry((1.0, 1.0, 1.0), (10.0, 20.0, -5.0), DIRECTIONS["RAS"])


_seg = seg_blocks


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("BraTS2021_00000_t1.nii.gz", ("brats2021", "t1", "BraTS2021_00000")),
        ("BraTS2021_00000_t1ce.nii.gz", ("brats2021", "t1ce", "BraTS2021_00000")),
        ("BraTS2021_00000_T2.nii", ("brats2021", "t2", "BraTS2021_00000")),
        ("BraTS20_Training_001_flair.nrrd", ("brats2021", "flair", "BraTS20_Training_001")),
        ("BraTS2021_00000_seg.mha", ("brats2021", "seg", "BraTS2021_00000")),
        ("BraTS-GLI-00000-000-t1n.nii.gz", ("brats2023", "t1", "BraTS-GLI-00000-000")),
        ("BraTS-GLI-00000-000-t1c.nii.gz", ("brats2023", "t1ce", "BraTS-GLI-00000-000")),
        ("BraTS-GLI-00000-000-t2w.nii.gz", ("brats2023", "t2", "BraTS-GLI-00000-000")),
        ("BraTS-GLI-00000-000-t2f.nii.gz", ("brats2023", "flair", "BraTS-GLI-00000-000")),
        ("BraTS-GLI-00000-000-seg.nii.gz", ("brats2023", "seg", "BraTS-GLI-00000-000")),
        ("flair.nii.gz", ("brats2021", "flair", "")),
        ("BRATS_001.nii.gz", None),
        ("case_t1gd.nii.gz", ("upenn", "t1ce", "case")),
        ("UPENN-GBM-00002_11_T1GD.nii.gz", ("upenn", "t1ce", "UPENN-GBM-00002_11")),
        ("UPENN-GBM-00002_11_segm.nii.gz", ("upenn", "seg", "UPENN-GBM-00002_11")),
        ("UPENN-GBM-00002_11_FLAIR.nii.gz", ("brats2021", "flair", "UPENN-GBM-00002_11")),
    ],
)
def test_match_modality(name: str, expected) -> None:
    assert match_modality(name) == expected


@pytest.mark.parametrize(
    ("naming", "convention", "seg_values"),
    [("brats2021", "brats2021", (1, 2, 4)), ("brats2023", "brats2023", (1, 2, 3))],
)
def test_load_brats_folder(tmp_path: Path, naming, convention, seg_values) -> None:
    written = write_brats_case(tmp_path, "C", naming, seg=_seg(seg_values), geometry=RAS)
    files = find_case_files(tmp_path)
    assert files.naming == naming
    assert files.name == "C"
    assert set(files.files) == set(MODALITIES)
    case = load_case(tmp_path)
    assert case.modalities == MODALITIES
    assert case.naming == naming
    assert case.convention.name == convention
    assert case.name == "C"
    # RAS file -> canonical LPS: x and y axes flipped
    np.testing.assert_array_equal(case.channel("t2"), written["t2"][:, ::-1, ::-1])
    expected = np.zeros(SHAPE, np.uint8)
    expected[2, 3:6, 4:7], expected[3, 3:6, 4:7], expected[4, 3:6, 4:7] = 1, 2, 3
    np.testing.assert_array_equal(case.labels, expected[:, ::-1, ::-1])
    assert case.sources["seg"].endswith("seg.nii.gz")


@pytest.mark.parametrize("subset", [("flair",), ("t1",), ("t1ce", "t2"), ("t1", "t2", "flair")])
def test_any_subset_of_modalities(tmp_path: Path, subset) -> None:
    write_brats_case(tmp_path, "S", "brats2021", modalities=subset)
    case = load_case(tmp_path)
    assert case.modalities == tuple(m for m in MODALITIES if m in subset)
    assert case.images.shape == (len(subset), *SHAPE)


def test_modalities_argument_selects_and_orders(tmp_path: Path) -> None:
    written = write_brats_case(tmp_path, "S", "brats2021")
    case = load_case(tmp_path, modalities=["flair", "t1"])
    assert case.modalities == ("flair", "t1")
    np.testing.assert_array_equal(case.images[1], written["t1"])


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".mha", ".mhd"])
def test_formats(tmp_path: Path, suffix: str) -> None:
    written = write_brats_case(
        tmp_path, "F", "brats2021", modalities=("t1", "flair"), geometry=RAS, suffix=suffix
    )
    case = load_case(tmp_path)
    np.testing.assert_array_equal(case.channel("flair"), written["flair"][:, ::-1, ::-1])
    assert case.geometry.allclose(RAS)


def test_dicom_series_folders(tmp_path: Path) -> None:
    geom = Geometry((0.9, 0.9, 3.0), (100.0, 110.0, -40.0), DIRECTIONS["RAS"])
    flair = random_volume(seed=7)
    t1 = random_volume(seed=8)
    write_dicom_series(tmp_path / "case" / "P_flair", flair, geom)
    write_dicom_series(tmp_path / "other" / "series", t1, geom)
    # folder of DICOM series named like modalities
    case = load_case(tmp_path / "case")
    assert case.modalities == ("flair",)
    np.testing.assert_array_equal(case.channel("flair"), flair[:, ::-1, ::-1])
    assert case.geometry.allclose(geom)
    # explicit DICOM folders
    case = load_case(flair=tmp_path / "case" / "P_flair", t1=tmp_path / "other" / "series")
    assert case.naming == "explicit"
    np.testing.assert_array_equal(case.channel("t1"), t1[:, ::-1, ::-1])
    arr, g = read_image(tmp_path / "other" / "series")
    np.testing.assert_array_equal(arr, t1)
    np.testing.assert_allclose(g.spacing, geom.spacing, atol=1e-4)


def test_explicit_files(tmp_path: Path) -> None:
    a = write_volume(tmp_path / "x" / "anat.nii.gz", random_volume(seed=1))
    b = write_volume(tmp_path / "y" / "other.nrrd", random_volume(seed=2))
    seg = write_volume(tmp_path / "lab.nii.gz", _seg((1, 2, 3)))
    case = load_case(t1=a, flair=b, seg=seg)
    assert case.naming == "explicit"
    assert case.modalities == ("t1", "flair")
    # explicit naming: no hint, the values (no 4) say brats2023
    assert case.convention.name == "brats2023"
    assert int(case.labels.max()) == 3


def test_explicit_overrides_folder(tmp_path: Path) -> None:
    write_brats_case(tmp_path / "c", "C", "brats2021", modalities=("t1", "flair"))
    replacement = write_volume(tmp_path / "better_t1.nii.gz", random_volume(seed=99))
    case = load_case(tmp_path / "c", t1=replacement)
    np.testing.assert_array_equal(case.channel("t1"), random_volume(seed=99))


def _write_msd(tmp_path: Path, layout: str, label_values=(1, 2, 3)) -> tuple[Path, np.ndarray]:
    stack = np.stack([random_volume(seed=s) for s in range(4)])  # FLAIR, T1w, T1gd, T2w
    seg = _seg(label_values)
    if layout == "dataset":
        image = write_volume(tmp_path / "imagesTr" / "BRATS_001.nii.gz", stack, RAS)
        write_volume(tmp_path / "labelsTr" / "BRATS_001.nii.gz", seg, RAS)
    else:
        image = write_volume(tmp_path / "BRATS_001" / "BRATS_001.nii.gz", stack, RAS)
        write_volume(tmp_path / "BRATS_001" / "BRATS_001_label.nii.gz", seg, RAS)
    return image, stack


@pytest.mark.parametrize("layout", ["dataset", "flat"])
@pytest.mark.parametrize("open_with", ["image", "folder"])
def test_msd(tmp_path: Path, layout: str, open_with: str) -> None:
    image, stack = _write_msd(tmp_path, layout)
    target = image if open_with == "image" else (tmp_path if layout == "dataset" else image.parent)
    files = find_case_files(target)
    assert files.naming == "msd"
    assert files.seg is not None
    case = load_case(target)
    assert case.name == "BRATS_001"
    assert case.modalities == MODALITIES
    assert case.convention.name == "msd"
    for ch, m in enumerate(("flair", "t1", "t1ce", "t2")):
        np.testing.assert_array_equal(case.channel(m), stack[ch][:, ::-1, ::-1])
    # MSD 1 edema -> internal 2 (ED); 2 non-enhancing -> 1 (NCR); 3 -> 3
    lab = case.labels[:, ::-1, ::-1]
    assert lab[2, 4, 5] == 2 and lab[3, 4, 5] == 1 and lab[4, 4, 5] == 3


def test_msd_subset(tmp_path: Path) -> None:
    image, stack = _write_msd(tmp_path, "flat")
    case = load_case(image, modalities=["t1ce"])
    np.testing.assert_array_equal(case.images[0], stack[2][:, ::-1, ::-1])


@pytest.mark.parametrize(
    ("values", "preferred", "expected"),
    [
        ((0, 1, 2, 4), None, "brats2021"),
        ((0, 1, 2, 3), None, "brats2023"),
        ((0, 1, 2), None, "brats2023"),
        ((0, 1, 2), "brats2021", "brats2021"),
        ((0, 1, 2, 3), "msd", "msd"),
        ((0, 4), "brats2023", "brats2021"),  # switched, with a warning
        ((0, 3), "brats2021", "brats2023"),  # switched, with a warning
    ],
)
def test_detect_convention(values, preferred, expected) -> None:
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        conv = detect_convention(np.array(values), preferred)
    assert conv.name == expected
    switched = preferred is not None and preferred != expected
    assert any("do not fit" in str(w.message) for w in rec) == switched


def test_convention_override(tmp_path: Path) -> None:
    """brats2023-style values in an explicit case read as MSD when told so."""
    write_brats_case(tmp_path, "C", "brats2023", seg=_seg((1, 2, 3)))
    default = load_case(tmp_path)
    msd = load_case(tmp_path, convention="msd")
    assert msd.convention.name == "msd"
    # value 1: NCR in brats2023, edema (ED) in MSD
    assert default.labels[2, 4, 5] == 1 and msd.labels[2, 4, 5] == 2
    assert default.labels[3, 4, 5] == 2 and msd.labels[3, 4, 5] == 1


def test_brats2021_named_file_with_brats2023_values_is_detected(tmp_path: Path) -> None:
    write_brats_case(tmp_path, "C", "brats2021", seg=_seg((1, 2, 3)))
    with pytest.warns(UserWarning, match="reading it as brats2023"):
        case = load_case(tmp_path)
    assert case.convention.name == "brats2023"
    assert case.labels.max() == 3


def test_different_grid_is_resampled_with_warning(tmp_path: Path) -> None:
    """T1 on a 2 mm grid is resampled (linear) onto the FLAIR 1 mm grid, warning names both."""
    flair_geom = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    t1_geom = Geometry((2.0, 2.0, 2.0), (0.5, 0.5, 0.5))
    write_volume(tmp_path / "C_flair.nii.gz", random_volume(seed=1), flair_geom)
    # t1 = linear ramp along x in world space: resampling must reproduce the ramp
    z, y, x = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in (5, 7, 6)], indexing="ij")
    t1 = 10.0 + 2.0 * x * 2.0 + 0 * y + 0 * z  # value = 10 + 2 * (world x - 0.5)
    write_volume(tmp_path / "C_t1.nii.gz", t1, t1_geom)
    with pytest.warns(
        UserWarning,
        match=r"t1 image .* different grid .*spacing 2x2x2.*"
        r"reference flair image .*spacing 1x1x1",
    ):
        case = load_case(tmp_path)
    assert case.shape == SHAPE
    out = case.channel("t1")
    # inside the t1 field of view, value = 10 + 2 * (x - 0.5) at world x
    for xi in (2, 4, 7):
        assert out[3, 3, xi] == pytest.approx(10 + 2 * (xi - 0.5), abs=1e-4)


def test_label_on_other_grid_is_resampled_nearest(tmp_path: Path) -> None:
    geom = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    write_volume(tmp_path / "C_flair.nii.gz", random_volume(seed=1), geom)
    # label on a 2x coarser grid covering the same region: nearest neighbour keeps values
    coarse = np.zeros((5, 7, 6), np.uint8)
    coarse[2, 3, 3] = 4
    coarse[1, 1, 1] = 2
    write_volume(tmp_path / "C_seg.nii.gz", coarse, Geometry((2.0, 2.0, 2.0), (0.5, 0.5, 0.5)))
    with pytest.warns(UserWarning, match="nearest-neighbour"):
        case = load_case(tmp_path)
    assert set(np.unique(case.labels)) == {0, 2, 3}
    assert case.labels[4:6, 6:8, 6:8].min() == 3


def test_read_labels_convention(tmp_path: Path) -> None:
    write_brats_case(tmp_path / "c", "C", "brats2021", geometry=RAS)
    case = load_case(tmp_path / "c")
    seg = _seg((1, 2, 3))
    write_volume(tmp_path / "msd_lab.nii.gz", seg, RAS)
    lab = read_labels(tmp_path / "msd_lab.nii.gz", case, "msd")
    assert lab.dtype == np.uint8
    assert lab[:, ::-1, ::-1][2, 4, 5] == 2  # MSD 1 = edema


def test_progress_callback(tmp_path: Path) -> None:
    write_brats_case(tmp_path, "C", "brats2021", seg=_seg())
    calls = []
    load_case(tmp_path, progress=lambda f, msg: calls.append((f, msg)))
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions)
    assert fractions[-1] == 1.0
    assert len(calls) >= 5


def test_oblique_warns(tmp_path: Path) -> None:
    a = np.deg2rad(15)
    d = (np.cos(a), -np.sin(a), 0, np.sin(a), np.cos(a), 0, 0, 0, 1)
    write_volume(tmp_path / "C_flair.nii.gz", random_volume(), Geometry((1, 1, 1), (0, 0, 0), d))
    with pytest.warns(UserWarning, match="oblique"):
        case = load_case(tmp_path)
    assert case.is_oblique


def test_hidden_and_unrelated_files_ignored(tmp_path: Path) -> None:
    write_brats_case(tmp_path, "C", "brats2021", modalities=("flair",))
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / ".C_flair.nii.gz.tmp.nii.gz").write_bytes(b"partial")
    case = load_case(tmp_path)
    assert case.modalities == ("flair",)


@pytest.mark.parametrize("what", ["t1", "seg"])
def test_other_axis_order_same_voxels_is_reoriented_exactly(tmp_path: Path, what: str) -> None:
    """A file stored LPS over the same voxel centres as an RAS FLAIR is mapped exactly (a
    transpose and flips, no interpolation, no warning)."""
    flair = random_volume(seed=5)
    write_volume(tmp_path / "C_flair.nii.gz", flair, RAS)
    # same world grid, stored in LPS order: flip x and y, move the origin to the other corner
    corner = RAS.index_to_world(np.array([0, SHAPE[1] - 1, SHAPE[2] - 1]))
    lps = Geometry(RAS.spacing, tuple(corner), DIRECTIONS["LPS"])
    other = flair if what == "t1" else (flair > 500).astype(np.uint8) * 2
    write_volume(tmp_path / f"C_{what}.nii.gz", other[:, ::-1, ::-1], lps)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        case = load_case(tmp_path)
    if what == "t1":
        np.testing.assert_array_equal(case.channel("t1"), case.channel("flair"))
    else:
        np.testing.assert_array_equal(case.labels, (case.channel("flair") > 500) * 2)


def test_permuted_axes_same_voxels_is_reoriented_exactly(tmp_path: Path) -> None:
    """Same voxel centres stored with permuted axes (PSL vs LPS): exact, no interpolation."""
    lps = Geometry((1.0, 2.0, 3.0), (0.0, 0.0, 0.0), DIRECTIONS["LPS"])
    flair = random_volume(seed=6)  # file (Z, Y, X) = (k, j, i) with i->L, j->P, k->S
    write_volume(tmp_path / "C_flair.nii.gz", flair, lps)
    # PSL file: i->P (y, 2 mm), j->S (z, 3 mm), k->L (x, 1 mm); array (Z, Y, X) = (k, j, i)
    psl = Geometry((2.0, 3.0, 1.0), (0.0, 0.0, 0.0), DIRECTIONS["PSL"])
    t2 = np.transpose(flair, (2, 0, 1))  # (x, z, y) = (k, j, i) of the PSL grid
    write_volume(tmp_path / "C_t2.nii.gz", t2, psl)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        case = load_case(tmp_path)
    np.testing.assert_array_equal(case.channel("t2"), case.channel("flair"))


def test_no_warning_when_grids_match(tmp_path: Path) -> None:
    write_brats_case(tmp_path, "C", "brats2023", seg=_seg((1, 2, 3)), geometry=RAS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_case(tmp_path)


def test_vector_image_channels_first(tmp_path: Path) -> None:
    import SimpleITK as sitk

    stack = np.stack([random_volume(seed=s) for s in range(4)])
    img = sitk.GetImageFromArray(np.moveaxis(stack, 0, -1), isVector=True)
    sitk.WriteImage(img, str(tmp_path / "vec.mha"))
    arr, _ = read_image(tmp_path / "vec.mha")
    np.testing.assert_array_equal(arr, stack)


def test_explicit_files_with_unusable_folder(tmp_path: Path) -> None:
    """A folder holding nothing recognisable is ignored when explicit files are given."""
    (tmp_path / "empty").mkdir()
    t1 = write_volume(tmp_path / "x.nii.gz", random_volume(seed=1))
    case = load_case(tmp_path / "empty", t1=t1)
    assert case.modalities == ("t1",)
    assert case.naming == "explicit"
    assert case.name == "empty"


@pytest.mark.parametrize(
    ("seg_name", "expected"),
    [("X_seg.nii.gz", "brats2021"), ("X-seg.nii.gz", "brats2023"), ("lab.nii.gz", "brats2023")],
)
def test_explicit_seg_name_hints_convention(tmp_path: Path, seg_name: str, expected: str) -> None:
    """Values {0, 1, 2} fit both BraTS conventions: the label file's name decides."""
    t1 = write_volume(tmp_path / "a.nii.gz", random_volume(seed=1))
    seg = write_volume(tmp_path / seg_name, _seg((1, 2)))
    assert load_case(t1=t1, seg=seg).convention.name == expected


def test_dicom_io_keeps_process_locale(tmp_path: Path) -> None:
    import locale

    before = locale.setlocale(locale.LC_ALL)
    folder = write_dicom_series(tmp_path / "s", random_volume(), RAS)
    read_image(folder)
    assert locale.setlocale(locale.LC_ALL) == before
