"""Commands that do not need the case's own label file never refuse a case because of it."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from napari_ssseg.cli import main
from napari_ssseg.core.phantom import make_phantom
from napari_ssseg.core.preprocess import brain_mask
from napari_ssseg.core.scribbles import BACKGROUND, simulate_scribbles
from napari_ssseg.io.readers import load_case
from napari_ssseg.io.writers import save_image, save_labels, write_case

SHAPE = (32, 40, 40)


@pytest.fixture(scope="module")
def bad_label_case(tmp_path_factory):
    """A phantom case folder whose label file holds a value (7) of no convention."""
    root = tmp_path_factory.mktemp("badlab")
    case = make_phantom(SHAPE, spacing=(2.0, 2.0, 2.0), seed=5002).to_case(name="ph")
    folder = write_case(case, root)
    case = load_case(folder)
    seg_path = folder / "ph_seg.nii.gz"
    img = sitk.ReadImage(str(seg_path))
    arr = sitk.GetArrayFromImage(img)
    arr[arr == 2] = 7
    bad = sitk.GetImageFromArray(arr)
    bad.CopyInformation(img)
    sitk.WriteImage(bad, str(seg_path))
    return root, folder, case


def test_info_refuses_nothing_and_names_the_values(bad_label_case, capsys) -> None:
    _, folder, _ = bad_label_case
    assert main(["info", str(folder)]) == 0
    err = capsys.readouterr().err
    assert "value(s) [7] belong to no supported convention" in err


def test_propagate_warns_and_goes_on(bad_label_case, capsys) -> None:
    root, folder, case = bad_label_case
    scr = simulate_scribbles(case.labels, brain_mask(case.images), n_slices=3, keep=0.5)
    values = case.convention.encode(np.where(scr == BACKGROUND, 0, scr).astype(np.uint8))
    values = values.astype(np.uint16)
    values[scr == BACKGROUND] = 255
    scr_file = root / "scr.nii.gz"
    save_image(values, case, scr_file)
    out = root / "dense.nii.gz"
    rc = main(["propagate", str(folder), "--scribbles", str(scr_file), "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "[7]" in captured.err and "NOT used" in captured.err
    assert out.is_file()


def test_refine_warns_and_goes_on(bad_label_case, capsys) -> None:
    root, folder, case = bad_label_case
    pseudo = root / "pseudo.nii.gz"
    save_labels(case.labels, case, pseudo)
    out = root / "refined.nii.gz"
    rc = main(["refine", str(folder), "--pseudo", str(pseudo), "--out", str(out), "--no-cache"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "[7]" in captured.err and "NOT used" in captured.err
    assert out.is_file()


def test_evaluate_with_the_case_labels_refuses_and_names_the_values(bad_label_case, capsys):
    root, folder, case = bad_label_case
    pred = root / "pred.nii.gz"
    save_labels(case.labels, case, pred)
    assert main(["evaluate", str(pred), "--case", str(folder)]) == 2
    assert "value(s) [7]" in capsys.readouterr().err
