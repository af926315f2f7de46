"""What a workspace stores per case: status, label versions (with provenance), scribbles,
uncertainty maps, scores and feature vectors (:class:`_ArtifactsMixin` of
:class:`~napari_ssseg.io.workspace.Workspace`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from napari_ssseg.core.case import get_convention
from napari_ssseg.errors import InputError, check_choice
from napari_ssseg.io.workspace._base import (
    _LABEL_CONVENTION,
    _STATUS_OF_SOURCE,
    SOURCES,
    STATUSES,
    _copy_file,
    _now,
    _sha256,
    _WorkspaceBase,
    _write_volume,
)
from napari_ssseg.io.workspace.records import LabelVersion


class _ArtifactsMixin(_WorkspaceBase):
    """Case status, label versions, scribbles, uncertainty, scores and features."""

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
        prov_rel = f"cases/{case_id}/provenance/v{n:04d}.nii.gz"
        path, ppath = self.root / rel, self.root / prov_rel
        prel: str | None = prov_rel  # None: the version has no provenance file
        try:
            if copy_from is not None:
                _copy_file(self.root / copy_from["file"], path, link=True)
                if copy_from.get("provenance"):
                    _copy_file(self.root / copy_from["provenance"], ppath, link=True)
                else:
                    prel = None
            else:
                if lab is None:  # a programming error: the callers pass one of the two
                    raise TypeError("_add_version needs labels or copy_from")
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


def _max_provenance() -> int:
    try:
        from napari_ssseg.core.provenance import PROVENANCE_CODES

        return int(max(PROVENANCE_CODES))
    except Exception:  # noqa: BLE001 - provenance module absent or being edited
        return 4
