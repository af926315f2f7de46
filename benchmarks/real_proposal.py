#!/usr/bin/env python
"""Proposal accuracy of a checkpoint on the real labelled MRI cases (Dice, HD95, time).

Reads the cases in ``../shared/data/real`` (never copied into the repository; see its
README: BraTS 2023 and UPENN-GBM **challenge training cases**), predicts each with the
package's own pipeline (:func:`napari_ssseg.ml.inference.predict_case`, CPU) and compares
the proposal with the case's label file per region (WT, TC, ET): Dice and HD95 (mm, BraTS
convention: the image diagonal when exactly one mask is empty).

Usage::

    python benchmarks/real_proposal.py [--model CKPT] [--cases A,B,...] [--tta] [--json OUT]

Also imported by ``scripts/train_default_model_v2.py`` (the k-fold evaluation).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT / ".." / "shared" / "data" / "real"

#: The labelled real cases (folder names in ``../shared/data/real``).
LABELLED = (
    "BraTS-GLI-00000-000",
    "BraTS-GLI-00012-000",
    "UPENN-GBM-00002_11",
    "UPENN-GBM-00008_11",
    "UPENN-GBM-00011_11",
    "UPENN-GBM-00075_11",
)
#: Real cases without labels (BraTS 2023 naming).
UNLABELLED = ("BraTS-GLI-00001-000", "BraTS-GLI-00027-000", "BraTS-GLI-00028-000")

_UPENN = {"t1": "_T1", "t1ce": "_T1GD", "t2": "_T2", "flair": "_FLAIR", "seg": "_segm"}


def link_cases(real: Path, src: Path, names) -> None:
    """Link the real cases ``names`` into ``src`` for training: a BraTS 2023 folder as
    itself, a UPENN case as links in BraTS 2021 naming (its labels 1, 2, 4 fit it)."""
    src.mkdir(parents=True, exist_ok=True)
    for name in names:
        folder = real / name
        link = src / name
        if link.exists() or link.is_symlink():
            continue
        files = case_files(folder)
        if files is None:
            link.symlink_to(folder.resolve())
        else:
            link.mkdir()
            for k, path in files.items():
                (link / f"{name}_{k}.nii.gz").symlink_to(path.resolve())


def case_files(folder: Path) -> dict[str, Path] | None:
    """Explicit files of a UPENN-GBM folder (``_T1 _T1GD _T2 _FLAIR _segm``), else None."""
    name = folder.name
    files = {k: folder / f"{name}{suffix}.nii.gz" for k, suffix in _UPENN.items()}
    if not files["t1ce"].is_file():
        return None
    return {k: p for k, p in files.items() if p.is_file()}


def load_real_case(folder: Path):
    """Load a real case folder as a :class:`~napari_ssseg.core.case.Case`.

    Every real case is read by the package's own reader, by its own naming (BraTS 2023,
    UPENN-GBM ``_T1 _T1GD _T2 _FLAIR _segm``, BRATS 2013), as a user's would be.
    """
    from napari_ssseg.io.readers import load_case

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_case(Path(folder))


def evaluate_case(
    case,
    checkpoint,
    device: str = "cpu",
    min_component_fraction: float | None = None,
    tta: bool = False,
) -> dict:
    """Dice and HD95 per region of the proposal on one labelled case, and its time.

    ``min_component_fraction``: the proposal's post-processing (None: the checkpoint's);
    ``tta``: test-time flips (``predict_case(tta=True)``).
    """
    from napari_ssseg.core.case import region_masks
    from napari_ssseg.core.metrics import dice, hd95
    from napari_ssseg.ml.inference import predict_case

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = predict_case(
            case,
            checkpoint,
            device=device,
            min_component_fraction=min_component_fraction,
            tta=tta,
        )
    seconds = time.perf_counter() - t0
    sp = tuple(float(s) for s in case.canonical_geometry.spacing_zyx)
    pm, gm = region_masks(res["labels"]), region_masks(case.labels)
    row: dict = {"case": case.name, "predict_seconds": round(seconds, 2)}
    for r in ("WT", "TC", "ET"):
        row[f"dice_{r}"] = round(float(dice(pm[r], gm[r])), 4)
        row[f"hd95_{r}"] = round(float(hd95(pm[r], gm[r], sp)), 2)
    return row


def summarise(rows: list[dict]) -> dict:
    """Mean of every metric over the rows."""
    keys = [k for k in rows[0] if k.startswith(("dice_", "hd95_"))] if rows else []
    return {k: round(float(np.mean([r[k] for r in rows])), 4) for k in keys}


def evaluate(
    checkpoint,
    cases=LABELLED,
    real: Path = REAL,
    log=print,
    min_component_fraction: float | None = None,
    tta: bool = False,
) -> dict:
    """Evaluate ``checkpoint`` (path, loaded Checkpoint or None = default) on ``cases``."""
    from napari_ssseg.ml.checkpoint import load_model

    ckpt = load_model(checkpoint)
    rows = []
    for name in cases:
        case = load_real_case(Path(real) / name)
        row = evaluate_case(case, ckpt, min_component_fraction=min_component_fraction, tta=tta)
        log(json.dumps(row))
        rows.append(row)
    return {"per_case": rows, "mean": summarise(rows)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    p.add_argument("--cases", default=",".join(LABELLED))
    p.add_argument("--real", type=Path, default=REAL)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument(
        "--min-component-fraction",
        type=float,
        default=None,
        help="post-processing of the proposals (default: the checkpoint's)",
    )
    p.add_argument("--tta", action="store_true", help="test-time flips (4 passes)")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if not args.real.is_dir():
        print(f"real data folder {args.real} not found", file=sys.stderr)
        return 2
    res = evaluate(
        args.model,
        [c for c in args.cases.split(",") if c],
        args.real,
        min_component_fraction=args.min_component_fraction,
        tta=args.tta,
    )
    print(json.dumps(res["mean"]))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
