"""Records returned by :class:`~napari_ssseg.io.workspace.Workspace`: a case, a label
version, a training run (frozen dataclasses, built from the manifest; no voxels)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["CaseRecord", "LabelVersion", "TrainingRun"]


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
