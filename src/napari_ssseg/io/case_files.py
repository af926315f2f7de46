"""Find the files of one case and recognise its naming (no voxels are read).

BraTS 2019-2021 and 2023+ folders, MSD Task01 4D images (and ``imagesTr`` layouts), PACS /
TCIA folders whose series are named by sequence, explicit per-modality files, and
``--modality MOD=FILE`` flags. File-name patterns live in :mod:`napari_ssseg.io.naming`.
Part of :mod:`napari_ssseg.io.readers`, which re-exports the public names.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from napari_ssseg.core.case import MODALITIES
from napari_ssseg.errors import InputError
from napari_ssseg.io.image_read import _check_path, _dicom_series_files, _read_info
from napari_ssseg.io.naming import (
    IMAGE_SUFFIXES,
    MSD_CHANNELS,
    is_image_file,
    match_modality,
    match_series,
    split_image_name,
)

__all__ = ["AmbiguousSeriesError", "CaseFiles", "find_case_files", "parse_modality_args"]

log = logging.getLogger("napari_ssseg.io.readers")  # the façade's name, as before the split


# ----------------------------------------------------------------------------- case files
@dataclass
class CaseFiles:
    """Files making up one case, as found by :func:`find_case_files`.

    Attributes
    ----------
    naming : str
        ``"brats2021"``, ``"brats2023"``, ``"msd"`` or ``"explicit"``.
    files : dict of str to Path
        Modality -> file (or DICOM folder). For MSD every modality maps to the 4D image.
    seg : Path or None
        Label file, if any.
    msd_image : Path or None
        The 4D MSD image, if the case is in MSD layout.
    name : str
        Case name (e.g. ``BraTS2021_00000``).
    matched_by : dict of str to str
        For a PACS / TCIA folder (naming ``"pacs"``): modality -> the sequence keywords of
        its file name that chose it.
    """

    naming: str
    files: dict[str, Path] = field(default_factory=dict)
    seg: Path | None = None
    msd_image: Path | None = None
    name: str = "case"
    matched_by: dict[str, str] = field(default_factory=dict)

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modalities present, in :data:`MODALITIES` order (t1, t1ce, t2, flair)."""
        return tuple(m for m in MODALITIES if m in self.files)


def _is_label_stem(stem: str) -> bool:
    s = stem.lower()
    return s in ("label", "labels", "seg", "segmentation") or s.endswith(
        ("_label", "_labels", "-label", "-labels")
    )


def _candidates(folder: Path) -> list[Path]:
    out = []
    for child in sorted(folder.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_file() and is_image_file(child):
            out.append(child)
        elif child.is_dir() and match_modality(child.name) is not None:
            out.append(child)  # DICOM series folder named like a modality
    return out


def _duplicate_error(key: str, paths: Iterable[Path], folder: Path | None) -> InputError:
    names = ", ".join(repr(str(p)) for p in paths)
    where = f" in {str(folder)!r}" if folder else ""
    what = "the label file" if key == "seg" else f"the {key} modality"
    return InputError(
        f"Two or more files{where} claim {what}: {names}. A case folder must hold exactly one "
        "file per modality (one case, one format). Remove or move the extra file, or pass the "
        "files explicitly (e.g. `--t1 FILE --flair FILE`)."
    )


def _msd_label_for(image: Path) -> Path | None:
    stem, suffix = split_image_name(image)
    folder = image.parent
    options = []
    if folder.name.lower().startswith("images"):
        sibling = folder.parent / ("labels" + folder.name[len("images") :])
        options += [sibling / image.name] + [sibling / f"{stem}{s}" for s in IMAGE_SUFFIXES]
    for tag in ("_label", "_labels", "_seg", "-label", "-seg"):
        options += [folder / f"{stem}{tag}{s}" for s in IMAGE_SUFFIXES]
    for opt in options:
        if opt.is_file():
            return opt
    return None


def _msd_case(image: Path) -> CaseFiles:
    dim, size = _read_info(image)
    if dim != 4:
        raise InputError(
            f"Image {str(image)!r} has {dim} dimensions (size {size}) and its name does not say "
            "which modality it is. Name it in BraTS style (e.g. CASE_flair.nii.gz) or pass it "
            "explicitly (`--flair FILE`); a single-file MSD case must be a 4D image with the "
            "channels FLAIR, T1w, T1gd, T2w."
        )
    stem, _ = split_image_name(image)
    return CaseFiles(
        naming="msd",
        files={m: image for m in MSD_CHANNELS},
        seg=_msd_label_for(image),
        msd_image=image,
        name=stem,
    )


def _warn_unused(paths: Sequence[Path], folder: Path) -> None:
    """Warn about image files of a case folder that were not read (never drop them silently)."""
    if not paths:
        return
    labels = [p for p in paths if _is_label_stem(split_image_name(p)[0])]
    others = [p for p in paths if p not in labels]
    parts = []
    if others:
        parts.append(
            f"image file(s) {', '.join(repr(p.name) for p in others)} match no modality name "
            "(expected e.g. CASE_t1, CASE_t1ce/CASE_T1GD, CASE_t2, CASE_flair, CASE-t1n, "
            "CASE-t1c, CASE-t2w, CASE-t2f)"
        )
    if labels:
        parts.append(
            f"label-like file(s) {', '.join(repr(p.name) for p in labels)} do not follow the "
            "case's naming (CASE_seg, CASE-seg, CASE_segm)"
        )
    warnings.warn(
        f"Folder {str(folder)!r}: {'; '.join(parts)}; they were NOT read. Rename them, or pass "
        "them explicitly (--t1/--t1ce/--t2/--flair/--seg FILE).",
        UserWarning,
        stacklevel=4,
    )


class AmbiguousSeriesError(InputError):
    """The series of a PACS / TCIA folder cannot be told apart by their names."""


def _is_2d_file(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        dim, size = _read_info(path)
    except InputError:
        return False  # unreadable: reported when it is read
    return dim < 3 or min(size[:3]) < 2


def _pacs_case(
    folder: Path, candidates: Sequence[Path], assigned: dict[str, Path] | None
) -> CaseFiles | None:
    """One case from a folder of PACS / TCIA series named by sequence (FLAIR, T1 POST GAD...).

    Returns None when no file name holds a sequence keyword. Files given explicitly
    (``assigned``) settle their modality; skipped and unused files are named in a warning.

    Raises
    ------
    AmbiguousSeriesError
        Two series claim one modality, or one series could be several modalities.
    """
    assigned = dict(assigned or {})
    taken = {Path(p).resolve() for p in assigned.values()}
    per_file: dict[Path, dict[str, str]] = {}
    skipped: list[str] = []
    unknown: list[Path] = []
    labels: list[Path] = []
    for p in candidates:
        if p.resolve() in taken:
            continue
        m = match_modality(p.name)
        if _is_label_stem(split_image_name(p)[0]) or (m is not None and m[1] == "seg"):
            labels.append(p)
            continue
        cand, skip = match_series(p.name)
        if skip is not None:
            skipped.append(f"{p.name!r} ({skip})")
            continue
        if not cand:
            unknown.append(p)
            continue
        if _is_2d_file(p):
            skipped.append(f"{p.name!r} (a 2D series)")
            continue
        per_file[p] = cand
    if not per_file and not assigned:
        return None
    mapping: dict[str, tuple[Path, str]] = {}
    unused: list[str] = []
    changed = True
    while changed:
        changed = False
        for p in list(per_file):
            cand = {m: w for m, w in per_file[p].items() if m not in mapping and m not in assigned}
            if not cand:
                gone = ", ".join(per_file[p])
                unused.append(f"{p.name!r} ({gone}: already given)")
                del per_file[p]
                continue
            per_file[p] = cand
            if len(cand) == 1:
                mod = next(iter(cand))
                if sum(mod in c for c in per_file.values()) == 1:
                    mapping[mod] = (p, cand[mod])
                    del per_file[p]
                    changed = True
    if per_file:
        claims: dict[str, list[str]] = {}
        multi: list[str] = []
        for p, cand in per_file.items():
            for mod, words in cand.items():
                claims.setdefault(mod, []).append(f"{p.name!r} ({words})")
            if len(cand) > 1:
                multi.append(
                    f"{p.name!r} could be " + " or ".join(f"{m} ({w})" for m, w in cand.items())
                )
        parts = [f"{m}: {', '.join(v)}" for m, v in claims.items() if len(v) > 1] + multi
        example = next(iter(per_file))
        mod = next(iter(per_file[example]))
        raise AmbiguousSeriesError(
            f"Folder {str(folder)!r} looks like a PACS / TCIA export (series named by sequence), "
            f"but their names are ambiguous: {'; '.join(parts)}. Settle it by naming the file "
            f"of each ambiguous modality, e.g. `--modality {mod}={str(example)!r}` (modalities "
            "t1, t1ce/t1c, t2, flair; repeat the flag), or move the extra series out of the "
            "folder."
        )
    notes = []
    if skipped:
        notes.append(f"skipped series that are none of T1, T1c, T2, FLAIR: {', '.join(skipped)}")
    if unknown:
        notes.append(
            f"file(s) whose names hold no sequence keyword: "
            f"{', '.join(repr(p.name) for p in unknown)}"
        )
    if unused:
        notes.append(f"series not used: {', '.join(unused)}")
    if len(labels) > 1:
        notes.append(
            f"several label-like files ({', '.join(repr(p.name) for p in labels)}), none used"
        )
    if notes:
        warnings.warn(
            f"Folder {str(folder)!r} (PACS / TCIA series): {'; '.join(notes)}. Pass a file "
            "explicitly with --modality MOD=FILE if one of them is needed.",
            UserWarning,
            stacklevel=4,
        )
    return CaseFiles(
        naming="pacs",
        files={m: mapping[m][0] for m in MODALITIES if m in mapping},
        seg=labels[0] if len(labels) == 1 else None,
        name=folder.name,
        matched_by={m: mapping[m][1] for m in MODALITIES if m in mapping},
    )


def _pacs_reading_more(
    folder: Path, assigned: dict[str, Path] | None, n_dataset: int
) -> CaseFiles | None:
    """The folder read as a PACS / TCIA export, if that reads more series than the dataset
    naming's ``n_dataset`` modalities; else None (and nothing is warned).

    A PACS series name can end like a BraTS suffix (``..._se2d1_t1.nii.gz``): with the other
    series of the study present, the dataset naming sees two case names and the folder is
    read by sequence keywords; with only one such series it would read that one and leave the
    FLAIR and T1 POST GAD unread. The PACS reading's own warnings are passed on only when it
    is used, with one saying that it was used and its mapping; an ambiguous PACS reading keeps
    the dataset naming.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            pacs = _pacs_case(folder, _candidates(folder), assigned)
        except AmbiguousSeriesError:
            return None
    if pacs is None or len(pacs.files) <= n_dataset:
        return None
    for w in caught:
        warnings.warn(str(w.message), w.category, stacklevel=4)
    mapping = ", ".join(f"{m} <- {p.name!r}" for m, p in pacs.files.items())
    warnings.warn(
        f"Folder {str(folder)!r}: only {n_dataset} file(s) follow a dataset naming (BraTS, "
        f"UPENN), so the folder is read by the sequence keywords of its file names (PACS / "
        f"TCIA naming), which finds {len(pacs.files)} series: {mapping}. Pass the files "
        "explicitly (--t1/--t1ce/--t2/--flair, or --modality MOD=FILE) if this is wrong.",
        UserWarning,
        stacklevel=4,
    )
    return pacs


def _find_in_folder(folder: Path, assigned: dict[str, Path] | None = None) -> CaseFiles:
    # MSD dataset layout: imagesTr/ (+ labelsTr/) with a single case
    for sub in ("imagesTr", "imagesTs"):
        images_dir = folder / sub
        if images_dir.is_dir():
            imgs = [p for p in _candidates(images_dir) if p.is_file()]
            if len(imgs) == 1:
                return _msd_case(imgs[0])
            if len(imgs) > 1:
                raise InputError(
                    f"{str(images_dir)!r} holds {len(imgs)} MSD cases; ssseg reads one case at "
                    f"a time. Pass one image file, e.g. {str(imgs[0])!r}."
                )
    matched: dict[str, list[Path]] = {}
    namings: dict[str, str] = {}
    names: dict[str, list[Path]] = {}
    unmatched: list[Path] = []
    for cand in _candidates(folder):
        m = match_modality(cand.name)
        if m is None:
            unmatched.append(cand)
            continue
        naming, key, name = m
        matched.setdefault(key, []).append(cand)
        if key != "seg" or naming == "upenn":
            namings[key] = naming
        if name:
            names.setdefault(name, []).append(cand)
    modality_keys = [k for k in matched if k != "seg"]
    unmatched_images = [p for p in unmatched if not _is_label_stem(split_image_name(p)[0])]
    if modality_keys and unmatched_images:
        conflict = len(names) > 1 or any(len(v) > 1 for v in matched.values())
        if conflict:  # dataset naming does not fit: maybe series of a PACS / TCIA export
            pacs = _pacs_case(folder, _candidates(folder), assigned)
            if pacs is not None:
                return pacs
        else:
            pacs = _pacs_reading_more(folder, assigned, len(modality_keys))
            if pacs is not None:
                return pacs
    if modality_keys:
        for key, paths in matched.items():
            if len(paths) > 1:
                raise _duplicate_error(key, paths, folder)
        if len(names) > 1:
            listing = "; ".join(
                f"{n!r}: {', '.join(p.name for p in ps)}" for n, ps in sorted(names.items())
            )
            raise InputError(
                f"Folder {str(folder)!r} holds files of more than one case ({listing}). Put "
                "each case in its own folder, or pass the files explicitly with "
                "--t1/--t1ce/--t2/--flair/--seg."
            )
        naming_set = set(namings.values())
        if "upenn" in naming_set and naming_set <= {"upenn", "brats2021"}:
            naming_set = {"upenn"}  # _T1, _T2, _FLAIR are shared by both namings
        naming = naming_set.pop() if len(naming_set) == 1 else "brats2021"
        if len(set(namings.values()) - {"upenn"}) > 1:
            log.warning("%s mixes BraTS 2021 and 2023 file names", folder)
        _warn_unused(unmatched, folder)
        name = next(iter(names)) if names else folder.name
        seg = matched["seg"][0] if "seg" in matched else None
        return CaseFiles(
            naming=naming,
            files={k: matched[k][0] for k in MODALITIES if k in matched},
            seg=seg,
            name=name or folder.name,
        )
    images = [p for p in unmatched if p.is_file() and not _is_label_stem(split_image_name(p)[0])]
    if len(images) > 1 or (images and assigned):
        pacs = _pacs_case(folder, _candidates(folder), assigned)
        if pacs is not None:
            return pacs
    if len(images) == 1:
        return _msd_case(images[0])
    if len(images) > 1:
        raise InputError(
            f"Folder {str(folder)!r} holds {len(images)} images whose names do not follow BraTS "
            f"naming ({', '.join(p.name for p in images[:6])}), so their modalities are unknown. "
            "Rename them (CASE_t1, CASE_t1ce, CASE_t2, CASE_flair, CASE_seg), name the sequence "
            "in each (FLAIR, T1, T1 POST GAD, T2, as PACS exports do) or pass them explicitly "
            "with --t1/--t1ce/--t2/--flair/--seg (or --modality MOD=FILE)."
        )
    if any(c.is_file() for c in folder.iterdir()) and not matched:
        try:  # the folder itself may be a DICOM series
            _dicom_series_files(folder)
        except InputError:
            pass
        else:
            raise InputError(
                f"{str(folder)!r} is a DICOM series folder, so its modality is unknown. Pass "
                "it explicitly, e.g. `--flair FOLDER` (or load_case(flair=FOLDER))."
            )
    raise InputError(
        f"No images found in {str(folder)!r}. Expected BraTS 2021 names (CASE_t1.nii.gz, "
        "CASE_t1ce, CASE_t2, CASE_flair), BraTS 2023 names (CASE-t1n, -t1c, -t2w, -t2f), an MSD "
        f"4D image, or DICOM series folders named like a modality; extensions "
        f"{', '.join(IMAGE_SUFFIXES)}."
    )


def find_case_files(
    path: str | os.PathLike | None = None,
    *,
    t1: str | os.PathLike | None = None,
    t1ce: str | os.PathLike | None = None,
    t2: str | os.PathLike | None = None,
    flair: str | os.PathLike | None = None,
    seg: str | os.PathLike | None = None,
) -> CaseFiles:
    """Find the files of one case and recognise its naming scheme (no voxels are read).

    Parameters
    ----------
    path : path-like, optional
        A case folder (BraTS 2021/2023 naming, MSD layout), an MSD 4D image file, or a single
        BraTS-named modality file.
    t1, t1ce, t2, flair, seg : path-like, optional
        Explicit files (or DICOM folders). They override files found in ``path``.

    Returns
    -------
    CaseFiles

    Raises
    ------
    InputError
        Missing path, nothing recognisable, two files claiming one modality.
    """
    explicit = {
        k: v
        for k, v in {"t1": t1, "t1ce": t1ce, "t2": t2, "flair": flair}.items()
        if v is not None and str(v) != ""
    }
    if path is None or str(path) == "":
        if not explicit:
            if seg:
                raise InputError(
                    f"Only a label file was given ({str(seg)!r}); a case needs at least one "
                    "image. Add --t1/--t1ce/--t2/--flair or a case folder."
                )
            raise InputError(
                "No input given: pass a case folder, an MSD image, or at least one of "
                "--t1, --t1ce, --t2, --flair."
            )
        files = {k: _check_path(v, f"{k} file") for k, v in explicit.items()}
        seen: dict[Path, str] = {}
        for k, p in files.items():
            if p.resolve() in seen:
                raise InputError(
                    f"The same file {str(p)!r} was given for both {seen[p.resolve()]} and {k}. "
                    "Give each modality its own file."
                )
            seen[p.resolve()] = k
        name = split_image_name(next(iter(files.values())))[0]
        m = match_modality(name)
        if m and m[2]:
            name = m[2]
        cf = CaseFiles(naming="explicit", files=files, name=name)
    else:
        p = _check_path(path, "Case")
        if p.is_dir():
            try:
                cf = _find_in_folder(p, {k: Path(v) for k, v in explicit.items()})
            except InputError as exc:
                if not explicit or isinstance(exc, AmbiguousSeriesError):
                    raise
                # the explicit files are enough: ignore a folder that holds nothing usable
                log.info("ignoring folder %s (%s); using the explicit files", p, exc)
                cf = CaseFiles(naming="explicit", name=p.name)
        else:
            m = match_modality(p.name)
            if m is None:
                cf = _msd_case(p)
            elif m[1] == "seg":
                raise InputError(
                    f"{str(p)!r} is a label file, not an image. Open its case folder, or pass "
                    "images with --t1/--t1ce/--t2/--flair and this file with --seg."
                )
            else:
                cf = CaseFiles(naming=m[0], files={m[1]: p}, name=m[2] or p.parent.name)
        if explicit:
            if cf.msd_image is not None:
                raise InputError(
                    f"{str(p)!r} is an MSD 4D image holding all modalities; do not combine it "
                    "with --t1/--t1ce/--t2/--flair. Pass either the MSD image or separate files."
                )
            for k, v in explicit.items():
                cf.files[k] = _check_path(v, f"{k} file")
    if seg is not None and str(seg) != "":
        cf.seg = _check_path(seg, "Label file")
    return cf


def parse_modality_args(items: Sequence[str] | None) -> dict[str, str]:
    """Parse ``--modality MOD=FILE`` flags into ``{canonical modality: FILE}``.

    ``MOD`` is any modality name or alias (``t1c``, ``t1gd``, ``T1ce``, ``flair``, ``t2f``...).

    Raises
    ------
    InputError
        A flag without ``=``, an unknown modality, or one modality given twice.
    """
    from napari_ssseg.core.case import normalize_modality

    out: dict[str, str] = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip() or not value.strip():
            raise InputError(
                f"--modality {item!r}: expected MOD=FILE, e.g. --modality t1c=series.nii.gz."
            )
        mod = normalize_modality(key)
        if mod in out:
            raise InputError(f"--modality gives {mod} twice ({out[mod]!r} and {value!r}).")
        out[mod] = value.strip()
    return out
