#!/usr/bin/env python
"""Benchmark SP3-style scribble propagation (:mod:`napari_ssseg.core.scribbles`) on phantoms.

Scribbles are simulated from the ground truth (:func:`~napari_ssseg.core.scribbles.
simulate_scribbles`): 2D skeletons of each class and a background ring 3 voxels outside the
tumour, on ``n_slices`` axial slices, cut to a share ``keep`` of the turn. To save time the
phantoms are at **half resolution** (78, 120, 120) voxels of 2 mm (seeds 5000+). For each
phantom and stroke setting the WT/TC/ET Dice of

* cold start, default method (``"nearest"``: nearest-stroke classification connected to the
  strokes, inside the stroke box),
* cold start, ``"grow"`` (Algorithm 1 from the strokes, background strokes as barriers),
* model-assisted (``--model``: probabilities of the shipped default model,
  ``predict_case(case, None, device="cpu")``)

is recorded against the annotated fraction (scribbled voxels / ground-truth tumour voxels),
with the update time (superpixels and features cached in the propagator). ``--full`` also
measures set-up and update time on one full-size (155, 240, 240) 1 mm phantom.

Usage::

    python benchmarks/scribbles.py --out docs/benchmarks/scribbles.md [--model] [--full]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from napari_ssseg.core.case import region_masks
from napari_ssseg.core.metrics import dice
from napari_ssseg.core.phantom import make_phantom
from napari_ssseg.core.preprocess import brain_mask
from napari_ssseg.core.scribbles import (
    ScribblePropagator,
    classes_from_region_probabilities,
    simulate_scribbles,
)

SETTINGS = [(2, 0.25), (3, 0.25), (3, 0.5), (5, 0.5), (5, 1.0)]  # (n_slices, keep)
REGIONS = ("WT", "TC", "ET")


def _dice(labels: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    rp, rg = region_masks(labels), region_masks(gt)
    out = {}
    for r in REGIONS:
        out[r] = float("nan") if not rg[r].any() else float(dice(rp[r], rg[r]))
    return out


def _model_probs(case) -> np.ndarray:
    from napari_ssseg.ml.inference import predict_case

    res = predict_case(case, None, device="cpu")
    p = np.asarray(res["probabilities"], np.float32)
    return classes_from_region_probabilities(p) if p.shape[0] == 3 else p


def run(n_phantoms: int, model: bool, full: bool, first_seed: int = 5000) -> str:
    rows = []
    setup_s, update_s = [], []
    for i in range(n_phantoms):
        seed = first_seed + i
        case = make_phantom((78, 120, 120), spacing=(2.0, 2.0, 2.0), seed=seed).to_case()
        gt = case.labels
        brain = brain_mask(case.images)
        t0 = time.perf_counter()
        props = {
            m: ScribblePropagator(case.images, case.modalities, brain, case.scale, method=m)
            for m in ("nearest", "grow")
        }
        setup_s.append((time.perf_counter() - t0) / 2)
        probs = _model_probs(case) if model else None
        for n_slices, keep in SETTINGS:
            scr = simulate_scribbles(gt, brain, n_slices=n_slices, keep=keep)
            frac = float((scr > 0).sum() / max((gt > 0).sum(), 1))
            row = {"seed": seed, "n_slices": n_slices, "keep": keep, "fraction": frac}
            for m, prop in props.items():
                res = prop.update(scr)
                update_s.append(res.info["seconds"])
                row[m] = _dice(res.labels, gt)
            if probs is not None:
                prop = props["nearest"]
                prop.tau = None  # fresh thresholds per stroke setting
                res = prop.update(scr, probs)
                row["model"] = _dice(res.labels, gt)
                row["model_only"] = _dice(np.argmax(probs, axis=0).astype(np.uint8), gt)
            rows.append(row)
            print(row, flush=True)
    return _report(rows, setup_s, update_s, model, _full_size() if full else None, first_seed)


def _full_size() -> dict:
    case = make_phantom((155, 240, 240), spacing=(1.0, 1.0, 1.0), seed=5000).to_case()
    brain = brain_mask(case.images)
    t0 = time.perf_counter()
    prop = ScribblePropagator(case.images, case.modalities, brain, case.scale)
    setup = time.perf_counter() - t0
    times = []
    for n_slices, keep in SETTINGS:
        scr = simulate_scribbles(case.labels, brain, n_slices=n_slices, keep=keep)
        t = time.perf_counter()
        res = prop.update(scr)
        times.append(time.perf_counter() - t)
    return {
        "setup": setup,
        "update_median": statistics.median(times),
        "update_max": max(times),
        "wt": _dice(res.labels, case.labels)["WT"],
    }


def _mean(vals) -> str:
    v = [x for x in vals if not np.isnan(x)]
    return f"{statistics.mean(v):.3f}" if v else "n/a"


def _report(rows, setup_s, update_s, model, full, first_seed=5000) -> str:
    methods = ["nearest", "grow"] + (["model", "model_only"] if model else [])
    lines = [
        "# Scribble propagation benchmark",
        "",
        f"Command: `python benchmarks/scribbles.py --out docs/benchmarks/scribbles.md"
        f"{' --model' if model else ''}{' --full' if full else ''}"
        f"{f' --first-seed {first_seed}' if first_seed != 5000 else ''}`  ",
        f"Machine: {platform.machine()}, {platform.python_version()}; "
        f"{len({r['seed'] for r in rows})} phantoms (seeds {first_seed}+) at **half resolution** "
        "(78, 120, 120) x 2 mm; default parameters (2000 superpixels, sim0 0.1).",
        "",
        "Annotated fraction = scribbled voxels / ground-truth tumour voxels (background "
        "strokes included). Mean Dice over phantoms (ET: phantoms with ET only).",
        "",
        "| slices | keep | annotated % (mean, range) | method | WT | TC | ET | WT >= 0.85 |",
        "|---:|---:|---|---|---:|---:|---:|---:|",
    ]
    for n_slices, keep in SETTINGS:
        sel = [r for r in rows if r["n_slices"] == n_slices and r["keep"] == keep]
        fr = [100 * r["fraction"] for r in sel]
        for m in methods:
            d = {k: [r[m][k] for r in sel] for k in REGIONS}
            ok = sum(x >= 0.85 for x in d["WT"])
            lines.append(
                f"| {n_slices} | {keep} | {statistics.mean(fr):.2f} ({min(fr):.2f}-"
                f"{max(fr):.2f}) | {m} | {_mean(d['WT'])} | {_mean(d['TC'])} | "
                f"{_mean(d['ET'])} | {ok}/{len(sel)} |"
            )
    low = [r for r in rows if r["fraction"] <= 0.03]
    lines += [
        "",
        f"At <= 3% annotated ({len(low)} phantom x setting pairs): mean WT Dice "
        f"nearest {_mean([r['nearest']['WT'] for r in low])}, "
        f"grow {_mean([r['grow']['WT'] for r in low])}"
        + (f", model-assisted {_mean([r['model']['WT'] for r in low])}" if model else "")
        + ". Target: WT >= 0.85.",
        "",
        f"Timing (half resolution): set-up (2 SLIC + features) median "
        f"{statistics.median(setup_s):.2f} s; update median {statistics.median(update_s):.3f} s,"
        f" max {max(update_s):.3f} s.",
    ]
    if full:
        lines += [
            "",
            f"Full size (155, 240, 240) 1 mm, seed 5000: set-up {full['setup']:.1f} s, update "
            f"(cached superpixels) median {full['update_median']:.3f} s, max "
            f"{full['update_max']:.3f} s (WT Dice of the last setting {full['wt']:.3f}).",
        ]
    if model:
        lines += [
            "",
            "`model_only` is the default model's argmax alone (no scribbles), for reference.",
        ]
    lines += [
        "",
        "Per-row data:",
        "",
        "| seed | slices | keep | annotated % | "
        + " | ".join(f"{m} WT/TC/ET" for m in methods)
        + " |",
        "|" + "---:|" * (4 + len(methods)),
    ]
    for r in rows:
        cells = [
            "/".join("-" if np.isnan(r[m][k]) else f"{r[m][k]:.2f}" for k in REGIONS)
            for m in methods
        ]
        lines.append(
            f"| {r['seed']} | {r['n_slices']} | {r['keep']} | {100 * r['fraction']:.2f} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--phantoms", type=int, default=10)
    ap.add_argument("--model", action="store_true", help="also model-assisted (default model)")
    ap.add_argument("--full", action="store_true", help="also time one full-size phantom")
    ap.add_argument("--first-seed", type=int, default=5000, help="seed of the first phantom")
    args = ap.parse_args()
    text = run(args.phantoms, args.model, args.full, args.first_seed)
    if args.out:
        from napari_ssseg.io.atomic import atomic_write_text

        atomic_write_text(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
