"""Create workspaces from labelled datasets, and import label files into a workspace.

:func:`import_dataset` reads an nnU-Net v2 raw dataset or an MSD Task01 dataset;
:func:`import_label_file` adds one label file to a case as a new version (what
``ssseg workspace add-labels`` runs); :func:`import_ground_truth` turns cases' ground-truth
files into label versions (``ssseg workspace init --labels-as verified``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from napari_ssseg.core.case import get_convention
from napari_ssseg.errors import InputError, check_choice

__all__ = [
    "LABELS_AS",
    "create_workspace",
    "import_dataset",
    "import_label_file",
    "import_ground_truth",
    "normalise_labels_as",
]

#: What to do with the label files of a dataset: keep them as ground truth for evaluation,
#: or import them as label versions of verified or proposed cases.
LABELS_AS: tuple[str, ...] = ("ground-truth", "verified", "proposed")
_LABELS_AS_ALIASES = {
    "ground_truth": "ground_truth",
    "ground-truth": "ground_truth",
    "gt": "ground_truth",
    "version": "version",
    "verified": "version",
    "proposed": "proposed",
}


def normalise_labels_as(value: str) -> str:
    """``ground_truth``, ``version`` (verified) or ``proposed`` from a user spelling."""
    key = str(value).strip().lower()
    if key in _LABELS_AS_ALIASES:
        return _LABELS_AS_ALIASES[key]
    check_choice("--labels-as", key, LABELS_AS)  # raises with a "did you mean" hint
    raise AssertionError("unreachable")  # pragma: no cover


def import_label_file(
    ws,
    case_id: str,
    path: str | os.PathLike,
    *,
    convention: str | None = None,
    source: str = "import",
    status: str | None = None,
    note: str | None = None,
):
    """Add a label file on the case's grid as a new label version of the case.

    Parameters
    ----------
    ws : Workspace
        Open for writing.
    case_id : str
    path : path-like
        Label file written on the case's grid (its source images' geometry).
    convention : str, optional
        Label convention of the file (default: detected from its values, else the case's).
    source : {"import", "human", "model", ...}
        Provenance of the version; ``import`` and ``human`` move the case to
        ``corrected``, ``model`` to ``proposed`` (:meth:`Workspace.save_labels`).
    status : str, optional
        Status to set afterwards (e.g. ``verified``), forwards or backwards.
    note : str, optional
        Version note (default ``imported from PATH``).

    Returns
    -------
    LabelVersion
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(
            f"Label file {str(path)!r} does not exist. Give the path of a NIfTI label file "
            f"written on the grid of case {case_id!r}."
        )
    labels = ws.read_label_file(case_id, path, convention)
    version = ws.save_labels(case_id, labels, source=source, note=note or f"imported from {path}")
    if status is not None:
        ws.set_status(case_id, status, note=f"labels imported from {path.name}")
    return version


def import_ground_truth(
    ws,
    cases: Sequence[str] | None = None,
    *,
    status: str = "verified",
    progress: Callable[[float, str], None] | None = None,
) -> list[str]:
    """Import each case's ground-truth file as a label version (source ``import``).

    The ground truth stays the evaluation reference. Cases without ground truth are
    skipped. Returns the ids of the cases that got a version.
    """
    ids = list(cases) if cases else ws.case_ids
    done = []
    for i, cid in enumerate(ids):
        rec = ws.case(cid)
        if rec.ground_truth is None:
            continue
        if progress is not None:
            progress(i / max(len(ids), 1), f"importing labels of {cid}")
        gt = ws.ground_truth(cid)
        ws.save_labels(cid, gt, source="import", note=f"imported from {rec.ground_truth}")
        ws.set_status(cid, status, note="labels of the source dataset")
        done.append(cid)
    return done


def create_workspace(
    ws_path: str | os.PathLike,
    source: str | os.PathLike | None = None,
    *,
    copy_images: bool = False,
    labels_as: str | None = None,
    progress: Callable[[float, str], None] | None = None,
):
    """Create a workspace, from a folder of cases or a dataset: ``ssseg workspace init``.

    Parameters
    ----------
    ws_path : path-like
        New workspace folder.
    source : path-like, optional
        A folder of case folders, or an nnU-Net v2 / MSD dataset (with ``dataset.json``).
    copy_images : bool
        Copy the images into the workspace (default: reference them in place).
    labels_as : {"ground-truth", "verified", "proposed"} or None
        What the source's label files are (see :data:`LABELS_AS`). Default: ground truth for
        a folder of cases, verified versions for a dataset.
    progress : callable, optional
        ``progress(fraction, message)``.

    Returns
    -------
    ws : Workspace
        Open for writing (holds the lock).
    imported : list of str
        Cases whose label files became version 1.
    status : str or None
        The status those cases got.
    """
    from napari_ssseg.io.workspace import Workspace

    how = normalise_labels_as(labels_as) if labels_as is not None else None
    if how is not None and source is None:
        raise InputError("--labels-as needs --from DIR (a folder of cases or a dataset).")
    if source is not None and (Path(source) / "dataset.json").is_file():
        ws = import_dataset(
            source, ws_path, copy_images=copy_images, labels_as=how or "version",
            progress=progress,
        )  # fmt: skip
        return ws, [], None
    ws = Workspace.create(ws_path, from_dir=source, copy_images=copy_images, progress=progress)
    imported: list[str] = []
    status = None
    if how in ("version", "proposed"):
        status = "verified" if how == "version" else "proposed"
        try:
            imported = import_ground_truth(ws, status=status, progress=progress)
        except BaseException:
            ws.close()
            raise
    return ws, imported, status


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
    labels_as : {"version", "ground_truth", "proposed"}
        ``version`` (also ``verified``): each label file becomes version 1 (source
        ``import``) and the case is marked ``verified``; ``proposed``: the same, but the case
        is marked ``proposed`` (labels to review); ``ground_truth`` (also
        ``ground-truth``): the files are the cases' references for evaluation and the cases
        start as ``new``.
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

    labels_as = normalise_labels_as(labels_as)
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
        for i, (cid, files, label_file) in enumerate(entries):
            if progress is not None:
                progress(i / len(entries), f"importing {cid}")
            gt = label_file if labels_as == "ground_truth" else None
            if "msd" in files:
                rec = ws.add_case(
                    files["msd"], case_id=cid, copy_images=copy_images, ground_truth=gt
                )
            else:
                rec = ws.add_case(case_id=cid, copy_images=copy_images, ground_truth=gt, **files)
            ws.set_convention(rec.case_id, conv)
            if label_file is not None and labels_as != "ground_truth":
                import_label_file(
                    ws,
                    rec.case_id,
                    label_file,
                    convention=conv,
                    status="verified" if labels_as == "version" else "proposed",
                )
    except BaseException:
        ws.close()
        raise
    return ws
