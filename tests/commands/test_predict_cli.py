"""`ssseg predict` end to end on a tiny phantom case written to disk."""

from __future__ import annotations

import numpy as np
import pytest

from napari_ssseg.cli import main


@pytest.fixture
def case_dir(tmp_path, tiny_phantom):
    from napari_ssseg.io.writers import write_case

    return write_case(tiny_phantom.to_case(name="tiny"), tmp_path / "cases", naming="brats2021")


def _predict(case_dir, out, ckpt, *extra) -> list[str]:
    """``ssseg predict`` arguments: CASE, --out, the tiny model on the CPU, then ``extra``."""
    args = ["predict", str(case_dir), "--out", str(out), "--model", str(ckpt), "--device", "cpu"]
    return args + [str(x) for x in extra]


def test_predict_writes_labels_uncertainty_probabilities(tmp_path, case_dir, tiny_ckpt, capsys):
    import SimpleITK as sitk

    from napari_ssseg.io.readers import load_case

    out = tmp_path / "out" / "pred.nii.gz"
    unc = tmp_path / "out" / "unc.nii.gz"
    prob = tmp_path / "out" / "prob.nii.gz"
    code = main(
        _predict(case_dir, out, tiny_ckpt, "--uncertainty", unc, "--probabilities", prob)
        + ["--mc-samples", "2"]
    )
    cap = capsys.readouterr()
    assert code == 0, cap.err
    assert "%]" in cap.err  # progress on stderr
    assert "Dice against the case's labels" in cap.out
    case = load_case(case_dir)
    ref = sitk.ReadImage(str(next(case_dir.glob("*_flair.nii.gz"))))
    for path in (out, unc, prob):
        img = sitk.ReadImage(str(path))
        assert img.GetSpacing()[:3] == pytest.approx(ref.GetSpacing())
        assert img.GetOrigin()[:3] == pytest.approx(ref.GetOrigin())
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    assert labels.shape == case.shape
    assert set(np.unique(labels)) <= {0, 1, 2, 4}  # the case's brats2021 convention
    u = sitk.GetArrayFromImage(sitk.ReadImage(str(unc)))
    assert u.dtype == np.float32 and 0 <= u.min() and u.max() <= 1
    p = sitk.ReadImage(str(prob))
    assert p.GetNumberOfComponentsPerPixel() == 4 or p.GetDimension() == 4


def test_predict_output_convention(tmp_path, case_dir, tiny_ckpt):
    import SimpleITK as sitk

    out = tmp_path / "pred.nii.gz"
    assert main(_predict(case_dir, out, tiny_ckpt, "--convention", "brats2023")) == 0
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    assert 4 not in np.unique(labels)


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--model", "MISSING.pt"], "does not exist"),
        (["--device", "cuda", "--no-cpu-fallback"], "requested"),
        (["--device", "gpu"], "device"),
        (["--mc-samples", "-2"], "mc-samples"),
        (["--uncertainty", "SAME.nii.gz", "--probabilities", "SAME.nii.gz"], "different files"),
    ],
)
def test_predict_bad_input_exit_2(tmp_path, case_dir, tiny_ckpt, capsys, extra, match):
    import torch

    if "cuda" in extra and torch.cuda.is_available():
        pytest.skip("machine has CUDA")
    args = [
        "predict",
        str(case_dir),
        "--out",
        str(tmp_path / "p.nii.gz"),
        "--model",
        str(tiny_ckpt),
        "--device",
        "cpu",
    ]
    extra = [str(tmp_path / e) if e.endswith((".pt", ".nii.gz")) else e for e in extra]
    assert main(args + extra) == 2
    err = capsys.readouterr().err
    assert match in err
    assert "Traceback" not in err
    assert not (tmp_path / "p.nii.gz").exists()


def test_help_does_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys; from napari_ssseg.cli import build_parser; build_parser(); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_four_modality_model_on_two_modality_case(tmp_path, tiny_phantom, tiny_ckpt, capsys):
    from napari_ssseg.io.writers import case_from_arrays, write_case

    case = case_from_arrays(tiny_phantom.images[[0, 3]], ["t1", "flair"], name="two")
    folder = write_case(case, tmp_path / "cases", naming="brats2021")
    out = tmp_path / "p.nii.gz"
    code = main(
        ["predict", str(folder), "--out", str(out), "--model", str(tiny_ckpt), "--device", "cpu"]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "missing t1ce, t2" in err
    assert not out.exists()
