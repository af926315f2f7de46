"""Show a case's modalities: file, shape, spacing, orientation, naming and label convention.

CASE is a case folder (BraTS 2019-2021 names *_t1, *_t1ce, *_t2, *_flair, *_seg; BraTS 2023+
names *-t1n, *-t1c, *-t2w, *-t2f, *-seg; UPENN-GBM names *_T1, *_T1GD, *_T2, *_FLAIR,
*_segm; an MSD folder; or a PACS / TCIA export whose series names say the sequence, e.g.
FLAIR, T1 POST GAD, T2, T1: the mapping is printed), an MSD 4D image, or a single
BraTS-named file. Files can also be given one by one with --t1/--t1ce/--t2/--flair/--seg or
--modality MOD=FILE (which also settles an ambiguous PACS folder). A label file that cannot
be used (e.g. values of no convention, named in the warning) is reported as a warning.
The whole case is loaded and validated, so every problem `ssseg` would hit later (missing or
corrupt files, NaN voxels, label values outside the convention, disjoint grids) is reported
here. Shapes and spacings are listed in array order (Z, Y, X); the orientation code names the
direction each file index axis (i, j, k) points to, e.g. RAS for a usual NIfTI file.
"""

from __future__ import annotations

import argparse

from napari_ssseg.commands._args import add_modality_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the info options to ``parser``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "case", metavar="CASE", nargs="?", help="case folder or file (optional with --t1 ...)"
    )
    for m in ("t1", "t1ce", "t2", "flair"):
        parser.add_argument(f"--{m}", metavar="FILE", help=f"{m} image file or DICOM folder")
    parser.add_argument("--seg", metavar="FILE", help="label file")
    parser.add_argument(
        "--convention",
        metavar="CONV",
        help="label convention of the label file: brats2013, brats2021, brats2023, brats2024 "
        "or msd "
        "(default: from the naming, checked against the values)",
    )
    add_modality_argument(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _file_row(modality: str, path: str) -> dict:
    """Header-only description of one source file."""
    from pathlib import Path

    import numpy as np

    from napari_ssseg.io.readers import geometry_of, read_sitk

    img = read_sitk(Path(path))
    geom = geometry_of(img)
    size = list(img.GetSize())[:3][::-1]
    channels = img.GetNumberOfComponentsPerPixel()
    if img.GetDimension() == 4:
        channels = int(img.GetSize()[3])
    return {
        "modality": modality,
        "file": str(path),
        "shape_zyx": [int(s) for s in size],
        "channels_in_file": int(channels),
        "spacing_zyx": [round(float(s), 6) for s in geom.spacing_zyx],
        "origin_xyz_lps": [round(float(o), 4) for o in geom.origin],
        "orientation": geom.orientation_code(),
        "oblique": geom.is_oblique(),
        "direction": [round(float(d), 6) for d in np.asarray(geom.direction)],
    }


def run(args: argparse.Namespace) -> int:
    """Load the case, print its description; returns 0."""
    import json
    import sys
    import warnings
    from pathlib import Path

    import numpy as np

    from napari_ssseg.core.case import CONVENTIONS, INTERNAL_CLASSES
    from napari_ssseg.errors import InputError, check_choice
    from napari_ssseg.io.readers import load_case, parse_modality_args

    if args.convention is not None:
        check_choice("--convention", args.convention, tuple(CONVENTIONS))
    files = {m: getattr(args, m) for m in ("t1", "t1ce", "t2", "flair")}
    for m, f in parse_modality_args(args.modality).items():
        if files[m] is not None:
            raise InputError(f"--modality {m}=... and --{m} both give the {m} file; give one.")
        files[m] = f
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        case = load_case(
            args.case,
            **files,
            seg=args.seg,
            convention=args.convention,
            label_errors="warn",
        )
    notes = [str(w.message) for w in caught]
    rows = []
    seen: dict[str, dict] = {}
    for m in case.modalities:
        src = case.sources[m]
        if src not in seen:
            seen[src] = _file_row(m, src)
        row = dict(seen[src], modality=m)
        rows.append(row)
    canon = case.canonical_geometry
    info: dict = {
        "name": case.name,
        "naming": case.naming,
        "reference": "flair" if "flair" in case.modalities else case.modalities[0],
        "modalities": rows,
        "matched_by": dict(case.matched_by),
        "canonical": {
            "shape_zyx": list(case.shape),
            "spacing_zyx": [round(float(s), 6) for s in case.scale],
            "translate_zyx": [round(float(t), 4) for t in case.translate],
            "orientation": canon.orientation_code(),
        },
        "label_convention": case.convention.name,
        "label_convention_description": case.convention.description,
        "labels": None,
        "warnings": notes,
    }
    if case.labels is not None:
        counts = np.bincount(case.labels.ravel(), minlength=4)
        info["labels"] = {
            "file": case.sources.get("seg"),
            "voxels": {INTERNAL_CLASSES[i]: int(counts[i]) for i in (1, 2, 3)},
        }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"case        {case.name}")
    print(f"naming      {case.naming}")
    if case.matched_by:
        print("mapping     (by the sequence keywords of the series names)")
        for m, words in case.matched_by.items():
            print(f"  {m:<6} <- {Path(case.sources[m]).name}   [{words}]")
    conv = f"{case.convention.name} ({case.convention.description})"
    print(f"labels      {conv}")
    header = f"{'modality':<9} {'shape (Z,Y,X)':<16} {'spacing (Z,Y,X) mm':<22} {'orient':<7} file"
    print()
    print(header)
    for r in rows:
        shape = "x".join(str(s) for s in r["shape_zyx"])
        if r["channels_in_file"] > 1:
            shape += f" [{r['channels_in_file']}ch]"
        spacing = "x".join(f"{s:g}" for s in r["spacing_zyx"])
        orient = r["orientation"] + ("*" if r["oblique"] else "")
        print(f"{r['modality']:<9} {shape:<16} {spacing:<22} {orient:<7} {r['file']}")
    if info["labels"] is not None:
        lab = info["labels"]
        vox = ", ".join(f"{k} {v}" for k, v in lab["voxels"].items())
        print(f"{'seg':<9} {'':<16} {'':<22} {'':<7} {lab['file']}")
        print(f"\nlabel voxels: {vox}")
    c = info["canonical"]
    print(
        "\ncanonical (as shown in napari): shape "
        + "x".join(str(s) for s in c["shape_zyx"])
        + ", scale "
        + "x".join(f"{s:g}" for s in c["spacing_zyx"])
        + " mm, translate ("
        + ", ".join(f"{t:g}" for t in c["translate_zyx"])
        + ") mm LPS"
    )
    if any(r["oblique"] for r in rows):
        print("* oblique direction: the viewer drops the rotation; saved files keep it.")
    for n in notes:
        print(f"warning: {n}", file=sys.stderr)
    return 0
