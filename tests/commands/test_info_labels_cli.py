"""`ssseg info` and `ssseg labels convert`, driven through napari_ssseg.cli.main."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from io_helpers import (
    DIRECTIONS,
    SHAPE,
    imported_heavy_modules,
    random_volume,
    seg_blocks,
    write_brats_case,
    write_volume,
)

from napari_ssseg.cli import main
from napari_ssseg.core.case import Geometry

GEOM = Geometry((0.9, 0.9, 3.0), (100.25, 110.5, -40.0), DIRECTIONS["RAS"])


_seg = seg_blocks


@pytest.fixture
def case_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "BraTS2021_00007"
    write_brats_case(folder, "BraTS2021_00007", "brats2021", seg=_seg(), geometry=GEOM)
    return folder


def _run(capsys, argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_info_text(capsys, case_dir: Path) -> None:
    code, out, err = _run(capsys, ["info", case_dir])
    assert code == 0, err
    assert "BraTS2021_00007" in out
    assert "naming      brats2021" in out
    assert "brats2021 (BraTS 2019-2021" in out
    for m in ("t1", "t1ce", "t2", "flair"):
        assert f"BraTS2021_00007_{m}.nii.gz" in out
    assert "10x14x12" in out  # shape (Z, Y, X)
    assert "3x0.9x0.9" in out  # spacing (Z, Y, X)
    assert " RAS " in out
    # 36 voxels each of NCR (1), ED (2), ET (4 -> 3)
    assert "NCR 9, ED 9, ET 9" in out


def test_info_json(capsys, case_dir: Path) -> None:
    code, out, _ = _run(capsys, ["info", case_dir, "--json"])
    assert code == 0
    info = json.loads(out)
    assert info["naming"] == "brats2021"
    assert info["label_convention"] == "brats2021"
    assert [r["modality"] for r in info["modalities"]] == ["t1", "t1ce", "t2", "flair"]
    flair = info["modalities"][3]
    assert flair["shape_zyx"] == list(SHAPE)
    assert flair["spacing_zyx"] == pytest.approx([3.0, 0.9, 0.9])
    assert flair["orientation"] == "RAS"
    assert flair["file"].endswith("BraTS2021_00007_flair.nii.gz")
    assert info["labels"]["voxels"] == {"NCR": 9, "ED": 9, "ET": 9}
    assert info["canonical"]["orientation"] == "LPS"


def test_info_explicit_files_and_msd_convention(capsys, tmp_path: Path) -> None:
    a = write_volume(tmp_path / "anat.nrrd", random_volume(seed=1), GEOM)
    s = write_volume(tmp_path / "lab.nii.gz", _seg((1, 2, 3)), GEOM)
    code, out, _ = _run(capsys, ["info", "--t1", a, "--seg", s, "--convention", "msd", "--json"])
    assert code == 0
    info = json.loads(out)
    assert info["naming"] == "explicit"
    assert info["label_convention"] == "msd"
    # MSD: 1 edema -> ED, 2 non-enhancing -> NCR
    assert info["labels"]["voxels"] == {"NCR": 9, "ED": 9, "ET": 9}
    assert [r["modality"] for r in info["modalities"]] == ["t1"]


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        ("missing", "does not exist"),
        ("corrupt", "corrupt"),
        ("bad-convention", "Did you mean 'msd'"),
    ],
)
def test_info_bad_input_exit_2(capsys, tmp_path: Path, case_dir: Path, setup, match) -> None:
    argv = ["info", case_dir]
    if setup == "missing":
        argv = ["info", tmp_path / "nope"]
    elif setup == "corrupt":
        f = case_dir / "BraTS2021_00007_t2.nii.gz"
        f.write_bytes(f.read_bytes()[:300])
    elif setup == "bad-convention":
        argv += ["--convention", "msdd"]
    code, out, err = _run(capsys, argv)
    assert code == 2
    assert "Traceback" not in err and "Traceback" not in out
    assert err.startswith("ssseg info: error:")
    assert match in err
    assert err.count("\n") == 1  # one paragraph


@pytest.mark.parametrize(
    ("to", "expected"),
    [
        ("brats2023", {1: 1, 2: 2, 4: 3}),
        ("msd", {1: 2, 2: 1, 4: 3}),
        ("brats2021", {1: 1, 2: 2, 4: 4}),
    ],
)
def test_labels_convert(capsys, tmp_path: Path, case_dir: Path, to, expected) -> None:
    src = case_dir / "BraTS2021_00007_seg.nii.gz"
    out = tmp_path / "out" / f"seg_{to}.nii.gz"
    code, stdout, err = _run(
        capsys, ["labels", "convert", src, "--case", case_dir, "--out", out, "--to", to]
    )
    assert code == 0, err
    assert f"brats2021 -> {to}" in stdout
    a, b = sitk.ReadImage(str(src)), sitk.ReadImage(str(out))
    assert a.GetOrigin() == b.GetOrigin()
    assert a.GetSpacing() == b.GetSpacing()
    assert a.GetDirection() == b.GetDirection()
    np.testing.assert_array_equal(nib.load(str(out)).affine, nib.load(str(src)).affine)
    va, vb = sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b)
    for old, new in expected.items():
        assert np.array_equal(va == old, vb == new)
    assert np.array_equal(va == 0, vb == 0)


def test_labels_convert_from_override_without_case(capsys, tmp_path: Path) -> None:
    src = write_volume(tmp_path / "lab.nii.gz", _seg((1, 2, 3)), GEOM)
    out = tmp_path / "lab_2021.nrrd"
    code, _, err = _run(
        capsys, ["labels", "convert", src, "--out", out, "--to", "brats2021", "--from", "msd"]
    )
    assert code == 0, err
    v = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    # msd 1 (edema) -> ED 2; msd 2 (non-enhancing) -> NCR 1; msd 3 -> ET 4
    assert v[2, 4, 5] == 2 and v[3, 4, 5] == 1 and v[4, 4, 5] == 4


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        ("wrong-grid", "different grid"),
        ("bad-to", "Did you mean 'brats202"),
        ("bad-values", "belong to no supported convention"),
        ("unwritable", "Cannot create the output folder"),
        ("missing", "does not exist"),
        ("bad-ext", "no supported image extension"),
    ],
)
def test_labels_convert_bad_input(capsys, tmp_path: Path, case_dir: Path, setup, match):
    src = case_dir / "BraTS2021_00007_seg.nii.gz"
    out = tmp_path / "o.nii.gz"
    to = "msd"
    if setup == "wrong-grid":
        src = write_volume(tmp_path / "other.nii.gz", _seg(), Geometry((1, 1, 1), (0, 0, 0)))
    elif setup == "bad-to":
        to = "brats2032"
    elif setup == "bad-values":
        src = write_volume(tmp_path / "v.nii.gz", _seg((1, 9)), GEOM)
    elif setup == "unwritable":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "o.nii.gz"
    elif setup == "missing":
        src = tmp_path / "missing_seg.nii.gz"
    elif setup == "bad-ext":
        out = tmp_path / "o.txt"
    code, _, err = _run(
        capsys, ["labels", "convert", src, "--case", case_dir, "--out", out, "--to", to]
    )
    assert code == 2
    assert "Traceback" not in err
    assert match in err
    assert not (tmp_path / "o.nii.gz").exists()


def test_labels_without_subcommand(capsys) -> None:
    code, out, _ = _run(capsys, ["labels"])
    assert code == 2
    assert "convert" in out


def test_command_modules_import_stdlib_only() -> None:
    heavy = ("numpy", "SimpleITK", "nibabel", "torch", "napari", "qtpy")
    imports = "napari_ssseg.commands.info, napari_ssseg.commands.labels"
    assert imported_heavy_modules(imports, heavy) == []


def test_info_msd(capsys, tmp_path: Path) -> None:
    stack = np.stack([random_volume(seed=s) for s in range(4)])
    write_volume(tmp_path / "imagesTr" / "BRATS_002.nii.gz", stack, GEOM)
    write_volume(tmp_path / "labelsTr" / "BRATS_002.nii.gz", _seg((1, 2, 3)), GEOM)
    code, out, err = _run(capsys, ["info", tmp_path / "imagesTr" / "BRATS_002.nii.gz", "--json"])
    assert code == 0, err
    info = json.loads(out)
    assert info["naming"] == "msd" and info["label_convention"] == "msd"
    assert {r["channels_in_file"] for r in info["modalities"]} == {4}
    assert info["modalities"][0]["shape_zyx"] == list(SHAPE)
    assert info["labels"]["file"].endswith("labelsTr/BRATS_002.nii.gz")


def test_info_reports_resampling_warning(capsys, tmp_path: Path) -> None:
    write_volume(tmp_path / "C_flair.nii.gz", random_volume(seed=1), GEOM)
    coarse = Geometry((1.8, 1.8, 3.0), GEOM.origin, GEOM.direction)
    write_volume(tmp_path / "C_t2.nii.gz", random_volume((10, 7, 6), seed=2), coarse)
    code, out, err = _run(capsys, ["info", tmp_path, "--json"])
    assert code == 0, err
    info = json.loads(out)
    assert len(info["warnings"]) == 1
    assert "resampled onto the reference grid" in info["warnings"][0]
    assert info["reference"] == "flair"
    code, out, err = _run(capsys, ["info", tmp_path])
    assert code == 0
    assert err.startswith("warning: The t2 image")


def test_info_bad_label_values_warns_and_names_them(capsys, case_dir: Path) -> None:
    """info never refuses a case for its label file: it warns, naming the unknown values."""
    write_volume(case_dir / "BraTS2021_00007_seg.nii.gz", _seg((1, 7)), GEOM)
    code, out, err = _run(capsys, ["info", case_dir])
    assert code == 0, err
    assert "value(s) [7] belong to no supported convention" in err
    assert "NOT used" in err
    assert "t1ce" in out  # the images are still described
