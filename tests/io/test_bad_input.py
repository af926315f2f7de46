"""Bad input (issue 2, section 7): each case raises an InputError with one paragraph that
names the file and says how to fix it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from io_helpers import SHAPE, random_volume, write_brats_case, write_volume

from napari_ssseg.core.case import Geometry
from napari_ssseg.errors import GeometryError, InputError
from napari_ssseg.io import case_from_arrays, load_case, read_image, save_image, save_labels


def _check_message(exc: pytest.ExceptionInfo, names: list[str | Path], fix_words) -> None:
    msg = str(exc.value)
    assert "\n" not in msg, "message must be one paragraph"
    for n in names:
        assert str(n) in msg, f"{n!s} not named in: {msg}"
    assert any(w in msg for w in fix_words), f"no fix suggested in: {msg}"


FIX = (
    "Pass",
    "pass",
    "Add",
    "Use",
    "Re-download",
    "Remove",
    "Check",
    "Fix",
    "Choose",
    "Put",
    "Rename",
    "register",
    "remap",
    "Pick",
    "give",
    "Give",
    "use",
)


def test_missing_requested_modality(tmp_path: Path) -> None:
    write_brats_case(tmp_path, "C", "brats2021", modalities=("t1", "flair"))
    with pytest.raises(InputError, match="Modality t2 is missing") as exc:
        load_case(tmp_path, modalities=["t1", "t2", "flair"])
    _check_message(exc, [tmp_path, "--t2 FILE"], FIX)


def test_unknown_modality_name(tmp_path: Path) -> None:
    write_brats_case(tmp_path, "C", "brats2021", modalities=("t1",))
    with pytest.raises(InputError, match="Did you mean 't1ce'"):
        load_case(tmp_path, modalities=["t1c e"])


@pytest.mark.parametrize(
    "names",
    [
        ("C_t1.nii.gz", "C_t1.nrrd"),  # one case, two formats
        ("A_flair.nii.gz", "B_flair.nii.gz"),  # two cases in one folder
        ("C_t1ce.nii.gz", "C-t1c.nii.gz"),  # BraTS 2021 and 2023 names for T1Gd
        ("C_seg.nii.gz", "C_seg.mha"),  # two label files
    ],
)
def test_two_files_claim_one_modality(tmp_path: Path, names) -> None:
    write_volume(tmp_path / "C_t2.nii.gz", random_volume(seed=0))
    for n in names:
        write_volume(tmp_path / n, random_volume(seed=1))
    with pytest.raises(InputError, match="Two or more files") as exc:
        load_case(tmp_path)
    _check_message(exc, [tmp_path / names[0], tmp_path / names[1]], FIX)


def test_same_file_twice_explicit(tmp_path: Path) -> None:
    f = write_volume(tmp_path / "a.nii.gz", random_volume())
    with pytest.raises(InputError, match="same file") as exc:
        load_case(t1=f, flair=f)
    _check_message(exc, [f], FIX)


@pytest.mark.parametrize("dtype", [np.float32, np.int16])
@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
@pytest.mark.parametrize("damage", ["truncate", "garbage", "header-only"])
def test_truncated_or_corrupt_nifti(tmp_path: Path, suffix: str, damage: str, dtype) -> None:
    write_volume(tmp_path / f"C_flair{suffix}", random_volume(seed=1, dtype=dtype))
    bad = write_volume(tmp_path / f"C_t1{suffix}", random_volume(seed=2, dtype=dtype))
    data = bad.read_bytes()
    if damage == "truncate":
        bad.write_bytes(data[: len(data) * 2 // 3])
    elif damage == "garbage":
        bad.write_bytes(b"\x00not an image at all" * 20)
    else:
        bad.write_bytes(data[:200])
    with pytest.raises(InputError, match="corrupt|truncated") as exc:
        load_case(tmp_path)
    _check_message(exc, [bad], FIX)


def test_gzip_trailer_mismatch_still_reads_valid_file(tmp_path: Path) -> None:
    """A valid .nii.gz made of two gzip members (trailer != total size) is not refused."""
    import gzip

    f = write_volume(tmp_path / "C_flair.nii", random_volume(seed=2))
    raw = f.read_bytes()
    f.unlink()
    two = gzip.compress(raw[:1000]) + gzip.compress(raw[1000:])
    (tmp_path / "C_flair.nii.gz").write_bytes(two)
    arr, _ = read_image(tmp_path / "C_flair.nii.gz")
    np.testing.assert_array_equal(arr, random_volume(seed=2))


@pytest.mark.parametrize("kind", ["true-2d", "single-slice-3d"])
def test_2d_image(tmp_path: Path, kind: str) -> None:
    f = tmp_path / "C_flair.nii.gz"
    if kind == "true-2d":
        sitk.WriteImage(sitk.GetImageFromArray(random_volume((14, 12))), str(f))
    else:
        write_volume(f, random_volume((1, 14, 12)))
    with pytest.raises(InputError, match="2D") as exc:
        load_case(tmp_path)
    _check_message(exc, [f], FIX)


def test_4d_wrong_channel_count_msd(tmp_path: Path) -> None:
    f = write_volume(tmp_path / "BRATS_001.nii.gz", np.stack([random_volume()] * 3))
    with pytest.raises(InputError, match="3 channel") as exc:
        load_case(f)
    _check_message(exc, [f, "FLAIR, T1w, T1gd, T2w"], FIX)


def test_4d_file_as_single_modality(tmp_path: Path) -> None:
    f = write_volume(tmp_path / "C_t1.nii.gz", np.stack([random_volume()] * 2))
    with pytest.raises(InputError, match="4D with 2 channels") as exc:
        load_case(tmp_path)
    _check_message(exc, [f], FIX)


def test_non_overlapping_fields_of_view(tmp_path: Path) -> None:
    write_volume(tmp_path / "C_flair.nii.gz", random_volume(), Geometry((1, 1, 1), (0, 0, 0)))
    far = Geometry((1, 1, 1), (500.0, 0, 0))
    t1 = write_volume(tmp_path / "C_t1.nii.gz", random_volume(), far)
    with pytest.raises(GeometryError, match="does not overlap") as exc:
        load_case(tmp_path)
    _check_message(exc, [t1, tmp_path / "C_flair.nii.gz"], FIX)


def test_non_overlapping_label(tmp_path: Path) -> None:
    write_volume(tmp_path / "C_flair.nii.gz", random_volume(), Geometry((1, 1, 1), (0, 0, 0)))
    seg = np.zeros(SHAPE, np.uint8)
    seg[1, 1, 1] = 1
    f = write_volume(tmp_path / "C_seg.nii.gz", seg, Geometry((1, 1, 1), (0, 0, -300.0)))
    with pytest.raises(GeometryError, match="does not overlap") as exc:
        load_case(tmp_path)
    _check_message(exc, [f], FIX)


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_nan_inf_voxels(tmp_path: Path, bad_value: float) -> None:
    arr = random_volume()
    arr[3, 4, 5] = bad_value
    f = write_volume(tmp_path / "C_t2.nii.gz", arr)
    with pytest.raises(InputError, match="NaN or Inf") as exc:
        load_case(tmp_path)
    _check_message(exc, [f], FIX)


def test_all_zero_image(tmp_path: Path) -> None:
    write_volume(tmp_path / "C_flair.nii.gz", random_volume())
    f = write_volume(tmp_path / "C_t1ce.nii.gz", np.zeros(SHAPE, np.float32))
    with pytest.raises(InputError, match="entirely zero") as exc:
        load_case(tmp_path)
    _check_message(exc, [f], FIX)


@pytest.mark.parametrize(
    ("values", "convention", "match"),
    [
        ((1, 2, 5), None, r"\[5\] belong to no"),
        ((1, 2, 255), None, r"\[255\] belong to no"),
        ((1, 2, 4), "msd", r"values \[4\] are not labels of the msd"),
        ((1, 3, 4), "brats2023", r"values \[4\] are not labels of the brats2023"),
    ],
)
def test_label_values_outside_convention(tmp_path: Path, values, convention, match) -> None:
    write_volume(tmp_path / "C_flair.nii.gz", random_volume())
    seg = np.zeros(SHAPE, np.uint8)
    for i, v in enumerate(values):
        seg[i, 0, 0] = v
    f = write_volume(tmp_path / "C_seg.nii.gz", seg)
    with pytest.raises(InputError, match=match) as exc:
        load_case(tmp_path, convention=convention)
    _check_message(exc, [f], FIX)


def test_non_integer_labels(tmp_path: Path) -> None:
    write_volume(tmp_path / "C_flair.nii.gz", random_volume())
    seg = np.zeros(SHAPE, np.float32)
    seg[1, 1, 1] = 1.5
    write_volume(tmp_path / "C_seg.nii.gz", seg)
    with pytest.raises(InputError, match="whole numbers|belong to no"):
        load_case(tmp_path)


@pytest.mark.parametrize("arg", ["path", "t1", "seg"])
def test_missing_path(tmp_path: Path, arg: str) -> None:
    real = write_volume(tmp_path / "C_flair.nii.gz", random_volume())
    missing = tmp_path / "does_not_exist.nii.gz"
    kwargs = {"path": missing} if arg == "path" else {"flair": real, arg: missing}
    with pytest.raises(InputError, match="does not exist") as exc:
        load_case(**kwargs)
    _check_message(exc, [missing], FIX)


def test_missing_path_suggests_similar_name(tmp_path: Path) -> None:
    (tmp_path / "BraTS2021_00001").mkdir()
    with pytest.raises(InputError, match="Similar names .*BraTS2021_00001"):
        load_case(tmp_path / "BraTS2021_0001")


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        ("empty", "No images found"),
        ("unknown-names", "do not follow BraTS naming"),
        ("only-seg-file", "is a label file"),
        ("unsupported-ext", "unsupported extension"),
        ("nothing", "No input given"),
        ("only-seg-arg", "Only a label file"),
    ],
)
def test_unrecognised_inputs(tmp_path: Path, setup: str, match: str) -> None:
    kwargs: dict = {"path": tmp_path}
    if setup == "unknown-names":
        write_volume(tmp_path / "a.nii.gz", random_volume())
        write_volume(tmp_path / "b.nii.gz", random_volume())
    elif setup == "only-seg-file":
        kwargs = {"path": write_volume(tmp_path / "C_seg.nii.gz", random_volume())}
    elif setup == "unsupported-ext":
        (tmp_path / "scan.jpg").write_bytes(b"jpeg")
        kwargs = {"flair": tmp_path / "scan.jpg"}
    elif setup == "nothing":
        kwargs = {}
    elif setup == "only-seg-arg":
        kwargs = {"seg": write_volume(tmp_path / "s.nii.gz", random_volume())}
    with pytest.raises(InputError, match=match):
        load_case(**kwargs)


def test_3d_file_without_modality_name(tmp_path: Path) -> None:
    f = write_volume(tmp_path / "scan.nii.gz", random_volume())
    with pytest.raises(InputError, match="does not say which modality") as exc:
        load_case(f)
    _check_message(exc, [f, "--flair FILE"], FIX)


def _case():
    return case_from_arrays(random_volume(), ["flair"])


def test_unwritable_output_path(tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where a folder should be")
    target = blocker / "seg.nii.gz"
    with pytest.raises(InputError, match="Cannot create the output folder") as exc:
        save_labels(np.zeros(SHAPE, np.uint8), _case(), target)
    _check_message(exc, [blocker], FIX)
    with pytest.raises(InputError, match="Cannot create the output folder"):
        save_image(random_volume(), _case(), target)


def test_output_path_without_extension(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no supported image extension"):
        save_labels(np.zeros(SHAPE, np.uint8), _case(), tmp_path / "seg.png")


def test_failed_write_keeps_previous_file(tmp_path: Path) -> None:
    case = _case()
    target = tmp_path / "seg.nii.gz"
    save_labels(np.zeros(SHAPE, np.uint8), case, target)
    before = target.read_bytes()
    bad = np.zeros(SHAPE, np.uint8)
    bad[0, 0, 0] = 7
    with pytest.raises(InputError, match=r"\[7\]"):
        save_labels(bad, case, target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg.nii.gz"]


def test_labels_wrong_shape(tmp_path: Path) -> None:
    with pytest.raises(GeometryError, match="shape"):
        save_labels(np.zeros((3, 3, 3), np.uint8), _case(), tmp_path / "s.nii.gz")


def test_files_of_two_cases_in_one_folder(tmp_path: Path) -> None:
    write_volume(tmp_path / "A_t1.nii.gz", random_volume())
    write_volume(tmp_path / "A_flair.nii.gz", random_volume())
    write_volume(tmp_path / "B_seg.nii.gz", np.zeros(SHAPE, np.uint8))
    with pytest.raises(InputError, match="more than one case") as exc:
        load_case(tmp_path)
    _check_message(exc, [tmp_path, "B_seg.nii.gz", "A_t1.nii.gz"], FIX)


def test_write_case_unwritable(tmp_path: Path) -> None:
    from napari_ssseg.io import write_case

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="Cannot create the output folder") as exc:
        write_case(_case(), blocker, "brats2021")
    _check_message(exc, [blocker], FIX)


def test_dicom_folder_with_two_series(tmp_path: Path) -> None:
    from io_helpers import write_dicom_series

    geom = Geometry((1.0, 1.0, 2.0), (0.0, 0.0, 0.0))
    folder = tmp_path / "dicom"
    write_dicom_series(folder, random_volume(seed=1), geom, "1.2.3.4.5.1", "a")
    write_dicom_series(folder, random_volume(seed=2), geom, "1.2.3.4.5.2", "b")
    with pytest.raises(InputError, match="holds 2 series") as exc:
        load_case(flair=folder)
    _check_message(exc, [folder], FIX)


def test_folder_without_dicom_as_modality(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no DICOM series"):
        load_case(t2=tmp_path / "empty")


def test_bare_dicom_folder_as_case(tmp_path: Path) -> None:
    from io_helpers import write_dicom_series

    folder = write_dicom_series(
        tmp_path / "series", random_volume(), Geometry((1, 1, 1), (0, 0, 0))
    )
    with pytest.raises(InputError, match="is a DICOM series folder, so its modality is unknown"):
        load_case(folder)
