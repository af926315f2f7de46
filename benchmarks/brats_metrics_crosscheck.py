"""Cross-check our metrics against the official BraTS evaluation package.

The official package (``brats-evaluation`` on PyPI, built on ``panoptica``) cannot share the
project's environment (it pins ``rich<14``, which conflicts with napari's npe2), so this
script creates its own virtual environment (default ``tmp/brats-eval-venv`` in the project,
an ignored folder; ``--venv`` to choose) with ``python3 -m venv`` and ``pip install
brats-evaluation``, and runs the package there in a child process.

Pairs: the real labels of BraTS 2023 glioma cases from ``../shared/data/real`` against copies
degraded with :mod:`napari_ssseg.core.degrade` (each of the four degradations), written as
NIfTI files with the reference's header into a temporary folder.

For each pair and region (WT, TC, ET) it reports, ours vs the package (``gli`` config):

* whole-volume Dice (``global_bin_dsc``) and HD95 (``global_bin_hd95``, pooled percentile;
  ours with ``definition="pooled"`` and, for comparison, MONAI's ``directed-max``);
* lesion counts and lesion-wise Dice / HD95. The package (2025) matches lesions by maximum
  bipartite matching on Dice (> 1e-6), without dilation or volume threshold, and reports the
  mean Dice / HD95 of the matched pairs (``sq_dsc``, ``sq_hd95``); ours follows the BraTS
  2023 rules (dilation, 374 mm penalties, small lesions ignored), so those columns differ by
  design and are shown side by side.

Usage::

    .venv/bin/python benchmarks/brats_metrics_crosscheck.py [--venv DIR] [--json OUT]

Prints a Markdown table; ``--json`` also writes every number.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT / ".." / "shared" / "data" / "real"
CASES = ("BraTS-GLI-00000-000", "BraTS-GLI-00012-000")
REGIONS = ("WT", "TC", "ET")

_RUNNER = r"""
import json, sys
from brats_evaluation import config_path
from panoptica import Panoptica_Evaluator
pairs = json.loads(sys.argv[1])
ev = Panoptica_Evaluator.load_from_config(str(config_path("gli")))
out = {}
for key, (pred, ref) in pairs.items():
    res = ev.evaluate(pred, ref)
    row = {}
    for group, r in res.items():
        d = r.to_dict(True) if hasattr(r, "to_dict") else dict(r)
        row[group] = {k: d.get(k) for k in (
            "global_bin_dsc", "global_bin_hd95", "global_bin_nsd", "sq_dsc", "sq_hd95",
            "tp", "fp", "fn", "num_ref_instances", "num_pred_instances")}
    out[key] = row
print("JSON:" + json.dumps(out, default=float))
"""


def ensure_venv(venv: Path) -> Path:
    """Create ``venv`` with brats-evaluation installed (once); return its python."""
    py = venv / "bin" / "python"
    probe = [str(py), "-c", "import brats_evaluation, panoptica"]
    if py.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return py
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "brats-evaluation"], check=True)
    print(f"installed brats-evaluation in {venv} ({time.perf_counter() - t0:.0f} s)")
    return py


def make_pairs(tmp: Path) -> dict[str, dict]:
    """Write reference and degraded label files; return ``{key: info}``."""
    import SimpleITK as sitk

    from napari_ssseg.core.degrade import DEGRADATIONS, degrade

    pairs: dict[str, dict] = {}
    for cid in CASES:
        seg = REAL / cid / f"{cid}-seg.nii.gz"
        if not seg.is_file():
            continue
        img = sitk.ReadImage(str(seg))
        gt = sitk.GetArrayFromImage(img).astype(np.uint8)  # BraTS 2023 values = internal
        t1n = sitk.GetArrayFromImage(sitk.ReadImage(str(REAL / cid / f"{cid}-t1n.nii.gz")))
        brain = t1n > 0
        sp = tuple(float(s) for s in img.GetSpacing()[::-1])
        ref_path = tmp / f"{cid}_ref.nii.gz"
        sitk.WriteImage(img, str(ref_path))
        for k, kind in enumerate(DEGRADATIONS):
            pred = degrade(gt, kind, brain=brain, spacing=sp, seed=k)
            out = sitk.GetImageFromArray(pred.astype(np.uint8))
            out.CopyInformation(img)
            pred_path = tmp / f"{cid}_{kind}.nii.gz"
            sitk.WriteImage(out, str(pred_path))
            pairs[f"{cid}/{kind}"] = {
                "pred": str(pred_path),
                "ref": str(ref_path),
                "pred_arr": pred,
                "gt_arr": gt,
                "spacing": sp,
            }
    return pairs


def ours(info: dict) -> dict:
    from napari_ssseg.core.lesionwise import lesionwise_metrics
    from napari_ssseg.core.metrics import region_metrics

    p, g, sp = info["pred_arr"], info["gt_arr"], info["spacing"]
    pooled = region_metrics(p, g, sp)
    dmax = region_metrics(p, g, sp, definition="directed-max")
    lw = lesionwise_metrics(p, g, sp, challenge="glioma")
    return {
        r: {
            "dice": pooled[r]["dice"],
            "hd95_pooled": pooled[r]["hd95"],
            "hd95_directed_max": dmax[r]["hd95"],
            "nsd_surfels_1mm": pooled[r]["nsd"],
            "lw_dice": lw[r]["dice"],
            "lw_hd95": lw[r]["hd95"],
            "lw_tp": lw[r]["n_tp"],
            "lw_fp": lw[r]["n_fp"],
            "lw_fn": lw[r]["n_fn"],
        }
        for r in REGIONS
    }


def official(py: Path, pairs: dict[str, dict]) -> dict:
    arg = json.dumps({k: [v["pred"], v["ref"]] for k, v in pairs.items()})
    proc = subprocess.run([str(py), "-c", _RUNNER, arg], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"the official package failed:\n{proc.stderr[-3000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("JSON:"))
    return json.loads(line[5:])


def _f(v, d=3) -> str:
    return "-" if v is None else (f"{v:.{d}f}" if isinstance(v, float) else str(v))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--venv", type=Path, default=ROOT / "tmp" / "brats-eval-venv")
    ap.add_argument("--json", type=Path, help="write all numbers here")
    args = ap.parse_args(argv)
    if not REAL.is_dir():
        print(f"no real data at {REAL}; nothing to compare")
        return 1
    py = ensure_venv(args.venv.resolve())
    with tempfile.TemporaryDirectory() as tmp:
        pairs = make_pairs(Path(tmp))
        t0 = time.perf_counter()
        ours_res = {k: ours(v) for k, v in pairs.items()}
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        theirs = official(py, pairs)
        t_theirs = time.perf_counter() - t0
    rows = []
    print(
        "| pair | region | Dice ours / BraTS | HD95 pooled ours / BraTS | HD95 directed-max "
        "| lesions TP/FP/FN ours (2023 rules) / BraTS pkg | lesion-wise Dice ours / pkg sq_dsc "
        "| lesion-wise HD95 ours / pkg sq_hd95 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for key in pairs:
        for r in REGIONS:
            o = ours_res[key][r]
            t = theirs[key].get(r.lower(), {})
            hd_t = t.get("global_bin_hd95")
            if hd_t is not None and not np.isfinite(hd_t):
                hd_t = 373.0  # what the package's parser writes for inf
            rows.append({"pair": key, "region": r, "ours": o, "official": t})
            print(
                f"| {key} | {r} | {_f(o['dice'], 4)} / {_f(t.get('global_bin_dsc'), 4)} "
                f"| {_f(o['hd95_pooled'], 2)} / {_f(hd_t, 2)} | {_f(o['hd95_directed_max'], 2)} "
                f"| {o['lw_tp']}/{o['lw_fp']}/{o['lw_fn']} / "
                f"{_f(t.get('tp'))}/{_f(t.get('fp'))}/{_f(t.get('fn'))} "
                f"| {_f(o['lw_dice'])} / {_f(t.get('sq_dsc'))} "
                f"| {_f(o['lw_hd95'], 1)} / {_f(t.get('sq_hd95'), 1)} |"
            )
    dd = [
        abs(x["ours"]["dice"] - x["official"]["global_bin_dsc"])
        for x in rows
        if x["official"].get("global_bin_dsc") is not None
    ]
    dh = [
        abs(x["ours"]["hd95_pooled"] - x["official"]["global_bin_hd95"])
        for x in rows
        if x["official"].get("global_bin_hd95") is not None
        and np.isfinite(x["official"]["global_bin_hd95"])
    ]
    gap = [x["ours"]["hd95_directed_max"] - x["ours"]["hd95_pooled"] for x in rows]
    print()
    print(
        f"{len(pairs)} pairs x {len(REGIONS)} regions; "
        f"ours {t_ours:.1f} s, package {t_theirs:.1f} s"
    )
    if dd:
        print(f"max |Dice ours - package| = {max(dd):.2e}")
    if dh:
        print(f"max |HD95 pooled ours - package| = {max(dh):.2e} mm")
    print(f"directed-max - pooled HD95: max {max(gap):.2f} mm, mean {np.mean(gap):.2f} mm")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
