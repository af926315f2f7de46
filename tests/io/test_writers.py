"""Writers: write_case in each naming, save_image/save_labels, case_from_arrays."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from io_helpers import DIRECTIONS, SHAPE, random_volume

from napari_ssseg.core.case import MODALITIES, Geometry
from napari_ssseg.errors import InputError
from napari_ssseg.io import (
    case_from_arrays,
    find_case_files,
    load_case,
    read_image,
    read_labels,
    save_image,
    save_labels,
    write_case,
)


def _labels() -> np.ndarray:
    lab = np.zeros(SHAPE, np.uint8)
    lab[2:5, 3:8, 4:9] = 2
    lab[3, 4:6, 5:7] = 1
    lab[3, 6, 7] = 3
    return lab


def _case(direction=None, spacing=(3.0, 0.9, 0.9), origin=(12.5, -30.0, 4.0), **kw):
    images = np.stack([random_volume(seed=s) for s in range(4)])
    return case_from_arrays(
        images,
        MODALITIES,
        spacing_zyx=spacing,
        origin=origin,
        direction=direction,
        labels=_labels(),
        name="Case01",
        **kw,
    )


EXPECTED_FILES = {
    "brats2021": [
        "Case01_flair.nii.gz",
        "Case01_seg.nii.gz",
        "Case01_t1.nii.gz",
        "Case01_t1ce.nii.gz",
        "Case01_t2.nii.gz",
    ],
    "brats2023": [
        "Case01-seg.nii.gz",
        "Case01-t1c.nii.gz",
        "Case01-t1n.nii.gz",
        "Case01-t2f.nii.gz",
        "Case01-t2w.nii.gz",
    ],
    "msd": ["Case01.nii.gz", "Case01_label.nii.gz"],
}
FILE_VALUES = {"brats2021": {1, 2, 4}, "brats2023": {1, 2, 3}, "msd": {1, 2, 3}}


@pytest.mark.parametrize("naming", ["brats2021", "brats2023", "msd"])
@pytest.mark.parametrize("direction", ["LPS", "RAS", "PSL"])
def test_write_case_roundtrip(tmp_path: Path, naming: str, direction: str) -> None:
    case = _case(DIRECTIONS[direction])
    folder = write_case(case, tmp_path, naming)
    assert folder == tmp_path / "Case01"
    assert sorted(p.name for p in folder.iterdir()) == EXPECTED_FILES[naming]
    assert find_case_files(folder).naming == naming
    back = load_case(folder)
    assert back.naming == naming
    assert back.convention.name == naming
    assert back.geometry.allclose(case.geometry, atol=1e-5)
    for m in MODALITIES:
        np.testing.assert_array_equal(back.channel(m), case.channel(m))
    np.testing.assert_array_equal(back.labels, case.labels)
    seg_file = next(p for p in folder.iterdir() if "seg" in p.name or "label" in p.name)
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(seg_file)))
    assert set(np.unique(seg)) - {0} == FILE_VALUES[naming]
    # every written NIfTI reloads in nibabel with the RAS affine of the source geometry
    for p in folder.iterdir():
        np.testing.assert_allclose(nib.load(str(p)).affine, case.geometry.affine_ras(), atol=1e-5)


def test_msd_file_is_4d_with_channels_last_in_nibabel(tmp_path: Path) -> None:
    case = _case()
    folder = write_case(case, tmp_path, "msd")
    img = nib.load(str(folder / "Case01.nii.gz"))
    data = np.asarray(img.dataobj)
    assert data.shape == (SHAPE[2], SHAPE[1], SHAPE[0], 4)
    for ch, m in enumerate(("flair", "t1", "t1ce", "t2")):
        np.testing.assert_array_equal(data[..., ch].T, case.channel(m))
    arr, geom = read_image(folder / "Case01.nii.gz")
    assert arr.shape == (4, *SHAPE)
    assert geom.allclose(case.geometry)


def test_msd_needs_all_modalities(tmp_path: Path) -> None:
    case = case_from_arrays(random_volume(), ["flair"])
    with pytest.raises(InputError, match="needs all four"):
        write_case(case, tmp_path, "msd")


def test_write_case_subset_and_no_labels(tmp_path: Path) -> None:
    case = case_from_arrays([random_volume(seed=1), random_volume(seed=2)], ["t2", "flair"])
    folder = write_case(case, tmp_path, "brats2023", name="sub")
    assert sorted(p.name for p in folder.iterdir()) == ["sub-t2f.nii.gz", "sub-t2w.nii.gz"]
    back = load_case(folder)
    assert back.modalities == ("t2", "flair")
    assert back.labels is None


def test_write_case_bad_naming(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="Did you mean 'brats2023'"):
        write_case(_case(), tmp_path, "brats23")


@pytest.mark.parametrize("convention", ["brats2021", "brats2023", "msd"])
def test_save_labels_convention(tmp_path: Path, convention: str) -> None:
    case = _case(DIRECTIONS["RAS"])
    out = save_labels(case.labels, case, tmp_path / "l.nii.gz", convention)
    assert read_labels(out, case, convention).tolist() == case.labels.tolist()
    raw = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    assert raw.dtype == np.uint8
    assert set(np.unique(raw)) - {0} == FILE_VALUES[convention]


def test_save_labels_default_is_case_convention(tmp_path: Path) -> None:
    case = _case(convention="brats2023")
    out = save_labels(case.labels, case, tmp_path / "l.nii.gz")
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(out))).max() == 3


def test_save_labels_does_not_mutate_input(tmp_path: Path) -> None:
    case = _case(DIRECTIONS["RAS"])
    labels = case.labels.copy()
    save_labels(labels, case, tmp_path / "l.nii.gz", "brats2021")
    np.testing.assert_array_equal(labels, case.labels)


def test_save_image_4d_and_dtype(tmp_path: Path) -> None:
    case = _case(DIRECTIONS["RAS"])
    prob = np.random.default_rng(0).random((3, *case.shape))  # float64
    out = save_image(prob, case, tmp_path / "prob.nii.gz")
    arr, geom = read_image(out)
    assert arr.shape == (3, *SHAPE)
    np.testing.assert_allclose(case.orientation.to_canonical(arr), prob, atol=1e-6)
    assert geom.allclose(case.geometry)
    assert sitk.ReadImage(str(out)).GetPixelID() == sitk.sitkFloat32


def test_save_image_wrong_shape(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="expected"):
        save_image(np.zeros((2, 2, 2)), _case(), tmp_path / "x.nii.gz")


def test_atomic_no_temp_left(tmp_path: Path) -> None:
    case = _case()
    for suffix in (".nii.gz", ".nrrd", ".mha", ".mhd", ".nhdr"):
        out = save_labels(case.labels, case, tmp_path / f"l{suffix}")
        np.testing.assert_array_equal(read_labels(out, case), case.labels)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["l.mha", "l.mhd", "l.nhdr", "l.nii.gz", "l.nrrd", "l.raw.gz", "l.zraw"]


def test_case_from_arrays_geometry() -> None:
    case = _case(DIRECTIONS["RAS"], spacing=(3.0, 0.9, 0.8), origin=(1.0, 2.0, 3.0))
    assert case.geometry == Geometry((0.8, 0.9, 3.0), (1.0, 2.0, 3.0), DIRECTIONS["RAS"])
    assert case.shape == SHAPE
    assert case.scale == pytest.approx((3.0, 0.9, 0.8))
    # canonical voxel 0 of a RAS file grid is the file's last x and y voxel
    assert case.translate == pytest.approx((3.0, 2.0 - 0.9 * (SHAPE[1] - 1), 1.0 - 0.8 * 11))


def test_case_from_arrays_identity_defaults() -> None:
    case = case_from_arrays(random_volume(), "flair")
    assert case.orientation.is_identity
    assert case.scale == (1.0, 1.0, 1.0)
    assert case.translate == (0.0, 0.0, 0.0)
    assert case.labels is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"images": [], "modalities": []}, "images is empty"),
        (
            {"images": [np.zeros((3, 3, 3)), np.zeros((4, 3, 3))], "modalities": ["t1", "t2"]},
            "one shape",
        ),
        ({"images": np.ones((4, 4, 4)), "modalities": ["t3"]}, "modality"),
        (
            {"images": np.ones((4, 4, 4)), "modalities": ["t1"], "labels": np.zeros((2, 2, 2))},
            "labels shape",
        ),
        ({"images": np.ones((4, 4, 4)), "modalities": ["t1"], "spacing_zyx": (1, 1)}, "3 values"),
    ],
)
def test_case_from_arrays_bad(kwargs, match) -> None:
    images = kwargs.pop("images")
    modalities = kwargs.pop("modalities")
    with pytest.raises(InputError, match=match):
        case_from_arrays(images, modalities, **kwargs)


@pytest.mark.parametrize(
    ("dtype", "pixel"),
    [(np.float64, sitk.sitkFloat32), (bool, sitk.sitkUInt8), (np.int16, sitk.sitkInt16)],
)
def test_save_image_dtypes(tmp_path: Path, dtype, pixel) -> None:
    case = _case(DIRECTIONS["RAS"])
    arr = (random_volume(seed=3) > 500).astype(dtype)
    out = save_image(arr, case, tmp_path / "m.nii.gz")
    img = sitk.ReadImage(str(out))
    assert img.GetPixelID() == pixel
    np.testing.assert_array_equal(case.orientation.to_canonical(sitk.GetArrayFromImage(img)), arr)


def test_write_case_rewrites_but_refuses_mixing(tmp_path: Path) -> None:
    case = _case()
    write_case(case, tmp_path, "brats2021")
    write_case(case, tmp_path, "brats2021")  # same files again: fine
    with pytest.raises(InputError, match="already holds other images .*Case01_flair.nii.gz"):
        write_case(case, tmp_path, "brats2023")
    assert sorted(p.name for p in (tmp_path / "Case01").iterdir()) == EXPECTED_FILES["brats2021"]
