"""Evaluate a workspace: each case's latest labels against its ground truth.

Writes ``metrics.csv`` (one row per case and region), ``metrics.json`` (cases and dataset
summary) and ``dice_boxplot.png``. With ``lesion_wise=True`` the BraTS 2023+ lesion-wise Dice
and HD95 (:mod:`napari_ssseg.core.lesionwise`) are added per case and region.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_ssseg.errors import InputError
from napari_ssseg.io.atomic import atomic_write_text

__all__ = ["METRICS", "LESION_METRICS", "evaluate_workspace", "summarise"]

#: Whole-volume metrics of each case and region, in column order.
METRICS: tuple[str, ...] = ("dice", "hd95", "iou", "nsd", "asd", "ravd")
#: Lesion-wise columns (``lw_`` prefix in the CSV, ``lesion_wise`` in the JSON).
LESION_METRICS: tuple[str, ...] = ("dice", "hd95", "n_tp", "n_fn", "n_fp", "n_small")
_REGIONS = ("WT", "TC", "ET")


def _stats(values: list[Any]) -> dict[str, Any]:
    arr = np.array([np.nan if v is None else v for v in values], dtype=float)
    arr = arr[np.isfinite(arr)]
    return {
        "mean": float(arr.mean()) if arr.size else None,
        "std": float(arr.std()) if arr.size else None,
        "median": float(np.median(arr)) if arr.size else None,
        "n": int(arr.size),
    }


def summarise(
    cases: dict[str, Any], regions: Sequence[str] = _REGIONS
) -> dict[str, dict[str, Any]]:
    """Mean, std, median and n of the finite values of every region and metric.

    ``cases`` is ``{case: {region: {metric: value, "lesion_wise": {...}?}}}``; lesion-wise
    values, when present, are summarised under ``summary[region]["lesion_wise"]``.
    """
    summary: dict[str, dict[str, Any]] = {}
    for region in regions:
        rows = [c[region] for c in cases.values() if region in c]
        summary[region] = {m: _stats([r.get(m) for r in rows]) for m in METRICS}
        lw = [r["lesion_wise"] for r in rows if r.get("lesion_wise")]
        if lw:
            summary[region]["lesion_wise"] = {
                m: _stats([x.get(m) for x in lw]) for m in ("dice", "hd95")
            }
    return summary


def evaluate_workspace(
    ws,
    out: str | os.PathLike | None = None,
    *,
    cases: Sequence[str] | None = None,
    tolerance_mm: float = 1.0,
    plot: bool = True,
    lesion_wise: bool = False,
    challenge: str = "glioma",
    definition: str = "pooled",
) -> dict:
    """Metrics of each case's latest labels against its ground truth, and dataset summary.

    Parameters
    ----------
    ws : Workspace
    out : path-like, optional
        Folder for ``metrics.csv`` (one row per case and region), ``metrics.json`` (cases and
        summary) and ``dice_boxplot.png`` (Dice per region). Existing files are refused.
    cases : sequence of str, optional
        Default: every case with both a label version and ground truth.
    tolerance_mm : float
        NSD tolerance.
    plot : bool
        Write the box plot.
    lesion_wise : bool
        Add the lesion-wise Dice/HD95 of each region (``lesion_wise`` in each region's
        result, ``lw_*`` CSV columns).
    challenge : str
        Lesion-wise rules (:data:`napari_ssseg.core.lesionwise.CHALLENGES`).
    definition : str
        Whole-volume HD95 definition (:data:`napari_ssseg.core.metrics.HD95_DEFINITIONS`).

    Returns
    -------
    dict
        ``{"cases": {id: {region: {metric: value}}}, "summary": {region: {metric: {"mean",
        "std", "median", "n"}}}, "skipped": {id: reason}, "files": [...]}`` (NaN as None).
    """
    from napari_ssseg.core.metrics import region_metrics, to_jsonable

    rules = None
    if lesion_wise:
        from napari_ssseg.core.lesionwise import get_rules, lesionwise_metrics

        rules = get_rules(challenge)
    ids = list(cases) if cases else ws.case_ids
    results: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    for cid in ids:
        rec = ws.case(cid)
        if rec.ground_truth is None:
            skipped[cid] = "no ground truth"
            continue
        if rec.n_versions == 0:
            skipped[cid] = "no label version"
            continue
        if not rec.ground_truth.exists():
            skipped[cid] = f"ground-truth file missing: {rec.ground_truth}"
            continue
        pred = ws.latest_labels(cid)
        gt = ws.ground_truth(cid)
        sp = ws.spacing(cid)
        res: dict[str, dict[str, Any]] = region_metrics(
            pred, gt, sp, tolerance_mm=tolerance_mm, definition=definition
        )
        if rules is not None:
            for region, lw in lesionwise_metrics(pred, gt, sp, challenge=rules).items():
                res[region]["lesion_wise"] = lw
        results[cid] = res
    cases_json = to_jsonable(results)
    report: dict[str, Any] = {
        "workspace": str(ws.root),
        "tolerance_mm": tolerance_mm,
        "hd95_definition": definition,
        "cases": cases_json,
        "summary": summarise(cases_json),
        "skipped": skipped,
        "files": [],
    }
    if rules is not None:
        report["lesion_wise"] = {
            "challenge": rules.name,
            "source": rules.challenge,
            "dilation": rules.dilation,
            "min_volume_mm3": rules.min_volume_mm3,
        }
    if out is not None:
        report["files"] = _write_outputs(Path(out).expanduser(), report, plot)
    return report


def _write_outputs(out: Path, report: dict, plot: bool) -> list[str]:
    from napari_ssseg.io.plots import write_boxplot_png

    targets = [out / "metrics.csv", out / "metrics.json"]
    if plot:
        targets.append(out / "dice_boxplot.png")
    existing = [str(p) for p in targets if p.exists()]
    if existing:
        raise InputError(
            f"Evaluation output refused: {', '.join(map(repr, existing))} already exist. "
            "Choose a new --out folder or move those files away."
        )
    out.mkdir(parents=True, exist_ok=True)
    results = report["cases"]
    lesion = "lesion_wise" in report
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        ["case", "region", *METRICS, *((f"lw_{k}" for k in LESION_METRICS) if lesion else ())]
    )
    for cid, res in results.items():
        for region, m in res.items():
            row = [cid, region, *(_csv(m[k]) for k in METRICS)]
            if lesion:
                lw = m.get("lesion_wise") or {}
                row += [_csv(lw.get(k)) for k in LESION_METRICS]
            w.writerow(row)
    atomic_write_text(targets[0], buf.getvalue())
    if plot:
        groups = {
            r: [res[r]["dice"] for res in results.values() if res[r]["dice"] is not None]
            for r in _REGIONS
        }
        write_boxplot_png(targets[2], groups, title="Dice")
    report["files"] = [str(p) for p in targets]
    atomic_write_text(targets[1], json.dumps(report, indent=1, allow_nan=False) + "\n")
    return report["files"]


def _csv(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, int):
        return str(v)
    return f"{v:.6g}" if math.isfinite(v) else ""
