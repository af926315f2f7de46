"""Scripts in ``benchmarks/`` run as ``python benchmarks/X.py``: nothing there may shadow stdlib.

Python puts a script's folder first on ``sys.path``, so ``benchmarks/ssl.py`` (the file name
issue 6 asks for) would be imported in place of the standard library's ``ssl`` by every
benchmark script that imports torch (torch -> ... -> ``ssl``). ``benchmarks/ssl.py`` hands the
import over to the real module when it is imported under the name ``ssl``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def test_ssl_name_resolves_to_the_standard_library_from_the_benchmarks_folder():
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import ssl; "
        "assert hasattr(ssl, 'SSLContext') and hasattr(ssl, 'SSLWantReadError'), ssl.__file__; "
        "import urllib.request; "
        "sys.path.remove(sys.argv[1]); sys.path.append(sys.argv[1]); print(ssl.__file__)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(BENCH)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "benchmarks" not in proc.stdout


def test_every_benchmark_script_starts():
    """``--help`` of each script: imports work from the script's own folder."""
    for script in sorted(BENCH.glob("*.py")):
        if script.name.startswith("_"):
            continue
        proc = subprocess.run(
            [sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, f"{script.name}: {proc.stderr[-1500:]}"


def test_real_loop_plan_is_nested_and_adds_the_semi_supervised_arm():
    """benchmarks/real_loop.py: the k cases of a ranking are nested (an annotator corrects
    more of the same list), every random seed gets its own ranking, and ``--semi`` trains
    the suggested cases once more with the unlabelled real cases."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("real_loop", BENCH / "real_loop.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    scores = {name: {"entropy_score": float(i)} for i, name in enumerate(mod.POOL)}
    plan = mod.selections(scores, [0, 1], [1, 2, 4], "cps")
    suggested = [r for r in plan if r["choice"] == "suggested" and r["strategy"] == "supervised"]
    # highest entropy first
    assert [r["cases"] for r in suggested][0] == [mod.POOL[-1]]
    for how in ("suggested", "random_seed0", "random_seed1"):
        rows = [r for r in plan if r["choice"] == how and r["strategy"] == "supervised"]
        assert [r["k"] for r in rows] == [1, 2, 4]
        assert set(rows[0]["cases"]) <= set(rows[1]["cases"]) <= set(rows[2]["cases"])
    semi = [r for r in plan if r["strategy"] == "cps"]
    assert [r["cases"] for r in semi] == [r["cases"] for r in suggested]
    assert all(r["unlabelled"] == list(mod.UNLABELLED) for r in semi)
    assert mod.run_key(semi[0]["cases"], "cps") != mod.run_key(semi[0]["cases"])


def _load_script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_grid_scaling_resampled_copy_is_the_same_case_on_the_finer_grid(tmp_path):
    """benchmarks/grid_scaling.py's resampled copy keeps the BraTS names (``ssseg`` reads it
    as the same case), the extent, origin and direction; labels stay labels (nearest)."""
    import numpy as np
    import SimpleITK as sitk

    from napari_ssseg.core.phantom import make_phantom
    from napari_ssseg.io.readers import find_case_files, load_case
    from napari_ssseg.io.writers import write_case

    mod = _load_script("grid_scaling")
    case = make_phantom((24, 28, 28), (2.0, 2.0, 2.0), seed=4).to_case(name="BraTS-GLI-00009-000")
    src = write_case(case, tmp_path / "src", naming="brats2023")
    fine = mod.resample_case(src, tmp_path / "fine", 1.0)
    assert sorted(p.name for p in fine.iterdir()) == sorted(p.name for p in src.iterdir())
    assert find_case_files(fine).naming == "brats2023"
    loaded = load_case(fine)
    assert np.asarray(loaded.images).shape[1:] == (48, 56, 56)
    assert tuple(loaded.scale) == (1.0, 1.0, 1.0)
    a = sitk.ReadImage(str(next(src.glob("*-t2f.nii.gz"))))
    b = sitk.ReadImage(str(next(fine.glob("*-t2f.nii.gz"))))
    assert b.GetOrigin() == a.GetOrigin() and b.GetDirection() == a.GetDirection()
    seg_src = sitk.GetArrayFromImage(sitk.ReadImage(str(next(src.glob("*-seg.nii.gz")))))
    seg_fine = sitk.GetArrayFromImage(sitk.ReadImage(str(next(fine.glob("*-seg.nii.gz")))))
    assert set(np.unique(seg_fine)) == set(np.unique(seg_src))
    assert seg_fine[::2, ::2, ::2].tolist() == seg_src.tolist()  # nearest on a 2x grid
    mid = seg_fine[1:-1:2, ::2, ::2]  # between two source slices: one of them, not a blend
    assert np.all((mid == seg_src[:-1]) | (mid == seg_src[1:]))
    with pytest.raises(ValueError, match="spacing must be > 0"):
        mod.resample_case(src, tmp_path / "bad", 0)


def test_grid_scaling_summary_medians_and_ratios():
    mod = _load_script("grid_scaling")
    rows = {
        "native/predict": [{"seconds": 2.0, "peak_gb": 1.0}, {"seconds": 4.0, "peak_gb": 1.0}],
        "fine/predict": [{"seconds": 24.0, "peak_gb": 8.0}, {"seconds": 30.0, "peak_gb": 9.0}],
    }
    res = mod.summarise(rows)
    assert res["median"]["native/predict"] == {"seconds": 3.0, "peak_gb": 1.0}
    assert res["ratio_to_native"] == {"fine/predict": {"seconds": 9.0, "peak_gb": 8.5}}


@pytest.mark.slow  # six `ssseg` processes (predict + cold refine on three grids)
def test_grid_scaling_measures_each_grid(tmp_path):
    """benchmarks/grid_scaling.py on a small phantom case (2 mm, resampled to 1.5 mm): every
    command runs, and the report holds wall time, peak memory and ratios for each grid."""
    import json

    from napari_ssseg.core.phantom import make_phantom
    from napari_ssseg.io.writers import write_case

    case = make_phantom((48, 56, 56), (2.0, 2.0, 2.0), seed=4).to_case(name="BraTS-GLI-00009-000")
    folder = write_case(case, tmp_path / "src", naming="brats2023")
    out = tmp_path / "grid.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "grid_scaling.py"), str(folder), "--spacing", "1.5",
         "--repeats", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert set(res["median"]) == {
        f"{g}/{s}" for g in ("native", "fine", "fine_resample1") for s in ("predict", "refine")
    }
    for v in res["median"].values():
        assert v["seconds"] > 0.5 and 0.05 < v["peak_gb"] < 20
    assert res["ratio_to_native"]["fine/predict"]["seconds"] > 0


def test_tune_real_refine_tables_count_and_order_the_rows():
    """benchmarks/tune_real_refine.py: the held-out table says how many pseudo-labels each
    subset has (not a fixed 12 / 3), and the per-case table puts each configuration's result
    in its own column, in the order the configurations were run."""
    mod = _load_script("tune_real_refine")

    def row(case, config, before, after):
        r = {"case": case, "config": config, "pseudo": "proposal", "merged": {"wt": 1}}
        for k in ("wt", "tc", "et"):
            r[f"{k}_before"], r[f"{k}_after"] = before, after
        return r

    rows = [
        row("A", "defaults", 0.5, 0.6),
        row("A", "growth off", 0.5, 0.55),
        row("B", "defaults", 0.7, 0.6),
        row("B", "growth off", 0.7, 0.7),
    ]
    table = mod.heldout_table(rows)
    assert any("| defaults | proposal (2) | 0.6000 | 0.6000 | +0.0000 | 1/2 |" in t for t in table)
    assert not any("(3)" in t or "(12)" in t for t in table)
    per_case = mod.per_case_table(rows)
    assert per_case[0].index("after: defaults") < per_case[0].index("after: growth off")
    assert (
        per_case[2] == "| A | proposal | 0.500 / 0.500 / 0.500 | 0.600 / 0.600 / 0.600 | "
        "0.550 / 0.550 / 0.550 |"
    )
    assert per_case[3].startswith("| B | proposal | 0.700 / 0.700 / 0.700 | 0.600")


def test_tune_real_refine_k_fold_cases_are_the_six_labelled_cases():
    """``--fold-models`` looks each case up in the training script's folds: every labelled
    case of the refinement benchmark is held out by exactly one fold."""
    mod = _load_script("tune_real_refine")
    folds = mod.train_folds()
    held = [c for f in ("1", "2", "3") for c in folds[f]]
    assert sorted(held) == sorted(mod.ALL_CASES)
