"""Workspace export (nnU-Net v2, MSD, BraTS), import, and evaluation outputs."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from test_workspace import make_source

from napari_ssseg.errors import InputError
from napari_ssseg.io.readers import load_case, read_labels
from napari_ssseg.io.workspace import Workspace
from napari_ssseg.io.workspace_export import (
    _METRICS,
    evaluate_workspace,
    export_workspace,
    import_dataset,
    import_label_file,
    write_boxplot_png,
)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return make_source(tmp_path_factory.mktemp("src"))


@pytest.fixture
def ws(tmp_path, source):
    """caseA (verified, corrected labels), caseB (verified, GT labels), caseC (no labels)."""
    w = Workspace.create(tmp_path / "ws", from_dir=source)
    a = w.ground_truth("caseA").copy()
    a[a == 1] = 3  # a wrong correction so metrics are not all perfect
    w.save_labels("caseA", a, source="human")
    w.save_labels("caseB", w.ground_truth("caseB"), source="human")
    w.set_status("caseA", "verified")
    w.set_status("caseB", "verified")
    yield w
    w.close()


def _array(path: Path) -> tuple[np.ndarray, sitk.Image]:
    img = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(img), img


def test_nnunet_export_layout_convention_geometry(ws, source, tmp_path):
    out = tmp_path / "nn"
    files = export_workspace(ws, out, "nnunet")
    ds = json.loads((out / "dataset.json").read_text())
    assert ds["numTraining"] == 2 and ds["file_ending"] == ".nii.gz"
    assert ds["channel_names"] == {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"}
    assert ds["labels"] == {"background": 0, "NCR": 1, "ED": 2, "ET": 3}
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == [
        f"case{c}_{i:04d}.nii.gz" for c in "AB" for i in range(4)
    ]
    assert len(files) == 11
    # labels on the source grid; BraTS 2021 ET (4) written as 3 (nnU-Net needs consecutive)
    for cid in ("caseA", "caseB"):
        src_case = load_case(source / cid)
        lab = read_labels(out / "labelsTr" / f"{cid}.nii.gz", src_case, "brats2023")
        np.testing.assert_array_equal(lab, ws.latest_labels(cid))
        arr, img = _array(out / "labelsTr" / f"{cid}.nii.gz")
        assert set(np.unique(arr)) <= {0, 1, 2, 3}
        np.testing.assert_allclose(img.GetDirection(), src_case.geometry.direction, atol=1e-6)
        t1, _ = _array(out / "imagesTr" / f"{cid}_0000.nii.gz")
        np.testing.assert_allclose(t1, src_case.to_file_order(src_case.channel("t1")), atol=1e-4)


def test_nnunet_region_based_labels(ws, tmp_path):
    export_workspace(ws, tmp_path / "nn", "nnunet", cases=["caseA"], region_based=True)
    ds = json.loads((tmp_path / "nn" / "dataset.json").read_text())
    assert ds["labels"]["TC"] == [1, 3] and ds["regions_class_order"] == [2, 1, 3]


def test_msd_export_4d_and_msd_labels(ws, source, tmp_path):
    out = tmp_path / "msd"
    export_workspace(ws, out, "msd")
    ds = json.loads((out / "dataset.json").read_text())
    assert ds["modality"] == {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}
    assert ds["training"][0] == {
        "image": "./imagesTr/caseA.nii.gz",
        "label": "./labelsTr/caseA.nii.gz",
    }
    img = sitk.ReadImage(str(out / "imagesTr" / "caseB.nii.gz"))
    assert img.GetDimension() == 4 and img.GetSize()[3] == 4
    src_case = load_case(source / "caseB")
    lab = read_labels(out / "labelsTr" / "caseB.nii.gz", src_case, "msd")
    np.testing.assert_array_equal(lab, ws.latest_labels("caseB"))


def test_brats_export_uses_source_convention(ws, tmp_path):
    out = tmp_path / "brats"
    export_workspace(ws, out, "brats")
    a, _ = _array(out / "caseA" / "caseA_seg.nii.gz")
    b, _ = _array(out / "caseB" / "caseB-seg.nii.gz")
    assert 4 in np.unique(a) and 3 not in np.unique(a)  # BraTS 2021: ET = 4
    assert 4 not in np.unique(b)  # BraTS 2023 naming and values
    case = load_case(out / "caseA")
    np.testing.assert_array_equal(case.labels, ws.latest_labels("caseA"))


@pytest.mark.parametrize("fmt", ["nnunet", "msd", "brats"])
def test_export_never_overwrites(ws, tmp_path, fmt):
    out = tmp_path / fmt
    export_workspace(ws, out, fmt, cases=["caseA"])
    target = next(p for p in out.rglob("*.nii.gz") if "case" in p.name)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    ws.save_labels("caseA", np.zeros(ws.case("caseA").shape, np.uint8), source="human")
    with pytest.raises(InputError, match="Export refused: .*already exist"):
        export_workspace(ws, out, fmt, cases=["caseA", "caseB"])
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before and target.exists()  # nothing written, nothing replaced


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cases": ["caseC"]}, "no saved labels"),
        ({"cases": ["nope"]}, "no case 'nope'"),
        ({"fmt": "zip"}, "format='zip'"),
    ],
)
def test_export_bad_selection(ws, tmp_path, kwargs, match):
    fmt = kwargs.pop("fmt", "nnunet")
    with pytest.raises(InputError, match=match):
        export_workspace(ws, tmp_path / "o", fmt, **kwargs)


def test_export_only_verified_by_default(ws, tmp_path):
    ws.set_status("caseB", "corrected")
    export_workspace(ws, tmp_path / "o", "brats")
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["caseA"]


@pytest.mark.parametrize("fmt", ["nnunet", "msd"])
def test_import_roundtrip(ws, tmp_path, fmt):
    export_workspace(ws, tmp_path / "ds", fmt)
    with import_dataset(tmp_path / "ds", tmp_path / "ws2") as w2:
        assert w2.case_ids == ["caseA", "caseB"]
        for cid in w2.case_ids:
            assert w2.case(cid).status == "verified"
            assert w2.versions(cid)[0].source == "import"
            np.testing.assert_array_equal(w2.latest_labels(cid), ws.latest_labels(cid))
            assert w2.case(cid).shape == ws.case(cid).shape
        assert w2.case("caseA").convention == ("brats2023" if fmt == "nnunet" else "msd")
        case = w2.load_case("caseB")
        np.testing.assert_allclose(case.images, ws.load_case("caseB").images, atol=1e-4)
        np.testing.assert_array_equal(case.labels, ws.latest_labels("caseB"))


def test_import_labels_as_ground_truth_and_via_create(ws, tmp_path):
    export_workspace(ws, tmp_path / "ds", "nnunet")
    with Workspace.create(tmp_path / "w3", from_dir=tmp_path / "ds") as w3:  # dataset.json
        assert w3.case("caseA").n_versions == 1
    with import_dataset(tmp_path / "ds", tmp_path / "w4", labels_as="ground_truth") as w4:
        assert w4.case("caseA").n_versions == 0 and w4.case("caseA").status == "new"
        np.testing.assert_array_equal(w4.ground_truth("caseA"), ws.latest_labels("caseA"))


def test_import_rejects_unknown_channels(tmp_path):
    ds = tmp_path / "ds"
    (ds / "imagesTr").mkdir(parents=True)
    (ds / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {}}))
    with pytest.raises(InputError, match="'CT', which is not a brain MRI modality"):
        import_dataset(ds, tmp_path / "w")


def test_evaluate_writes_csv_json_png(ws, tmp_path):
    rep = evaluate_workspace(ws, tmp_path / "ev")
    assert set(rep["cases"]) == {"caseA", "caseB"}
    assert rep["skipped"] == {"caseC": "no label version"}
    assert rep["cases"]["caseB"]["WT"]["dice"] == pytest.approx(1.0)
    assert rep["cases"]["caseA"]["ET"]["dice"] < 1.0  # NCR painted as ET
    assert rep["summary"]["WT"]["dice"]["n"] == 2
    rows = list(csv.DictReader((tmp_path / "ev" / "metrics.csv").open()))
    assert len(rows) == 6 and {r["region"] for r in rows} == {"WT", "TC", "ET"}
    js = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert js["summary"]["TC"]["dice"]["mean"] == pytest.approx(
        rep["summary"]["TC"]["dice"]["mean"]
    )
    png = (tmp_path / "ev" / "dice_boxplot.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(InputError, match="already exist"):
        evaluate_workspace(ws, tmp_path / "ev")


def _decode_png(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


def test_boxplot_png_draws_median_at_right_height(tmp_path):
    p = write_boxplot_png(tmp_path / "b.png", {"WT": [0.5, 0.5, 0.5], "ET": []}, size=(200, 300))
    img = _decode_png(p.read_bytes())
    assert img.shape == (200, 300, 3)
    red = np.argwhere((img[..., 0] == 220) & (img[..., 1] == 60))
    assert red.size  # the median line exists
    top, bottom = 40, 150
    assert abs(red[:, 0].mean() - (bottom - (bottom - top) * 0.5)) <= 1.5


# ------------------------------------------------------------ peer tools accept the exports
def test_nnunet_dataset_json_has_the_fields_nnunet_v2_requires(ws, tmp_path):
    """The checks of nnU-Net v2's verify_dataset_integrity on dataset.json and the files."""
    out = tmp_path / "nn"
    export_workspace(ws, out, "nnunet")
    ds = json.loads((out / "dataset.json").read_text())
    for key in ("channel_names", "labels", "numTraining", "file_ending"):
        assert key in ds, key
    ending = ds["file_ending"]
    n_channels = len(ds["channel_names"])
    assert sorted(ds["channel_names"]) == [str(i) for i in range(n_channels)]
    labels = ds["labels"]
    assert labels["background"] == 0
    assert sorted(labels.values()) == list(range(len(labels)))  # consecutive from 0
    cases = sorted(p.name[: -len(ending)] for p in (out / "labelsTr").iterdir())
    assert len(cases) == ds["numTraining"]
    for cid in cases:
        for i in range(n_channels):
            assert (out / "imagesTr" / f"{cid}_{i:04d}{ending}").is_file()
        arr, _ = _array(out / "labelsTr" / f"{cid}{ending}")
        assert set(np.unique(arr).tolist()) <= set(labels.values())
    # region-based: every region is a list of label values and the class order is given
    export_workspace(ws, tmp_path / "nnr", "nnunet", region_based=True)
    dsr = json.loads((tmp_path / "nnr" / "dataset.json").read_text())
    assert len(dsr["regions_class_order"]) == len(dsr["labels"]) - 1


def test_msd_export_loads_with_monai_decathlon_dataset(ws, tmp_path):
    pytest.importorskip("torch")
    apps = pytest.importorskip("monai.apps")
    from monai.transforms import LoadImaged

    root = tmp_path / "decathlon"
    export_workspace(ws, root / "Task01_BrainTumour", "msd", reference="test", licence="CC0")
    from monai.data import load_decathlon_properties

    props = load_decathlon_properties(
        root / "Task01_BrainTumour" / "dataset.json",
        # DecathlonDataset's default property keys: all must be present
        property_keys=[
            "name",
            "description",
            "reference",
            "licence",
            "tensorImageSize",
            "modality",
            "labels",
            "numTraining",
            "numTest",
        ],
    )
    assert props["reference"] == "test" and props["licence"] == "CC0"
    assert props["numTraining"] == 2
    data = apps.DecathlonDataset(
        root_dir=root,
        task="Task01_BrainTumour",
        section="training",
        transform=LoadImaged(keys=["image", "label"], image_only=True),
        download=False,
        val_frac=0.0,
        cache_rate=0.0,
    )
    assert len(data) == 2
    item = data[0]
    assert item["image"].shape[-1] == 4  # (X, Y, Z, 4 channels) as MONAI loads NIfTI
    assert item["label"].shape == item["image"].shape[:3]
    assert data.get_properties(keys=["name", "reference"])["reference"] == "test"


@pytest.mark.parametrize(("year", "suffix", "et"), [("2021", "_seg", 4), ("2024", "-seg", 3)])
def test_brats_export_in_the_layout_of_a_year(ws, tmp_path, year, suffix, et):
    out = tmp_path / "b"
    export_workspace(ws, out, "brats", brats_year=year)
    names = sorted(p.name for p in (out / "caseA").iterdir())
    if year == "2021":
        assert names == [f"caseA_{m}.nii.gz" for m in ("flair", "seg", "t1", "t1ce", "t2")]
    else:
        assert names == [f"caseA-{m}.nii.gz" for m in ("seg", "t1c", "t1n", "t2f", "t2w")]
    for cid in ("caseA", "caseB"):
        arr, _ = _array(out / cid / f"{cid}{suffix}.nii.gz")
        assert et in np.unique(arr)
        np.testing.assert_array_equal(load_case(out / cid).labels, ws.latest_labels(cid))
    with pytest.raises(InputError, match="brats_year"):
        export_workspace(ws, tmp_path / "c", "brats", brats_year=2022)


def test_dataset_json_has_reference_and_licence(ws, tmp_path):
    export_workspace(ws, tmp_path / "m", "msd")
    ds = json.loads((tmp_path / "m" / "dataset.json").read_text())
    for key in ("name", "description", "reference", "licence", "release", "tensorImageSize"):
        assert ds[key], key


def test_no_verified_case_message_names_the_cli_command(ws, tmp_path):
    ws.set_status("caseA", "corrected")
    ws.set_status("caseB", "corrected")
    with pytest.raises(InputError, match="ssseg workspace set-status") as err:
        export_workspace(ws, tmp_path / "o", "nnunet")
    assert "Workspace." not in str(err.value)


def test_import_label_file_adds_a_version(ws, source, tmp_path):
    seg = next((source / "caseC").glob("*seg*"), None)
    if seg is None:  # caseC has no label file: write one on its grid
        pytest.skip("fixture case has no label file")
    v = import_label_file(ws, "caseC", seg, status="verified")
    assert v.source == "import" and ws.case("caseC").status == "verified"
    np.testing.assert_array_equal(ws.latest_labels("caseC"), ws.ground_truth("caseC"))
    with pytest.raises(InputError, match="does not exist"):
        import_label_file(ws, "caseC", tmp_path / "nope.nii.gz")


def test_evaluate_lesion_wise(ws, tmp_path):
    rep = evaluate_workspace(ws, tmp_path / "ev", lesion_wise=True, plot=False)
    assert rep["lesion_wise"]["challenge"] == "glioma"
    lw = rep["cases"]["caseB"]["WT"]["lesion_wise"]
    assert lw["dice"] == pytest.approx(1.0) and lw["hd95"] == pytest.approx(0.0)
    assert rep["summary"]["ET"]["lesion_wise"]["dice"]["n"] == 2
    rows = list(csv.DictReader((tmp_path / "ev" / "metrics.csv").open()))
    assert {"lw_dice", "lw_hd95", "lw_n_fp"} <= set(rows[0])
    assert list(rep["cases"]["caseA"]["WT"])[: len(_METRICS)] == list(_METRICS)
