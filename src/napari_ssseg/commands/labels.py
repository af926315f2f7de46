"""Label-file utilities.

`ssseg labels convert LABELS --case CASE --out OUT --to CONV` rewrites a
label file in another label convention with identical geometry (spacing, origin, direction and
voxel order are copied from LABELS unchanged; only the values change):

  brats2013  BRATS 2013-2015: 0, 1 necrosis, 2 oedema, 3 non-enhancing, 4 enhancing
             (3 joins the core as NCR; written as 1)
  brats2021  BraTS 2019-2021: 0 background, 1 NCR/NET, 2 ED, 4 ET (also UPENN-GBM)
  brats2023  BraTS 2023+:     0 background, 1 NCR, 2 ED, 3 ET
  brats2024  BraTS 2024 post-treatment: 1 NETC, 2 SNFH, 3 ET, 4 RC (the resection cavity is
             not tumour: read as background, not written)
  msd        MSD Task01:      0 background, 1 edema, 2 non-enhancing, 3 enhancing

The source convention is taken from --from, else from the case (its naming, checked against
the values), else detected from the values (3 and 4 together: brats2013 with *_seg names,
brats2024 with *-seg names; a 4 alone: brats2021; otherwise brats2023; MSD is never guessed
because it uses the same values as BraTS 2023). With --case, the label file must
lie on the case's grid.
"""

from __future__ import annotations

import argparse

_CONVENTIONS = ("brats2013", "brats2021", "brats2023", "brats2024", "msd")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``labels`` subcommands to ``parser``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    sub = parser.add_subparsers(dest="labels_command", metavar="SUBCOMMAND")
    conv = sub.add_parser(
        "convert",
        help="rewrite a label file in another convention (same geometry)",
        description="Rewrite LABELS in the convention --to, with identical geometry.",
    )
    conv.add_argument("labels", metavar="LABELS", help="label file to convert")
    conv.add_argument(
        "--case",
        metavar="CASE",
        help="case folder or file the labels belong to (checks the grid; its naming gives the "
        "default source convention)",
    )
    conv.add_argument("--out", metavar="OUT", required=True, help="output label file")
    conv.add_argument(
        "--to", dest="to", metavar="CONV", required=True, help=f"one of {', '.join(_CONVENTIONS)}"
    )
    conv.add_argument(
        "--from",
        dest="from_",
        metavar="CONV",
        help="convention of LABELS (default: from the case naming or the values)",
    )


def run(args: argparse.Namespace) -> int:
    """Dispatch the ``labels`` subcommand; returns the exit status."""
    if getattr(args, "labels_command", None) != "convert":
        print("usage: ssseg labels convert LABELS --out OUT --to CONV [--case CASE] [--from CONV]")
        return 2
    return _convert(args)


def _convert(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    import numpy as np

    from napari_ssseg.core.case import get_convention
    from napari_ssseg.errors import GeometryError, InputError, check_choice
    from napari_ssseg.io.naming import NAMING_CONVENTION, match_modality
    from napari_ssseg.io.readers import (
        _array_of,
        _reorient_exactly,
        describe_grid,
        detect_convention,
        geometry_of,
        load_case,
        read_sitk,
        same_grid,
    )
    from napari_ssseg.io.writers import _check_output_path, to_sitk, write_sitk

    to = get_convention(check_choice("--to", args.to, _CONVENTIONS))
    src = Path(args.labels)
    out = _check_output_path(args.out, "Output --out")
    image = read_sitk(src, "Label file")
    values = _array_of(image, f"Label file {str(src)!r}")
    if values.ndim != 3:
        raise InputError(
            f"Label file {str(src)!r} is 4D (shape {values.shape}); a label map must be one 3D "
            "volume."
        )
    geom = geometry_of(image)
    preferred = None
    if args.case is not None:
        case = load_case(args.case)
        if not same_grid(geom, values.shape, case.geometry, case.file_shape) and (
            _reorient_exactly(values, geom, case.geometry, case.file_shape) is None
        ):
            raise GeometryError(
                f"Label file {str(src)!r} is on a different grid "
                f"({describe_grid(geom, values.shape)}) than case {case.name!r} "
                f"({describe_grid(case.geometry, case.file_shape)}). Pass the case the labels "
                "were drawn on, or drop --case to convert the values only."
            )
        preferred = case.convention.name
    else:
        m = match_modality(src.name)
        if m is not None and m[1] == "seg":
            preferred = NAMING_CONVENTION[m[0]]
    source = f"Label file {str(src)!r}"
    if args.from_ is not None:
        frm = get_convention(check_choice("--from", args.from_, _CONVENTIONS))
    else:
        frm = detect_convention(values, preferred, source)
    internal = frm.decode(values, source=source)
    encoded = to.encode(internal).astype(np.uint8)
    # same voxel order, and spacing/origin/direction copied exactly (float64) from LABELS
    write_sitk(to_sitk(encoded, geom), out)
    counts = np.bincount(internal.ravel(), minlength=4)
    print(
        f"wrote {out} ({frm.name} -> {to.name}; voxels NCR {counts[1]}, ED {counts[2]}, "
        f"ET {counts[3]})",
        file=sys.stdout,
    )
    return 0
