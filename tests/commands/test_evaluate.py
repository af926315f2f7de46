"""Tests of ``ssseg evaluate`` through :func:`napari_ssseg.cli.main`."""

from __future__ import annotations

import csv
import io
import json
import re

import numpy as np
import pytest
import SimpleITK as sitk

from napari_ssseg.cli import main
from napari_ssseg.core.case import CONVENTIONS
from napari_ssseg.core.metrics import METRIC_NAMES, region_metrics

SHAPE = (12, 14, 16)  # (Z, Y, X)
SPACING_XYZ = (0.9, 1.1, 3.0)
SPACING_ZYX = SPACING_XYZ[::-1]
WTE = ("WT", "TC", "ET")


def _internal(shift: int = 0) -> np.ndarray:
    """Nested tumour in internal labels (0 bg, 1 NCR, 2 ED, 3 ET)."""
    zz, yy, xx = np.indices(SHAPE)
    r = np.sqrt(((zz - 6) * 1.5) ** 2 + (yy - 7 - shift) ** 2 + (xx - 8) ** 2)
    lab = np.zeros(SHAPE, np.uint8)
    lab[r <= 6] = 2
    lab[r <= 4] = 3
    lab[r <= 2] = 1
    return lab


def _write(path, values, spacing=SPACING_XYZ, direction=None, origin=(0.0, 0.0, 0.0)):
    img = sitk.GetImageFromArray(np.asarray(values))
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    if direction is not None:
        img.SetDirection(direction)
    sitk.WriteImage(img, str(path))
    return str(path)


@pytest.fixture
def pair(tmp_path):
    """GT in BraTS 2021 values (ET = 4), prediction in BraTS 2023 values (ET = 3)."""
    gt = _internal()
    pred = _internal(shift=1)
    gt_file = _write(tmp_path / "gt.nii.gz", CONVENTIONS["brats2021"].encode(gt))
    pred_file = _write(tmp_path / "pred.nii.gz", CONVENTIONS["brats2023"].encode(pred))
    return pred_file, gt_file, pred, gt


def _run(capsys, argv):
    rc = main(["evaluate", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_json_output_is_one_object_with_the_region_metrics(capsys, pair):
    pred_file, gt_file, pred, gt = pair
    rc, out, err = _run(capsys, [pred_file, gt_file, "--json"])
    assert rc == 0, err
    data = json.loads(out)  # exactly one JSON document on stdout
    assert list(data) == ["WT", "TC", "ET"]
    expected = region_metrics(pred, gt, SPACING_ZYX)
    for region, metrics in data.items():
        assert list(metrics) == list(METRIC_NAMES)
        assert metrics == pytest.approx(expected[region])
    assert 0 < data["WT"]["dice"] < 1
    # spacing came from the header: HD95 is not the unit-spacing value
    unit = region_metrics(pred, gt, (1.0, 1.0, 1.0))
    assert data["WT"]["hd95"] != pytest.approx(unit["WT"]["hd95"])


def test_table_output(capsys, pair):
    pred_file, gt_file, pred, gt = pair
    rc, out, _ = _run(capsys, [pred_file, gt_file, "--tolerance", "2"])
    assert rc == 0
    expected = region_metrics(pred, gt, SPACING_ZYX, tolerance_mm=2.0)
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line[:2] in WTE}
    assert set(rows) == {"WT", "TC", "ET"}
    assert float(rows["TC"][1]) == pytest.approx(expected["TC"]["dice"], abs=5e-5)
    assert float(rows["ET"][5]) == pytest.approx(expected["ET"]["nsd"], abs=5e-5)
    assert "pred brats2023, gt brats2021" in out
    assert "3 x 1.1 x 0.9 mm" in out


def test_per_class_and_tolerance(capsys, pair):
    pred_file, gt_file, pred, gt = pair
    rc, out, _ = _run(capsys, [pred_file, gt_file, "--json", "--per-class", "--tolerance", "3"])
    assert rc == 0
    data = json.loads(out)
    assert list(data) == ["WT", "TC", "ET", "NCR", "ED"]
    expected = region_metrics(pred, gt, SPACING_ZYX, tolerance_mm=3.0, per_class=True)
    assert data["ED"]["nsd"] == pytest.approx(expected["ED"]["nsd"])


def test_explicit_convention_changes_the_regions(capsys, tmp_path):
    gt = _internal()
    pred = gt.copy()
    pred[pred == 1] = 2  # necrosis called oedema: TC differs, WT and ET identical
    values_pred = CONVENTIONS["brats2023"].encode(pred)
    values_gt = CONVENTIONS["brats2023"].encode(gt)
    p = _write(tmp_path / "p.nii.gz", values_pred)
    g = _write(tmp_path / "g.nii.gz", values_gt)
    rc, out, _ = _run(capsys, [p, g, "--json"])
    assert rc == 0
    default = json.loads(out)
    rc, out, _ = _run(capsys, [p, g, "--json", "--convention", "msd"])
    assert rc == 0
    msd = json.loads(out)
    assert default["WT"]["dice"] == msd["WT"]["dice"] == 1.0
    assert default["TC"]["dice"] < 1.0
    # read as MSD (1 = oedema, 2 = non-enhancing), the same files give a different TC
    assert msd["TC"]["dice"] != pytest.approx(default["TC"]["dice"])


def test_empty_reference_gives_null_not_nan(capsys, tmp_path):
    gt = _internal()
    gt[gt == 3] = 1  # no enhancing tumour in the reference
    pred = _internal()
    p = _write(tmp_path / "p.nii.gz", pred)
    g = _write(tmp_path / "g.nii.gz", gt)
    rc, out, _ = _run(capsys, [p, g, "--json"])
    assert rc == 0
    assert "NaN" not in out
    data = json.loads(out)
    assert data["ET"]["ravd"] is None
    assert data["ET"]["dice"] == 0.0
    # the BraTS penalty for a spurious region, whatever the grid
    assert data["ET"]["hd95"] == pytest.approx(373.13, abs=0.01)
    rc, out, _ = _run(capsys, [p, g])
    assert rc == 0 and "n/a" in out


@pytest.mark.parametrize(
    ("pred_kwargs", "pred_shape", "match"),
    [
        ({"spacing": (1.0, 1.0, 1.0)}, SHAPE, "different grids"),
        ({"origin": (5.0, 0.0, 0.0)}, SHAPE, "different grids"),
        ({}, (12, 14, 15), "different grids"),
    ],
    ids=["spacing", "origin", "shape"],
)
def test_mismatched_grids_are_a_clear_error(capsys, tmp_path, pred_kwargs, pred_shape, match):
    g = _write(tmp_path / "g.nii.gz", _internal())
    p = _write(tmp_path / "p.nii.gz", np.zeros(pred_shape, np.uint8), **pred_kwargs)
    rc, _, err = _run(capsys, [p, g, "--json"])
    assert rc == 2
    assert match in err and "p.nii.gz" in err and "g.nii.gz" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["{missing}", "{gt}"], "missing.nii.gz"),
        (["{pred}", "{gt}", "--convention", "brats2012"], "Did you mean"),
        (["{pred}", "{gt}", "--tolerance", "-1"], "--tolerance"),
        (["{pred}"], "ground-truth"),
        (["{bad}", "{gt}"], r"\[7\]"),
        (["{float}", "{gt}"], "non-integer"),
    ],
    ids=["missing-file", "bad-convention", "negative-tolerance", "no-gt", "bad-values", "float"],
)
def test_bad_input_exits_2_without_traceback(capsys, tmp_path, pair, argv, match):
    pred_file, gt_file, _, _ = pair
    files = {
        "missing": str(tmp_path / "missing.nii.gz"),
        "pred": pred_file,
        "gt": gt_file,
        "bad": _write(tmp_path / "bad.nii.gz", np.full(SHAPE, 7, np.uint8)),
        "float": _write(tmp_path / "float.nii.gz", np.full(SHAPE, 0.5, np.float32)),
    }
    rc, out, err = _run(capsys, [a.format(**files) for a in argv])
    assert rc == 2
    assert out == ""
    assert "ssseg evaluate: error:" in err
    assert "Traceback" not in err
    assert re.search(match, err), err


# ---------------------------------------------------------------------------- --case
ORIGIN = (10.0, -20.0, 30.0)


def _write_case(folder, labels_internal, direction):
    """A BraTS 2021 case folder whose file grid has ``direction`` (canonical arrays given)."""
    from napari_ssseg.core.case import Geometry, Orientation

    geom = Geometry(SPACING_XYZ, ORIGIN, direction)
    orient = Orientation.from_geometry(geom)
    # file-order arrays that are canonical ``labels_internal`` once reoriented
    folder.mkdir()
    rng = np.random.default_rng(0)
    for m in ("t1", "t1ce", "t2", "flair"):
        img = rng.random(SHAPE).astype(np.float32) + 0.1
        _write(
            folder / f"C_{m}.nii.gz", orient.from_canonical(img), direction=direction, origin=ORIGIN
        )
    seg = CONVENTIONS["brats2021"].encode(labels_internal)
    _write(folder / "C_seg.nii.gz", orient.from_canonical(seg), direction=direction, origin=ORIGIN)
    return orient


@pytest.mark.parametrize(
    "direction",
    [(1, 0, 0, 0, 1, 0, 0, 0, 1), (-1, 0, 0, 0, -1, 0, 0, 0, 1)],
    ids=["LPS", "RAS"],
)
def test_case_option_reads_labels_on_the_case_grid(capsys, tmp_path, direction):
    gt = _internal()
    pred = _internal(shift=1)
    orient = _write_case(tmp_path / "C", gt, direction)
    p = _write(
        tmp_path / "pred.nii.gz",
        orient.from_canonical(CONVENTIONS["brats2021"].encode(pred)),
        direction=direction,
        origin=ORIGIN,
    )
    rc, out, err = _run(capsys, [p, "--case", str(tmp_path / "C"), "--json"])
    assert rc == 0, err
    data = json.loads(out)
    expected = region_metrics(pred, gt, SPACING_ZYX)
    for region in ("WT", "TC", "ET"):
        assert data[region] == pytest.approx(expected[region])
    # giving the case's own seg file explicitly gives the same numbers
    rc, out2, _ = _run(
        capsys, [p, str(tmp_path / "C" / "C_seg.nii.gz"), "--case", str(tmp_path / "C"), "--json"]
    )
    assert rc == 0 and json.loads(out2) == data


def test_case_option_rejects_a_prediction_on_another_grid(capsys, tmp_path):
    _write_case(tmp_path / "C", _internal(), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    p = _write(tmp_path / "pred.nii.gz", _internal(), spacing=(1.0, 1.0, 1.0))
    rc, _, err = _run(capsys, [p, "--case", str(tmp_path / "C"), "--json"])
    assert rc == 2
    assert "pred.nii.gz" in err and "Traceback" not in err


# ------------------------------------------------------- HD95 definitions, lesion-wise, CSV
def test_hd95_definition_and_nsd_method_options(capsys, pair):
    pred_file, gt_file, pred, gt = pair
    rc, out, err = _run(
        capsys, [pred_file, gt_file, "--json", "--hd95", "directed-max", "--nsd-method", "voxels"]
    )
    assert rc == 0, err
    data = json.loads(out)
    expected = region_metrics(pred, gt, SPACING_ZYX, definition="directed-max", nsd_method="voxels")
    default = region_metrics(pred, gt, SPACING_ZYX)
    for region in WTE:
        assert data[region] == pytest.approx(expected[region])
        assert data[region]["hd95"] >= default[region]["hd95"]
    rc, _, err = _run(capsys, [pred_file, gt_file, "--hd95", "pooledd"])
    assert rc == 2 and "--hd95" in err and "pooled" in err


def test_lesion_wise_json_csv_and_table(capsys, pair):
    from napari_ssseg.core.lesionwise import lesionwise_metrics

    pred_file, gt_file, pred, gt = pair
    rc, out, err = _run(
        capsys, [pred_file, gt_file, "--json", "--lesion-wise", "--challenge", "BraTS-MET"]
    )
    assert rc == 0, err
    data = json.loads(out)
    expected = lesionwise_metrics(pred, gt, SPACING_ZYX, challenge="metastasis")
    for region in WTE:
        lw = data[region]["lesion_wise"]
        assert lw["dice"] == pytest.approx(expected[region]["dice"])
        assert lw["hd95"] == pytest.approx(expected[region]["hd95"])
        assert (lw["challenge"], lw["dilation"], lw["min_volume_mm3"]) == ("metastasis", 1, 2.0)
        assert 0 < lw["dice"] < 1
    rc, out, err = _run(capsys, [pred_file, gt_file, "--csv", "--lesion-wise"])
    assert rc == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["region"] for r in rows] == list(WTE)
    glioma = lesionwise_metrics(pred, gt, SPACING_ZYX)
    for r in rows:
        assert float(r["lw_dice"]) == pytest.approx(glioma[r["region"]]["dice"], rel=1e-5)
        assert int(r["lw_n_fp"]) == glioma[r["region"]]["n_fp"]
        assert float(r["dice"]) == pytest.approx(
            region_metrics(pred, gt, SPACING_ZYX)[r["region"]]["dice"], rel=1e-5
        )
    rc, out, _ = _run(capsys, [pred_file, gt_file, "--lesion-wise"])
    assert rc == 0 and "lesion-wise (BraTS-GLI 2023 rules" in out
    rc, _, err = _run(capsys, [pred_file, gt_file, "--lesion-wise", "--challenge", "glio"])
    assert rc == 2 and "glioma" in err


def test_csv_without_lesion_wise(capsys, pair):
    pred_file, gt_file, _, _ = pair
    rc, out, _ = _run(capsys, [pred_file, gt_file, "--csv"])
    assert rc == 0
    header = out.splitlines()[0].split(",")
    assert header == ["region", *METRIC_NAMES]
