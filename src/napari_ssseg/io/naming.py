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
    "SKIP_KEYWORDS",
    "series_tokens",
    "match_series",
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
    "pacs": None,
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


# ------------------------------------------------------------------ PACS / TCIA series names
#: Name tokens of series that are never one of the four modalities (skipped, with a warning).
SKIP_KEYWORDS: frozenset[str] = frozenset(
    "LOCALIZER LOCALISER LOC SCOUT SURVEY 3PLANE TRIPLANE DWI ADC TRACE DTI DIFFUSION EXP "
    "PERFUSION PERF DSC DCE SWI SWAN ASL MRA TOF ANGIO CBF CBV MIP".split()
)
_FLAIR_TOKENS = frozenset("FLAIR T2FLAIR FLAIR3D 3DFLAIR T2F DARKFLUID".split())
_T2_TOKENS = frozenset("T2 T2W T2WI T2TSE T2FSE T2SE".split())
_T1_TOKENS = frozenset(
    "T1 T1W T1WI T1N T1SE T1TSE T1FSE T1FFE T1TFE MPRAGE SPGR FSPGR BRAVO".split()
)
_T1C_TOKENS = frozenset("T1C T1CE T1GD T1POST T1+C T1+GD T1PC T1CONTRAST T1KM".split())
_CONTRAST_TOKENS = frozenset(
    "POST GAD GD GADO GADOLINIUM CONTRAST CE +C C+ +GD GD+ POSTGAD POSTCONTRAST ENH ENHANCED "
    "KM".split()
)
_PRE_TOKENS = frozenset("PRE PRECONTRAST PREGAD NATIVE WO".split())
_POST_TOKENS = frozenset("POST POSTGAD POSTCONTRAST".split())
_TOKEN_SPLIT = re.compile(r"[^A-Za-z0-9+]+")
_T2STAR = re.compile(r"T2(\*|STAR|_STAR|-STAR)", re.IGNORECASE)


def series_tokens(path: str | Path) -> list[str]:
    """Upper-case words of a series file name (split on anything but letters, digits, ``+``).

    Examples
    --------
    >>> series_tokens("MRHR_T1_AX_POST_GAD_SE_13.nii.gz")
    ['MRHR', 'T1', 'AX', 'POST', 'GAD', 'SE', '13']
    """
    stem, _ = split_image_name(path)
    return [t.upper() for t in _TOKEN_SPLIT.split(stem) if t]


def match_series(path: str | Path) -> tuple[dict[str, str], str | None]:
    """Recognise the sequence of a PACS / TCIA series from the keywords in its file name.

    Keywords (whole words of the name, any case): FLAIR (also T2FLAIR, T2F) -> ``flair``;
    T2 (T2W, T2WI) -> ``t2``; T1 (T1W, T1N, MPRAGE, SPGR, BRAVO...) -> ``t1``, or ``t1ce``
    when the name also says POST, GAD, GD, CONTRAST, CE, +C (or is T1C, T1CE, T1GD, T1POST)
    and not PRE. FLAIR wins over T2 (a "T2 FLAIR" is a FLAIR).

    Parameters
    ----------
    path : path-like
        Series file (or folder) name.

    Returns
    -------
    candidates : dict of str to str
        Modality -> the keywords that point to it. Empty if the name names no sequence; more
        than one entry if the name is ambiguous (e.g. ``T1_FLAIR``, ``T1_PRE_POST``).
    skipped : str or None
        The keyword (e.g. ``LOCALIZER``, ``DWI``) of a series that is none of the four
        modalities, or None.

    Examples
    --------
    >>> match_series("MRHR_T1_AX_POST_GAD_SE_13_se2d1r_t1c.nii.gz")
    ({'t1ce': 'T1 POST GAD T1C'}, None)
    >>> match_series("AX_DWI_b1000.nii.gz")
    ({}, 'DWI')
    """
    tokens = series_tokens(path)
    tset = set(tokens)
    skip = [t for t in tokens if t in SKIP_KEYWORDS]
    if skip:
        return {}, skip[0]
    if _T2STAR.search(split_image_name(path)[0]):
        return {}, "T2*"
    out: dict[str, str] = {}

    def words(*groups: frozenset[str]) -> str:
        return " ".join(dict.fromkeys(t for t in tokens if any(t in g for g in groups)))

    flair = tset & _FLAIR_TOKENS
    if flair:
        out["flair"] = words(_FLAIR_TOKENS)
    elif tset & _T2_TOKENS:
        out["t2"] = words(_T2_TOKENS)
    direct_c = tset & _T1C_TOKENS
    t1 = tset & _T1_TOKENS
    contrast = tset & _CONTRAST_TOKENS
    pre = tset & _PRE_TOKENS
    if direct_c or t1:
        if direct_c or (contrast and (not pre or tset & _POST_TOKENS)):
            out["t1ce"] = words(_T1_TOKENS, _T1C_TOKENS, _CONTRAST_TOKENS)
        if (t1 and not contrast and not direct_c) or pre:
            out["t1"] = words(_T1_TOKENS, _PRE_TOKENS)
    return out, None
