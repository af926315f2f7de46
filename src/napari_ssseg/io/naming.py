"""File naming schemes of brain-tumour MRI datasets.

Four dataset layouts are recognised, plus explicit per-modality files:

* ``brats2021`` -- BraTS 2019-2021: ``NAME_t1``, ``NAME_t1ce``, ``NAME_t2``, ``NAME_flair`` and
  an optional ``NAME_seg`` (labels 0, 1 NCR, 2 ED, 4 ET).
* ``brats2023`` -- BraTS 2023 and later: ``NAME-t1n``, ``NAME-t1c``, ``NAME-t2w``, ``NAME-t2f``
  and an optional ``NAME-seg`` (labels 0, 1 NCR, 2 ED, 3 ET).
* ``upenn`` -- UPENN-GBM (TCIA): ``NAME_T1``, ``NAME_T1GD``, ``NAME_T2``, ``NAME_FLAIR`` and an
  optional ``NAME_segm`` (labels 0, 1 NCR, 2 ED, 4 ET, the BraTS 2019-2021 values). ``_T1``,
  ``_T2`` and ``_FLAIR`` are shared with ``brats2021``; a folder is ``upenn`` when one of its
  files carries a UPENN-only suffix (``_T1GD`` or ``_segm``).
* ``msd`` -- Medical Segmentation Decathlon Task01: one 4D image ``NAME.nii.gz`` whose channels
  are FLAIR, T1w, T1gd, T2w, and a label file (``labelsTr/NAME.nii.gz`` beside
  ``imagesTr/NAME.nii.gz``, or ``NAME_label.nii.gz`` / ``NAME_seg.nii.gz`` beside the image;
  labels 0, 1 edema, 2 non-enhancing, 3 enhancing).

This module is pure string handling (no file access) so that it can be used anywhere.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = [
    "IMAGE_SUFFIXES",
    "NAMINGS",
    "MODALITY_SUFFIX",
    "MSD_CHANNELS",
    "NAMING_CONVENTION",
    "split_image_name",
    "is_image_file",
    "match_modality",
    "modality_filename",
]

#: File extensions read and written by the io layer (longest first, lower case).
IMAGE_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")

#: Naming schemes :func:`napari_ssseg.io.write_case` can write.
NAMINGS: tuple[str, ...] = ("brats2021", "brats2023", "upenn", "msd")

#: Per-scheme file suffix of each modality and of the label file.
MODALITY_SUFFIX: dict[str, dict[str, str]] = {
    "brats2021": {"t1": "_t1", "t1ce": "_t1ce", "t2": "_t2", "flair": "_flair", "seg": "_seg"},
    "brats2023": {"t1": "-t1n", "t1ce": "-t1c", "t2": "-t2w", "flair": "-t2f", "seg": "-seg"},
    "upenn": {"t1": "_T1", "t1ce": "_T1GD", "t2": "_T2", "flair": "_FLAIR", "seg": "_segm"},
}

#: Channel order of an MSD Task01 4D image (FLAIR, T1w, T1gd, T2w) as internal modality names.
MSD_CHANNELS: tuple[str, ...] = ("flair", "t1", "t1ce", "t2")

#: Label convention implied by each naming scheme (``explicit`` implies none).
NAMING_CONVENTION: dict[str, str | None] = {
    "brats2021": "brats2021",
    "brats2023": "brats2023",
    "upenn": "brats2021",
    "msd": "msd",
    "explicit": None,
}

_PATTERNS: dict[str, re.Pattern[str]] = {
    "upenn": re.compile(r"^(?P<name>.*?)_(?P<key>t1gd|segm)$", re.IGNORECASE),
    "brats2021": re.compile(r"^(?P<name>.*?)_(?P<key>t1|t1ce|t2|flair|seg)$", re.IGNORECASE),
    "brats2023": re.compile(r"^(?P<name>.*?)-(?P<key>t1n|t1c|t2w|t2f|seg)$", re.IGNORECASE),
}
_BARE = re.compile(r"^(?P<key>t1|t1ce|t2|flair|seg)$", re.IGNORECASE)
_KEY_2023 = {"t1n": "t1", "t1c": "t1ce", "t2w": "t2", "t2f": "flair", "seg": "seg"}
_KEY_UPENN = {"t1gd": "t1ce", "segm": "seg"}


def split_image_name(path: str | Path) -> tuple[str, str]:
    """Split a file name into ``(stem, suffix)`` with multi-part suffixes such as ``.nii.gz``.

    A name with no known image suffix (e.g. a DICOM series folder) has suffix ``""``.

    Examples
    --------
    >>> split_image_name("BraTS2021_00000_t1ce.nii.gz")
    ('BraTS2021_00000_t1ce', '.nii.gz')
    """
    name = Path(path).name
    lower = name.lower()
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], name[-len(suffix) :]
    return name, ""


def is_image_file(path: str | Path) -> bool:
    """True if ``path`` has one of :data:`IMAGE_SUFFIXES` (the file need not exist)."""
    return split_image_name(path)[1] != ""


def match_modality(path: str | Path) -> tuple[str, str, str] | None:
    """Recognise a BraTS or UPENN-GBM file name.

    Parameters
    ----------
    path : path-like
        File (or DICOM series folder) name.

    Returns
    -------
    (naming, key, case_name) or None
        ``naming`` is ``"brats2021"``, ``"brats2023"`` or ``"upenn"`` (only for the UPENN-only
        suffixes ``_T1GD`` and ``_segm``: ``_T1``, ``_T2``, ``_FLAIR`` are reported as
        ``"brats2021"`` and the folder decides), ``key`` an internal modality name
        (``"t1"``, ``"t1ce"``, ``"t2"``, ``"flair"``) or ``"seg"``, ``case_name`` the part of
        the name before the modality suffix (may be ``""`` for bare names such as
        ``flair.nii.gz``). ``None`` if the name follows neither scheme.

    Examples
    --------
    >>> match_modality("BraTS-GLI-00000-000-t2f.nii.gz")
    ('brats2023', 'flair', 'BraTS-GLI-00000-000')
    >>> match_modality("UPENN-GBM-00002_11_T1GD.nii.gz")
    ('upenn', 't1ce', 'UPENN-GBM-00002_11')
    """
    stem, _ = split_image_name(path)
    m = _PATTERNS["upenn"].match(stem)
    if m:
        return "upenn", _KEY_UPENN[m.group("key").lower()], m.group("name")
    m = _PATTERNS["brats2021"].match(stem)
    if m:
        return "brats2021", m.group("key").lower(), m.group("name")
    m = _PATTERNS["brats2023"].match(stem)
    if m:
        return "brats2023", _KEY_2023[m.group("key").lower()], m.group("name")
    m = _BARE.match(stem)
    if m:
        return "brats2021", m.group("key").lower(), ""
    return None


def modality_filename(name: str, key: str, naming: str, suffix: str = ".nii.gz") -> str:
    """File name of modality (or ``"seg"``) ``key`` of case ``name`` in a BraTS ``naming``.

    Examples
    --------
    >>> modality_filename("BraTS-GLI-00001-000", "t1ce", "brats2023")
    'BraTS-GLI-00001-000-t1c.nii.gz'
    """
    return f"{name}{MODALITY_SUFFIX[naming][key]}{suffix}"
