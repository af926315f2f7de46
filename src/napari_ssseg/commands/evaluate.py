"""Compare a predicted label file with a ground-truth label file.

Reports Dice, HD95 (mm), IoU, NSD (normalised surface Dice at --tolerance mm), ASD (mm) and
RAVD for the tumour regions WT (classes 1, 2, 3), TC (1, 3) and ET (3), and with --per-class
also for each class (NCR, ED, ET). Both files must be on the same grid; distances use the
voxel spacing of the ground-truth header. Label values are decoded from each file's
convention (BraTS 2019-2021 with ET = 4, BraTS 2023 or MSD), detected from the values unless
--convention is given. With --case, the label files are read for that case (its grid and
naming convention), and GT may be omitted to use the case's own label file.

HD95 is the BraTS definition (95th percentile of the border distances of both directions
pooled) unless --hd95 directed-max (MONAI's) is given; NSD measures surface area within the
tolerance (surface elements, as DeepMind's surface-distance) unless --nsd-method voxels.
Empty masks follow the BraTS conventions: both empty gives Dice 1 and HD95 0; exactly one
empty gives Dice 0 and HD95/ASD 373.13 mm. RAVD with an empty ground truth is undefined (null
in --json output).

--lesion-wise adds the BraTS 2023+ lesion-wise Dice and HD95 of each region (26-connected
lesions, ground truth dilated before matching, 0 / 374 mm for missed and false-positive
lesions, small lesions ignored) with the rules of --challenge (glioma, ssa, meningioma,
paediatric, metastasis or post-treatment). --csv prints one row per region. See
docs/metrics.md.
"""

from __future__ import annotations

import argparse
import math


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the evaluate options to ``parser``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("pred", metavar="PRED", help="predicted label file")
    parser.add_argument(
        "gt",
        metavar="GT",
        nargs="?",
        help="ground-truth label file (optional with --case: the case's own label file)",
    )
    parser.add_argument(
        "--case",
        metavar="CASE",
        help="case folder or file the labels belong to (checks the grid, uses its convention)",
    )
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    out.add_argument("--csv", action="store_true", help="print CSV (one row per region)")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=1.0,
        metavar="MM",
        help="NSD tolerance in mm (default: %(default)s)",
    )
    parser.add_argument(
        "--convention",
        metavar="CONV",
        help="label convention of both files: brats2013, brats2021, brats2023, brats2024 or msd "
        "(default: detected from the values; MSD is never guessed)",
    )
    parser.add_argument(
        "--per-class",
        action="store_true",
        help="also report each class (NCR, ED, ET) on its own",
    )
    parser.add_argument(
        "--hd95",
        dest="hd95_definition",
        default="pooled",
        metavar="DEF",
        help="HD95 definition: pooled (BraTS, medpy; default), directed-max (MONAI) or "
        "surface-distance (DeepMind)",
    )
    parser.add_argument(
        "--nsd-method",
        default="surfels",
        metavar="M",
        help="NSD surface model: surfels (area-weighted, default) or voxels (border voxels)",
    )
    parser.add_argument(
        "--lesion-wise",
        action="store_true",
        help="add the BraTS 2023+ lesion-wise Dice and HD95 of each region",
    )
    parser.add_argument(
        "--challenge",
        default="glioma",
        metavar="NAME",
        help="lesion-wise rules: glioma (default), ssa, meningioma, paediatric, metastasis or "
        "post-treatment",
    )


def run(args: argparse.Namespace) -> int:
    """Evaluate PRED against GT and print the metrics; returns 0."""
    import json

    from napari_ssseg.core.metrics import region_metrics, to_jsonable
    from napari_ssseg.errors import InputError

    if not math.isfinite(args.tolerance) or args.tolerance < 0:
        raise InputError(
            f"--tolerance {args.tolerance!r} must be a distance >= 0 in mm (e.g. --tolerance 1)."
        )
    if args.convention is not None:
        from napari_ssseg.core.case import get_convention

        args.convention = get_convention(args.convention).name
    if args.case is not None:
        pred, gt, spacing, info = _read_with_case(args)
    else:
        if args.gt is None:
            raise InputError(
                "evaluate needs a ground-truth label file: give GT after PRED, or --case CASE "
                "to use the case's own label file."
            )
        pred, gt, spacing, info = _read_pair(args)
    from napari_ssseg.core.metrics import HD95_DEFINITIONS, NSD_METHODS
    from napari_ssseg.errors import check_choice

    args.hd95_definition = check_choice("--hd95", args.hd95_definition, HD95_DEFINITIONS)
    args.nsd_method = check_choice("--nsd-method", args.nsd_method, NSD_METHODS)
    rules = None
    if args.lesion_wise:
        from napari_ssseg.core.lesionwise import get_rules

        rules = get_rules(args.challenge)
    result = region_metrics(
        pred,
        gt,
        spacing,
        tolerance_mm=args.tolerance,
        per_class=args.per_class,
        definition=args.hd95_definition,
        nsd_method=args.nsd_method,
    )
    if rules is not None:
        from napari_ssseg.core.lesionwise import lesionwise_metrics

        lw = lesionwise_metrics(pred, gt, spacing, challenge=rules)
        for region, res in lw.items():
            result[region]["lesion_wise"] = res
    if args.json:
        print(json.dumps(to_jsonable(result), allow_nan=False))
    elif args.csv:
        print(_csv(result), end="")
    else:
        print(_table(result, spacing, args.tolerance, info, rules))
    return 0


# ----------------------------------------------------------------------------- reading
def _read_with_case(args: argparse.Namespace):
    """Read PRED (and GT, or the case's labels) on the grid of ``args.case``."""
    from napari_ssseg.errors import InputError
    from napari_ssseg.io.readers import load_case, read_labels

    case = load_case(args.case, label_errors="raise" if args.gt is None else "warn")
    pred = read_labels(args.pred, case, args.convention)
    if args.gt is not None:
        gt = read_labels(args.gt, case, args.convention)
        gt_name = args.gt
    elif case.labels is not None:
        gt = case.labels
        gt_name = case.sources.get("seg", f"labels of case {case.name}")
    else:
        raise InputError(
            f"Case {args.case!r} has no label file, so there is no ground truth to compare "
            "with. Give the ground-truth file as GT after PRED."
        )
    conv = args.convention or case.convention.name
    info = {"pred": args.pred, "gt": gt_name, "convention": conv, "case": case.name}
    return pred, gt, tuple(case.scale), info


def _read_pair(args: argparse.Namespace):
    """Read PRED and GT with SimpleITK, check their grids match, decode their conventions."""
    import SimpleITK as sitk

    from napari_ssseg.core.case import get_convention
    from napari_ssseg.errors import GeometryError, InputError
    from napari_ssseg.io.readers import (
        describe_grid,
        detect_convention,
        geometry_of,
        read_sitk,
        same_grid,
    )

    arrays, geoms, convs = [], [], []
    for role, path in (("Prediction", args.pred), ("Ground-truth", args.gt)):
        image = read_sitk(path, f"{role} label file")
        if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
            raise InputError(
                f"{role} label file {path!r} has dimension {image.GetDimension()} with "
                f"{image.GetNumberOfComponentsPerPixel()} component(s); a label map must be a "
                "single 3D volume with one integer class per voxel."
            )
        arr = sitk.GetArrayFromImage(image)
        source = f"{role} label file {path!r}"
        if not _is_integral(arr):
            raise InputError(
                f"{source} holds non-integer or non-finite values; a label file must hold "
                "whole class numbers. Use the label file, not a probability map."
            )
        conv = (
            get_convention(args.convention)
            if args.convention
            else detect_convention(arr, _naming_hint(path), source)
        )
        arrays.append(conv.decode(arr, source=source))
        geoms.append(geometry_of(image))
        convs.append(conv.name)
    if not same_grid(geoms[0], arrays[0].shape, geoms[1], arrays[1].shape):
        raise GeometryError(
            f"The prediction {args.pred!r} ({describe_grid(geoms[0], arrays[0].shape)}) and the "
            f"ground truth {args.gt!r} ({describe_grid(geoms[1], arrays[1].shape)}) are on "
            "different grids. Resample the prediction onto the ground-truth grid (nearest "
            "neighbour) or compare files saved for the same case."
        )
    conv_text = convs[0] if convs[0] == convs[1] else f"pred {convs[0]}, gt {convs[1]}"
    info = {"pred": args.pred, "gt": args.gt, "convention": conv_text, "case": None}
    return arrays[0], arrays[1], geoms[1].spacing_zyx, info


def _naming_hint(path) -> str | None:
    """Convention implied by a label file's own name (``*_seg``, ``*-seg``, ``*_segm``)."""
    from napari_ssseg.io.naming import NAMING_CONVENTION, match_modality

    m = match_modality(str(path))
    return NAMING_CONVENTION.get(m[0]) if m is not None and m[1] == "seg" else None


def _is_integral(arr) -> bool:
    import numpy as np

    if np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool:
        return True
    return bool(np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)))


# ----------------------------------------------------------------------------- output
def _fmt(value: float, digits: int) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.{digits}f}"


#: Lesion-wise columns of the CSV output (``lw_`` + the lesion-wise summary keys).
LW_COLUMNS: tuple[str, ...] = ("dice", "hd95", "n_tp", "n_fn", "n_fp", "n_small")


def _csv(result: dict) -> str:
    """CSV text: ``region`` and the six metrics, plus ``lw_*`` columns with --lesion-wise."""
    import csv
    import io

    from napari_ssseg.core.metrics import METRIC_NAMES

    lesion = any("lesion_wise" in m for m in result.values())
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["region", *METRIC_NAMES, *((f"lw_{k}" for k in LW_COLUMNS) if lesion else ())])
    for name, m in result.items():
        row = [name, *(_cell(m[k]) for k in METRIC_NAMES)]
        if lesion:
            lw = m.get("lesion_wise") or {}
            row += [_cell(lw.get(k)) for k in LW_COLUMNS]
        w.writerow(row)
    return buf.getvalue()


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, int):
        return str(v)
    return f"{v:.6g}" if math.isfinite(v) else ""


def _table(result: dict, spacing, tolerance: float, info: dict, rules=None) -> str:
    """Readable table of the metrics with a header saying what was compared."""
    sp = " x ".join(f"{s:g}" for s in spacing)
    lines = [
        f"prediction:   {info['pred']}",
        f"ground truth: {info['gt']}",
        f"conventions:  {info['convention']}"
        + (f"   case: {info['case']}" if info.get("case") else ""),
        f"spacing (Z, Y, X): {sp} mm   NSD tolerance: {tolerance:g} mm",
        "",
        f"{'region':<8}{'Dice':>8}{'IoU':>8}{'HD95 mm':>10}{'ASD mm':>9}{'NSD':>8}{'RAVD':>8}",
    ]
    for name, m in result.items():
        lines.append(
            f"{name:<8}{_fmt(m['dice'], 4):>8}{_fmt(m['iou'], 4):>8}{_fmt(m['hd95'], 2):>10}"
            f"{_fmt(m['asd'], 2):>9}{_fmt(m['nsd'], 4):>8}{_fmt(m['ravd'], 4):>8}"
        )
    if rules is not None:
        lines += [
            "",
            f"lesion-wise ({rules.challenge} rules: dilation {rules.dilation}, lesions above "
            f"{rules.min_volume_mm3:g} mm3 counted, missed / false-positive lesions 0 / 374 mm)",
            f"{'region':<8}{'Dice':>8}{'HD95 mm':>10}{'TP':>5}{'FN':>5}{'FP':>5}{'small':>7}",
        ]
        for name, m in result.items():
            lw = m.get("lesion_wise")
            if lw is None:
                continue
            lines.append(
                f"{name:<8}{_fmt(lw['dice'], 4):>8}{_fmt(lw['hd95'], 2):>10}{lw['n_tp']:>5}"
                f"{lw['n_fn']:>5}{lw['n_fp']:>5}{lw['n_small']:>7}"
            )
    return "\n".join(lines)
