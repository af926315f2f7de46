"""On-disk cache of the expensive part of :func:`~napari_ssseg.ml.clinical.prepare_clinical`.

Registering each series to the reference and running deepbet are the slow steps of preparing
a clinical study (seconds on an idle machine, over a minute on a loaded one); reading the
series and resampling them through known transforms takes about a second. So a
:class:`ClinicalCache` entry keeps, per study and options:

* the rigid transform of every registered series (``Euler3DTransform`` parameters) and its
  registration report (metric, rotation, check),
* the brain mask on the working grid (canonical order; bit-packed), and how it was obtained
  (including whether the user corrected it, :meth:`ClinicalCache.store_brain`),
* the working grid (:meth:`~napari_ssseg.core.working_grid.WorkingGrid.to_dict`), checked
  against the one computed from the reference's header on every hit.

The resampled images are *not* stored: they are recomputed from the series and the cached
transforms (about 0.9 s for the four series of the real study TCGA-FG-6692-raw).

The key (:func:`cache_key`) is the **content** (SHA-256) of every series file, with the
modality it is used as, the options (``brain_extraction``, ``register``, ``resample``),
:data:`~napari_ssseg.core.registration.REGISTRATION_VERSION`, the installed deepbet version
and :data:`CLINICAL_CACHE_VERSION`. Any change of a file's bytes or of an option is another
entry; touching or copying a file is not. Entries live in
``<cache folder>/clinical/<signature>.npz``, the cache folder being ``$NAPARI_SSSEG_CACHE``
or ``~/.cache/napari-ssseg`` (:func:`~napari_ssseg.core.cache.default_cache_dir`, as the
superpixel cache). Writes are atomic (:func:`~napari_ssseg.io.atomic.atomic_path`). An entry
that cannot be read, was written for another key or does not fit the study is ignored with
a :class:`RuntimeWarning` and recomputed (then overwritten), never used and never a crash.

numpy / stdlib at import time.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CLINICAL_CACHE_VERSION",
    "NAMESPACE",
    "CachedPreparation",
    "ClinicalCache",
    "cache_key",
    "file_fingerprint",
    "resolve_cache",
]

#: Bumped whenever a cached preparation may differ for the same key (layout or meaning).
CLINICAL_CACHE_VERSION = 1
#: Sub-folder of the cache folder holding the entries.
NAMESPACE = "clinical"
_SIG = "__signature__"
_KEY = "__key__"
_CHUNK = 1 << 20


def file_fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """What a series file's content is, for the cache key.

    A file: its size and the SHA-256 of its bytes (a few ms per MB). A folder (a DICOM
    series): the sorted names, sizes and modification times of the files in it. Anything
    else: its path only.
    """
    p = Path(path)
    if p.is_file():
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                h.update(chunk)
        return {"size": p.stat().st_size, "sha256": h.hexdigest()}
    if p.is_dir():
        entries = []
        for f in sorted(q for q in p.rglob("*") if q.is_file()):
            st = f.stat()
            entries.append([f.relative_to(p).as_posix(), st.st_size, st.st_mtime_ns])
        digest = hashlib.sha256(json.dumps(entries).encode()).hexdigest()
        return {"folder": str(p.resolve()), "listing_sha256": digest}
    return {"path": str(p)}


def _deepbet_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("deepbet")
    except metadata.PackageNotFoundError:
        return None


def cache_key(
    files: Mapping[str, str | os.PathLike],
    *,
    brain_extraction: str,
    register: str,
    resample: float | None,
) -> dict[str, Any]:
    """The key of a study's preparation: series contents by modality, options, versions.

    Parameters
    ----------
    files : mapping of str to path
        The series by modality, as :func:`~napari_ssseg.io.readers.find_case_files` found them.
    brain_extraction, register : str
        The options as given (``auto``, ``on``, ``off``).
    resample : float or None
        The requested working-grid spacing.

    Returns
    -------
    dict
        JSON-friendly; hashed by :meth:`ClinicalCache.signature`.
    """
    from napari_ssseg.core.registration import REGISTRATION_VERSION

    return {
        "version": CLINICAL_CACHE_VERSION,
        "registration_version": REGISTRATION_VERSION,
        "deepbet": _deepbet_version(),
        "series": {m: file_fingerprint(p) for m, p in sorted(files.items())},
        "brain_extraction": str(brain_extraction),
        "register": str(register),
        "resample": None if resample is None else float(resample),
    }


@dataclass
class CachedPreparation:
    """What a cache entry holds.

    Attributes
    ----------
    grid : dict
        :meth:`~napari_ssseg.core.working_grid.WorkingGrid.to_dict` of the working grid.
    registration : dict
        Per registered modality, its report (:meth:`RegistrationResult.summary` plus
        ``"applied"``: whether the transform is used).
    transforms : dict of str to dict of ndarray
        Per modality whose transform is used, :func:`transform_to_arrays`.
    brain : (Z, Y, X) ndarray of bool or None
        Canonical brain mask on the working grid.
    brain_extraction : dict or None
        How the mask was obtained (deepbet's sequence and check; ``"corrected": True`` once
        the user's correction replaced it).
    """

    grid: dict
    registration: dict = field(default_factory=dict)
    transforms: dict = field(default_factory=dict)
    brain: np.ndarray | None = None
    brain_extraction: dict | None = None


class ClinicalCache:
    """Folder of cached study preparations (see the module docstring).

    Parameters
    ----------
    folder : path-like, optional
        The cache folder (entries go to ``folder/clinical``); default
        :func:`~napari_ssseg.core.cache.default_cache_dir`.

    Attributes
    ----------
    stats : dict
        ``hits``, ``misses``, ``ignored`` (unreadable or mismatched entries), ``writes``.
    """

    def __init__(self, folder: str | os.PathLike | None = None) -> None:
        from napari_ssseg.core.cache import default_cache_dir

        self.folder = Path(folder).expanduser() if folder is not None else default_cache_dir()
        self.stats = {"hits": 0, "misses": 0, "ignored": 0, "writes": 0}
        self._warned_write = False

    @property
    def directory(self) -> Path:
        """Folder of the entries."""
        return self.folder / NAMESPACE

    @staticmethod
    def signature(key: Mapping[str, Any]) -> tuple[str, str]:
        """``(sha1, canonical JSON)`` of a key."""
        desc = json.dumps(dict(key), sort_keys=True, separators=(",", ":"))
        return hashlib.sha1(desc.encode()).hexdigest(), desc

    def path_for(self, key: Mapping[str, Any]) -> Path:
        """The entry file of ``key``."""
        return self.directory / f"{self.signature(key)[0]}.npz"

    # ------------------------------------------------------------------ read
    def load(self, key: Mapping[str, Any]) -> CachedPreparation | None:
        """The entry of ``key``, or None (absent, or ignored with a warning).

        An entry that cannot be read, was written for another key or is malformed is ignored
        with a :class:`RuntimeWarning` naming the file; the caller recomputes and overwrites.
        """
        sig, _ = self.signature(key)
        path = self.directory / f"{sig}.npz"
        if not path.is_file():
            self.stats["misses"] += 1
            return None
        try:
            entry = self._read(path, sig)
        except Exception as exc:  # noqa: BLE001 - a bad entry must never stop a load
            self.stats["ignored"] += 1
            self.stats["misses"] += 1
            warnings.warn(
                f"Ignoring the clinical cache entry {str(path)!r} ({exc}); the registration "
                "and brain extraction are computed again and the entry rewritten.",
                RuntimeWarning,
                stacklevel=2,
            )
            return None
        self.stats["hits"] += 1
        return entry

    @staticmethod
    def _read(path: Path, sig: str) -> CachedPreparation:
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise ValueError(f"unreadable: {exc}") from None
        if _SIG not in arrays or str(arrays[_SIG]) != sig:
            raise ValueError("written for another study or options")
        meta = json.loads(str(arrays["meta"]))
        transforms = {}
        for m in meta["transforms"]:
            transforms[m] = {
                "parameters": np.asarray(arrays[f"tx_{m}_parameters"], np.float64),
                "fixed_parameters": np.asarray(arrays[f"tx_{m}_fixed"], np.float64),
            }
            if transforms[m]["parameters"].shape != (6,):
                raise ValueError(
                    f"the {m} transform has {transforms[m]['parameters'].size} "
                    "parameters, expected 6"
                )
        brain = None
        if meta.get("brain_shape") is not None:
            shape = tuple(int(s) for s in meta["brain_shape"])
            bits = np.unpackbits(np.asarray(arrays["brain_bits"], np.uint8))
            if bits.size < int(np.prod(shape)):
                raise ValueError("the brain mask is truncated")
            brain = bits[: int(np.prod(shape))].reshape(shape).astype(bool)
        return CachedPreparation(
            grid=meta["grid"],
            registration=meta["registration"],
            transforms=transforms,
            brain=brain,
            brain_extraction=meta.get("brain_extraction"),
        )

    # ------------------------------------------------------------------ write
    def store(self, key: Mapping[str, Any], entry: CachedPreparation) -> Path | None:
        """Write ``entry`` for ``key`` atomically; returns the file (None if not writable).

        A folder that cannot be written gives one :class:`RuntimeWarning` and no entry.
        """
        from napari_ssseg.errors import InputError
        from napari_ssseg.io.atomic import atomic_path

        sig, desc = self.signature(key)
        path = self.directory / f"{sig}.npz"
        meta = {
            "grid": entry.grid,
            "registration": entry.registration,
            "transforms": sorted(entry.transforms),
            "brain_extraction": entry.brain_extraction,
            "brain_shape": None if entry.brain is None else list(entry.brain.shape),
        }
        arrays: dict[str, np.ndarray] = {
            _SIG: np.array(sig),
            _KEY: np.array(desc),
            "meta": np.array(json.dumps(meta, default=_json_default)),
        }
        for m, tx in entry.transforms.items():
            arrays[f"tx_{m}_parameters"] = np.asarray(tx["parameters"], np.float64)
            arrays[f"tx_{m}_fixed"] = np.asarray(tx["fixed_parameters"], np.float64)
        if entry.brain is not None:
            arrays["brain_bits"] = np.packbits(np.asarray(entry.brain, bool).ravel())
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as fh:
                    # numpy's stub matches **kwargs against allow_pickle: bool
                    np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]
        except (OSError, InputError) as exc:
            if not self._warned_write:
                warnings.warn(
                    f"Cannot write the clinical cache folder {str(path.parent)!r} ({exc}); the "
                    "study is prepared without caching. Set NAPARI_SSSEG_CACHE to a writable "
                    "folder.",
                    RuntimeWarning,
                    stacklevel=2,
                )
                self._warned_write = True
            return None
        self.stats["writes"] += 1
        return path

    def store_brain(
        self, key: Mapping[str, Any], brain: np.ndarray, *, corrected: bool = True
    ) -> Path | None:
        """Replace the brain mask of ``key``'s entry (e.g. by the user's corrected mask).

        Returns the entry file, or None when there is no readable entry to update (a warning
        says why) or it cannot be written.
        """
        entry = self.load(key)
        if entry is None:
            warnings.warn(
                "The corrected brain mask is not kept: this study has no clinical cache entry "
                "to update (caching off, or the entry is gone). Save the brain-mask layer by "
                "hand if needed.",
                RuntimeWarning,
                stacklevel=2,
            )
            return None
        mask = np.asarray(brain, bool)
        if entry.brain is not None and entry.brain.shape != mask.shape:
            from napari_ssseg.errors import InputError

            raise InputError(
                f"brain mask of shape {mask.shape} is not on the cached working grid "
                f"{entry.brain.shape}; pass a mask of this study's working grid."
            )
        entry.brain = mask
        info = dict(entry.brain_extraction or {})
        info["corrected"] = bool(corrected)
        entry.brain_extraction = info
        return self.store(key, entry)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def resolve_cache(cache: bool | str | os.PathLike | ClinicalCache | None) -> ClinicalCache | None:
    """``True``: the default folder; a path: that folder; a cache: itself; falsy: None."""
    if isinstance(cache, ClinicalCache):
        return cache
    if cache is True:
        return ClinicalCache()
    if cache is None or cache is False:
        return None
    return ClinicalCache(cache)
