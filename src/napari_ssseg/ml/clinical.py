"""Clinical scans: one study's series onto a working grid, registered and brain-extracted.

:func:`prepare_clinical` reads each series on its native grid, rigidly registers the others to
the reference (FLAIR, else the first), resamples them to an isotropic working grid (1 mm for
a clinical case), checks whether the study is skull-stripped and, when asked or when it is
not, runs deepbet brain extraction (:mod:`napari_ssseg.ml.brain_extraction`) and zeroes the
images outside the brain. The result, :class:`ClinicalCase`, keeps the way back to the
reference's native grid. Used by the CLI (``commands/_clinical.py``) and the napari Loader.
See docs/clinical-scans.md.

numpy / SimpleITK at import time; deepbet (torch) only when brain extraction runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_ssseg.errors import InputError

__all__ = ["ClinicalCase", "prepare_clinical", "prepare_workspace_case", "CHOICES"]

#: Values of the ``brain_extraction`` and ``register`` options.
CHOICES = ("auto", "on", "off")


@dataclass
class ClinicalCase:
    """A case on its working grid plus the way back to the reference's native grid.

    Attributes
    ----------
    case : Case
        On the working grid (canonical), zeroed outside ``brain`` when it is set.
    grid : WorkingGrid
    brain : (Z, Y, X) ndarray of bool or None
        Canonical brain mask on the working grid (None: no brain extraction ran).
    report : dict
        Reference, detection (``skull_stripped``), registrations, extraction, working grid.
    unmasked : (C, Z, Y, X) ndarray or None
        The working-grid images before zeroing outside the brain (only with
        ``keep_unmasked=True``), so a corrected mask can be applied again.
    cache : ClinicalCache or None
        The cache the preparation was read from or written to (None: caching off).
    cache_key : dict or None
        Its key (:func:`~napari_ssseg.ml.clinical_cache.cache_key`).
    native_labels : (Z, Y, X) ndarray of uint8 or None
        Canonical labels read on the reference's native grid (:meth:`read_labels`), the base
        that :meth:`save_labels_native` keeps exactly away from the user's changes.
    native_provenance : (Z, Y, X) ndarray of uint8 or None
        The same for the per-voxel provenance of a workspace version.
    """

    case: Any
    grid: Any
    brain: np.ndarray | None
    report: dict = field(default_factory=dict)
    unmasked: np.ndarray | None = None
    cache: Any = None
    cache_key: dict | None = None
    native_labels: np.ndarray | None = None
    native_provenance: np.ndarray | None = None

    @property
    def stripped(self) -> bool:
        """True if the study looked skull-stripped as read."""
        return bool(self.report.get("skull_stripped", {}).get("stripped", True))

    @property
    def changed(self) -> bool:
        """True if anything clinical applied (brain extracted, resampled or registered)."""
        return (
            self.brain is not None
            or not self.grid.is_native
            or any(r.get("passed") for r in self.report.get("registration", {}).values())
        )

    def extraction_note(self) -> str | None:
        """One sentence on what was done about a study that is not skull-stripped.

        Returns
        -------
        str or None
            None if the study looked skull-stripped; the detection's own advice (run brain
            extraction) if no brain mask was applied; otherwise what was applied (deepbet on
            which sequence and the brain volume, or the user's corrected mask from the cache)
            and that the images are zeroed outside it. The CLI and the Loader panel both show
            this sentence, each adding how to undo or correct it in its own terms.
        """
        if self.stripped:
            return None
        info = self.report.get("brain_extraction")
        if self.brain is None or not info:
            return str(self.report.get("skull_strip_message", ""))
        why = "; ".join(self.report.get("skull_stripped", {}).get("reasons", []))
        ml = info.get("check", {}).get("volume_ml")
        how = (
            "the brain mask is the one you corrected and applied before"
            if info.get("corrected")
            else f"the brain was extracted with deepbet on {info.get('sequence', 'T1')}"
            + (f" ({float(ml):.0f} ml)" if ml is not None else "")
        )
        return (
            f"{self.case.name} does not look skull-stripped ({why}); {how} and the images "
            "are zeroed outside it."
        )

    def keep_brain_mask(self, mask: np.ndarray) -> Path | None:
        """Make ``mask`` (e.g. the user's correction) this study's brain mask, also cached.

        Sets :attr:`brain` (the images are not changed here) and replaces the mask of the
        study's cache entry, so the next preparation of the same study with the same options
        (CLI or napari) uses it. Returns the entry file, or None when caching is off or the
        entry cannot be updated (a warning says why).
        """
        m = np.asarray(mask) > 0
        if m.shape != self.case.shape:
            raise InputError(
                f"brain mask of shape {m.shape} is not on {self.case.name}'s working grid "
                f"{self.case.shape}; pass the brain-mask layer of this case."
            )
        self.brain = m
        info = dict(self.report.get("brain_extraction") or {})
        info["corrected"] = True
        self.report["brain_extraction"] = info
        if self.cache is None or self.cache_key is None:
            return None
        return self.cache.store_brain(self.cache_key, m)

    def mask_to_native(self, mask: np.ndarray, base: np.ndarray | None = None) -> np.ndarray:
        """A canonical working-grid mask/labels as canonical labels on the native grid.

        ``base``: the canonical native labels ``mask`` was made from, if any; native voxels
        away from any change keep their value exactly
        (:func:`~napari_ssseg.core.working_grid.labels_to_native`).
        """
        from napari_ssseg.core.case import Orientation
        from napari_ssseg.core.working_grid import labels_to_native

        o = Orientation.from_geometry(self.grid.geometry)
        o_ref = Orientation.from_geometry(self.grid.reference_geometry)
        nat = None if base is None else o_ref.from_canonical(np.asarray(base, np.uint8))
        native = labels_to_native(o.from_canonical(np.asarray(mask, np.uint8)), self.grid, base=nat)
        return o_ref.to_canonical(native)

    def labels_from_native(self, labels: np.ndarray) -> np.ndarray:
        """Canonical labels on the reference's native grid as canonical working-grid labels.

        Nearest neighbour (:func:`~napari_ssseg.core.working_grid.labels_from_native`).
        """
        from napari_ssseg.core.case import Orientation
        from napari_ssseg.core.working_grid import labels_from_native

        o = Orientation.from_geometry(self.grid.geometry)
        o_ref = Orientation.from_geometry(self.grid.reference_geometry)
        work = labels_from_native(o_ref.from_canonical(np.asarray(labels, np.uint8)), self.grid)
        return o.to_canonical(work)

    def read_labels(self, path: str | Path, convention: Any = None) -> np.ndarray:
        """Read a label file of this study onto the working grid.

        The file may be on the reference series' native grid (as delivered with the study,
        or as written by :meth:`save_labels_native`): it is mapped to the working grid and
        kept as :attr:`native_labels`, so saving unchanged labels gives the file's exact
        voxels back. A file on the working grid itself is read as it is.

        Parameters
        ----------
        path : path-like
        convention : str or LabelConvention, optional
            Of the file's values (default: the case's, else detected with a warning).

        Returns
        -------
        (Z, Y, X) ndarray of uint8
            Internal labels on the working grid (canonical), ``self.case.shape``.

        Raises
        ------
        GeometryError
            The file is on neither grid; the message gives both shapes.
        """
        from napari_ssseg.errors import GeometryError
        from napari_ssseg.io.readers import read_labels

        native = self.native_case()
        try:
            nat = read_labels(path, native, convention)
        except GeometryError:
            try:
                return read_labels(path, self.case, convention)
            except GeometryError:
                pass
            raise GeometryError(
                f"{Path(path).name} is neither on {self.case.name}'s reference "
                f"({self.report.get('reference')}) native grid {tuple(native.file_shape)} nor "
                f"on its working grid {tuple(self.case.file_shape)} (file order Z, Y, X). Give "
                "labels drawn on the reference series."
            ) from None
        self.native_labels = nat
        return self.labels_from_native(nat)

    def native_case(self) -> Any:
        """An image-less :class:`~napari_ssseg.core.case.Case` on the reference's native grid.

        Its one channel is zeros; it carries the native geometry and orientation, so
        :func:`napari_ssseg.io.writers.save_labels` writes on the reference's exact grid.
        """
        from napari_ssseg.core.case import Case, Orientation

        grid = self.grid
        o_ref = Orientation.from_geometry(grid.reference_geometry)
        return Case(
            images=o_ref.to_canonical(np.zeros((1, *grid.reference_shape), np.float32)),
            modalities=(self.report["reference"],),
            geometry=grid.reference_geometry,
            orientation=o_ref,
            name=self.case.name,
            sources=dict(self.case.sources),
        )

    def save_labels_native(
        self, labels: np.ndarray, path: str | Path, convention: str | None = None
    ) -> Path:
        """Write canonical working-grid labels on the reference's exact native grid.

        When the labels were read from a native file (:meth:`read_labels`), native voxels
        away from any change keep that file's values exactly.

        Parameters
        ----------
        labels : (Z, Y, X) ndarray of int
            Internal labels (0 bg, 1 NCR, 2 ED, 3 ET) on the working grid (canonical).
        path : path-like
            Output file (``.nii.gz``, ...).
        convention : str, optional
            Written label convention (default the case's).

        Returns
        -------
        Path
        """
        from napari_ssseg.io.writers import save_labels

        lab = np.asarray(labels)
        if lab.shape != self.case.shape:
            raise InputError(
                f"labels of shape {lab.shape} are not on {self.case.name}'s working grid "
                f"{self.case.shape}; pass the labels layer of this case."
            )
        native = self.native_case()
        conv = convention if convention is not None else self.case.convention
        base = self.native_labels
        if base is not None and base.shape != native.shape:
            base = None
        return save_labels(self.mask_to_native(lab, base=base), native, path, convention=conv)


def _check_choice(name: str, value: str) -> str:
    if value not in CHOICES:
        raise InputError(f"{name} must be one of {', '.join(CHOICES)}; got {value!r}.")
    return value


def prepare_clinical(
    case: str | Path | None = None,
    files: Mapping[str, str | Path | None] | None = None,
    *,
    brain_extraction: str = "auto",
    register: str = "auto",
    resample: float | None = None,
    progress: Callable[[float, str], None] | None = None,
    keep_unmasked: bool = False,
    cache: Any = True,
) -> ClinicalCase:
    """Read the series natively, register, resample, detect and extract the brain.

    Parameters
    ----------
    case : str or Path or None
        Case folder (BraTS, MSD or a PACS/TCIA export recognised by series names) or file;
        ``None`` or ``"-"`` when ``files`` names every series.
    files : mapping of str to path, optional
        Explicit series by modality (``t1``, ``t1ce``, ``t2``, ``flair``); they override the
        folder's. ``seg`` (a label file) is not read, only recorded as
        ``report["labels_file"]`` (as is the folder's label file): see
        :meth:`ClinicalCase.read_labels`.
    brain_extraction : {"auto", "on", "off"}
        deepbet on T1 (then T1Gd); ``auto``: when the study does not look skull-stripped.
    register : {"auto", "on", "off"}
        Rigid registration to the reference (checked; a failed check raises). ``auto``: only
        series on other grids, and the transform is used only if they are found misaligned.
    resample : float or None
        Isotropic working grid in mm; ``None``: 1 mm for a clinical case (not skull-stripped
        or series on different grids), else the reference grid itself.
    progress : callable, optional
        ``progress(fraction, message)`` between stages (it may raise to cancel).
    keep_unmasked : bool
        Keep the images before zeroing outside the brain in :attr:`ClinicalCase.unmasked`.
    cache : bool or path-like or ClinicalCache
        Where the registration transforms, the brain mask and the working grid are cached
        (:mod:`napari_ssseg.ml.clinical_cache`): ``True`` (default) the user cache folder
        (``$NAPARI_SSSEG_CACHE`` or ``~/.cache/napari-ssseg``), a folder, a
        :class:`~napari_ssseg.ml.clinical_cache.ClinicalCache`, or ``False`` (no caching).
        Nothing is cached when neither registration nor brain extraction runs.

    Returns
    -------
    ClinicalCase
    """
    from napari_ssseg.core.case import Case, Geometry, Orientation
    from napari_ssseg.core.registration import (
        register_rigid,
        transform_from_arrays,
        transform_to_arrays,
    )
    from napari_ssseg.core.skullstrip import skull_strip_check
    from napari_ssseg.core.working_grid import make_working_grid, resample_to, to_sitk
    from napari_ssseg.io.readers import find_case_files, read_image
    from napari_ssseg.ml.clinical_cache import CachedPreparation, cache_key, resolve_cache

    _check_choice("brain extraction", brain_extraction)
    _check_choice("register", register)

    def report_progress(fraction: float, message: str) -> None:
        if progress is not None:
            progress(float(fraction), message)

    explicit: dict[str, str | Path | None] = {m: None for m in ("t1", "t1ce", "t2", "flair")}
    explicit.update({k: v for k, v in (files or {}).items() if k in explicit and v})
    cf = find_case_files(case if case not in (None, "-") else None, **explicit)
    series: dict[str, tuple[np.ndarray, Geometry]] = {}
    for i, m in enumerate(cf.modalities):
        report_progress(0.05 + 0.15 * i / len(cf.modalities), f"reading {m}")
        series[m] = read_image(cf.files[m])
    ref = "flair" if "flair" in series else next(iter(series))
    ref_arr, ref_geom = series[ref]
    same = all(a.shape == ref_arr.shape and g.allclose(ref_geom) for a, g in series.values())
    report: dict = {"reference": ref, "same_grid": same, "registration": {}}
    seg = (files or {}).get("seg") or cf.seg
    report["labels_file"] = str(seg) if seg else None  # not read here: ClinicalCase.read_labels
    report_progress(0.2, "checking for skull stripping")
    raw = skull_strip_check(
        np.stack([a for a, g in series.values()]) if same else ref_arr,  # float32 (read_image)
        ref_geom.spacing[::-1],
        list(series) if same else [ref],
    )
    report["skull_stripped"] = raw.to_dict()
    report["skull_strip_message"] = raw.message(cf.name)
    clinical = (not raw.stripped) or (not same)
    spacing = resample if resample is not None else (1.0 if clinical else None)
    grid = make_working_grid(ref_geom, ref_arr.shape, spacing)
    do_bet = brain_extraction == "on" or (brain_extraction == "auto" and not raw.stripped)
    to_register = [
        m for m in series if m != ref and (register == "on" or (register == "auto" and not same))
    ]
    store = resolve_cache(cache) if (to_register or do_bet) else None
    key = entry = None
    if store is not None:
        report_progress(0.22, "looking up the clinical cache")
        key = cache_key(
            {m: cf.files[m] for m in series},
            brain_extraction=brain_extraction,
            register=register,
            resample=resample,
        )
        entry = _usable(store.load(key), grid, orient_shape(grid), to_register, do_bet)
        report["cache"] = {"hit": entry is not None, "path": str(store.path_for(key))}
    fixed = None
    work = {}
    transforms: dict[str, dict] = {}
    for i, (m, (arr, geom)) in enumerate(series.items()):
        tx = None
        if m in to_register and entry is not None:
            report["registration"][m] = entry.registration[m]
            if m in entry.transforms:
                tx = transform_from_arrays(entry.transforms[m])
        elif m in to_register:
            report_progress(0.25 + 0.45 * i / len(series), f"registering {m} to {ref}")
            if fixed is None:
                fixed = to_sitk(ref_arr.astype(np.float32), ref_geom)
            res = register_rigid(fixed, to_sitk(arr.astype(np.float32), geom))
            res.check(f"the {m} series")
            # "on" uses the transform unless it did not improve on the scanner's alignment
            applied = not res.no_gain and (register == "on" or res.misaligned)
            report["registration"][m] = {**res.summary(), "applied": bool(applied)}
            if applied:
                tx = res.transform
                transforms[m] = transform_to_arrays(tx)
        report_progress(0.25 + 0.45 * (i + 1) / len(series), f"resampling {m}")
        work[m] = resample_to(arr, geom, grid.geometry, grid.shape, transform=tx)
    orient = Orientation.from_geometry(grid.geometry)
    images = orient.to_canonical(np.stack([work[m] for m in series]))
    brain = None
    unmasked = None
    if do_bet:
        if entry is not None:
            brain = np.array(entry.brain, bool)
            report["brain_extraction"] = dict(entry.brain_extraction or {})
        else:
            from napari_ssseg.ml.brain_extraction import extract_brain_case

            report_progress(0.75, "brain extraction (deepbet)")
            sp = orient.canonical_geometry(grid.geometry, grid.shape).spacing_zyx
            brain, info = extract_brain_case(images, list(series), sp)
            report["brain_extraction"] = info
        if keep_unmasked:
            unmasked = images
        images = np.where(brain[None], images, 0).astype(np.float32)
    if store is not None and key is not None and entry is None:
        written = store.store(
            key,
            CachedPreparation(
                grid=grid.to_dict(),
                registration={m: report["registration"][m] for m in to_register},
                transforms=transforms,
                brain=brain,
                brain_extraction=report.get("brain_extraction"),
            ),
        )
        report["cache"]["written"] = written is not None
    report_progress(0.95, "building the working-grid case")
    out = Case(
        images=images,
        modalities=tuple(series),
        geometry=grid.geometry,
        orientation=orient,
        name=cf.name,
        sources={m: str(cf.files[m]) for m in series},
    )
    report["working_grid"] = grid.to_dict()
    return ClinicalCase(
        case=out,
        grid=grid,
        brain=brain,
        report=report,
        unmasked=unmasked,
        cache=store,
        cache_key=key,
    )


def prepare_workspace_case(
    ws: Any,
    case_id: str,
    version: int | None = None,
    *,
    progress: Callable[[float, str], None] | None = None,
    keep_unmasked: bool = False,
) -> tuple[ClinicalCase, np.ndarray | None]:
    """Prepare a workspace case marked clinical, with a label version on its working grid.

    The case's clinical options (:meth:`~napari_ssseg.io.workspace.Workspace.set_clinical`)
    drive :func:`prepare_clinical` on its image files, with the workspace's own cache
    (:meth:`~napari_ssseg.io.workspace.Workspace.clinical_cache_dir`): brain mask,
    registration transforms and working grid are saved in the workspace. The label
    version (stored on the reference series' native grid, as every workspace version is on
    the case's own grid) is mapped onto the working grid and kept as
    :attr:`ClinicalCase.native_labels`, so saving it back unchanged is exact.

    Parameters
    ----------
    ws : Workspace
    case_id : str
        A case with clinical options.
    version : int, optional
        Label version to read (None: no labels).
    progress : callable, optional
        ``progress(fraction, message)``.
    keep_unmasked : bool
        As :func:`prepare_clinical`.

    Returns
    -------
    (ClinicalCase, ndarray or None)
        The prepared case (``case.name`` is the case id, ``case.labels`` the version on the
        working grid) and the version's provenance on the working grid (or None).

    Raises
    ------
    InputError
        The case has no clinical options, or its images are missing.
    GeometryError
        The workspace's stored grid is not the reference series' grid any more.
    """
    import dataclasses

    from napari_ssseg.core.case import get_convention
    from napari_ssseg.errors import GeometryError

    rec = ws.case(case_id)
    if not rec.clinical:
        raise InputError(
            f"Case {case_id!r} is not marked as a clinical study; open it with "
            "Workspace.load_case, or mark it with Workspace.set_clinical / "
            "`ssseg workspace clinical`."
        )
    if rec.missing:
        raise InputError(
            f"Case {case_id!r} cannot be opened: its image file(s) "
            f"{', '.join(map(repr, rec.missing))} are missing. Restore them or move them back."
        )
    opts = rec.clinical
    files = {m: p for m, p in rec.images.items() if m in ("t1", "t1ce", "t2", "flair")}
    clin = prepare_clinical(
        None,
        files,
        brain_extraction=opts["brain_extraction"],
        register=opts["register"],
        resample=opts["resample"],
        progress=progress,
        keep_unmasked=keep_unmasked,
        cache=ws.clinical_cache_dir(case_id),
    )
    clin.case = dataclasses.replace(
        clin.case, name=case_id, convention=get_convention(rec.convention)
    )
    native_shape = clin.native_case().shape
    if tuple(native_shape) != tuple(rec.shape):
        raise GeometryError(
            f"Case {case_id!r}: the workspace stores its labels on a {rec.shape} grid, but its "
            f"reference series ({clin.report['reference']}) is now {tuple(native_shape)}; "
            "restore the original images."
        )
    prov = None
    if version is not None:
        native = ws.read_version(case_id, version)
        clin.native_labels = native
        clin.case.labels = clin.labels_from_native(native)
        p = ws.read_provenance(case_id, version)
        clin.native_provenance = p
        prov = None if p is None else clin.labels_from_native(p)
    return clin, prov


def orient_shape(grid: Any) -> tuple[int, int, int]:
    """Canonical array shape of the working grid (the brain mask's shape)."""
    from napari_ssseg.core.case import Orientation

    o = Orientation.from_geometry(grid.geometry)
    return tuple(int(grid.shape[a]) for a in o.axes)  # type: ignore[return-value]


def _usable(
    entry: Any, grid: Any, brain_shape: tuple[int, ...], to_register: list[str], do_bet: bool
) -> Any:
    """``entry`` if it fits this study's grid, registrations and brain mask; else None (warns)."""
    import warnings

    if entry is None:
        return None
    problem = None
    if entry.grid != grid.to_dict():
        problem = "its working grid differs from the one computed from the reference's header"
    elif set(entry.registration) != set(to_register) or not set(entry.transforms) <= set(
        to_register
    ):
        problem = "its registered series differ from the ones to register"
    elif do_bet and (entry.brain is None or tuple(entry.brain.shape) != tuple(brain_shape)):
        problem = "it has no brain mask on this working grid"
    if problem is None:
        return entry
    warnings.warn(
        f"Ignoring a clinical cache entry: {problem}; the registration and brain extraction "
        "are computed again.",
        RuntimeWarning,
        stacklevel=3,
    )
    return None
