"""Shared pieces of the workspace package: constants, errors, small helpers, manifest
validation, volume I/O, and :class:`_WorkspaceBase`, the in-memory manifest with its
transactions and path references that the :class:`~napari_ssseg.io.workspace.Workspace`
mixins build on.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import hashlib
import json
import logging
import os
import re
import shutil
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from napari_ssseg.core.case import Geometry, Orientation
from napari_ssseg.errors import InputError
from napari_ssseg.io.atomic import atomic_path, atomic_write_text
from napari_ssseg.io.workspace.records import CaseRecord

# the logger keeps the name it had when the workspace was one module
log = logging.getLogger("napari_ssseg.io.workspace")

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


# ----------------------------------------------------------------------------- base class
class _WorkspaceBase:
    """State of an open workspace: the manifest in memory, its transactions, path references
    and the grid of each case. :class:`~napari_ssseg.io.workspace.Workspace` adds the rest."""

    def __init__(self, root: Path, manifest: dict, text: str, readonly: bool) -> None:
        self.root = root
        self.readonly = readonly
        self._m = manifest
        self._text = text
        self._closed = False
        self._lock = threading.RLock()
        self._index = {c["id"]: i for i, c in enumerate(manifest["cases"])}
        self._missing_cache: dict[str, tuple[str, ...]] = {}

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

    def resolve_path(self, ref: str | None) -> Path | None:
        """Absolute path of a path recorded in the manifest (e.g. a run's ``dir``).

        Parameters
        ----------
        ref : str or None
            A manifest path: relative (posix) to the workspace folder, or absolute.

        Returns
        -------
        Path or None
            The absolute path; None when ``ref`` is empty.
        """
        return self._abs(ref)

    def _ref(self, path: Path) -> str:
        """Manifest reference: relative (posix) inside the workspace, else absolute."""
        path = Path(path).absolute()
        try:
            return path.relative_to(self.root.absolute()).as_posix()
        except ValueError:
            return str(path)

    # -- case grid
    def _record(self, c: dict) -> CaseRecord:
        images: dict[str, Path] = {}
        for m, ref in c["images"].items():
            path = self._abs(ref)
            if path is None:
                raise InputError(
                    f"The workspace manifest has an empty {m} path for case {c['id']!r}; "
                    "remove the case and add it again."
                )
            images[m] = path
        files = set(images.values())
        msd_image = self._abs(c.get("msd_image"))
        if msd_image is not None:
            files.add(msd_image)
        missing = tuple(sorted(str(p) for p in files if not os.path.exists(p)))
        _, _, canon, _ = _geometry_of(c["geometry"])
        versions = c.get("versions", [])
        return CaseRecord(
            case_id=c["id"],
            status=c["status"],
            images=images,
            msd_image=msd_image,
            ground_truth=self._abs(c.get("ground_truth")),
            convention=c.get("convention", "brats2021"),
            naming=c.get("naming", "explicit"),
            shape=canon,
            n_versions=len(versions),
            latest_version=versions[-1]["version"] if versions else None,
            missing=missing,
            scores=dict(c.get("scores", {})),
            clinical=dict(c["clinical"]) if c.get("clinical") else None,
        )

    def clinical_cache_dir(self, case_id: str) -> Path:
        """Folder of the case's clinical preparation cache (``cases/<id>/clinical``).

        Created on first use by the preparation; it belongs to the workspace (exports and
        backups that copy ``cases/`` keep it).
        """
        self._entry(case_id)  # unknown id: InputError
        return self.root / "cases" / case_id / "clinical"

    def _grid(self, case_id: str) -> tuple[Geometry, Orientation, tuple[int, int, int]]:
        g, o, canon, _ = _geometry_of(self._entry(case_id)["geometry"])
        return g, o, canon

    def _file_shape(self, case_id: str) -> tuple[int, int, int]:
        shape = self._entry(case_id)["geometry"]["file_shape"]
        return (int(shape[0]), int(shape[1]), int(shape[2]))

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
