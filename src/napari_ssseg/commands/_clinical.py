"""Clinical-scan options shared by `ssseg preprocess` (and, later, predict/refine/propagate).

``--brain-extraction auto|on|off``, ``--register auto|on|off`` and ``--resample MM``; see
docs/clinical-scans.md. Stdlib-only at import time.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any


def add_clinical_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the clinical-scan options to ``parser``."""
    g = parser.add_argument_group("clinical scans (not skull-stripped, each series its own grid)")
    g.add_argument(
        "--brain-extraction",
        choices=("auto", "on", "off"),
        default="auto",
        help="deepbet brain extraction on T1 (then T1Gd); auto: when not skull-stripped (auto)",
    )
    g.add_argument(
        "--register",
        choices=("auto", "on", "off"),
        default="auto",
        help="rigid registration to the reference (Mattes MI, checked); auto: when the series "
        "are on different grids and the registration finds them misaligned (auto)",
    )
    g.add_argument(
        "--resample",
        type=float,
        default=None,
        metavar="MM",
        help="isotropic working grid in mm (default: 1 for a clinical case, else none)",
    )
    for m in ("t1", "t1ce", "t2", "flair"):
        g.add_argument(f"--{m}", metavar="FILE", help=f"the {m} series (overrides CASE)")


@dataclass
class ClinicalCase:
    """A case on its working grid plus the way back to the reference's native grid."""

    case: Any  # Case on the working grid (canonical)
    grid: Any  # WorkingGrid
    brain: Any | None  # (Z, Y, X) bool canonical on the working grid, or None
    report: dict = field(default_factory=dict)

    def mask_to_native(self, mask):
        """A canonical working-grid mask/labels as canonical labels on the native grid."""
        import numpy as np

        from napari_ssseg.core.case import Orientation
        from napari_ssseg.core.working_grid import labels_to_native

        o = Orientation.from_geometry(self.grid.geometry)
        native = labels_to_native(o.from_canonical(np.asarray(mask, np.uint8)), self.grid)
        return Orientation.from_geometry(self.grid.reference_geometry).to_canonical(native)


def prepare_clinical(args: argparse.Namespace, files: dict | None = None) -> ClinicalCase:
    """Read the series natively, register, resample, detect and extract the brain.

    ``files`` (``{modality: path}``, e.g. from ``--modality MOD=FILE``) overrides CASE's.
    """
    import numpy as np

    from napari_ssseg.core.case import Case, Geometry, Orientation
    from napari_ssseg.core.registration import register_rigid
    from napari_ssseg.core.skullstrip import skull_strip_check
    from napari_ssseg.core.working_grid import make_working_grid, resample_to, to_sitk
    from napari_ssseg.io.readers import find_case_files, read_image

    explicit = {m: getattr(args, m, None) for m in ("t1", "t1ce", "t2", "flair")}
    explicit.update({k: v for k, v in (files or {}).items() if k in explicit})
    cf = find_case_files(args.case if args.case not in (None, "-") else None, **explicit)
    series: dict[str, tuple[np.ndarray, Geometry]] = {}
    for m in cf.modalities:
        series[m] = read_image(cf.files[m])
    ref = "flair" if "flair" in series else next(iter(series))
    ref_arr, ref_geom = series[ref]
    same = all(a.shape == ref_arr.shape and g.allclose(ref_geom) for a, g in series.values())
    report: dict = {"reference": ref, "same_grid": same, "registration": {}}
    raw = skull_strip_check(
        np.stack([a.astype(np.float32) for a, g in series.values()]) if same else ref_arr,
        ref_geom.spacing[::-1],
        list(series) if same else [ref],
    )
    report["skull_stripped"] = raw.to_dict()
    clinical = (not raw.stripped) or (not same)
    spacing = args.resample if args.resample is not None else (1.0 if clinical else None)
    grid = make_working_grid(ref_geom, ref_arr.shape, spacing)
    fixed = to_sitk(ref_arr.astype(np.float32), ref_geom)
    work = {}
    for m, (arr, geom) in series.items():
        tx = None
        if m != ref and (args.register == "on" or (args.register == "auto" and not same)):
            res = register_rigid(fixed, to_sitk(arr.astype(np.float32), geom))
            res.check(f"the {m} series")
            report["registration"][m] = res.summary()
            if args.register == "on" or res.misaligned:
                tx = res.transform
        work[m] = resample_to(arr, geom, grid.geometry, grid.shape, transform=tx)
    orient = Orientation.from_geometry(grid.geometry)
    images = orient.to_canonical(np.stack([work[m] for m in series]))
    brain = None
    do_bet = args.brain_extraction == "on" or (args.brain_extraction == "auto" and not raw.stripped)
    if not raw.stripped:
        import sys

        print("warning: " + raw.message(cf.name), file=sys.stderr)
    if do_bet:
        from napari_ssseg.ml.brain_extraction import extract_brain_case

        sp = orient.canonical_geometry(grid.geometry, grid.shape).spacing_zyx
        brain, info = extract_brain_case(images, list(series), sp)
        report["brain_extraction"] = info
        images = np.where(brain[None], images, 0).astype(np.float32)
    case = Case(
        images=images,
        modalities=tuple(series),
        geometry=grid.geometry,
        orientation=orient,
        name=cf.name,
        sources={m: str(cf.files[m]) for m in series},
    )
    report["working_grid"] = grid.to_dict()
    return ClinicalCase(case=case, grid=grid, brain=brain, report=report)


def load_case_clinical(
    args: argparse.Namespace,
    convention: Any = None,
    *,
    inverse: bool = False,
    **load_kwargs: Any,
):
    """Load CASE for a command, through the clinical pipeline when it applies.

    With ``inverse=True`` a fourth item is returned: ``from_native(canonical_native_labels)``
    -> canonical labels on the working grid (nearest neighbour; for label inputs such as
    pseudo-labels or scribbles drawn on the reference's native grid).

    Returns
    -------
    case : Case
        On the working grid (or the plain :func:`~napari_ssseg.io.readers.load_case` result
        when nothing clinical applies: BraTS-style cases are left exactly as before).
    out_case : Case
        The case whose grid saved outputs get (the reference's native grid).
    to_native : callable
        ``to_native(canonical_working_array)`` -> canonical array on ``out_case``'s grid;
        integer arrays are treated as labels, float arrays (``(Z, Y, X)`` or
        ``(C, Z, Y, X)``) as images.
    """
    import numpy as np

    from napari_ssseg.io.readers import load_case

    files = {k: load_kwargs[k] for k in ("t1", "t1ce", "t2", "flair") if load_kwargs.get(k)}
    explicit = any(getattr(args, m, None) for m in ("t1", "t1ce", "t2", "flair"))
    clin = None
    if explicit or (args.brain_extraction, args.register, args.resample) != ("off", "off", None):
        clin = prepare_clinical(args, files)
        done = (
            clin.brain is not None
            or not clin.grid.is_native
            or any(r.get("passed") for r in clin.report["registration"].values())
        )
        if not done and not explicit:
            clin = None
    if clin is None:
        case = load_case(args.case, convention=convention, **load_kwargs)
        if inverse:
            return case, case, lambda a: a, lambda a: a
        return case, case, lambda a: a

    from napari_ssseg.core.case import Case, Orientation
    from napari_ssseg.core.working_grid import image_to_native, labels_from_native

    grid = clin.grid
    o_ref = Orientation.from_geometry(grid.reference_geometry)
    o_work = Orientation.from_geometry(grid.geometry)
    native = Case(
        images=o_ref.to_canonical(np.zeros((1, *grid.reference_shape), np.float32)),
        modalities=(clin.report["reference"],),
        geometry=grid.reference_geometry,
        orientation=o_ref,
        name=clin.case.name,
        sources=dict(clin.case.sources),
    )

    def to_native(arr):
        a = np.asarray(arr)
        if np.issubdtype(a.dtype, np.integer) or a.dtype == bool:
            return clin.mask_to_native(a)
        return o_ref.to_canonical(image_to_native(o_work.from_canonical(a), grid))

    def from_native(arr):
        lab = labels_from_native(o_ref.from_canonical(np.asarray(arr)), grid)
        return o_work.to_canonical(lab)

    if inverse:
        return clin.case, native, to_native, from_native
    return clin.case, native, to_native
