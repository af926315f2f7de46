"""End-to-end cost of `ssseg predict` and cold `ssseg refine` as the grid grows (issue 13, item 7).

Writes a copy of a real case resampled to a finer isotropic grid (4 modalities linear, labels
nearest; BraTS file names, into a temporary folder: the real data is never copied into the
repository), then runs, as separate processes, on the case's own grid and on the fine copy:

* ``ssseg predict CASE --out P`` (the shipped default model, CPU),
* ``ssseg refine CASE --pseudo P --out R`` with its own empty ``NAPARI_SSSEG_CACHE`` (cold:
  superpixels, features and graph computed and written to the cache, as a first refine does),
* and on the fine copy the same two commands with ``--resample 1`` (the 1 mm working grid).

Each child's wall time and peak resident memory (``ru_maxrss`` of a one-child wrapper) are
measured ``--repeats`` times; the medians and the fine / native ratios are printed as JSON and
written to ``--json``::

    python benchmarks/grid_scaling.py ../shared/data/real/BraTS-GLI-00000-000 --spacing 0.5 \\
        --repeats 2 --json benchmarks/ssl_results/grid_scaling.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_WRAPPER = (
    "import json, resource, subprocess, sys; "
    "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE); "
    "err = r.stderr.decode(errors='replace'); "
    "sys.stderr.write(err[-2000:] if r.returncode else ''); "
    "timing = [x for x in err.splitlines() if x.startswith('timing')]; "
    "print(json.dumps({'rc': r.returncode, 'timing': timing[-1] if timing else None, "
    "'maxrss_kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))"
)


def resample_case(src: Path, dest: Path, spacing: float) -> Path:
    """Write ``src``'s images (linear) and label file (nearest) on an isotropic grid.

    Parameters
    ----------
    src : Path
        A BraTS case folder (2021 or 2023 naming, one NIfTI file per modality).
    dest : Path
        Folder to write into (created); the file names are ``src``'s, so ``ssseg`` reads it as
        the same case.
    spacing : float
        Isotropic voxel size in mm. Origin and direction are kept; the extent is kept to the
        nearest voxel.

    Returns
    -------
    Path
        ``dest``.
    """
    import SimpleITK as sitk

    from napari_ssseg.io.readers import find_case_files

    if not spacing > 0:
        raise ValueError(f"spacing must be > 0 mm, got {spacing}")
    cf = find_case_files(src)
    if cf.naming not in ("brats2021", "brats2023"):
        raise ValueError(
            f"{src}: naming {cf.naming!r}; grid_scaling.py resamples BraTS-named case folders "
            "(one file per modality) only"
        )
    dest.mkdir(parents=True, exist_ok=True)
    items = [(p, sitk.sitkLinear) for p in cf.files.values()]
    if cf.seg is not None:
        items.append((cf.seg, sitk.sitkNearestNeighbor))
    for path, interp in items:
        img = sitk.ReadImage(str(path))
        size = [max(1, round(n * s / spacing)) for n, s in zip(img.GetSize(), img.GetSpacing())]
        out = sitk.Resample(
            img,
            size,
            sitk.Transform(),
            interp,
            img.GetOrigin(),
            (spacing,) * 3,
            img.GetDirection(),
            0,
            img.GetPixelID(),
        )
        sitk.WriteImage(out, str(dest / Path(path).name), True)
    return dest


def run(cmd: list[str], env: dict[str, str]) -> dict[str, float]:
    """Wall seconds and peak RSS (GB) of one child process (and its ``timing`` line, if any)."""
    t0 = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-c", _WRAPPER, *cmd], capture_output=True, text=True, env=env
    )
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"wrapper failed: {res.stderr[-2000:]}")
    info = json.loads(res.stdout.strip().splitlines()[-1])
    if info["rc"] != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {info['rc']}: {res.stderr[-2000:]}")
    row = {"seconds": wall, "peak_gb": info["maxrss_kb"] / 1024**2}
    if info["timing"]:
        row["stages"] = info["timing"]  # `ssseg refine`'s per-stage line
    return row


def summarise(rows: dict[str, list[dict[str, float]]]) -> dict[str, dict]:
    """Medians per ``grid/step`` and their ratios to the native grid's.

    Parameters
    ----------
    rows : dict of str to list of dict
        ``"native/predict"``, ``"fine/refine"``, ... -> one ``{"seconds", "peak_gb"}`` per
        repeat.

    Returns
    -------
    dict
        ``runs`` (``rows``), ``median`` (same keys, medians) and ``ratio_to_native``
        (``fine/…`` and ``fine_resample1/…`` divided by ``native/…``).
    """
    med = {
        k: {m: statistics.median(v[m] for v in runs) for m in ("seconds", "peak_gb")}
        for k, runs in rows.items()
    }
    ratios = {
        k: {m: med[k][m] / med["native/" + k.split("/", 1)[1]][m] for m in ("seconds", "peak_gb")}
        for k in med
        if not k.startswith("native/")
    }
    return {"runs": rows, "median": med, "ratio_to_native": ratios}


def _voxels(case: Path) -> int:
    import SimpleITK as sitk

    from napari_ssseg.io.readers import find_case_files

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(next(iter(find_case_files(case).files.values()))))
    reader.ReadImageInformation()
    n = 1
    for s in reader.GetSize():
        n *= s
    return n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("case")
    p.add_argument("--spacing", type=float, default=0.5, help="fine isotropic grid (mm)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)

    ssseg = [sys.executable, "-m", "napari_ssseg"]
    rows: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        fine = resample_case(Path(args.case), tmp / f"fine_{args.spacing:g}mm", args.spacing)
        grids = {
            "native": (Path(args.case), []),
            "fine": (fine, []),
            "fine_resample1": (fine, ["--resample", "1"]),
        }
        voxels = {"native": _voxels(Path(args.case)), "fine": _voxels(fine)}
        for rep in range(args.repeats):
            for name, (case, extra) in grids.items():
                out = tmp / f"{name}_{rep}"
                out.mkdir()
                env = dict(os.environ, NAPARI_SSSEG_CACHE=str(out / "predict_cache"))
                pred = out / "proposal.nii.gz"
                r = run(
                    [*ssseg, "predict", str(case), "--out", str(pred), "--device", "cpu", *extra],
                    env,
                )
                rows.setdefault(f"{name}/predict", []).append(r)
                env = dict(os.environ, NAPARI_SSSEG_CACHE=str(out / "refine_cache"))
                r = run(
                    [*ssseg, "refine", str(case), "--pseudo", str(pred), "--out",
                     str(out / "refined.nii.gz"), *extra],
                    env,
                )  # fmt: skip
                rows.setdefault(f"{name}/refine", []).append(r)
                print(f"repeat {rep + 1}: {name} done", file=sys.stderr, flush=True)
    result = {
        "case": str(args.case),
        "spacing_mm": args.spacing,
        "repeats": args.repeats,
        "voxels": voxels,
        **summarise(rows),
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
