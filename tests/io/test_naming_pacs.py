"""PACS / TCIA series names, legacy and post-treatment label conventions, on small arrays."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from io_helpers import random_volume, write_volume

from napari_ssseg.core.case import CONVENTIONS
from napari_ssseg.errors import InputError
from napari_ssseg.io.naming import match_series
from napari_ssseg.io.readers import (
    AmbiguousSeriesError,
    detect_convention,
    find_case_files,
    load_case,
    parse_modality_args,
)

SHAPE = (6, 8, 7)


@pytest.mark.parametrize(
    ("name", "expected", "skip"),
    [
        ("MRHR_FLAIR_AX_SE_IR_5_tir2d1_21_fla.nii.gz", {"flair"}, None),
        ("MRHR_T1_AX_POST_GAD_SE_13_se2d1r_t1c.nii.gz", {"t1ce"}, None),
        ("MRHR_T2_AX_SE_2_tse2d1_11_t2.nii.gz", {"t2"}, None),
        ("T1_AX_SE_10_se2d1_t1.nii.gz", {"t1"}, None),
        ("Ax_T2_FLAIR.nii.gz", {"flair"}, None),
        ("sag_MPRAGE_post_contrast.nii.gz", {"t1ce"}, None),
        ("AX T1 PRE GAD.nii.gz", {"t1"}, None),
        ("t1_pre_post.nii.gz", {"t1", "t1ce"}, None),
        ("T1_FLAIR_AX.nii.gz", {"t1", "flair"}, None),
        ("3PLANE_LOCALIZER.nii.gz", set(), "3PLANE"),
        ("AX_DWI_b1000.nii.gz", set(), "DWI"),
        ("AX_T2*_GRE.nii.gz", set(), "T2*"),
        ("series_7.nii.gz", set(), None),
    ],
)
def test_match_series(name: str, expected: set, skip) -> None:
    cand, skipped = match_series(name)
    assert set(cand) == expected
    assert skipped == skip


def _pacs_folder(tmp_path: Path, names: list[str]) -> Path:
    for n in names:
        write_volume(tmp_path / n, random_volume())
    return tmp_path


def test_pacs_folder_skips_localizer_and_names_it(tmp_path: Path) -> None:
    folder = _pacs_folder(
        tmp_path, ["AX_FLAIR_3.nii.gz", "AX_T1_POST_GAD_9.nii.gz", "LOCALIZER_1.nii.gz"]
    )
    with pytest.warns(UserWarning, match="LOCALIZER_1.nii.gz"):
        cf = find_case_files(folder)
    assert cf.naming == "pacs" and cf.modalities == ("t1ce", "flair")


def test_pacs_study_whose_one_series_ends_like_a_brats_suffix_is_read_whole(
    tmp_path: Path,
) -> None:
    """A TCIA export without its T2: the T1's name ends in '_t1' (a BraTS suffix), the others
    match no dataset naming. Read by sequence keywords (three series), not as a one-modality
    BraTS case with the FLAIR and T1 POST GAD left unread."""
    names = [
        "T1_AX_SE_10_se2d1_t1.nii.gz",
        "MRHR_T1_AX_POST_GAD_SE_13_se2d1r_t1c.nii.gz",
        "MRHR_FLAIR_AX_SE_IR_5_tir2d1_21_fla.nii.gz",
    ]
    folder = _pacs_folder(tmp_path, names)
    with pytest.warns(UserWarning, match=r"read by the sequence keywords.*finds 3 series") as rec:
        cf = find_case_files(folder)
    assert not any("NOT read" in str(w.message) for w in rec)  # nothing left unread
    assert cf.naming == "pacs" and cf.modalities == ("t1", "t1ce", "flair")
    assert cf.files["t1"].name == names[0] and cf.files["flair"].name == names[2]


def test_brats_case_with_an_extra_image_keeps_its_naming(tmp_path: Path) -> None:
    """The PACS reading is used only when it reads more series: a complete BraTS case with a
    stray image stays a BraTS case (the stray file named in a warning)."""
    folder = _pacs_folder(
        tmp_path, ["P_t1.nii.gz", "P_t1ce.nii.gz", "P_t2.nii.gz", "P_flair.nii.gz", "notes.nii.gz"]
    )
    with pytest.warns(UserWarning, match="notes.nii.gz"):
        cf = find_case_files(folder)
    assert cf.naming == "brats2021" and cf.modalities == ("t1", "t1ce", "t2", "flair")


def test_pacs_ambiguity_lists_candidates_and_the_flag(tmp_path: Path) -> None:
    folder = _pacs_folder(
        tmp_path, ["AX_FLAIR_3.nii.gz", "AX_T2_4.nii.gz", "COR_T2_5.nii.gz", "T1_7.nii.gz"]
    )
    with pytest.raises(AmbiguousSeriesError, match=r"t2: 'AX_T2_4.nii.gz'.*'COR_T2_5") as exc:
        find_case_files(folder)
    assert "--modality t2=" in str(exc.value)
    # the flag settles it; the other T2 series is named as unused
    with pytest.warns(UserWarning, match="COR_T2_5.nii.gz"):
        cf = find_case_files(folder, t2=folder / "AX_T2_4.nii.gz")
    assert cf.files["t2"].name == "AX_T2_4.nii.gz"
    assert cf.modalities == ("t1", "t2", "flair")


def test_two_brats_cases_still_refused_as_two_cases(tmp_path: Path) -> None:
    _pacs_folder(tmp_path, ["A_t1.nii.gz", "A_flair.nii.gz", "B_t1.nii.gz", "B_flair.nii.gz"])
    with pytest.raises(InputError, match="more than one case|claim"):
        find_case_files(tmp_path)


def test_parse_modality_args() -> None:
    assert parse_modality_args(["t1c=a.nii", "FLAIR=b.nii"]) == {"t1ce": "a.nii", "flair": "b.nii"}
    with pytest.raises(InputError, match="MOD=FILE"):
        parse_modality_args(["t1c"])
    with pytest.raises(InputError, match="twice"):
        parse_modality_args(["t1c=a", "t1gd=b"])


# ------------------------------------------------------------------------- conventions
@pytest.mark.parametrize(
    ("name", "file_values", "internal", "written"),
    [
        ("brats2013", [0, 1, 2, 3, 4], [0, 1, 2, 1, 3], [0, 1, 2, 1, 4]),
        ("brats2024", [0, 1, 2, 3, 4], [0, 1, 2, 3, 0], [0, 1, 2, 3, 0]),
        ("brats2021", [0, 1, 2, 4], [0, 1, 2, 3], [0, 1, 2, 4]),
        ("brats2023", [0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 3]),
    ],
)
def test_conventions_both_ways(name, file_values, internal, written) -> None:
    conv = CONVENTIONS[name]
    dec = conv.decode(np.array(file_values))
    assert dec.tolist() == internal
    assert conv.encode(dec).tolist() == written


@pytest.mark.parametrize(
    ("values", "preferred", "expected"),
    [
        ((0, 1, 2, 3, 4), "brats2021", "brats2013"),  # underscore naming: BRATS 2013-2015
        ((0, 1, 2, 3, 4), "brats2023", "brats2024"),  # hyphen naming: BraTS 2024
        ((0, 1, 2, 4), None, "brats2021"),
        ((0, 1, 2, 3), None, "brats2023"),
        ((0, 1, 2, 4), "brats2021", "brats2021"),
    ],
)
def test_detect_convention(values, preferred, expected) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert detect_convention(np.array(values), preferred).name == expected


def test_detect_convention_ambiguous_without_naming() -> None:
    with pytest.raises(InputError, match="--convention brats2013 or --convention brats2024"):
        detect_convention(np.array([0, 1, 2, 3, 4]))


def test_unknown_values_are_named() -> None:
    with pytest.raises(InputError, match=r"value\(s\) \[5, 9\] belong to no"):
        detect_convention(np.array([0, 1, 5, 9]))


def _case_with_seg(tmp_path: Path, values, seg_name="C_seg.nii.gz") -> Path:
    write_volume(tmp_path / "C_flair.nii.gz", random_volume())
    seg = np.zeros(random_volume().shape, np.uint8)
    for i, v in enumerate(values):
        seg[i, 1, 1] = v
    write_volume(tmp_path / seg_name, seg)
    return tmp_path


def test_label_errors_warn_loads_images(tmp_path: Path) -> None:
    folder = _case_with_seg(tmp_path, (1, 2, 7))
    with pytest.raises(InputError, match=r"\[7\]"):
        load_case(folder)
    with pytest.warns(UserWarning, match=r"\[7\] belong to no.*NOT used"):
        case = load_case(folder, label_errors="warn")
    assert case.labels is None and case.modalities == ("flair",)


def test_brats2024_case_reads_rc_as_background_with_warning(tmp_path: Path) -> None:
    write_volume(tmp_path / "C-t2f.nii.gz", random_volume())
    seg = np.zeros(random_volume().shape, np.uint8)
    seg[1, 1, 1:5] = (1, 2, 3, 4)
    write_volume(tmp_path / "C-seg.nii.gz", seg)
    with pytest.warns(UserWarning, match="resection-cavity"):
        case = load_case(tmp_path)
    assert case.convention.name == "brats2024"
    assert sorted(np.unique(case.labels).tolist()) == [0, 1, 2, 3]
    assert int((case.labels > 0).sum()) == 3


def test_explicit_convention_overrides(tmp_path: Path) -> None:
    folder = _case_with_seg(tmp_path, (1, 2, 3, 4))
    case = load_case(folder, convention="brats2024")
    assert case.convention.name == "brats2024"


def test_unmatched_modality_file_is_named(tmp_path: Path) -> None:
    write_volume(tmp_path / "C_t1.nii.gz", random_volume())
    write_volume(tmp_path / "C_flair.nii.gz", random_volume())
    write_volume(tmp_path / "C_t1c.nii.gz", random_volume())  # no BraTS 2021 suffix
    write_volume(tmp_path / "C_notes.nii.gz", random_volume())  # no modality at all
    with pytest.warns(UserWarning) as rec:
        cf = find_case_files(tmp_path)
    text = " ".join(str(w.message) for w in rec)
    # the T1c is read by its sequence keyword, and the reading says so; the stray file is named
    assert "sequence keywords" in text and "t1ce <- 'C_t1c.nii.gz'" in text
    assert "'C_notes.nii.gz'" in text
    assert cf.modalities == ("t1", "t1ce", "flair")


def test_unmatched_modality_file_is_named_when_no_reading_takes_it(tmp_path: Path) -> None:
    write_volume(tmp_path / "C_t1.nii.gz", random_volume())
    write_volume(tmp_path / "C_flair.nii.gz", random_volume())
    write_volume(tmp_path / "C_extra.nii.gz", random_volume())
    with pytest.warns(UserWarning, match=r"'C_extra.nii.gz' match no modality name.*NOT read"):
        cf = find_case_files(tmp_path)
    assert cf.naming == "brats2021" and cf.modalities == ("t1", "flair")


def test_evaluate_names_unknown_values_and_reads_legacy_gt(capsys, tmp_path: Path) -> None:
    from napari_ssseg.cli import main

    seg = np.zeros(SHAPE, np.uint8)
    seg[1, 1:3, 1:3] = (3, 4)  # BRATS 2013: non-enhancing, enhancing
    pred = np.where(seg == 3, 1, np.where(seg == 4, 4, 0)).astype(np.uint8)
    gt_file = write_volume(tmp_path / "P_seg.nii.gz", seg)
    pred_file = write_volume(tmp_path / "pred.nii.gz", pred)
    assert main(["evaluate", str(pred_file), str(gt_file), "--json"]) == 0
    out = capsys.readouterr().out
    assert '"TC"' in out and '"dice": 1.0' in out  # 3 (non-enhancing) joins the core
    bad = write_volume(tmp_path / "bad.nii.gz", np.where(seg > 0, 9, 0).astype(np.uint8))
    assert main(["evaluate", str(pred_file), str(bad)]) == 2
    assert "value(s) [9] belong to no supported convention" in capsys.readouterr().err
