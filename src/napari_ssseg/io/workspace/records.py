"""Records returned by :class:`~napari_ssseg.io.workspace.Workspace`: a case, a label
version, a training run (frozen dataclasses, built from the manifest; no voxels)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["CaseRecord", "LabelVersion", "TrainingRun", "check_clinical_options"]

#: Choices of the clinical options ``brain_extraction`` and ``register`` (as ``ssseg predict``).
CLINICAL_CHOICES = ("auto", "on", "off")


def check_clinical_options(options: dict | None) -> dict | None:
    """Validate a workspace case's clinical options (a raw study prepared before use).

    Parameters
    ----------
    options : dict or None
        ``{"brain_extraction": "auto"|"on"|"off", "register": "auto"|"on"|"off",
        "resample": float mm or None}`` (missing keys: ``auto``, ``auto``, ``None``);
        ``None``: the case is used as its files are (no clinical preparation).

    Returns
    -------
    dict or None
        The complete, JSON-friendly options.

    Raises
    ------
    InputError
        An unknown key or value; the message lists the accepted ones.
    """
    from napari_ssseg.errors import InputError

    if options is None:
        return None
    unknown = set(options) - {"brain_extraction", "register", "resample"}
    if unknown:
        raise InputError(
            f"Unknown clinical option(s) {sorted(unknown)}; expected brain_extraction, "
            "register and resample."
        )
    out: dict = {
        "brain_extraction": str(options.get("brain_extraction", "auto")),
        "register": str(options.get("register", "auto")),
        "resample": options.get("resample"),
    }
    for key in ("brain_extraction", "register"):
        if out[key] not in CLINICAL_CHOICES:
            raise InputError(
                f"Clinical option {key}={out[key]!r} must be one of {', '.join(CLINICAL_CHOICES)}."
            )
    if out["resample"] is not None:
        try:
            mm = float(out["resample"])
        except (TypeError, ValueError):
            mm = float("nan")
        if not mm > 0:
            raise InputError(
                f"Clinical option resample={out['resample']!r} must be a voxel size in mm > 0 "
                "(e.g. 1) or None (1 mm for a raw study, else the reference grid)."
            )
        out["resample"] = mm
    return out


@dataclass(frozen=True)
class LabelVersion:
    """One saved label version of a case (immutable file).

    Attributes
    ----------
    version : int
        1, 2, ... in save order.
    file : Path
        Absolute path of the label file (internal values, source file grid).
    provenance : Path or None
        Per-voxel provenance file (codes of :mod:`napari_ssseg.core.provenance`), if saved.
    time : str
        ISO 8601 UTC time of the save.
    source : str
        One of :data:`SOURCES`.
    note : str
        Short free text.
    restored_from : int or None
        Version this one is a copy of (for ``source == "restore"``).
    sha256 : str
        Checksum of the label file.
    """

    version: int
    file: Path
    provenance: Path | None
    time: str
    source: str
    note: str = ""
    restored_from: int | None = None
    sha256: str = ""


@dataclass(frozen=True)
class CaseRecord:
    """Lightweight description of a case, built from the manifest only (no voxels).

    Attributes
    ----------
    case_id : str
    status : str
        One of :data:`STATUSES`.
    images : dict of str to Path
        Modality -> image file (absolute). For an MSD case every modality maps to the 4D file.
    msd_image : Path or None
    ground_truth : Path or None
        Reference label file used by evaluation (e.g. the dataset's ``_seg`` file).
    convention : str
        Label convention of the case's source files (used by exports).
    naming : str
        Naming scheme of the source files.
    shape : tuple of 3 int
        Canonical array shape ``(Z, Y, X)``.
    n_versions : int
    latest_version : int or None
    missing : tuple of str
        Referenced image files that do not exist (the case cannot be opened).
    scores : dict of str to float
        Stored scores (e.g. ``entropy``: mean entropy inside the predicted tumour).
    clinical : dict or None
        Clinical options (:func:`check_clinical_options`) when the case is a raw study that
        is prepared (brain extraction, registration, working grid) before use; its label
        versions stay on the reference (FLAIR) series' native grid.
    """

    case_id: str
    status: str
    images: dict[str, Path]
    msd_image: Path | None
    ground_truth: Path | None
    convention: str
    naming: str
    shape: tuple[int, int, int]
    n_versions: int
    latest_version: int | None
    missing: tuple[str, ...] = ()
    scores: dict[str, float] = field(default_factory=dict)
    clinical: dict | None = None

    @property
    def is_missing(self) -> bool:
        """True if an image file of the case is missing."""
        return bool(self.missing)


@dataclass(frozen=True)
class TrainingRun:
    """A training run started with :meth:`Workspace.begin_run`."""

    run_id: str
    run_dir: Path
    snapshot: Path
