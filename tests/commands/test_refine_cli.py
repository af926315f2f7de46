"""``ssseg refine`` hands every option to :func:`refine_case` as one RefineOptions."""

from __future__ import annotations

import numpy as np
import pytest

from napari_ssseg.cli import main
from napari_ssseg.core import refine as refine_mod
from napari_ssseg.core.degrade import degrade_labels
from napari_ssseg.core.phantom import make_phantom
from napari_ssseg.io.readers import load_case, read_labels
from napari_ssseg.io.writers import save_labels, write_case


@pytest.fixture(scope="module")
def case_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("refcli")
    case = make_phantom((32, 40, 40), spacing=(2.0, 2.0, 2.0), seed=5003).to_case(name="ph")
    folder = write_case(case, root)
    case = load_case(folder)
    pseudo = degrade_labels(case.labels, kind="under_oedema", spacing=case.scale, seed=0)
    path = root / "pseudo.nii.gz"
    save_labels(pseudo, case, path)
    return root, folder, case, path


def _spy(monkeypatch) -> list:
    seen: list = []
    real = refine_mod.refine_case

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(refine_mod, "refine_case", spy)
    return seen


@pytest.mark.parametrize(
    "flags,expected",
    [
        ([], refine_mod.RefineOptions()),
        (["--paper", "--sim0", "0.2"], refine_mod.RefineOptions.paper(sim0=0.2)),
        (
            ["--keep-components", "--mutual", "member", "--mutual-tolerance", "0.1", "--shrink"],
            refine_mod.RefineOptions(
                components=False, mutual="member", mutual_tolerance=0.1, shrink=True
            ),
        ),
        (
            ["--output", "added", "--nc", "5", "--fill", "0.7", "--fill-edge", "2"],
            refine_mod.RefineOptions(output="added", n_c=5, fill=0.7, fill_edge=2.0),
        ),
    ],
)
def test_cli_flags_become_one_options_object(case_folder, monkeypatch, flags, expected):
    root, folder, case, pseudo = case_folder
    seen = _spy(monkeypatch)
    out = root / "refined.nii.gz"
    args = ["refine", str(folder), "--pseudo", str(pseudo), "--out", str(out), "--no-cache"]
    assert main([*args, "--n-segments", "150", *flags]) == 0
    (kwargs,) = seen
    assert kwargs["options"] == expected
    assert not set(kwargs) & set(refine_mod.RefineOptions.names())  # nothing loose
    direct = refine_mod.refine_case(
        case, read_labels(pseudo, case), options=expected, n_segments=150, cache=False
    )
    written = read_labels(out, case)
    np.testing.assert_array_equal(written, direct.labels)
