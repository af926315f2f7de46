"""Export a workspace to nnU-Net v2 / MSD / BraTS folders, import datasets, evaluate.

Exports never overwrite: every target file is listed first and the export is refused if any
of them exists. Labels are the latest version of each exported case, written on the case's
source grid (geometry and array order) in the case's source convention, except where the
layout fixes the values (see :func:`export_workspace`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import struct
import warnings
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from napari_ssseg.core.case import MODALITIES, get_convention
from napari_ssseg.errors import InputError, check_choice
from napari_ssseg.io.atomic import atomic_path, atomic_write_text

__all__ = [
    "FORMATS",
    "NNUNET_CHANNELS",
    "export_workspace",
    "import_dataset",
    "evaluate_workspace",
    "write_boxplot_png",
]

#: Export layouts.
FORMATS: tuple[str, ...] = ("nnunet", "msd", "brats")
#: nnU-Net channel index of each modality (the order of nnU-Net's BraTS datasets).
NNUNET_CHANNELS: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")
_NNUNET_NAMES = {"t1": "T1", "t1ce": "T1ce", "t2": "T2", "flair": "FLAIR"}
_MSD_NAMES = {"flair": "FLAIR", "t1": "T1w", "t1ce": "t1gd", "t2": "T2w"}
_CLASS_LABELS = {
    "brats2023": {"background": 0, "NCR": 1, "ED": 2, "ET": 3},
    "msd": {"background": 0, "edema": 1, "non-enhancing tumor": 2, "enhancing tumour": 3},
}
# region-based nnU-Net labels and the value written for each region (last wins)
_REGION_LABELS = {
    "brats2023": ({"background": 0, "WT": [1, 2, 3], "TC": [1, 3], "ET": [3]}, [2, 1, 3]),
    "msd": ({"background": 0, "WT": [1, 2, 3], "TC": [2, 3], "ET": [3]}, [1, 2, 3]),
}


# ----------------------------------------------------------------------------- export
def _select(ws, cases: Sequence[str] | None, verified: bool) -> list[str]:
    if cases:
        ids = list(dict.fromkeys(cases))
        for cid in ids:
            ws.case(cid)  # raises for unknown ids
    else:
        recs = ws.cases
        ids = [r.case_id for r in recs if (r.status == "verified" if verified else r.n_versions)]
    if not ids:
        raise InputError(
            f"No case to export from {str(ws.root)!r}: no case is verified (or, with --all, "
            "has labels). Mark cases verified (Workspace.set_status(case, 'verified')) or "
            "choose cases with --cases."
        )
    bad = [c for c in ids if ws.case(c).n_versions == 0]
    if bad:
        raise InputError(
            f"Case(s) {', '.join(bad[:5])} have no saved labels, so they cannot be exported. "
            "Save labels first or leave them out."
        )
    missing = [c for c in ids if ws.case(c).missing]
    if missing:
        raise InputError(
            f"Case(s) {', '.join(missing[:5])} have missing image files and cannot be exported. "
            "Restore the images or leave the cases out (--cases)."
        )
    return ids


def _planned_files(ws, ids: list[str], fmt: str, out: Path, naming: str) -> list[Path]:
    from napari_ssseg.io.naming import modality_filename

    files = [] if fmt == "brats" else [out / "dataset.json"]
    for cid in ids:
        rec = ws.case(cid)
        if fmt == "nnunet":
            files += [out / "imagesTr" / f"{cid}_{i:04d}.nii.gz" for i in range(4)]
            files.append(out / "labelsTr" / f"{cid}.nii.gz")
        elif fmt == "msd":
            files += [out / "imagesTr" / f"{cid}.nii.gz", out / "labelsTr" / f"{cid}.nii.gz"]
        else:
            mods = [m for m in MODALITIES if m in rec.images] + ["seg"]
            files += [out / cid / modality_filename(cid, m, naming) for m in mods]
    return files


def export_workspace(
    ws,
    out: str | os.PathLike,
    fmt: str,
    *,
    cases: Sequence[str] | None = None,
    verified: bool = True,
    region_based: bool = False,
    dataset_name: str | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> list[Path]:
    """Export cases (images + latest labels) to a dataset layout, never overwriting.

    Layouts
    -------
    ``nnunet`` (nnU-Net v2 raw): ``imagesTr/{case}_{0000..0003}.nii.gz`` (T1, T1ce, T2,
    FLAIR), ``labelsTr/{case}.nii.gz`` and ``dataset.json`` (``channel_names``, ``labels``,
    ``numTraining``, ``file_ending``). nnU-Net needs consecutive label values, so labels are
    written in the case's convention when it is ``msd`` or ``brats2023``, and in ``brats2023``
    (0, 1 NCR, 2 ED, 3 ET) for BraTS 2021 cases (whose ET = 4); ``dataset.json`` records it
    under ``ssseg_label_convention``. ``labels`` holds the classes, or with
    ``region_based=True`` the regions WT/TC/ET with ``regions_class_order``.

    ``msd`` (Task01 layout): ``imagesTr/{case}.nii.gz`` 4D (FLAIR, T1w, T1gd, T2w),
    ``labelsTr/{case}.nii.gz`` in the MSD convention, ``dataset.json`` (``modality``,
    ``labels``, ``numTraining``, ``training``).

    ``brats``: one folder per case in BraTS naming, ``{case}/{case}_t1.nii.gz ... _seg``:
    BraTS 2023 naming (``-t1n``, ``-seg``, labels 1, 2, 3) for BraTS 2023 cases, else
    BraTS 2021 naming (labels 1, 2, 4).

    Images are written on each case's reference grid (the FLAIR file's, modalities resampled
    onto it as when loading); labels on the same grid.

    Parameters
    ----------
    ws : Workspace
    out : path-like
        Target folder (created). Existing files are never overwritten.
    fmt : {"nnunet", "msd", "brats"}
    cases : sequence of str, optional
        Case ids to export (default: the verified cases).
    verified : bool
        Without ``cases``: export only verified cases (False: every case with labels).
    region_based : bool
        nnU-Net only: region labels (WT, TC, ET) instead of classes.
    dataset_name : str, optional
        ``name`` in dataset.json (default the workspace folder name).

    Returns
    -------
    list of Path
        Files written.

    Raises
    ------
    InputError
        No case selected, a case without labels or with missing images, a target file that
        already exists (nothing is written then), modalities missing for the layout.
    """
    from napari_ssseg.io.atomic import check_writable_dir
    from napari_ssseg.io.writers import save_image, save_labels, write_case

    fmt = check_choice("format", fmt, FORMATS)
    out = Path(out).expanduser()
    ids = _select(ws, cases, verified)
    for cid in ids:
        rec = ws.case(cid)
        lacking = [m for m in MODALITIES if m not in rec.images]
        if fmt in ("nnunet", "msd") and lacking:
            raise InputError(
                f"Case {cid!r} lacks {', '.join(lacking)}; the {fmt} layout needs all four "
                "modalities in every case. Export it with --format brats, or leave it out."
            )
    naming_of = {
        cid: ("brats2023" if ws.case(cid).convention == "brats2023" else "brats2021") for cid in ids
    }
    planned = []
    for cid in ids:
        planned += _planned_files(ws, [cid], fmt, out, naming_of[cid])
    planned = list(dict.fromkeys(planned))
    existing = [p for p in planned if p.exists()]
    if existing:
        raise InputError(
            f"Export refused: {len(existing)} target file(s) already exist in {str(out)!r} "
            f"(e.g. {', '.join(repr(str(p)) for p in existing[:3])}). Exports never overwrite "
            "files (they may hold other labels). Choose an empty folder, or move those files "
            "away first."
        )
    check_writable_dir(out)
    written: list[Path] = []
    convs = set()
    for i, cid in enumerate(ids):
        if progress is not None:
            progress(i / len(ids), f"exporting {cid}")
        case = ws.load_case(cid, labels="latest")
        if fmt == "brats":
            folder = write_case(case, out, naming=naming_of[cid], name=cid)
            written += [p for p in planned if p.parent == folder]
            continue
        if fmt == "nnunet":
            conv = case.convention.name if case.convention.name != "brats2021" else "brats2023"
            convs.add(conv)
            for k, m in enumerate(NNUNET_CHANNELS):
                p = out / "imagesTr" / f"{cid}_{k:04d}.nii.gz"
                p.parent.mkdir(parents=True, exist_ok=True)
                written.append(save_image(case.channel(m), case, p))
        else:
            conv = "msd"
            from napari_ssseg.io.naming import MSD_CHANNELS

            p = out / "imagesTr" / f"{cid}.nii.gz"
            p.parent.mkdir(parents=True, exist_ok=True)
            stack = np.stack([case.channel(m) for m in MSD_CHANNELS])
            written.append(save_image(stack, case, p))
        lp = out / "labelsTr" / f"{cid}.nii.gz"
        lp.parent.mkdir(parents=True, exist_ok=True)
        written.append(save_labels(case.labels, case, lp, conv))
    if fmt == "brats":
        return written
    name = dataset_name or ws.root.name
    if fmt == "nnunet":
        if len(convs) > 1:
            warnings.warn(
                f"Exported cases use different label conventions {sorted(convs)}; dataset.json "
                "describes the first. Export them separately.",
                UserWarning,
                stacklevel=2,
            )
        conv = sorted(convs)[0]
        ds = {
            "name": name,
            "description": "exported by napari-ssseg from a workspace",
            "channel_names": {str(k): _NNUNET_NAMES[m] for k, m in enumerate(NNUNET_CHANNELS)},
            "numTraining": len(ids),
            "file_ending": ".nii.gz",
            "ssseg_label_convention": conv,
        }
        if region_based:
            labels, order = _REGION_LABELS[conv]
            ds["labels"] = labels
            ds["regions_class_order"] = order
        else:
            ds["labels"] = _CLASS_LABELS[conv]
    else:
        from napari_ssseg.io.naming import MSD_CHANNELS

        ds = {
            "name": name,
            "description": "exported by napari-ssseg from a workspace",
            "tensorImageSize": "4D",
            "modality": {str(k): _MSD_NAMES[m] for k, m in enumerate(MSD_CHANNELS)},
            "labels": {str(v): k for k, v in _CLASS_LABELS["msd"].items()},
            "numTraining": len(ids),
            "numTest": 0,
            "training": [
                {"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in ids
            ],
            "test": [],
        }
    written.append(atomic_write_text(out / "dataset.json", json.dumps(ds, indent=2) + "\n"))
    return written


# ----------------------------------------------------------------------------- import
def _modality_of_channel(name: str) -> str | None:
    from napari_ssseg.core.case import MODALITY_ALIASES

    key = str(name).strip().lower().replace(" ", "").replace("-", "").replace("_", "")
    return MODALITY_ALIASES.get(key)


def import_dataset(
    src: str | os.PathLike,
    ws_path: str | os.PathLike,
    *,
    copy_images: bool = False,
    labels_as: str = "version",
    convention: str | None = None,
    progress: Callable[[float, str], None] | None = None,
):
    """Create a workspace from an nnU-Net v2 raw dataset or an MSD Task01 dataset.

    Parameters
    ----------
    src : path-like
        Dataset folder with ``dataset.json``, ``imagesTr`` and (optionally) ``labelsTr``.
        nnU-Net: ``channel_names`` must name the four modalities (T1/T1n, T1ce/T1c/T1Gd,
        T2/T2w, FLAIR); MSD: ``modality`` of a 4D image (FLAIR, T1w, T1gd, T2w).
    ws_path : path-like
        New workspace folder.
    copy_images : bool
        Copy images into the workspace instead of referencing them.
    labels_as : {"version", "ground_truth"}
        ``version``: each label file becomes version 1 (source ``import``) and the case is
        marked ``verified``; ``ground_truth``: the files are the cases' references for
        evaluation and the cases start as ``new``.
    convention : str, optional
        Label convention of the files. Default: ``ssseg_label_convention`` from dataset.json,
        else ``msd`` for MSD datasets and for nnU-Net datasets whose label 1 is edema, else
        ``brats2023``.

    Returns
    -------
    Workspace
        Open for writing.
    """
    from napari_ssseg.io.naming import split_image_name
    from napari_ssseg.io.workspace import Workspace

    labels_as = check_choice("labels_as", labels_as, ("version", "ground_truth"))
    src = Path(src).expanduser()
    dpath = src / "dataset.json"
    try:
        ds = json.loads(dpath.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(
            f"{str(dpath)!r} cannot be read as JSON ({exc}); an nnU-Net or MSD dataset folder "
            "needs a valid dataset.json."
        ) from None
    images_dir = src / "imagesTr"
    if not isinstance(ds, dict) or not images_dir.is_dir():
        raise InputError(f"{str(src)!r} has no imagesTr folder; it is not an nnU-Net/MSD dataset.")
    labels_dir = src / "labelsTr"
    entries: list[tuple[str, dict, Path | None]] = []
    if "channel_names" in ds:  # nnU-Net v2
        ending = ds.get("file_ending", ".nii.gz")
        chan = {}
        for k, v in ds["channel_names"].items():
            m = _modality_of_channel(v)
            if m is None:
                raise InputError(
                    f"{str(dpath)!r}: channel {k} is named {v!r}, which is not a brain MRI "
                    "modality (T1, T1ce, T2, FLAIR); this dataset cannot be imported."
                )
            chan[int(k)] = m
        cases: dict[str, dict] = {}
        for p in sorted(images_dir.iterdir()):
            if not p.name.endswith(ending) or p.name.startswith("."):
                continue
            stem = p.name[: -len(ending)]
            cid, _, idx = stem.rpartition("_")
            if not idx.isdigit() or int(idx) not in chan:
                continue
            cases.setdefault(cid, {})[chan[int(idx)]] = p
        for cid, files in cases.items():
            lab = labels_dir / f"{cid}{ending}"
            entries.append((cid, files, lab if lab.is_file() else None))
        labels_meta = ds.get("labels", {})
        guess = "msd" if labels_meta.get("edema") == 1 else "brats2023"
        kind = "nnU-Net"
    elif "modality" in ds:  # MSD
        for p in sorted(images_dir.iterdir()):
            stem, suffix = split_image_name(p)
            if not suffix or p.name.startswith("."):
                continue
            lab = labels_dir / p.name
            entries.append((stem, {"msd": p}, lab if lab.is_file() else None))
        guess = "msd"
        kind = "MSD"
    else:
        raise InputError(
            f"{str(dpath)!r} has neither 'channel_names' (nnU-Net v2) nor 'modality' (MSD); "
            "cannot tell the dataset layout."
        )
    if not entries:
        raise InputError(f"No {kind} images found in {str(images_dir)!r}.")
    conv = get_convention(convention or ds.get("ssseg_label_convention") or guess).name
    ws = Workspace.create(ws_path)
    try:
        for i, (cid, files, lab) in enumerate(entries):
            if progress is not None:
                progress(i / len(entries), f"importing {cid}")
            if "msd" in files:
                rec = ws.add_case(files["msd"], case_id=cid, copy_images=copy_images)
            else:
                rec = ws.add_case(case_id=cid, copy_images=copy_images, **files)
            _set_convention(ws, rec.case_id, conv)
            if lab is None:
                continue
            if labels_as == "ground_truth":
                _set_ground_truth(ws, rec.case_id, lab, copy_images)
            else:
                _import_version(ws, rec.case_id, lab, conv)
    except BaseException:
        ws.close()
        raise
    return ws


def _set_convention(ws, case_id: str, conv: str) -> None:
    with ws._transaction() as m:
        ws._entry(case_id, m)["convention"] = conv


def _set_ground_truth(ws, case_id: str, lab: Path, copy_images: bool) -> None:
    from napari_ssseg.io.workspace import _copy_file

    if copy_images:
        dest = ws.root / "images" / case_id / f"{case_id}_gt.nii.gz"
        _copy_file(lab, dest)
        lab = dest
    with ws._transaction() as m:
        ws._entry(case_id, m)["ground_truth"] = ws._ref(lab)


def _import_version(ws, case_id: str, lab: Path, conv: str) -> None:
    arr = ws._read_on_grid(case_id, lab, "Imported label file")
    _, orient, _ = ws._grid(case_id)
    internal = get_convention(conv).decode(arr, source=str(lab))
    ws.save_labels(
        case_id,
        orient.to_canonical(internal),
        source="import",
        note=f"imported from {lab}",
    )
    ws.set_status(case_id, "verified", note="imported dataset labels")


# ----------------------------------------------------------------------------- evaluate
_METRICS = ("dice", "hd95", "iou", "nsd", "asd", "ravd")


def evaluate_workspace(
    ws,
    out: str | os.PathLike | None = None,
    *,
    cases: Sequence[str] | None = None,
    tolerance_mm: float = 1.0,
    plot: bool = True,
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

    Returns
    -------
    dict
        ``{"cases": {id: {region: {metric: value}}}, "summary": {region: {metric: {"mean",
        "std", "median", "n"}}}, "skipped": {id: reason}, "files": [...]}`` (NaN as None).
    """
    from napari_ssseg.core.metrics import region_metrics, to_jsonable

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
        geometry, orient, _ = ws._grid(cid)
        sp = orient.canonical_geometry(geometry, ws._file_shape(cid)).spacing_zyx
        results[cid] = region_metrics(pred, gt, sp, tolerance_mm=tolerance_mm)
    summary: dict[str, dict] = {}
    for region in ("WT", "TC", "ET"):
        summary[region] = {}
        for metric in _METRICS:
            vals = np.array([r[region][metric] for r in results.values()], dtype=float)
            vals = vals[np.isfinite(vals)]
            summary[region][metric] = {
                "mean": float(vals.mean()) if vals.size else None,
                "std": float(vals.std()) if vals.size else None,
                "median": float(np.median(vals)) if vals.size else None,
                "n": int(vals.size),
            }
    report = {
        "workspace": str(ws.root),
        "tolerance_mm": tolerance_mm,
        "cases": to_jsonable(results),
        "summary": summary,
        "skipped": skipped,
        "files": [],
    }
    if out is not None:
        out = Path(out).expanduser()
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
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["case", "region", *_METRICS])
        for cid, res in results.items():
            for region, m in res.items():
                w.writerow([cid, region, *(_csv(m[k]) for k in _METRICS)])
        atomic_write_text(targets[0], buf.getvalue())
        if plot:
            groups = {
                r: [res[r]["dice"] for res in results.values() if math.isfinite(res[r]["dice"])]
                for r in ("WT", "TC", "ET")
            }
            write_boxplot_png(targets[2], groups, title="DICE")
        report["files"] = [str(p) for p in targets]
        atomic_write_text(targets[1], json.dumps(report, indent=1, allow_nan=False) + "\n")
    return report


def _csv(v: float) -> str:
    return "" if v is None or not math.isfinite(v) else f"{v:.6g}"


# ----------------------------------------------------------------------------- PNG plot
# 5x7 bitmap glyphs for the few characters the plot needs.
_GLYPHS = {
    "0": ["01110", "10001", "10011", "10101", "11001", "10001", "01110"],
    "1": ["00100", "01100", "00100", "00100", "00100", "00100", "01110"],
    "5": ["11111", "10000", "11110", "00001", "00001", "10001", "01110"],
    ".": ["00000", "00000", "00000", "00000", "00000", "01100", "01100"],
    "W": ["10001", "10001", "10001", "10101", "10101", "10101", "01010"],
    "T": ["11111", "00100", "00100", "00100", "00100", "00100", "00100"],
    "C": ["01110", "10001", "10000", "10000", "10000", "10001", "01110"],
    "E": ["11111", "10000", "10000", "11110", "10000", "10000", "11111"],
    "D": ["11110", "10001", "10001", "10001", "10001", "10001", "11110"],
    "I": ["01110", "00100", "00100", "00100", "00100", "00100", "01110"],
    "N": ["10001", "11001", "10101", "10011", "10001", "10001", "10001"],
    "=": ["00000", "00000", "11111", "00000", "11111", "00000", "00000"],
    "2": ["01110", "10001", "00001", "00010", "00100", "01000", "11111"],
    "3": ["11110", "00001", "00001", "01110", "00001", "00001", "11110"],
    "4": ["00010", "00110", "01010", "10010", "11111", "00010", "00010"],
    "6": ["00110", "01000", "10000", "11110", "10001", "10001", "01110"],
    "7": ["11111", "00001", "00010", "00100", "01000", "01000", "01000"],
    "8": ["01110", "10001", "10001", "01110", "10001", "10001", "01110"],
    "9": ["01110", "10001", "10001", "01111", "00001", "00010", "01100"],
    " ": ["00000"] * 7,
}


def _text(img: np.ndarray, x: int, y: int, s: str, color, scale: int = 2) -> None:
    for ch in s.upper():
        g = _GLYPHS.get(ch)
        if g is not None:
            for r, row in enumerate(g):
                for c, bit in enumerate(row):
                    if bit == "1":
                        y0, x0 = y + r * scale, x + c * scale
                        img[y0 : y0 + scale, x0 : x0 + scale] = color
        x += 6 * scale


def _png_bytes(rgb: np.ndarray) -> bytes:
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[i].astype(np.uint8).tobytes() for i in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + tag
            + data
            + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


def write_boxplot_png(
    path: str | os.PathLike,
    groups: dict[str, Sequence[float]],
    title: str = "DICE",
    size: tuple[int, int] = (360, 480),
) -> Path:
    """Draw a box plot of values in [0, 1] per group and save it as PNG (numpy rasteriser).

    Boxes span the quartiles with the median line; whiskers reach the most extreme values
    within 1.5 IQR; other values are drawn as points. Matplotlib is not needed.

    Parameters
    ----------
    path : path-like
        Output ``.png``.
    groups : dict of str to sequence of float
        Group name (e.g. ``WT``) -> values in [0, 1].
    title : str
    size : (height, width)

    Returns
    -------
    Path
    """
    h, w = size
    img = np.full((h, w, 3), 255, np.uint8)
    top, bottom, left, right = 40, h - 50, 60, w - 20
    axis_c, box_c = (40, 40, 40), (70, 120, 200)
    img[top:bottom, left] = axis_c
    img[bottom, left:right] = axis_c

    def ypix(v: float) -> int:
        return int(round(bottom - (bottom - top) * min(max(v, 0.0), 1.0)))

    for tick, label in ((0.0, "0"), (0.5, "0.5"), (1.0, "1")):
        y = ypix(tick)
        img[y, left - 5 : left] = axis_c
        img[y, left + 1 : right : 4] = (200, 200, 200)
        _text(img, left - 8 - 12 * len(label), y - 7, label, axis_c)
    _text(img, left, 12, title, axis_c)
    names = list(groups)
    slot = (right - left) / max(len(names), 1)
    for i, name in enumerate(names):
        cx = int(left + slot * (i + 0.5))
        half = int(min(30, slot * 0.3))
        vals = np.asarray([v for v in groups[name] if v is not None and math.isfinite(v)], float)
        _text(img, cx - 6 * len(name), bottom + 10, name, axis_c)
        _text(img, cx - 6 * (len(str(vals.size)) + 2), bottom + 28, f"N={vals.size}", axis_c)
        if vals.size == 0:
            continue
        q1, med, q3 = np.percentile(vals, [25, 50, 75])
        iqr = q3 - q1
        inside = vals[(vals >= q1 - 1.5 * iqr) & (vals <= q3 + 1.5 * iqr)]
        lo, hi = inside.min(), inside.max()
        y1, y3 = ypix(q3), ypix(q1)
        img[y1 : y3 + 1, cx - half : cx + half + 1] = (210, 225, 245)
        img[y1, cx - half : cx + half + 1] = box_c
        img[y3, cx - half : cx + half + 1] = box_c
        img[y1 : y3 + 1, cx - half] = box_c
        img[y1 : y3 + 1, cx + half] = box_c
        ym = ypix(med)
        img[max(ym - 1, 0) : ym + 2, cx - half : cx + half + 1] = (220, 60, 40)
        img[ypix(hi) : y1, cx] = axis_c
        img[y3 : ypix(lo) + 1, cx] = axis_c
        for yy in (ypix(hi), ypix(lo)):
            img[yy, cx - half // 2 : cx + half // 2 + 1] = axis_c
        for v in vals[(vals < lo) | (vals > hi)]:
            y = ypix(v)
            img[max(y - 2, 0) : y + 3, cx - 2 : cx + 3] = (0, 0, 0)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(_png_bytes(img))
    return Path(path)
