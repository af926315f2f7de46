"""Annotation workspace on disk: cases, versioned labels, scribbles, provenance, models.

A workspace is a folder::

    WS/
      workspace.json           human-readable manifest (``schema_version``), the only index
      workspace.json.bak       the manifest as it was before the last change
      workspace.lock           present while a process has the workspace open for writing
      images/<case>/...        copied images (only with ``copy_images=True``)
      cases/<case>/labels/v0001.nii.gz       label versions (immutable, never rewritten)
      cases/<case>/provenance/v0001.nii.gz   per-voxel provenance of each version
      cases/<case>/scribbles/s0001.nii.gz    scribble saves
      cases/<case>/uncertainty_<kind>.nii.gz latest uncertainty map of a proposal
      snapshots/<name>/                      frozen copies of labels for training runs
      runs/<run>/                            training runs (snapshot + checkpoint)

Never losing work
-----------------
Every file is written through :func:`napari_ssseg.io.atomic.atomic_path` (temporary file +
rename), and a label version file is written *before* the manifest that lists it, so a crash
at any moment leaves a manifest that only lists complete files. Each manifest write first
saves the previous manifest as ``workspace.json.bak``; a corrupt manifest is detected on
:meth:`Workspace.open` and restored from it. A lock file (pid, host, time) stops a second
process from writing; a lock whose process is dead on this host is taken over with a warning.

Label version files hold the internal values (0 bg, 1 NCR, 2 ED, 3 ET; i.e. the BraTS 2023
convention) on the case's **source file grid** (array order, spacing, origin, direction), so
they open in any viewer on top of the source images. Exports convert to the case's
convention (:mod:`napari_ssseg.io.workspace_export`).

The manifest never loads images: :attr:`Workspace.cases` is built from the JSON alone (plus
an existence check of each referenced image file).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from napari_ssseg.core.case import MODALITIES, Case, Geometry, Orientation, get_convention
from napari_ssseg.errors import InputError, check_choice
from napari_ssseg.io.atomic import atomic_path, atomic_write_text

__all__ = [
    "SCHEMA_VERSION",
    "MANIFEST_NAME",
    "LOCK_NAME",
    "STATUSES",
    "SOURCES",
    "CaseRecord",
    "LabelVersion",
    "TrainingRun",
    "Workspace",
    "WorkspaceLockedError",
    "Autosaver",
    "read_snapshot",
    "RUN_STATES",
    "read_run",
    "record_run_in",
    "add_run_command",
]

log = logging.getLogger(__name__)

#: Manifest schema version written by this package; newer manifests are refused.
SCHEMA_VERSION = 1
MANIFEST_NAME = "workspace.json"
BACKUP_NAME = "workspace.json.bak"
LOCK_NAME = "workspace.lock"
SNAPSHOT_MANIFEST = "snapshot.json"

#: Case statuses, in workflow order.
STATUSES: tuple[str, ...] = ("new", "proposed", "refined", "corrected", "verified")
#: Where a label version came from (``restore`` is set by :meth:`Workspace.restore`).
SOURCES: tuple[str, ...] = ("model", "superpixel", "scribble", "human", "import", "restore")
#: Status a save from each source moves a case to (never backwards).
_STATUS_OF_SOURCE = {
    "model": "proposed",
    "superpixel": "refined",
    "scribble": "refined",
    "human": "corrected",
    "import": "corrected",
}
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_LABEL_CONVENTION = "brats2023"  # version files: internal values 0, 1 NCR, 2 ED, 3 ET


class WorkspaceLockedError(InputError):
    """Another live process holds the workspace lock."""


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------- records
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


# ----------------------------------------------------------------------------- paths
def _check_id(case_id: str, what: str = "case id") -> str:
    if not isinstance(case_id, str) or not _ID_RE.match(case_id) or ".." in case_id:
        raise InputError(
            f"{what} {case_id!r} is not valid: use letters, digits, '.', '_' and '-' (at most "
            "128 characters, starting with a letter or digit); it becomes a folder name."
        )
    return case_id


def _safe_case_id(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-") or "case"
    if not base[0].isalnum():
        base = "c" + base
    base = base[:120]
    cid, k = base, 2
    while cid in taken:
        cid, k = f"{base}-{k}", k + 1
    return cid


def _check_relative(rel: str, manifest: Path, what: str) -> PurePosixPath:
    """A manifest path that must stay inside the workspace folder."""
    p = PurePosixPath(str(rel).replace("\\", "/"))
    if not str(rel) or p.is_absolute() or ".." in p.parts or re.match(r"^[A-Za-z]:", str(rel)):
        raise InputError(
            f"Manifest {str(manifest)!r} refers to {what} {rel!r}, which points outside the "
            "workspace folder (absolute path or '..'). Workspace files must stay inside the "
            "workspace; the manifest was edited by hand or is not trustworthy. Fix the entry or "
            "restore workspace.json.bak."
        )
    return p


class _Manifest:
    """Validation of a manifest dictionary (structure and paths, no file access)."""

    @staticmethod
    def validate(m: Any, path: Path) -> dict:
        if not isinstance(m, dict):
            raise ValueError("top level is not a JSON object")
        sv = m.get("schema_version")
        if not isinstance(sv, int) or isinstance(sv, bool):
            raise ValueError("schema_version missing or not an integer")
        if sv > SCHEMA_VERSION:
            raise _NewerSchema(sv)
        cases = m.get("cases")
        if not isinstance(cases, list):
            raise ValueError("'cases' missing or not a list")
        for key in ("models", "runs", "snapshots"):
            m.setdefault(key, [])
            if not isinstance(m[key], list):
                raise ValueError(f"{key!r} is not a list")
        seen = set()
        for c in cases:
            if not isinstance(c, dict) or "id" not in c:
                raise ValueError("a case entry is not an object with an 'id'")
            cid = _check_id(c["id"], f"Case id in {str(path)!r}")
            if cid in seen:
                raise ValueError(f"case id {cid!r} appears twice")
            seen.add(cid)
            if c.get("status") not in STATUSES:
                raise ValueError(f"case {cid!r} has unknown status {c.get('status')!r}")
            if not isinstance(c.get("images"), dict) or not c["images"]:
                raise ValueError(f"case {cid!r} has no images")
            refs = list(c["images"].values())
            refs += [c[k] for k in ("msd_image", "ground_truth") if c.get(k)]
            for ref in refs:
                if not PurePosixPath(str(ref).replace("\\", "/")).is_absolute():
                    _check_relative(ref, path, f"an image of case {cid!r}")
            g = c.get("geometry")
            if not isinstance(g, dict) or len(g.get("file_shape", ())) != 3:
                raise ValueError(f"case {cid!r} has no valid geometry")
            for v in c.setdefault("versions", []):
                _check_relative(v["file"], path, f"a label version of case {cid!r}")
                if v.get("provenance"):
                    _check_relative(v["provenance"], path, f"a provenance file of case {cid!r}")
            for s in c.setdefault("scribbles", []):
                _check_relative(s["file"], path, f"a scribble file of case {cid!r}")
            for u in (c.setdefault("uncertainty", {}) or {}).values():
                _check_relative(u["file"], path, f"an uncertainty file of case {cid!r}")
            c.setdefault("scores", {})
        return m


class _NewerSchema(Exception):
    def __init__(self, version: int) -> None:
        super().__init__(version)
        self.version = version


# ----------------------------------------------------------------------------- lock
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


_OPEN_IN_PROCESS: set[str] = set()
_OPEN_GUARD = threading.Lock()


def _acquire_lock(root: Path) -> Path:
    lock = root / LOCK_NAME
    key = str(root.resolve())
    me = {"pid": os.getpid(), "host": socket.gethostname(), "time": _now()}
    with _OPEN_GUARD:
        if key in _OPEN_IN_PROCESS:
            raise WorkspaceLockedError(
                f"Workspace {str(root)!r} is already open for writing in this program. Use "
                "the open Workspace object, or close it first."
            )
        for _attempt in range(5):
            tmp = root / f".{LOCK_NAME}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
            atomic_write_text(tmp, json.dumps(me))
            try:
                os.link(tmp, lock)  # atomic create-if-absent, with the content in place
            except FileNotFoundError:  # our temp file was cleaned by the lock holder: retry
                continue
            except FileExistsError:
                holder = _read_lock(lock)
                if holder is None:
                    # vanished between link and read, or unreadable: retry, then refuse
                    if lock.exists() and _attempt >= 2:
                        raise WorkspaceLockedError(
                            f"Workspace {str(root)!r} has an unreadable lock file "
                            f"{str(lock)!r}. If no other program uses the workspace, delete "
                            "that file and open it again."
                        ) from None
                    continue
                if _is_stale(holder):
                    warnings.warn(
                        f"Workspace {str(root)!r}: taking over a stale lock of process "
                        f"{holder.get('pid')} on {holder.get('host')} (since "
                        f"{holder.get('time')}), which is no longer running. The previous "
                        "session ended without closing the workspace; its saved versions are "
                        "kept.",
                        UserWarning,
                        stacklevel=4,
                    )
                    with contextlib.suppress(FileNotFoundError):
                        lock.unlink()
                    continue
                raise WorkspaceLockedError(
                    f"Workspace {str(root)!r} is in use by process {holder.get('pid')} on host "
                    f"{holder.get('host')!r} (since {holder.get('time')}). Only one program may "
                    "write a workspace at a time: close the other program, or open this one "
                    "read-only (Workspace.open(path, readonly=True), CLI: status works "
                    f"read-only). If that process is gone, delete {str(lock)!r}."
                ) from None
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
            _OPEN_IN_PROCESS.add(key)
            return lock
    raise WorkspaceLockedError(
        f"Could not take the lock of workspace {str(root)!r} ({str(lock)!r} keeps changing). "
        "Another program is opening it; try again."
    )


def _read_lock(lock: Path) -> dict | None:
    try:
        data = json.loads(lock.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _is_stale(holder: dict) -> bool:
    if holder.get("host") != socket.gethostname():
        return False
    try:
        pid = int(holder.get("pid"))
    except (TypeError, ValueError):
        return False
    if pid == os.getpid():
        return True  # our own pid but not in _OPEN_IN_PROCESS: left over, e.g. after a fork
    return not _pid_alive(pid)


def _release_lock(root: Path) -> None:
    lock = root / LOCK_NAME
    holder = _read_lock(lock)
    if holder is not None and holder.get("pid") == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
    with _OPEN_GUARD:
        _OPEN_IN_PROCESS.discard(str(root.resolve()))


# ----------------------------------------------------------------------------- volumes
def _geometry_dict(geometry: Geometry, file_shape: Sequence[int]) -> dict:
    return {
        "spacing": [float(s) for s in geometry.spacing],
        "origin": [float(o) for o in geometry.origin],
        "direction": [float(d) for d in geometry.direction],
        "file_shape": [int(s) for s in file_shape],
    }


def _geometry_of(g: dict) -> tuple[Geometry, Orientation, tuple[int, int, int], tuple]:
    geometry = Geometry(tuple(g["spacing"]), tuple(g["origin"]), tuple(g["direction"]))
    orientation = Orientation.from_geometry(geometry)
    file_shape = tuple(int(s) for s in g["file_shape"])
    canon = tuple(file_shape[a] for a in orientation.axes)
    return geometry, orientation, canon, file_shape  # type: ignore[return-value]


def _header_geometry(path: Path) -> tuple[Geometry, tuple[int, int, int]]:
    """Geometry and file-order (Z, Y, X) shape of an image from its header only."""
    from napari_ssseg.io.readers import geometry_of, read_header, read_sitk

    if path.is_dir():  # DICOM series: read it (rare in workspaces)
        image = read_sitk(path)
        size = image.GetSize()
        return geometry_of(image), (int(size[2]), int(size[1]), int(size[0]))
    reader = read_header(path)
    size = reader.GetSize()
    return geometry_of(reader), (int(size[2]), int(size[1]), int(size[0]))


def _write_volume(array: np.ndarray, geometry: Geometry, path: Path) -> None:
    """Write a file-order (Z, Y, X) array with ``geometry`` atomically (compressed NIfTI)."""
    from napari_ssseg.io.writers import to_sitk, write_sitk

    path.parent.mkdir(parents=True, exist_ok=True)
    write_sitk(to_sitk(array, geometry), path)


def _read_volume(path: Path, what: str) -> tuple[np.ndarray, Geometry]:
    import SimpleITK as sitk

    from napari_ssseg.io.readers import geometry_of, read_sitk

    image = read_sitk(path, what)
    return sitk.GetArrayFromImage(image), geometry_of(image)


def _copy_file(src: Path, dst: Path, link: bool = False) -> None:
    """Copy (or hard-link) an immutable file to ``dst`` atomically."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if link:
        try:
            with atomic_path(dst) as tmp:
                tmp.unlink()
                os.link(src, tmp)
            return
        except (InputError, OSError):
            pass
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


# ----------------------------------------------------------------------------- workspace
class Workspace:
    """An annotation workspace folder (see the module docstring for the layout).

    Use :meth:`create` or :meth:`open`; close with :meth:`close` or a ``with`` block.

    Examples
    --------
    >>> with Workspace.create("ws", from_dir="brats_cases") as ws:  # doctest: +SKIP
    ...     case = ws.load_case(ws.cases[0].case_id)
    ...     v = ws.save_labels(case.name, labels, source="human", note="fixed ET rim")
    """

    def __init__(self, root: Path, manifest: dict, text: str, readonly: bool) -> None:
        self.root = root
        self.readonly = readonly
        self._m = manifest
        self._text = text
        self._closed = False
        self._lock = threading.RLock()
        self._index = {c["id"]: i for i, c in enumerate(manifest["cases"])}
        self._missing_cache: dict[str, tuple[str, ...]] = {}

    # -- construction
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        *,
        from_dir: str | os.PathLike | None = None,
        copy_images: bool = False,
        progress: Callable[[float, str], None] | None = None,
    ) -> Workspace:
        """Create a new workspace folder, optionally adding every case found in ``from_dir``.

        Parameters
        ----------
        path : path-like
            Workspace folder; created if needed. Must not already hold a workspace.
        from_dir : path-like, optional
            Folder of case folders (BraTS 2021/2023 naming, MSD case files) or an nnU-Net /
            MSD dataset (with ``dataset.json``; see
            :func:`napari_ssseg.io.workspace_export.import_dataset`). Unrecognised
            sub-folders are skipped with a warning.
        copy_images : bool
            Copy the images into ``path/images`` (default: reference them in place).
        progress : callable, optional
            ``progress(fraction, message)``.

        Returns
        -------
        Workspace
            Open for writing (holds the lock).

        Raises
        ------
        InputError
            ``path`` already a workspace, not writable, or ``from_dir`` holds no case.
        """
        from napari_ssseg.io.atomic import check_writable_dir

        root = Path(path).expanduser().absolute()
        if (root / MANIFEST_NAME).exists():
            raise InputError(
                f"{str(root)!r} already holds a workspace ({MANIFEST_NAME}). Open it "
                "(`ssseg workspace status WS`), or choose a new folder."
            )
        if from_dir is not None and (Path(from_dir) / "dataset.json").is_file():
            from napari_ssseg.io.workspace_export import import_dataset

            return import_dataset(from_dir, root, copy_images=copy_images, progress=progress)
        if from_dir is not None:
            src = Path(from_dir).expanduser()
            if not src.is_dir():
                raise InputError(
                    f"--from {str(src)!r} is not a folder. Give a folder holding case folders "
                    "(BraTS or MSD naming) or an nnU-Net/MSD dataset."
                )
        check_writable_dir(root)
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "format": "napari-ssseg workspace",
            "created": _now(),
            "modified": _now(),
            "cases": [],
            "models": [],
            "runs": [],
            "snapshots": [],
        }
        lock = _acquire_lock(root)
        try:
            ws = cls(root, manifest, "", readonly=False)
            if from_dir is not None:
                ws._add_from_dir(Path(from_dir).expanduser(), copy_images, progress)
            else:
                ws._commit(manifest)
        except BaseException:
            _release_lock(root)
            raise
        del lock
        return ws

    @classmethod
    def open(cls, path: str | os.PathLike, *, readonly: bool = False) -> Workspace:
        """Open an existing workspace.

        Parameters
        ----------
        path : path-like
            Workspace folder (or its ``workspace.json``).
        readonly : bool
            Do not take the lock and refuse every write (for viewing while another program
            annotates, or for read-only media).

        Raises
        ------
        InputError
            Not a workspace, manifest from a newer schema, corrupt manifest without a usable
            backup, unsafe paths in the manifest, folder not writable (use ``readonly``).
        WorkspaceLockedError
            Another live process has it open for writing.
        """
        root = Path(path).expanduser().absolute()
        if root.name == MANIFEST_NAME and root.is_file():
            root = root.parent
        mpath = root / MANIFEST_NAME
        if not mpath.exists() and not (root / BACKUP_NAME).exists():
            raise InputError(
                f"{str(root)!r} is not a workspace: it has no {MANIFEST_NAME}. Create one with "
                "`ssseg workspace init WS --from DIR` (Workspace.create)."
            )
        if not readonly and not os.access(root, os.W_OK):
            raise InputError(
                f"Workspace folder {str(root)!r} is not writable, so labels cannot be saved. "
                "Fix the folder's permissions, copy the workspace to a writable place, or open "
                "it read-only (readonly=True)."
            )
        if not readonly:
            _acquire_lock(root)
        try:
            manifest, text, restored = cls._load_manifest(root, write_back=not readonly)
            ws = cls(root, manifest, text, readonly)
            if not readonly:
                ws._cleanup_temp_files()
                with contextlib.suppress(InputError, OSError):
                    ws.reconcile_runs()
        except BaseException:
            if not readonly:
                _release_lock(root)
            raise
        if restored:
            log.warning("workspace manifest restored from %s", BACKUP_NAME)
        return ws

    @staticmethod
    def _parse(path: Path) -> tuple[dict, str]:
        text = path.read_text(encoding="utf-8")
        try:
            m = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"not valid JSON ({exc})") from None
        return _Manifest.validate(m, path), text

    @classmethod
    def _load_manifest(cls, root: Path, write_back: bool) -> tuple[dict, str, bool]:
        mpath, bpath = root / MANIFEST_NAME, root / BACKUP_NAME
        try:
            m, text = cls._parse(mpath)
            return m, text, False
        except _NewerSchema as exc:
            raise InputError(
                f"Workspace manifest {str(mpath)!r} has schema version {exc.version}, newer than "
                f"this napari-ssseg understands (up to {SCHEMA_VERSION}). It was written by a "
                "newer version: upgrade napari-ssseg (pip install -U napari-ssseg). The file was "
                "not changed."
            ) from None
        except InputError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            problem = str(exc) or type(exc).__name__
        try:
            m, text = cls._parse(bpath)
        except _NewerSchema as exc:
            raise InputError(
                f"Workspace manifest {str(mpath)!r} is corrupt ({problem}) and its backup has a "
                f"newer schema version {exc.version}; upgrade napari-ssseg."
            ) from None
        except (OSError, ValueError, KeyError, TypeError) as exc2:
            raise InputError(
                f"Workspace manifest {str(mpath)!r} is corrupt ({problem}) and its backup "
                f"{str(bpath)!r} cannot be used either ({exc2}). The label files under "
                f"{str(root / 'cases')!r} are intact; restore workspace.json from a backup copy."
            ) from None
        warnings.warn(
            f"Workspace manifest {str(mpath)!r} is corrupt ({problem}); restored the previous "
            f"version from {str(bpath)!r}. The last change before the corruption may be "
            "missing from the history (its label file, if any, is still on disk).",
            UserWarning,
            stacklevel=3,
        )
        if write_back:
            if mpath.exists():
                bad = root / f"{MANIFEST_NAME}.corrupt-{int(time.time())}"
                with contextlib.suppress(OSError):
                    os.replace(mpath, bad)
            atomic_write_text(mpath, text)
        return m, text, True

    def _cleanup_temp_files(self) -> None:
        """Remove temporary files left by a killed writer (we hold the lock)."""
        patterns = [f".{MANIFEST_NAME}.*", f".{BACKUP_NAME}.*", f".{LOCK_NAME}.*"]
        for pat in patterns:
            for p in self.root.glob(pat):
                with contextlib.suppress(OSError):
                    p.unlink()
        cases_dir = self.root / "cases"
        if cases_dir.is_dir():
            for p in cases_dir.glob("*/*/.*.tmp*"):
                with contextlib.suppress(OSError):
                    p.unlink()

    # -- context manager
    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the lock. The workspace object cannot write afterwards."""
        if self._closed:
            return
        self._closed = True
        if not self.readonly:
            _release_lock(self.root)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called (the object cannot write any more)."""
        return self._closed

    def __repr__(self) -> str:
        mode = "readonly" if self.readonly else "writable"
        return f"Workspace({str(self.root)!r}, {len(self._m['cases'])} cases, {mode})"

    # -- manifest helpers
    @property
    def manifest_path(self) -> Path:
        """Path of ``workspace.json``."""
        return self.root / MANIFEST_NAME

    @property
    def manifest(self) -> dict:
        """A deep copy of the manifest (JSON-able)."""
        return copy.deepcopy(self._m)

    def _check_writable(self) -> None:
        if self._closed:
            raise InputError(f"Workspace {str(self.root)!r} is closed; open it again to write.")
        if self.readonly:
            raise InputError(
                f"Workspace {str(self.root)!r} was opened read-only; open it with "
                "readonly=False to save."
            )

    def _commit(self, manifest: dict) -> None:
        """Write ``manifest`` (backup of the previous one first) and make it current."""
        manifest["modified"] = _now()
        text = json.dumps(manifest, indent=1, ensure_ascii=False) + "\n"
        if self._text:
            atomic_write_text(self.root / BACKUP_NAME, self._text)
        atomic_write_text(self.root / MANIFEST_NAME, text)
        self._m = manifest
        self._text = text
        self._index = {c["id"]: i for i, c in enumerate(manifest["cases"])}

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[dict]:
        """Yield a copy of the manifest to modify; commit it on success, discard on error."""
        self._check_writable()
        with self._lock:
            m = copy.deepcopy(self._m)
            yield m
            self._commit(m)

    def _entry(self, case_id: str, m: dict | None = None) -> dict:
        m = self._m if m is None else m
        idx = self._index.get(case_id) if m is self._m else None
        if idx is None:
            for c in m["cases"]:
                if c["id"] == case_id:
                    return c
            ids = [c["id"] for c in m["cases"]]
            import difflib

            close = difflib.get_close_matches(str(case_id), ids, n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise InputError(
                f"Workspace {str(self.root)!r} has no case {case_id!r} ({len(ids)} cases).{hint}"
            )
        return m["cases"][idx]

    def _abs(self, ref: str | None) -> Path | None:
        if not ref:
            return None
        p = Path(ref)
        return p if p.is_absolute() else self.root / PurePosixPath(ref)

    def _ref(self, path: Path) -> str:
        """Manifest reference: relative (posix) inside the workspace, else absolute."""
        path = Path(path).absolute()
        try:
            return path.relative_to(self.root.absolute()).as_posix()
        except ValueError:
            return str(path)

    # -- cases
    @property
    def case_ids(self) -> list[str]:
        """Case ids in manifest order."""
        return [c["id"] for c in self._m["cases"]]

    @property
    def cases(self) -> list[CaseRecord]:
        """All cases as :class:`CaseRecord` (from the manifest; images are not read)."""
        return [self._record(c) for c in self._m["cases"]]

    def case(self, case_id: str) -> CaseRecord:
        """The :class:`CaseRecord` of one case."""
        return self._record(self._entry(case_id))

    def _record(self, c: dict) -> CaseRecord:
        images = {m: self._abs(p) for m, p in c["images"].items()}
        files = set(images.values())
        if c.get("msd_image"):
            files.add(self._abs(c["msd_image"]))
        missing = tuple(sorted(str(p) for p in files if not os.path.exists(p)))
        _, _, canon, _ = _geometry_of(c["geometry"])
        versions = c.get("versions", [])
        return CaseRecord(
            case_id=c["id"],
            status=c["status"],
            images=images,  # type: ignore[arg-type]
            msd_image=self._abs(c.get("msd_image")),
            ground_truth=self._abs(c.get("ground_truth")),
            convention=c.get("convention", "brats2021"),
            naming=c.get("naming", "explicit"),
            shape=canon,
            n_versions=len(versions),
            latest_version=versions[-1]["version"] if versions else None,
            missing=missing,
            scores=dict(c.get("scores", {})),
        )

    def add_case(
        self,
        path: str | os.PathLike | None = None,
        *,
        case_id: str | None = None,
        copy_images: bool = False,
        ground_truth: str | os.PathLike | None = None,
        **files: str | os.PathLike,
    ) -> CaseRecord:
        """Add one case (a case folder / MSD file, or explicit ``t1=..., flair=...`` files).

        The case's label file, if any, becomes its ``ground_truth`` (used by evaluation);
        to start annotation from it, :meth:`save_labels` it with ``source="import"``.

        Returns
        -------
        CaseRecord
        """
        with self._transaction() as m:
            entry = self._make_entry(
                path, m, case_id=case_id, copy_images=copy_images, gt=ground_truth, files=files
            )
            m["cases"].append(entry)
        return self.case(entry["id"])

    def _make_entry(
        self,
        path: Path | str | os.PathLike | None,
        m: dict,
        *,
        case_id: str | None,
        copy_images: bool,
        gt: str | os.PathLike | None = None,
        files: dict | None = None,
    ) -> dict:
        from napari_ssseg.io.naming import NAMING_CONVENTION
        from napari_ssseg.io.readers import find_case_files

        cf = find_case_files(path, seg=gt, **(files or {}))
        taken = {c["id"] for c in m["cases"]}
        if case_id is not None:
            cid = _check_id(case_id)
            if cid in taken:
                raise InputError(
                    f"Workspace {str(self.root)!r} already has a case {cid!r}; choose another id."
                )
        else:
            cid = _safe_case_id(cf.name, taken)
        ref_mod = "flair" if "flair" in cf.files else cf.modalities[0]
        geometry, file_shape = _header_geometry(cf.files[ref_mod])
        src_files = dict(cf.files)
        seg = cf.seg
        if copy_images:
            dest = self.root / "images" / cid
            copied: dict[Path, Path] = {}
            for p in set(src_files.values()) | ({seg} if seg else set()):
                if p.is_dir():
                    raise InputError(
                        f"Cannot copy the DICOM folder {str(p)!r} into the workspace; convert "
                        "it to NIfTI first or reference it in place (no --copy)."
                    )
                copied[p] = dest / p.name
                _copy_file(p, copied[p])
            src_files = {k: copied[v] for k, v in src_files.items()}
            seg = copied[seg] if seg else None
        msd = src_files.get("flair") if cf.msd_image is not None else None
        conv = NAMING_CONVENTION.get(cf.naming) or "brats2021"
        return {
            "id": cid,
            "status": "new",
            "naming": cf.naming,
            "convention": conv,
            "images": {k: self._ref(Path(v)) for k, v in src_files.items()},
            "msd_image": self._ref(msd) if msd is not None else None,
            "ground_truth": self._ref(seg) if seg is not None else None,
            "geometry": _geometry_dict(geometry, file_shape),
            "added": _now(),
            "versions": [],
            "scribbles": [],
            "uncertainty": {},
            "scores": {},
            "status_history": [],
        }

    def _add_from_dir(
        self, src: Path, copy_images: bool, progress: Callable[[float, str], None] | None
    ) -> None:
        from napari_ssseg.io.naming import is_image_file

        children = sorted(
            p
            for p in src.iterdir()
            if not p.name.startswith(".") and (p.is_dir() or is_image_file(p))
        )
        m = copy.deepcopy(self._m)
        skipped = []
        for i, child in enumerate(children):
            if progress is not None:
                progress(i / max(len(children), 1), f"adding {child.name}")
            try:
                m["cases"].append(self._make_entry(child, m, case_id=None, copy_images=copy_images))
            except InputError as exc:
                skipped.append(f"{child.name}: {exc}")
        if not m["cases"]:
            try:  # the folder itself may be one case
                m["cases"].append(self._make_entry(src, m, case_id=None, copy_images=copy_images))
                skipped = []
            except InputError:
                pass
        if not m["cases"]:
            detail = f" First problem: {skipped[0]}" if skipped else ""
            raise InputError(
                f"No case found in {str(src)!r}. Expected one folder per case (BraTS 2021/2023 "
                "naming or an MSD 4D image), or an nnU-Net/MSD dataset with dataset.json."
                f"{detail}"
            )
        for s in skipped:
            warnings.warn(f"skipped {s}", UserWarning, stacklevel=3)
        self._commit(m)

    def _grid(self, case_id: str) -> tuple[Geometry, Orientation, tuple[int, int, int]]:
        g, o, canon, _ = _geometry_of(self._entry(case_id)["geometry"])
        return g, o, canon

    def load_case(self, case_id: str, *, labels: str = "latest") -> Case:
        """Load a case's images (and labels) as a :class:`~napari_ssseg.core.case.Case`.

        Parameters
        ----------
        case_id : str
        labels : {"latest", "ground_truth", "none"}
            ``latest``: the newest label version (None if never saved); ``ground_truth``: the
            reference label file; ``none``: no labels.

        Returns
        -------
        Case
            ``name`` is the case id, ``convention`` the case's source convention.

        Raises
        ------
        InputError
            Unknown case, missing image files, images changed on disk since they were added.
        """
        from napari_ssseg.errors import GeometryError
        from napari_ssseg.io.readers import load_case, same_grid

        labels = check_choice("labels", labels, ("latest", "ground_truth", "none"))
        rec = self.case(case_id)
        if rec.missing:
            raise InputError(
                f"Case {case_id!r} cannot be opened: its image file(s) "
                f"{', '.join(map(repr, rec.missing))} are missing. Restore them or move them "
                "back; the other cases of the workspace still work."
            )
        if rec.msd_image is not None:
            case = load_case(rec.msd_image)
        else:
            case = load_case(**{m: p for m, p in rec.images.items() if m in MODALITIES})
        geometry, _, canon = self._grid(case_id)
        if not same_grid(case.geometry, case.file_shape, geometry, self._file_shape(case_id)):
            raise GeometryError(
                f"The images of case {case_id!r} changed on disk since they were added to the "
                f"workspace (grid now {case.geometry.describe(case.file_shape)}, was "
                f"{geometry.describe(self._file_shape(case_id))}). Saved label versions no "
                "longer fit them; restore the original images."
            )
        lab = None
        if labels == "latest":
            lab = self.latest_labels(case_id)
        elif labels == "ground_truth":
            lab = self.ground_truth(case_id)
        return dataclasses.replace(
            case,
            labels=lab,
            name=case_id,
            convention=get_convention(rec.convention),
        )

    def _file_shape(self, case_id: str) -> tuple[int, int, int]:
        shape = self._entry(case_id)["geometry"]["file_shape"]
        return (int(shape[0]), int(shape[1]), int(shape[2]))

    def ground_truth(self, case_id: str) -> np.ndarray | None:
        """The case's reference labels (internal, canonical), or None if it has none."""
        from napari_ssseg.io.readers import detect_convention

        rec = self.case(case_id)
        if rec.ground_truth is None:
            return None
        arr = self._read_on_grid(case_id, rec.ground_truth, "Ground-truth label file")
        conv = detect_convention(arr, rec.convention, f"Ground truth {str(rec.ground_truth)!r}")
        _, orient, _ = self._grid(case_id)
        return orient.to_canonical(conv.decode(arr)).astype(np.uint8, copy=False)

    def spacing(self, case_id: str) -> tuple[float, float, float]:
        """Voxel size in mm of the case's canonical arrays, ``(Z, Y, X)`` order."""
        geometry, orient, _ = self._grid(case_id)
        g = orient.canonical_geometry(geometry, self._file_shape(case_id))
        return tuple(float(v) for v in g.spacing_zyx)  # type: ignore[return-value]

    def read_label_file(
        self, case_id: str, path: str | os.PathLike, convention: str | None = None
    ) -> np.ndarray:
        """Read a label file written on the case's grid as internal canonical labels.

        ``convention`` (default: detected from the values, else the case's) decodes the
        file. Raises :class:`InputError` if the file is not on the case's grid.
        """
        from napari_ssseg.io.readers import detect_convention

        path = Path(path).expanduser()
        arr = self._read_on_grid(case_id, path, "Label file")
        if convention is not None:
            conv = get_convention(convention)
        else:
            conv = detect_convention(
                arr, self.case(case_id).convention, f"Label file {str(path)!r}"
            )
        _, orient, _ = self._grid(case_id)
        return orient.to_canonical(conv.decode(arr, source=str(path))).astype(np.uint8, copy=False)

    def set_convention(self, case_id: str, convention: str) -> None:
        """Set the label convention of a case's source files (exports and ground truth)."""
        conv = get_convention(convention).name
        with self._transaction() as m:
            self._entry(case_id, m)["convention"] = conv

    def _read_on_grid(self, case_id: str, path: Path, what: str) -> np.ndarray:
        from napari_ssseg.errors import GeometryError
        from napari_ssseg.io.readers import same_grid

        arr, geom = _read_volume(path, what)
        geometry, _, _ = self._grid(case_id)
        fshape = self._file_shape(case_id)
        if arr.ndim != 3 or not same_grid(geom, arr.shape, geometry, fshape):
            raise GeometryError(
                f"{what} {str(path)!r} is not on the grid of case {case_id!r} "
                f"({geometry.describe(fshape)}). It was not written for this case."
            )
        return arr

    # -- status
    def set_status(self, case_id: str, status: str, note: str = "") -> None:
        """Set a case's status (any of :data:`STATUSES`, forwards or backwards)."""
        status = check_choice("status", status, STATUSES)
        with self._transaction() as m:
            e = self._entry(case_id, m)
            e.setdefault("status_history", []).append(
                {"from": e["status"], "to": status, "time": _now(), "note": str(note)[:500]}
            )
            e["status"] = status

    # -- label versions
    def _check_labels(self, case_id: str, labels: Any, what: str, max_value: int) -> np.ndarray:
        _, _, canon = self._grid(case_id)
        arr = np.asarray(labels)
        if arr.shape != canon:
            raise InputError(
                f"{what} for case {case_id!r} has shape {arr.shape}; expected the case's shape "
                f"{canon} (canonical Z, Y, X)."
            )
        if arr.dtype == bool:
            arr = arr.astype(np.uint8)
        if not np.issubdtype(arr.dtype, np.integer):
            if not np.issubdtype(arr.dtype, np.floating) or not np.array_equal(arr, np.round(arr)):
                raise InputError(
                    f"{what} for case {case_id!r} must hold integers; got {arr.dtype}."
                )
        if arr.size:
            lo, hi = arr.min(), arr.max()
            if lo < 0 or hi > max_value:
                raise InputError(
                    f"{what} for case {case_id!r} holds values from {lo} to {hi}; expected 0 to "
                    f"{max_value}."
                )
        return arr.astype(np.uint8, copy=False)

    def _write_canonical(self, case_id: str, arr: np.ndarray, path: Path) -> None:
        geometry, orient, _ = self._grid(case_id)
        _write_volume(orient.from_canonical(arr), geometry, path)

    def save_labels(
        self,
        case_id: str,
        labels: np.ndarray,
        *,
        source: str,
        note: str = "",
        provenance: np.ndarray | None = None,
    ) -> LabelVersion:
        """Save ``labels`` as a new version of the case (never overwrites a version).

        Parameters
        ----------
        case_id : str
        labels : (Z, Y, X) ndarray of int
            Internal labels (0 bg, 1 NCR, 2 ED, 3 ET), canonical orientation (case shape).
        source : {"model", "superpixel", "scribble", "human", "import"}
        note : str
            Short note (stored, at most 500 characters).
        provenance : (Z, Y, X) ndarray of uint8, optional
            Per-voxel provenance codes 0 original, 1 model, 2 superpixel, 3 scribble, 4 human.

        Returns
        -------
        LabelVersion

        Raises
        ------
        InputError
            Bad shape/values, read-only or closed workspace, write failure (e.g. disk full:
            the previous versions and the manifest are intact).

        Notes
        -----
        The version file is written (atomically) before the manifest; the case status moves
        forward to ``proposed`` (model), ``refined`` (superpixel, scribble) or ``corrected``
        (human, import), never backwards.
        """
        source = check_choice("source", source, SOURCES[:-1])
        self._check_writable()
        lab = self._check_labels(case_id, labels, "Labels", 3)
        prov = None
        if provenance is not None:
            prov = self._check_labels(case_id, provenance, "Provenance", _max_provenance())
        with self._lock:
            return self._add_version(case_id, lab, prov, source=source, note=note)

    def _add_version(
        self,
        case_id: str,
        lab: np.ndarray | None,
        prov: np.ndarray | None,
        *,
        source: str,
        note: str,
        copy_from: dict | None = None,
    ) -> LabelVersion:
        e = self._entry(case_id)
        n = max((v["version"] for v in e["versions"]), default=0) + 1
        rel = f"cases/{case_id}/labels/v{n:04d}.nii.gz"
        prel = f"cases/{case_id}/provenance/v{n:04d}.nii.gz"
        path, ppath = self.root / rel, self.root / prel
        try:
            if copy_from is not None:
                _copy_file(self.root / copy_from["file"], path, link=True)
                if copy_from.get("provenance"):
                    _copy_file(self.root / copy_from["provenance"], ppath, link=True)
                else:
                    prel = None
            else:
                self._write_canonical(case_id, lab, path)
                if prov is not None:
                    self._write_canonical(case_id, prov, ppath)
                else:
                    prel = None
        except InputError as exc:
            raise InputError(
                f"Could not save version {n} of case {case_id!r}: {exc} The previous versions "
                "and the manifest are unchanged; nothing was lost. Free some disk space (or fix "
                "the folder's permissions) and save again."
            ) from exc.__cause__
        entry = {
            "version": n,
            "file": rel,
            "provenance": prel,
            "time": _now(),
            "source": source,
            "note": str(note)[:500],
            "restored_from": copy_from["version"] if copy_from else None,
            "sha256": _sha256(path),
        }
        try:
            with self._transaction() as m:
                ce = self._entry(case_id, m)
                ce["versions"].append(entry)
                target = _STATUS_OF_SOURCE.get(source)
                if target and STATUSES.index(target) > STATUSES.index(ce["status"]):
                    ce.setdefault("status_history", []).append(
                        {"from": ce["status"], "to": target, "time": entry["time"], "note": ""}
                    )
                    ce["status"] = target
        except InputError as exc:
            raise InputError(
                f"Could not record version {n} of case {case_id!r} in the manifest: {exc} The "
                "manifest still lists the previous versions; free some disk space and save "
                "again."
            ) from exc.__cause__
        return self._version(entry)

    def _version(self, v: dict) -> LabelVersion:
        return LabelVersion(
            version=int(v["version"]),
            file=self.root / PurePosixPath(v["file"]),
            provenance=self.root / PurePosixPath(v["provenance"]) if v.get("provenance") else None,
            time=v["time"],
            source=v["source"],
            note=v.get("note", ""),
            restored_from=v.get("restored_from"),
            sha256=v.get("sha256", ""),
        )

    def versions(self, case_id: str) -> list[LabelVersion]:
        """Every label version of a case, oldest first."""
        return [self._version(v) for v in self._entry(case_id)["versions"]]

    def _version_entry(self, case_id: str, version: int) -> dict:
        for v in self._entry(case_id)["versions"]:
            if v["version"] == int(version):
                return v
        have = [v["version"] for v in self._entry(case_id)["versions"]]
        raise InputError(
            f"Case {case_id!r} has no label version {version!r} (versions: {have or 'none'})."
        )

    def read_version(self, case_id: str, version: int) -> np.ndarray:
        """Labels of one version (internal uint8, canonical)."""
        v = self._version(self._version_entry(case_id, version))
        arr = self._read_on_grid(case_id, v.file, f"Label version {version}")
        _, orient, _ = self._grid(case_id)
        conv = get_convention(_LABEL_CONVENTION)
        return orient.to_canonical(conv.decode(arr, source=str(v.file))).astype(np.uint8)

    def read_provenance(self, case_id: str, version: int | None = None) -> np.ndarray | None:
        """Provenance map of a version (default latest), or None if none was saved."""
        if version is None:
            versions = self._entry(case_id)["versions"]
            if not versions:
                return None
            version = versions[-1]["version"]
        v = self._version(self._version_entry(case_id, version))
        if v.provenance is None:
            return None
        arr = self._read_on_grid(case_id, v.provenance, f"Provenance of version {version}")
        _, orient, _ = self._grid(case_id)
        return orient.to_canonical(arr).astype(np.uint8)

    def latest_labels(self, case_id: str) -> np.ndarray | None:
        """Labels of the newest version (internal uint8, canonical), or None if none."""
        versions = self._entry(case_id)["versions"]
        if not versions:
            return None
        return self.read_version(case_id, versions[-1]["version"])

    def restore(self, case_id: str, version: int, note: str = "") -> LabelVersion:
        """Make ``version`` current again by adding it as a new version (history is kept)."""
        self._check_writable()
        with self._lock:
            src = dict(self._version_entry(case_id, version))
            return self._add_version(
                case_id,
                None,
                None,
                source="restore",
                note=note or f"restored from version {int(version)}",
                copy_from=src,
            )

    # -- scribbles, uncertainty, scores
    def save_scribbles(self, case_id: str, scribbles: np.ndarray, note: str = "") -> int:
        """Save a scribble volume (uint8 codes, canonical) as a new file; returns its number."""
        self._check_writable()
        arr = self._check_labels(case_id, scribbles, "Scribbles", 255)
        with self._lock:
            e = self._entry(case_id)
            n = max((s["n"] for s in e["scribbles"]), default=0) + 1
            rel = f"cases/{case_id}/scribbles/s{n:04d}.nii.gz"
            self._write_canonical(case_id, arr, self.root / rel)
            with self._transaction() as m:
                self._entry(case_id, m)["scribbles"].append(
                    {"n": n, "file": rel, "time": _now(), "note": str(note)[:500]}
                )
        return n

    def latest_scribbles(self, case_id: str) -> np.ndarray | None:
        """The newest saved scribbles (canonical uint8), or None."""
        s = self._entry(case_id)["scribbles"]
        if not s:
            return None
        _, orient, _ = self._grid(case_id)
        arr = self._read_on_grid(case_id, self.root / s[-1]["file"], "Scribble file")
        return orient.to_canonical(arr).astype(np.uint8)

    def save_uncertainty(
        self,
        case_id: str,
        uncertainty: np.ndarray,
        *,
        labels: np.ndarray | None = None,
        kind: str = "entropy",
    ) -> float:
        """Store a proposal's uncertainty map and its score (for ``workspace suggest``).

        Parameters
        ----------
        uncertainty : (Z, Y, X) ndarray of float
            Voxel uncertainty in [0, 1] (e.g. normalised entropy), canonical.
        labels : (Z, Y, X) ndarray of int, optional
            The predicted labels; the score is the mean uncertainty inside the predicted
            tumour (see :func:`napari_ssseg.core.suggest.uncertainty_score`). Default: the
            latest version.
        kind : {"entropy", "disagreement"}

        Returns
        -------
        float
            The stored score.
        """
        from napari_ssseg.core.suggest import uncertainty_score

        kind = check_choice("kind", kind, ("entropy", "disagreement"))
        self._check_writable()
        _, _, canon = self._grid(case_id)
        u = np.asarray(uncertainty, dtype=np.float32)
        if u.shape != canon:
            raise InputError(
                f"Uncertainty map for case {case_id!r} has shape {u.shape}; expected {canon}."
            )
        if labels is None:
            labels = self.latest_labels(case_id)
        score = uncertainty_score(u, labels)
        rel = f"cases/{case_id}/uncertainty_{kind}.nii.gz"
        with self._lock:
            self._write_canonical(case_id, u, self.root / rel)
            with self._transaction() as m:
                e = self._entry(case_id, m)
                e.setdefault("uncertainty", {})[kind] = {"file": rel, "time": _now()}
                e["scores"][kind] = score
        return score

    def read_uncertainty(self, case_id: str, kind: str = "entropy") -> np.ndarray | None:
        """The stored uncertainty map (canonical float32), or None."""
        u = (self._entry(case_id).get("uncertainty") or {}).get(kind)
        if not u:
            return None
        _, orient, _ = self._grid(case_id)
        arr = self._read_on_grid(case_id, self.root / u["file"], "Uncertainty file")
        return orient.to_canonical(arr).astype(np.float32)

    def set_scores(self, case_id: str, **scores: float) -> None:
        """Store per-case scores (e.g. ``entropy=0.31``, ``disagreement=0.12``)."""
        clean = {}
        for k, v in scores.items():
            v = float(v)
            if not np.isfinite(v):
                raise InputError(f"Score {k}={v!r} for case {case_id!r} must be finite.")
            clean[k] = v
        with self._transaction() as m:
            self._entry(case_id, m)["scores"].update(clean)

    def set_features(self, case_id: str, features: Sequence[float]) -> None:
        """Store a case's feature vector (used by the diversity option of suggestions)."""
        vec = [float(x) for x in np.asarray(features, dtype=float).ravel()]
        with self._transaction() as m:
            self._entry(case_id, m)["features"] = vec

    def features(self, case_id: str) -> np.ndarray | None:
        """The stored feature vector, or None."""
        f = self._entry(case_id).get("features")
        return None if f is None else np.asarray(f, dtype=float)

    # -- models, runs, snapshots
    def register_model(
        self, path: str | os.PathLike, info: dict | None = None, *, copy_file: bool = False
    ) -> str:
        """Record a model checkpoint made from (or used with) this workspace; returns its id."""
        p = Path(path).expanduser()
        if not p.exists():
            raise InputError(f"Model file {str(p)!r} does not exist.")
        info = json.loads(json.dumps(info or {}, default=str))
        with self._lock:
            mid = f"model-{len(self._m['models']) + 1:03d}"
            if copy_file:
                dest = self.root / "models" / f"{mid}{''.join(p.suffixes)}"
                _copy_file(p, dest)
                p = dest
            with self._transaction() as m:
                m["models"].append({"id": mid, "path": self._ref(p), "info": info, "time": _now()})
        return mid

    @property
    def models(self) -> list[dict]:
        """Registered models (copies of the manifest entries, paths made absolute)."""
        return [{**mm, "path": str(self._abs(mm["path"]))} for mm in self._m["models"]]

    def snapshot(
        self,
        dest: str | os.PathLike,
        *,
        cases: Sequence[str] | None = None,
        statuses: Sequence[str] | None = None,
    ) -> Path:
        """Write a consistent, frozen copy of the current labels for a training run.

        Every selected case with at least one version gets its latest label file (and
        provenance) hard-linked (or copied, across file systems) into ``dest/labels`` and
        ``dest/provenance``; ``dest/snapshot.json`` (written last) lists the cases with their
        absolute image paths, geometry, version and status. Version files are immutable, so
        later saves never change the snapshot.

        Parameters
        ----------
        dest : path-like
            New or empty folder.
        cases : sequence of str, optional
            Case ids (default: every case with a label version).
        statuses : sequence of str, optional
            Keep only cases with these statuses.

        Returns
        -------
        Path
            ``dest``. Read it with :func:`read_snapshot`.
        """
        dest = Path(dest).expanduser()
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise InputError(
                f"Snapshot folder {str(dest)!r} already exists and is not empty; snapshots "
                "never overwrite files. Choose a new folder."
            )
        if statuses is not None:
            statuses = [check_choice("status", s, STATUSES) for s in statuses]
        with self._lock:
            frozen = copy.deepcopy(self._m)
        ids = list(cases) if cases is not None else [c["id"] for c in frozen["cases"]]
        out = []
        for cid in ids:
            e = self._entry(cid, frozen)
            if not e["versions"] or (statuses is not None and e["status"] not in statuses):
                continue
            v = e["versions"][-1]
            lab = f"labels/{cid}.nii.gz"
            _copy_file(self.root / v["file"], dest / lab, link=True)
            prov = None
            if v.get("provenance"):
                prov = f"provenance/{cid}.nii.gz"
                _copy_file(self.root / v["provenance"], dest / prov, link=True)
            rec = self._record(e)
            out.append(
                {
                    "id": cid,
                    "status": e["status"],
                    "version": v["version"],
                    "source": v["source"],
                    "labels": lab,
                    "provenance": prov,
                    "label_convention": _LABEL_CONVENTION,
                    "convention": e.get("convention"),
                    "images": {k: str(p) for k, p in rec.images.items()},
                    "msd_image": str(rec.msd_image) if rec.msd_image else None,
                    "ground_truth": str(rec.ground_truth) if rec.ground_truth else None,
                    "geometry": e["geometry"],
                    "sha256": v.get("sha256", ""),
                }
            )
        if cases is not None and not out:
            raise InputError(f"None of the cases {list(cases)} has a label version to snapshot.")
        dest.mkdir(parents=True, exist_ok=True)
        snap = {
            "schema_version": SCHEMA_VERSION,
            "kind": "napari-ssseg snapshot",
            "workspace": str(self.root.absolute()),
            "time": _now(),
            "cases": out,
        }
        atomic_write_text(dest / SNAPSHOT_MANIFEST, json.dumps(snap, indent=1) + "\n")
        if not self.readonly and not self._closed:
            with self._transaction() as m:
                m["snapshots"].append(
                    {"path": self._ref(dest), "time": snap["time"], "n": len(out)}
                )
        return dest

    def begin_run(
        self,
        name: str | None = None,
        config: dict | None = None,
        *,
        snapshot: bool = True,
        run_dir: str | os.PathLike | None = None,
        strategy: str | None = None,
    ) -> TrainingRun:
        """Start recording a training run (state ``running``).

        Parameters
        ----------
        name : str, optional
            Run id (default ``run-NNN``).
        config : dict, optional
            The run's options (recorded as they are, JSON-able).
        snapshot : bool
            Freeze the current labels into ``RUN_DIR/snapshot`` (:meth:`snapshot`). False
            when the trainer makes its own snapshot (``ssseg train WS`` does).
        run_dir : path-like, optional
            Run folder (default ``WS/runs/<id>``); may be outside the workspace.
        strategy : str, optional
            Training strategy name.

        Returns
        -------
        TrainingRun
            Train on ``run.snapshot`` (:func:`read_snapshot`), then call :meth:`finish_run`
            (or :meth:`record_run` with the end state).
        """
        self._check_writable()
        if name:
            _check_id(name, "run name")
            if any(r["id"] == name for r in self._m["runs"]):
                raise InputError(
                    f"Workspace already has a training run {name!r}; choose a new name."
                )
        rid = name or _next_id("run", [r["id"] for r in self._m["runs"]])
        rdir = Path(run_dir).expanduser().absolute() if run_dir else self.root / "runs" / rid
        snap = rdir / "snapshot"
        if snapshot:
            self.snapshot(snap)
        self.record_run(rdir, state="running", strategy=strategy, config=config, name=rid)
        return TrainingRun(rid, rdir, snap)

    def find_run(self, run: str | os.PathLike) -> dict | None:
        """The manifest entry (a copy) of a run, by run id or run folder; None if unknown."""
        ref = None
        with contextlib.suppress(OSError, ValueError, TypeError):
            ref = self._ref(Path(run).expanduser())
        for r in self._m["runs"]:
            if r.get("id") == str(run) or (ref is not None and r.get("dir") == ref):
                return copy.deepcopy(r)
        return None

    def record_run(
        self,
        run_dir: str | os.PathLike,
        *,
        state: str,
        strategy: str | None = None,
        config: dict | None = None,
        metrics: dict | None = None,
        checkpoint: str | os.PathLike | None = None,
        step: int | None = None,
        reason: str | None = None,
        message: str | None = None,
        name: str | None = None,
        pid: int | None = None,
    ) -> dict:
        """Create or update the record of the training run in ``run_dir`` (one manifest write).

        Runs are identified by their folder, so recording the same run twice (e.g. by the
        training process and by the Retrain panel) updates one entry; recording an end state
        that is already recorded (same state and step) changes nothing. ``state="running"``
        on a finished run (``--resume``) marks it running again and adds the time to
        ``resumed``.

        Parameters
        ----------
        run_dir : path-like
            The run folder (``ssseg train --out``); inside or outside the workspace.
        state : {"running", "done", "cancelled", "failed"}
        strategy : str, optional
        config : dict, optional
            Run options (replace the recorded ones when given).
        metrics : dict, optional
            Final validation metrics (end states).
        checkpoint : path-like, optional
            The run's best checkpoint: registered as a model (:attr:`models`); the same file
            recorded again updates its model entry instead of adding one.
        step : int, optional
            Optimiser steps done.
        reason, message : str, optional
            Why the run ended (``finished``/``budget``/``SIGTERM``...); error message.
        name : str, optional
            Run id for a new entry (default ``run-NNN``).
        pid : int, optional
            With ``state="running"``: the training process (recorded with this host's name),
            so that :meth:`reconcile_runs` can tell a run whose process is gone.

        Returns
        -------
        dict
            The run's manifest entry (a copy).
        """
        self._check_writable()
        state = check_choice("state", state, RUN_STATES)
        rdir = Path(run_dir).expanduser().absolute()
        ref = self._ref(rdir)
        ckpt = None
        if checkpoint is not None:
            ckpt = Path(checkpoint).expanduser()
            if not ckpt.exists():
                raise InputError(f"Model file {str(ckpt)!r} does not exist.")
        with self._lock:
            old = next((r for r in self._m["runs"] if r.get("dir") == ref), None)
            if (
                old is not None
                and state != "running"
                and old.get("state") == state
                and old.get("step") == step
                and (ckpt is None or old.get("model"))
            ):
                return copy.deepcopy(old)
            with self._transaction() as m:
                now = _now()
                entry = next((r for r in m["runs"] if r.get("dir") == ref), None)
                if entry is None:
                    if name:
                        _check_id(name, "run name")
                        if any(r["id"] == name for r in m["runs"]):
                            raise InputError(
                                f"Workspace already has a training run {name!r}; choose a new name."
                            )
                    rid = name or _next_id("run", [r["id"] for r in m["runs"]])
                    entry = {"id": rid, "dir": ref, "config": {}, "started": now}
                    m["runs"].append(entry)
                elif state == "running" and entry.get("state") != "running":
                    entry.setdefault("resumed", []).append(now)
                if (rdir / "snapshot" / SNAPSHOT_MANIFEST).exists() or "snapshot" not in entry:
                    entry["snapshot"] = self._ref(rdir / "snapshot")
                if strategy:
                    entry["strategy"] = str(strategy)
                if config is not None:
                    entry["config"] = json.loads(json.dumps(config, default=str))
                entry["state"] = state
                if step is not None:
                    entry["step"] = int(step)
                if state == "running":
                    for key in ("finished", "reason", "message"):
                        entry.pop(key, None)
                    if pid is not None:
                        entry["pid"] = int(pid)
                        entry["host"] = socket.gethostname()
                else:
                    entry.pop("pid", None)
                    entry.pop("host", None)
                    entry["finished"] = now
                    entry["reason"] = reason
                    entry["metrics"] = json.loads(json.dumps(metrics or {}, default=str))
                    if message:
                        entry["message"] = str(message)
                    else:
                        entry.pop("message", None)
                    if ckpt is not None:
                        entry["model"] = self._upsert_model(
                            m, ckpt, {"run": entry["id"], "state": state, "metrics": metrics or {}}
                        )
                    else:
                        entry.setdefault("model", None)
                result = copy.deepcopy(entry)
        return result

    def _upsert_model(self, m: dict, path: Path, info: dict) -> str:
        """Add (or update, same file) a model entry in manifest ``m``; return its id."""
        ref = self._ref(path)
        info = json.loads(json.dumps(info, default=str))
        for mm in m["models"]:
            if mm.get("path") == ref:
                mm.update(info=info, time=_now())
                return mm["id"]
        mid = _next_id("model", [mm["id"] for mm in m["models"]])
        m["models"].append({"id": mid, "path": ref, "info": info, "time": _now()})
        return mid

    def record_run_from_dir(self, run_dir: str | os.PathLike, *, name: str | None = None) -> dict:
        """Record a run from what its folder holds (``events.jsonl``, ``best.pt``).

        The state is the run's end event (``done``, ``cancelled``; ``error`` -> ``failed``),
        or ``running`` when it has none yet (still training, or killed); the metrics are the
        end event's (else the last validation); ``best.pt`` of a ``done`` or ``cancelled`` run
        is registered as a model. See :func:`read_run`.
        """
        info = read_run(run_dir)
        return self.record_run(
            run_dir,
            state=info["state"],
            strategy=info["strategy"],
            config=info["config"] or None,
            metrics=info["metrics"],
            checkpoint=info["best"] if info["state"] in ("done", "cancelled") else None,
            step=info["step"],
            reason=info["reason"],
            message=info["message"],
            name=name,
        )

    def finish_run(
        self,
        run_id: str,
        *,
        checkpoint: str | os.PathLike | None = None,
        metrics: dict | None = None,
        state: str = "done",
    ) -> None:
        """Record the end of a run (its checkpoint is registered as a model)."""
        state = check_choice("state", state, ("done", "failed", "cancelled"))
        run = next((r for r in self._m["runs"] if r["id"] == run_id), None)
        if run is None:
            raise InputError(f"Workspace has no training run {run_id!r}.")
        self.record_run(self._abs(run["dir"]), state=state, metrics=metrics, checkpoint=checkpoint)

    def reconcile_runs(self) -> list[dict]:
        """Settle runs recorded as ``running`` whose training process has ended.

        A run stays ``running`` in the manifest when the program that recorded it could not
        record its end: napari (holding the workspace) crashed or was killed, or the training
        process was killed (``SIGKILL``, out of memory). For each such run:

        * its folder's ``events.jsonl`` has an end event: that end is recorded
          (:meth:`record_run_from_dir`: ``done`` / ``cancelled`` with ``best.pt`` registered
          as a model, or ``failed``);
        * else, when the recorded process (``pid`` on this host) is no longer alive, or the
          run folder is gone: the run is recorded ``failed`` with a message that says so and
          how to resume it.

        A run without a recorded process (older manifests) or started on another host is
        left as it is unless its folder says it ended. Called by :meth:`open` (writable);
        never raises for one run (a run that cannot be settled is logged and kept).

        Returns
        -------
        list of dict
            The updated manifest entries (copies), one per settled run.
        """
        self._check_writable()
        settled: list[dict] = []
        for entry in [r for r in self._m["runs"] if r.get("state") == "running"]:
            rdir = self._abs(entry.get("dir"))
            if rdir is None:
                continue
            try:
                info = read_run(rdir) if rdir.is_dir() else None
            except InputError:
                info = None
            try:
                if info is not None and info["state"] != "running":
                    settled.append(self.record_run_from_dir(rdir))
                    continue
                pid, host = entry.get("pid"), entry.get("host")
                gone = not rdir.is_dir()
                if not gone and isinstance(pid, int) and host == socket.gethostname():
                    gone = not _pid_alive(pid)
                if not gone:
                    continue
                why = (
                    f"its run folder {str(rdir)!r} is missing"
                    if not rdir.is_dir()
                    else f"its training process (pid {pid}) ended without recording an end"
                )
                resume = (
                    f" last.pt is kept: resume with `ssseg train --resume --out {rdir}` (or "
                    "the Retrain panel's Resume)."
                    if info is not None and info.get("last")
                    else ""
                )
                settled.append(
                    self.record_run(
                        rdir,
                        state="failed",
                        step=info["step"] if info is not None else None,
                        reason="interrupted",
                        message=(
                            f"Run interrupted: {why} (the program that started it crashed or "
                            f"was closed, or the process was killed).{resume}"
                        ),
                    )
                )
            except Exception as exc:  # noqa: BLE001 - one bad run must not block opening
                log.warning("could not settle run %s: %s", entry.get("id"), exc)
        return settled

    @property
    def runs(self) -> list[dict]:
        """Training runs (copies of the manifest entries)."""
        return copy.deepcopy(self._m["runs"])

    # -- integrity
    def verify(self) -> list[str]:
        """Check every listed version file exists and matches its checksum.

        Returns
        -------
        list of str
            Problems found (empty when the workspace is intact).
        """
        problems = []
        for c in self._m["cases"]:
            for v in c["versions"]:
                p = self.root / v["file"]
                if not p.is_file():
                    problems.append(f"{c['id']} v{v['version']}: missing {v['file']}")
                elif v.get("sha256") and _sha256(p) != v["sha256"]:
                    problems.append(f"{c['id']} v{v['version']}: checksum mismatch {v['file']}")
                if v.get("provenance") and not (self.root / v["provenance"]).is_file():
                    problems.append(f"{c['id']} v{v['version']}: missing {v['provenance']}")
        return problems

    def summary(self) -> dict:
        """Counts per status, missing cases, versions, models and runs (JSON-able)."""
        recs = self.cases
        counts = {s: 0 for s in STATUSES}
        for r in recs:
            counts[r.status] += 1
        return {
            "workspace": str(self.root),
            "schema_version": self._m["schema_version"],
            "n_cases": len(recs),
            "status_counts": counts,
            "missing": [r.case_id for r in recs if r.missing],
            "n_versions": sum(r.n_versions for r in recs),
            "n_models": len(self._m["models"]),
            "n_runs": len(self._m["runs"]),
        }


def _max_provenance() -> int:
    try:
        from napari_ssseg.core.provenance import PROVENANCE_CODES

        return int(max(PROVENANCE_CODES))
    except Exception:  # noqa: BLE001 - provenance module absent or being edited
        return 4


def read_snapshot(path: str | os.PathLike) -> dict:
    """Read a snapshot written by :meth:`Workspace.snapshot` (absolute label paths).

    Returns
    -------
    dict
        ``{"workspace", "time", "cases": [{"id", "labels" (Path), "provenance", "images",
        "geometry", "version", "status", ...}]}``. Label files hold internal values.
    """
    root = Path(path).expanduser()
    mpath = root / SNAPSHOT_MANIFEST
    try:
        snap = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(
            f"{str(root)!r} is not a complete snapshot ({SNAPSHOT_MANIFEST}: {exc}). Make a new "
            "one with Workspace.snapshot()."
        ) from None
    if not isinstance(snap, dict) or snap.get("schema_version", 0) > SCHEMA_VERSION:
        raise InputError(f"Snapshot {str(mpath)!r} is from a newer napari-ssseg; upgrade.")
    for c in snap.get("cases", []):
        for key in ("labels", "provenance"):
            if c.get(key):
                c[key] = root / _check_relative(c[key], mpath, "a snapshot file")
    return snap


# ----------------------------------------------------------------------------- training runs
#: States of a recorded training run.
RUN_STATES: tuple[str, ...] = ("running", "done", "cancelled", "failed")
_END_STATE = {"done": "done", "cancelled": "cancelled", "error": "failed"}


def _next_id(prefix: str, taken: Sequence[str]) -> str:
    """``prefix-NNN`` one above the highest number in ``taken``."""
    nums = [0]
    for t in taken:
        mt = re.fullmatch(rf"{re.escape(prefix)}-(\d+)", str(t))
        if mt:
            nums.append(int(mt.group(1)))
    return f"{prefix}-{max(nums) + 1:03d}"


def read_run(run_dir: str | os.PathLike) -> dict:
    """What a training run folder says about the run (``events.jsonl``; no torch).

    Parameters
    ----------
    run_dir : path-like
        A folder written by ``ssseg train --out RUN_DIR``.

    Returns
    -------
    dict
        ``run_dir`` (Path), ``strategy``, ``config`` (the last ``start`` event's), ``data``,
        ``state`` (of the first end event after the last ``start``, so a refused
        ``--resume`` does not count; ``running`` when there is none: still training, or
        killed), ``reason``, ``step``, ``metrics`` (the end event's, else the last
        validation's; ``{}`` without one), ``best`` (path of ``best.pt`` or None), ``last``,
        ``message`` (of an ``error`` event).

    Raises
    ------
    InputError
        The folder has neither ``events.jsonl`` nor ``last.pt``.
    """
    root = Path(run_dir).expanduser().absolute()
    events_path = root / "events.jsonl"
    if not events_path.is_file() and not (root / "last.pt").is_file():
        raise InputError(
            f"{str(root)!r} is not a training run folder: it has no events.jsonl and no "
            "last.pt. Give the folder passed to `ssseg train --out`."
        )
    events: list[dict] = []
    if events_path.is_file():
        for line in events_path.read_text(encoding="utf-8", errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                rec = json.loads(line)
                if isinstance(rec, dict) and "event" in rec:
                    events.append(rec)
    starts = [i for i, e in enumerate(events) if e["event"] == "start"]
    first = starts[-1] if starts else 0
    start = events[first] if starts else {}
    tail = events[first:]
    # each start has one end: a later error without a new start is a refused --resume
    end = next((e for e in tail if e["event"] in _END_STATE), None)
    if not starts:  # refused before any start event (bad options, data)
        end = next((e for e in reversed(events) if e["event"] in _END_STATE), None)
    metrics: dict = {}
    if end is not None and isinstance(end.get("metrics"), dict):
        metrics = end["metrics"]
    else:
        vals = [e for e in tail if e["event"] == "validation"]
        if vals and isinstance(vals[-1].get("metrics"), dict):
            metrics = vals[-1]["metrics"]
    steps = [e.get("step") for e in tail if isinstance(e.get("step"), int)]
    best = root / "best.pt"
    config = start.get("config") if isinstance(start.get("config"), dict) else {}
    return {
        "run_dir": root,
        "strategy": start.get("strategy") or config.get("strategy"),
        "config": config,
        "data": config.get("data"),
        "state": _END_STATE[end["event"]] if end is not None else "running",
        "reason": None if end is None else end.get("reason"),
        "step": steps[-1] if steps else None,
        "metrics": metrics,
        "best": str(best) if best.is_file() else None,
        "last": str(root / "last.pt") if (root / "last.pt").is_file() else None,
        "message": None if end is None else end.get("message"),
    }


def record_run_in(
    workspace: str | os.PathLike,
    run_dir: str | os.PathLike,
    *,
    attempts: int = 3,
    delay: float = 0.25,
    **fields: Any,
) -> dict:
    """Open ``workspace`` for writing just long enough to record a run, then close it.

    For a process that does not hold the workspace open (``ssseg train WS``, ``ssseg
    workspace add-run``). The lock is tried ``attempts`` times, ``delay`` seconds apart, so a
    program opening or closing the workspace at that moment is waited for briefly; a program
    that keeps it open (the annotator's napari) is never waited for.

    Parameters
    ----------
    workspace, run_dir : path-like
    attempts : int
    delay : float
    **fields
        Passed to :meth:`Workspace.record_run` (``state`` required); without any,
        :meth:`Workspace.record_run_from_dir` reads the run folder.

    Returns
    -------
    dict
        The run's manifest entry.

    Raises
    ------
    WorkspaceLockedError
        Another program holds the lock (the message names it).
    InputError
        Not a workspace, not writable, not a run folder, ...
    """
    last: WorkspaceLockedError | None = None
    for i in range(max(1, attempts)):
        try:
            ws = Workspace.open(workspace)
        except WorkspaceLockedError as exc:
            last = exc
            if i + 1 < attempts:
                time.sleep(delay)
            continue
        with ws:
            if fields:
                return ws.record_run(run_dir, **fields)
            return ws.record_run_from_dir(run_dir)
    assert last is not None
    raise last


def add_run_command(workspace: str | os.PathLike, run_dir: str | os.PathLike) -> str:
    """The shell command that records ``run_dir`` in ``workspace`` later."""
    import shlex

    return (
        f"ssseg workspace add-run {shlex.quote(str(workspace))} "
        f"{shlex.quote(str(Path(run_dir).expanduser().absolute()))}"
    )


# ----------------------------------------------------------------------------- autosave
class Autosaver:
    """Save when there are unsaved edits and ``interval`` seconds have passed.

    GUI-independent logic: the panel calls :meth:`mark_dirty` on every edit,
    :meth:`maybe_save` from a timer, and :meth:`flush` on case switch and close.

    Parameters
    ----------
    save : callable
        ``save()`` writes the current edits (e.g. ``ws.save_labels(..., source="human")``).
        If it raises, the edits stay dirty and the error propagates (the caller shows it).
    interval : float
        Seconds between autosaves (> 0).
    clock : callable
        ``clock() -> float`` seconds (default :func:`time.monotonic`); tests pass a fake.
    """

    def __init__(
        self,
        save: Callable[[], Any],
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not callable(save):
            raise InputError("Autosaver: save must be callable.")
        if not (isinstance(interval, int | float) and np.isfinite(interval) and interval > 0):
            raise InputError(f"Autosaver interval={interval!r} must be a number of seconds > 0.")
        self._save = save
        self.interval = float(interval)
        self._clock = clock
        self._dirty = False
        self._last = clock()
        self.n_saves = 0

    @property
    def dirty(self) -> bool:
        """True if there are edits not yet saved."""
        return self._dirty

    def mark_dirty(self) -> None:
        """Record that the labels changed."""
        self._dirty = True

    def _do_save(self) -> bool:
        self._save()
        self._dirty = False
        self._last = self._clock()
        self.n_saves += 1
        return True

    def maybe_save(self) -> bool:
        """Save if dirty and ``interval`` has elapsed since the last save; True if saved."""
        if self._dirty and self._clock() - self._last >= self.interval:
            return self._do_save()
        return False

    def flush(self) -> bool:
        """Save now if dirty (case switch, close); True if saved."""
        return self._do_save() if self._dirty else False

    def switch_case(self, new_save: Callable[[], Any] | None = None) -> bool:
        """Flush the current case's edits, then (optionally) save to ``new_save`` from now on."""
        saved = self.flush()
        if new_save is not None:
            self._save = new_save
        self._last = self._clock()
        return saved
