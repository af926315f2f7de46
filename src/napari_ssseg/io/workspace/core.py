"""The :class:`Workspace` class (create, open, close, cases) composed from the artifacts and
runs mixins, and :func:`record_run_in` (record a run from a process that does not hold the
workspace open)."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from napari_ssseg.core.case import Case, get_convention
from napari_ssseg.errors import InputError, check_choice
from napari_ssseg.io.atomic import atomic_write_text
from napari_ssseg.io.workspace._base import (
    BACKUP_NAME,
    LOCK_NAME,
    MANIFEST_NAME,
    SCHEMA_VERSION,
    STATUSES,
    WorkspaceLockedError,
    _check_id,
    _copy_file,
    _geometry_dict,
    _header_geometry,
    _Manifest,
    _NewerSchema,
    _now,
    _safe_case_id,
    _sha256,
    log,
)
from napari_ssseg.io.workspace.artifacts import _ArtifactsMixin
from napari_ssseg.io.workspace.lock import _acquire_lock, _release_lock
from napari_ssseg.io.workspace.records import CaseRecord, check_clinical_options
from napari_ssseg.io.workspace.runs import _RunsMixin


class Workspace(_ArtifactsMixin, _RunsMixin):
    """An annotation workspace folder (see the module docstring for the layout).

    Use :meth:`create` or :meth:`open`; close with :meth:`close` or a ``with`` block.

    Examples
    --------
    >>> with Workspace.create("ws", from_dir="brats_cases") as ws:  # doctest: +SKIP
    ...     case = ws.load_case(ws.cases[0].case_id)
    ...     v = ws.save_labels(case.name, labels, source="human", note="fixed ET rim")
    """

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

    def add_case(
        self,
        path: str | os.PathLike | None = None,
        *,
        case_id: str | None = None,
        copy_images: bool = False,
        ground_truth: str | os.PathLike | None = None,
        clinical: dict | None = None,
        **files: str | os.PathLike,
    ) -> CaseRecord:
        """Add one case (a case folder / MSD file, or explicit ``t1=..., flair=...`` files).

        The case's label file, if any, becomes its ``ground_truth`` (used by evaluation);
        to start annotation from it, :meth:`save_labels` it with ``source="import"``.
        ``clinical``: options of a raw study (:meth:`set_clinical`).

        Returns
        -------
        CaseRecord
        """
        options = check_clinical_options(clinical)
        with self._transaction() as m:
            entry = self._make_entry(
                path, m, case_id=case_id, copy_images=copy_images, gt=ground_truth, files=files
            )
            if options is not None:
                entry["clinical"] = options
            m["cases"].append(entry)
        return self.case(entry["id"])

    def set_clinical(self, case_id: str, options: dict | None) -> None:
        """Mark a case as a raw clinical study, prepared before use (or unmark it: None).

        Whoever opens the case (the Workspace panel, ``ssseg`` commands through
        :func:`napari_ssseg.ml.clinical.prepare_workspace_case`) runs the clinical
        preparation with these options, caching its brain mask, transforms and working grid
        in :meth:`clinical_cache_dir`. Label versions stay on the case's own (reference
        series') grid, so they fit the source files in any other tool.

        Parameters
        ----------
        case_id : str
        options : dict or None
            See :func:`~napari_ssseg.io.workspace.records.check_clinical_options`.
        """
        checked = check_clinical_options(options)
        with self._transaction() as m:
            entry = self._entry(case_id, m)
            if checked is None:
                entry.pop("clinical", None)
            else:
                entry["clinical"] = checked

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
        # a PACS / TCIA series folder is a raw study: prepared before use (set_clinical)
        clinical = check_clinical_options({}) if cf.naming == "pacs" else None
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
            **({"clinical": clinical} if clinical is not None else {}),
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
            imgs = rec.images
            case = load_case(
                t1=imgs.get("t1"), t1ce=imgs.get("t1ce"), t2=imgs.get("t2"), flair=imgs.get("flair")
            )
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
