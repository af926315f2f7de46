"""Brain mask, crop, (N4,) percentile clip and z-score a case; write the result.

Loads CASE (any layout `ssseg info` reads), computes the brain mask (voxels non-zero in any
modality, holes filled, largest component), crops to its bounding box plus --margin voxels,
optionally corrects the bias field with N4 (SimpleITK; slow, seconds per modality), clips
each modality to the --clip percentiles over brain voxels and z-scores it over brain voxels
(0 outside the brain).

The results are written on the case's ORIGINAL grid (the crop is undone before saving), with
the exact source geometry, into OUT_DIR in BraTS 2021 naming - NAME_t1.nii.gz, NAME_t1ce,
NAME_t2, NAME_flair, NAME_brainmask.nii.gz (uint8 0/1), NAME_seg.nii.gz if the case has
labels - plus preprocess.json with the parameters and the crop box. OUT_DIR can be loaded as
a case again.

Clinical scans (not skull-stripped, each series on its own grid; docs/clinical-scans.md):
the series are read on their own grids (CASE, or --t1/--t1ce/--t2/--flair), a case that is
not skull-stripped is reported on stderr, and with --brain-extraction auto (the default) the
brain is extracted with deepbet on the T1 (then T1Gd; needs the `clinical` extra).
--register auto aligns series on other grids to the reference (FLAIR) by mutual information
and refuses a result that fails its check. The images are then written on the isotropic
working grid (--resample, 1 mm for a clinical case) and the brain mask also on the
reference's native grid (NAME_brainmask_native.nii.gz); preprocess.json records the
detection, registration, extraction and grid. A BraTS-style case is left as it is.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the preprocess options to ``parser``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("case", metavar="CASE", nargs="?", default=None, help="case folder or file")
    parser.add_argument("--out", required=True, metavar="OUT_DIR", help="output folder")
    parser.add_argument(
        "--margin", type=int, default=2, metavar="N", help="voxels kept around the brain (2)"
    )
    parser.add_argument(
        "--clip",
        type=float,
        nargs=2,
        default=(0.5, 99.5),
        metavar=("LO", "HI"),
        help="percentiles over brain voxels to clip each modality to (0.5 99.5)",
    )
    parser.add_argument("--no-clip", action="store_true", help="do not clip intensities")
    parser.add_argument("--n4", action="store_true", help="N4 bias-field correction (slow)")
    parser.add_argument(
        "--convention",
        metavar="CONV",
        help="label convention of the case's label file (default: detected)",
    )
    from napari_ssseg.commands._clinical import add_clinical_arguments

    add_clinical_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Preprocess and write; print the written files. Returns 0."""
    import json
    import time
    from pathlib import Path

    import numpy as np

    from napari_ssseg.commands._clinical import prepare_clinical
    from napari_ssseg.core.case import Case, Orientation
    from napari_ssseg.core.preprocess import preprocess_case
    from napari_ssseg.errors import InputError
    from napari_ssseg.io.atomic import atomic_write_text, check_writable_dir
    from napari_ssseg.io.naming import modality_filename
    from napari_ssseg.io.readers import load_case
    from napari_ssseg.io.writers import save_image, save_labels

    t0 = time.perf_counter()
    explicit = any(getattr(args, m, None) for m in ("t1", "t1ce", "t2", "flair"))
    if args.case is None and not explicit:
        raise InputError(
            "Give CASE (a folder or file) or the series with --t1/--t1ce/--t2/--flair."
        )
    out = check_writable_dir(Path(args.out).expanduser())
    clin = None
    if explicit or (args.brain_extraction, args.register, args.resample) != ("off", "off", None):
        clin = prepare_clinical(args)
        done = (
            clin.brain is not None
            or not clin.grid.is_native
            or any(r.get("passed") for r in clin.report["registration"].values())
        )
        if not done and not explicit:
            clin = None
    case = clin.case if clin is not None else load_case(args.case, convention=args.convention)
    res = preprocess_case(
        case, margin=args.margin, clip=None if args.no_clip else tuple(args.clip), n4=args.n4
    )
    full = res.uncrop(res.images, fill=0.0)
    mask = res.uncrop(res.mask.astype(np.uint8), fill=0)
    written = []
    for c, m in enumerate(case.modalities):
        written.append(
            save_image(full[c], case, out / modality_filename(case.name, m, "brats2021"))
        )
    written.append(save_image(mask, case, out / f"{case.name}_brainmask.nii.gz"))
    if case.labels is not None:
        written.append(
            save_labels(
                case.labels,
                case,
                out / modality_filename(case.name, "seg", "brats2021"),
                "brats2021",
            )
        )
    meta = {
        "case": str(args.case),
        "name": case.name,
        "modalities": list(case.modalities),
        "full_shape_zyx": list(res.full_shape),
        "crop_start_zyx": [int(s.start) for s in res.bbox],
        "crop_stop_zyx": [int(s.stop) for s in res.bbox],
        "params": res.params,
        "brain_voxels": int(res.mask.sum()),
        "note": "images are z-scored over the brain (0 outside), on the original grid",
    }
    if clin is not None:
        meta["clinical"] = clin.report
        meta["note"] = "images are z-scored over the brain (0 outside), on the working grid"
        if clin.brain is not None:
            native = Case(
                images=np.zeros((1, *clin.grid.reference_shape), np.float32),
                modalities=(clin.report["reference"],),
                geometry=clin.grid.reference_geometry,
                orientation=Orientation.from_geometry(clin.grid.reference_geometry),
            )
            native.images = native.orientation.to_canonical(native.images)
            nat = clin.mask_to_native(clin.brain)
            written.append(
                save_image(
                    nat.astype(np.uint8), native, out / f"{case.name}_brainmask_native.nii.gz"
                )
            )
    meta_path = out / "preprocess.json"
    atomic_write_text(meta_path, json.dumps(meta, indent=2) + "\n")
    written.append(meta_path)
    box = " x ".join(f"{s.start}:{s.stop}" for s in res.bbox)
    print(
        f"{case.name}: brain {int(res.mask.sum())} voxels, crop box (z, y, x) {box}, "
        f"clip {res.params['clip']}, n4 {res.params['n4']} ({time.perf_counter() - t0:.1f} s)"
    )
    for p in written:
        print(f"wrote {p}")
    return 0
