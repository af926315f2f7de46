"""Tests of ``ssseg propagate`` through :func:`napari_ssseg.cli.main`."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from napari_ssseg.cli import main
from napari_ssseg.core.phantom import make_phantom
from napari_ssseg.core.preprocess import brain_mask
from napari_ssseg.core.scribbles import BACKGROUND, ScribblePropagator, simulate_scribbles
from napari_ssseg.io.readers import load_case, read_image, read_labels
from napari_ssseg.io.writers import save_image, write_case

SHAPE = (32, 40, 40)


@pytest.fixture(scope="module")
def case_dir(tmp_path_factory):
    """A BraTS-2021-named phantom case folder and its internal strokes."""
    root = tmp_path_factory.mktemp("prop")
    case = make_phantom(SHAPE, spacing=(2.0, 2.0, 2.0), seed=5001).to_case(name="ph")
    folder = write_case(case, root)
    case = load_case(folder)
    scr = simulate_scribbles(case.labels, brain_mask(case.images), n_slices=3, keep=0.5)
    return root, folder, case, scr


def _scribble_file(path, case, scr, bg=255):
    """Strokes in the case's file values (BraTS 2021: ET = 4) and ``bg`` for healthy tissue."""
    tum = np.where(scr == BACKGROUND, 0, scr).astype(np.uint8)
    values = case.convention.encode(tum).astype(np.uint16)
    values[scr == BACKGROUND] = bg
    save_image(values, case, path)
    return str(path)


def test_round_trip_matches_the_core_and_keeps_geometry(case_dir, capsys):
    root, folder, case, scr = case_dir
    scr_file = _scribble_file(root / "scr.nii.gz", case, scr)
    out = root / "dense.nii.gz"
    w = root / "w.nii.gz"
    rc = main(
        [
            "propagate",
            str(folder),
            "--scribbles",
            scr_file,
            "--out",
            str(out),
            "--weights-out",
            str(w),
        ]
    )
    stdout = capsys.readouterr().out
    assert rc == 0
    m = re.search(r"annotated fraction: ([0-9.]+)", stdout)
    assert m
    got = read_labels(out, case)
    expected = ScribblePropagator(case.images, case.modalities, None, case.scale).update(scr)
    np.testing.assert_array_equal(got, expected.labels)
    assert float(m.group(1)) == pytest.approx(expected.annotated_fraction, abs=1e-4)
    ref = sitk.ReadImage(str(folder / "ph_flair.nii.gz"))
    for f in (out, w):
        img = sitk.ReadImage(str(f))
        assert img.GetSize() == ref.GetSize()
        np.testing.assert_allclose(img.GetSpacing(), ref.GetSpacing())
        np.testing.assert_allclose(img.GetOrigin(), ref.GetOrigin())
        np.testing.assert_allclose(img.GetDirection(), ref.GetDirection())
    warr, _ = read_image(w)
    assert warr.min() >= 0 and warr.max() <= 1


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        ("grid", "different grid"),
        ("empty", "empty"),
        ("only_bg", "only background"),
        ("bad_value", "7"),
        ("bg_label", "collides"),
    ],
)
def test_bad_inputs_exit_2_with_a_message(case_dir, capsys, mutate, match):
    root, folder, case, scr = case_dir
    path = root / f"bad_{mutate}.nii.gz"
    extra: list[str] = []
    if mutate == "grid":
        img = sitk.GetImageFromArray(np.zeros((SHAPE[0], SHAPE[1], SHAPE[2] - 2), np.uint8))
        sitk.WriteImage(img, str(path))
    elif mutate == "empty":
        _scribble_file(path, case, np.zeros_like(scr))
    elif mutate == "only_bg":
        _scribble_file(path, case, np.where(scr > 0, BACKGROUND, 0).astype(np.uint8))
    elif mutate == "bad_value":
        s = scr.copy()
        _scribble_file(path, case, s)
        img = sitk.ReadImage(str(path))
        a = sitk.GetArrayFromImage(img)
        a[a == 2] = 7
        out = sitk.GetImageFromArray(a)
        out.CopyInformation(img)
        sitk.WriteImage(out, str(path))
    else:
        _scribble_file(path, case, scr)
        extra = ["--background-label", "4"]
    rc = main(
        [
            "propagate",
            str(folder),
            "--scribbles",
            str(path),
            "--out",
            str(root / "x.nii.gz"),
            *extra,
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert re.search(match, err)
    assert "Traceback" not in err


def test_module_imports_stdlib_only():
    code = (
        "import sys, napari_ssseg.commands.propagate as m; "
        "bad = [k for k in ('numpy', 'torch', 'napari', 'SimpleITK') if k in sys.modules]; "
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("channels", [4, 3])
def test_model_assisted_round_trip(case_dir, capsys, channels):
    root, folder, case, scr = case_dir
    scr_file = _scribble_file(root / "scr_m.nii.gz", case, scr)
    onehot = np.stack([case.labels == k for k in range(4)]).astype(np.float32)
    if channels == 3:  # regions WT, TC, ET
        lab = case.labels
        prob = np.stack([lab > 0, (lab == 1) | (lab == 3), lab == 3]).astype(np.float32)
    else:
        prob = onehot
    p_file = root / f"p{channels}.nii.gz"
    save_image(prob, case, p_file)
    out = root / f"m{channels}.nii.gz"
    w = root / f"mw{channels}.nii.gz"
    argv = ["propagate", str(folder), "--scribbles", scr_file, "--out", str(out)]
    rc = main([*argv, "--probabilities", str(p_file), "--weights-out", str(w)])
    stdout = capsys.readouterr().out
    assert rc == 0 and "model-assisted" in stdout
    got = read_labels(out, case)
    # a perfect model is followed up to superpixel-level majority labels
    from napari_ssseg.core.metrics import dice

    assert dice(got > 0, case.labels > 0) > 0.9
    warr, _ = read_image(w)
    assert warr.min() >= 0 and warr.max() <= 1


def test_probabilities_with_wrong_channels_exit_2(case_dir, capsys):
    root, folder, case, scr = case_dir
    scr_file = _scribble_file(root / "scr_p.nii.gz", case, scr)
    p_file = root / "p2.nii.gz"
    save_image(np.zeros((2, *case.shape), np.float32), case, p_file)
    argv = ["propagate", str(folder), "--scribbles", scr_file, "--out", str(root / "y.nii.gz")]
    rc = main([*argv, "--probabilities", str(p_file)])
    assert rc == 2
    assert "4-channel" in capsys.readouterr().err


def test_region_strokes_with_a_custom_tumour_label(case_dir, capsys):
    """Region strokes (tumour, class unknown) read with --tumour-label give the same WT."""
    from napari_ssseg.core.scribbles import TUMOUR

    root, folder, case, scr = case_dir
    region = np.where((scr > 0) & (scr != BACKGROUND), TUMOUR, scr).astype(np.uint8)
    values = np.zeros(region.shape, np.uint16)
    values[region == TUMOUR] = 200
    values[region == BACKGROUND] = 255
    save_image(values, case, root / "region.nii.gz")
    out = root / "region_dense.nii.gz"
    args = ["propagate", str(folder), "--scribbles", str(root / "region.nii.gz")]
    assert main([*args, "--out", str(out), "--tumour-label", "200"]) == 0
    got = read_labels(out, case)
    expected = ScribblePropagator(case.images, case.modalities, None, case.scale).update(region)
    np.testing.assert_array_equal(got > 0, expected.labels > 0)
    capsys.readouterr()
    # without the option, 200 is not a value of the file's convention
    assert main([*args, "--out", str(root / "x.nii.gz")]) == 2
    assert "200" in capsys.readouterr().err
