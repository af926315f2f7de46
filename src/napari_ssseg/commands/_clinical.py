"""Clinical-scan options shared by `ssseg preprocess`, `predict`, `refine` and `propagate`.

``--brain-extraction auto|on|off``, ``--register auto|on|off``, ``--resample MM`` and
``--no-clinical-cache``; see docs/clinical-scans.md. The registration transforms, brain mask
and working grid of a study are cached (:mod:`napari_ssseg.ml.clinical_cache`), so a second
command on the same study skips registration and brain extraction. Stdlib-only at import
time; the work is in :mod:`napari_ssseg.ml.clinical`.
"""

from __future__ import annotations

import argparse
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
    g.add_argument(
        "--no-clinical-cache",
        action="store_true",
        help="do not read or write the per-study cache of registration transforms, brain "
        "mask and working grid ($NAPARI_SSSEG_CACHE/clinical, default "
        "~/.cache/napari-ssseg/clinical)",
    )
    for m in ("t1", "t1ce", "t2", "flair"):
        g.add_argument(f"--{m}", metavar="FILE", help=f"the {m} series (overrides CASE)")


def prepare_clinical(args: argparse.Namespace, files: dict | None = None) -> Any:
    """:func:`napari_ssseg.ml.clinical.prepare_clinical` with a command's options.

    ``files`` (``{modality: path}``, e.g. from ``--modality MOD=FILE``) overrides CASE's, and
    ``--t1`` etc. override both. A study that does not look skull-stripped is reported on
    stderr. Returns a :class:`~napari_ssseg.ml.clinical.ClinicalCase`.
    """
    import sys

    from napari_ssseg.ml.clinical import prepare_clinical as _prepare

    explicit = dict(files or {})
    explicit.update(
        {m: getattr(args, m) for m in ("t1", "t1ce", "t2", "flair") if getattr(args, m, None)}
    )
    clin = _prepare(
        args.case if args.case not in (None, "-") else None,
        explicit,
        brain_extraction=args.brain_extraction,
        register=args.register,
        resample=args.resample,
        cache=not getattr(args, "no_clinical_cache", False),
    )
    note = clin.extraction_note()
    if note is not None:
        if clin.brain is None or not clin.report.get("brain_extraction"):
            print("warning: " + note, file=sys.stderr)
        else:  # extracted: say so, rather than advise what was just done
            print(f"note: {note} (--brain-extraction off to keep the skull)", file=sys.stderr)
    return clin


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
        ``(C, Z, Y, X)``) as images. ``to_native(labels, base=native_labels)``: labels made
        from ``native_labels`` keep their native values exactly away from any change.
    """
    import numpy as np

    from napari_ssseg.io.readers import load_case

    files = {k: load_kwargs[k] for k in ("t1", "t1ce", "t2", "flair") if load_kwargs.get(k)}
    explicit = any(getattr(args, m, None) for m in ("t1", "t1ce", "t2", "flair"))
    clin = None
    if explicit or (args.brain_extraction, args.register, args.resample) != ("off", "off", None):
        clin = prepare_clinical(args, files)
        if not clin.changed and not explicit:
            clin = None
    if clin is None:
        case = load_case(args.case, convention=convention, **load_kwargs)
        if inverse:
            return case, case, lambda a, base=None: a, lambda a: a
        return case, case, lambda a, base=None: a

    from napari_ssseg.core.case import Orientation
    from napari_ssseg.core.working_grid import image_to_native, labels_from_native

    grid = clin.grid
    o_ref = Orientation.from_geometry(grid.reference_geometry)
    o_work = Orientation.from_geometry(grid.geometry)
    native = clin.native_case()

    def to_native(arr, base=None):
        a = np.asarray(arr)
        if np.issubdtype(a.dtype, np.integer) or a.dtype == bool:
            return clin.mask_to_native(a, base=base)
        return o_ref.to_canonical(image_to_native(o_work.from_canonical(a), grid))

    def from_native(arr):
        lab = labels_from_native(o_ref.from_canonical(np.asarray(arr)), grid)
        return o_work.to_canonical(lab)

    if inverse:
        return clin.case, native, to_native, from_native
    return clin.case, native, to_native
