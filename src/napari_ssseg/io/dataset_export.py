"""Export a workspace to nnU-Net v2 / MSD / BraTS dataset folders.

Exports never overwrite: every target file is listed first and the export is refused if any
of them exists. Labels are the latest version of each exported case, written on the case's
source grid (geometry and array order) in the case's source convention, except where the
layout fixes the values (see :func:`export_workspace`).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from napari_ssseg.core.case import MODALITIES
from napari_ssseg.errors import InputError, check_choice
from napari_ssseg.io.atomic import atomic_write_text

__all__ = ["FORMATS", "NNUNET_CHANNELS", "BRATS_YEARS", "export_workspace"]

#: Export layouts.
FORMATS: tuple[str, ...] = ("nnunet", "msd", "brats")
#: nnU-Net channel index of each modality (the order of nnU-Net's BraTS datasets).
NNUNET_CHANNELS: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")
#: BraTS layouts by challenge year: file naming (and so label values) of each year.
BRATS_YEARS: dict[str, str] = {
    "2018": "brats2021",
    "2019": "brats2021",
    "2020": "brats2021",
    "2021": "brats2021",
    "2023": "brats2023",
    "2024": "brats2023",
    "2025": "brats2023",
}
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
_DEFAULT_LICENCE = "the licence of the source images and labels applies (not recorded)"


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
            "has labels). Mark cases verified with `ssseg workspace set-status WS verified "
            "CASE...` (or --all), export every case with labels with --all, or choose cases "
            "with --cases."
        )
    bad = [c for c in ids if ws.case(c).n_versions == 0]
    if bad:
        raise InputError(
            f"Case(s) {', '.join(bad[:5])} have no saved labels, so they cannot be exported. "
            "Save labels first (or import label files with `ssseg workspace add-labels WS "
            "CASE FILE`), or leave them out."
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
    brats_year: str | int | None = None,
    reference: str | None = None,
    licence: str | None = None,
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
    ``labels``, ``numTraining``, ``training``, and the descriptive keys ``name``,
    ``description``, ``reference``, ``licence``, ``release``, ``tensorImageSize``,
    ``numTest`` and ``test``): ``monai.apps.DecathlonDataset`` and
    ``monai.apps.load_decathlon_properties`` read it (export into a folder named like the
    task, e.g. ``Task01_BrainTumour``, and give its parent as ``root_dir``).

    ``brats``: one folder per case in the official layout of a BraTS year (``brats_year``):
    2018-2021 ``{case}/{case}_flair.nii.gz``, ``_t1``, ``_t1ce``, ``_t2``, ``_seg`` (labels
    1 NCR, 2 ED, 4 ET); 2023-2025 ``{case}/{case}-t1n.nii.gz``, ``-t1c``, ``-t2w``, ``-t2f``,
    ``-seg`` (labels 1, 2, 3). Without ``brats_year``, BraTS 2023 cases get the 2023 layout
    and all others the 2021 one.

    Images are written on each case's reference grid (the FLAIR file's, modalities resampled
    onto it as when loading); labels on the same grid. A case marked clinical (a raw study)
    is exported the same way, as read (not registered, skull on), with a warning: the
    preparation needs the ``ml`` layer (deepbet), which ``io`` never imports.

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
    brats_year : str or int, optional
        BraTS only: the challenge year whose layout to write (:data:`BRATS_YEARS`).
    reference, licence : str, optional
        MSD/nnU-Net dataset.json ``reference`` and ``licence`` (defaults say where the
        dataset came from and that the source data's licence applies).

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
    raw = [cid for cid in ids if ws.case(cid).clinical]
    if raw:
        warnings.warn(
            f"{len(raw)} case(s) are raw clinical studies ({', '.join(raw[:5])}): their series "
            "are exported as read, resampled onto the FLAIR's grid by world coordinates (not "
            "registered, not brain-extracted), with the labels on that grid. Run "
            "`ssseg preprocess CASE --brain-extraction on --register on` for prepared images.",
            UserWarning,
            stacklevel=2,
        )
    if brats_year is not None:
        year = check_choice("brats_year", str(brats_year), tuple(BRATS_YEARS))
        naming_of = dict.fromkeys(ids, BRATS_YEARS[year])
    else:
        naming_of = {
            cid: ("brats2023" if ws.case(cid).convention == "brats2023" else "brats2021")
            for cid in ids
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
    reference = reference or f"napari-ssseg workspace {ws.root.name}"
    licence = licence or _DEFAULT_LICENCE
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
            "reference": reference,
            "licence": licence,
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
            "reference": reference,
            "licence": licence,
            "release": "1.0",
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
