"""Refine a pseudo-label by superpixel region growing (Thompson et al. 2022, Algorithm 1).

The whole tumour (WT) is refined on FLAIR superpixels and the tumour core (TC) on T2 + T1Gd
superpixels; TC is clipped to WT and everything stays inside the brain mask. Grown WT voxels
become oedema; grown TC voxels take the class (NCR or ET) of the nearest input core voxel.
The result is written in the case's label convention and exact geometry. With --gt, Dice
of WT and TC before and after refinement is printed. Timings (cold start: nothing cached in
memory) go to stderr. See docs/refinement.md for the algorithm and every parameter.

Clinical scans (not skull-stripped, each series on its own grid; docs/clinical-scans.md): with
the default --brain-extraction auto --register auto, a raw study is registered, resampled to a
1 mm working grid and brain-extracted (cached per study) as by `ssseg predict`; --pseudo and
--gt are then read on the reference series' (FLAIR's) native grid (or on the working grid),
refinement runs on the working grid, and --out is written on the native grid. Dice is measured
on the native grid.

Example:
  ssseg refine BraTS2021_00000/ --pseudo proposal.nii.gz --out refined.nii.gz --gt seg.nii.gz
  ssseg refine TCGA-FG-6692-raw/ --pseudo labels.nii.gz --out refined.nii.gz
"""

from __future__ import annotations

import argparse
import sys
import time

from napari_ssseg import defaults
from napari_ssseg.commands._args import add_modality_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the refine options to ``parser``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("case", metavar="CASE", help="case folder or file (the images)")
    parser.add_argument(
        "--pseudo", required=True, metavar="LABELS", help="pseudo-label file to refine"
    )
    parser.add_argument("--out", required=True, metavar="OUT", help="refined label file")
    parser.add_argument(
        "--region",
        default="all",
        metavar="{wt,tc,all}",
        help="region(s) to refine (default: %(default)s)",
    )
    parser.add_argument(
        "--sim0",
        type=float,
        default=None,
        metavar="F",
        help="stopping similarity in [0, 1] (default: the tuned default, see docs)",
    )
    parser.add_argument(
        "--nc",
        type=int,
        default=None,
        metavar="N",
        help=f"candidates checked per merge minus one, >= 1 (default: {defaults.NC})",
    )
    parser.add_argument(
        "--n-segments",
        type=int,
        default=None,
        metavar="N",
        # None: core.refine.DEFAULT_N_SEGMENTS, which is defaults.N_SEGMENTS
        help=f"approximate number of superpixels (default: {defaults.N_SEGMENTS})",
    )
    parser.add_argument(
        "--compactness",
        type=float,
        default=defaults.COMPACTNESS,
        metavar="F",
        help="SLIC compactness (default: %(default)s)",
    )
    parser.add_argument(
        "--sigma",
        type=float,
        default=defaults.SIGMA,
        metavar="F",
        help=f"SLIC smoothing in mm (default: {defaults.SIGMA:g})",
    )
    parser.add_argument(
        "--output",
        default=None,
        metavar="{added,union,superpixels}",
        help="how the refined mask is assembled (default: the tuned default, see docs)",
    )
    parser.add_argument(
        "--fill",
        type=float,
        default=None,
        metavar="F",
        help="with --output union: fill seed superpixels covered at least this much by the "
        f"pseudo-label, in [0.5, 1] (default {defaults.FILL:g})",
    )
    parser.add_argument(
        "--fill-edge",
        type=float,
        default=None,
        metavar="K",
        help="with --output union: fill a seed superpixel only where the pseudo-label's "
        f"boundary inside it is weak (border <= K x median border; default "
        f"{defaults.FILL_EDGE:g}, inf = always)",
    )
    parser.add_argument(
        "--shrink",
        action="store_true",
        help="also drop boundary superpixels dissimilar to the region (project extension)",
    )
    parser.add_argument(
        "--keep-components",
        action="store_true",
        help="keep every connected component of the pseudo-label (default: small components "
        "that look unlike the largest one and like their surroundings are dropped; "
        "project extension)",
    )
    parser.add_argument(
        "--mutual",
        default=None,
        metavar="{region,member}",
        help="mutual-best rule: 'region' (the paper's, default) or 'member' (a candidate may "
        "also prefer one of the region's superpixels; project extension)",
    )
    parser.add_argument(
        "--mutual-tolerance",
        type=float,
        default=None,
        metavar="T",
        help="relax the mutual-best test by this fraction, in [0, 1) (default 0, the paper's "
        "rule; project extension; grows further but can leak: raise --sim0, e.g. 0.2 with "
        "--sim0 0.45)",
    )
    parser.add_argument(
        "--paper",
        action="store_true",
        help="the paper's Algorithm 1 only: no component pre-step, strict mutual-best rule",
    )
    parser.add_argument(
        "--gt", metavar="GT", help="ground-truth label file: print Dice before and after"
    )
    parser.add_argument(
        "--convention",
        metavar="CONV",
        help="label convention of --pseudo/--gt (default: the case's, checked on the values)",
    )
    add_modality_argument(parser)
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="do not read or write the superpixel and feature caches",
    )
    from napari_ssseg.commands._clinical import add_clinical_arguments

    add_clinical_arguments(parser)  # --brain-extraction --register --resample (clinical scans)


def run(args: argparse.Namespace) -> int:
    """Refine ``--pseudo`` on CASE and write ``--out``; returns 0."""
    import numpy as np

    from napari_ssseg.commands._clinical import load_case_clinical
    from napari_ssseg.core import refine as R
    from napari_ssseg.errors import GeometryError, InputError, check_choice
    from napari_ssseg.io.readers import parse_modality_args, read_labels
    from napari_ssseg.io.writers import save_labels

    t_start = time.perf_counter()
    times: list[tuple[str, float]] = []

    def lap(name: str, t0: float) -> float:
        t = time.perf_counter()
        times.append((name, t - t0))
        return t

    region = check_choice("--region", args.region, ("wt", "tc", "all"))
    regions = ("wt", "tc") if region == "all" else (region,)
    sim0 = R.check_sim0(R.DEFAULT_SIM0 if args.sim0 is None else args.sim0)
    n_c = R.check_nc(R.DEFAULT_NC if args.nc is None else args.nc)
    if args.mutual is not None:
        check_choice("--mutual", args.mutual, ("region", "member"))
    if args.mutual_tolerance is not None:
        t = float(args.mutual_tolerance)
        if not (0.0 <= t < 1.0):
            raise InputError(
                f"--mutual-tolerance {args.mutual_tolerance} is out of range; it must lie in "
                f"[0, 1) (0 = the paper's mutual-best rule, the default)."
            )
    output = None  # the tuned per-region default
    if args.output is not None:
        output = check_choice("--output", args.output, ("added", "union", "superpixels"))
    n_segments = R.DEFAULT_N_SEGMENTS if args.n_segments is None else int(args.n_segments)
    if n_segments < 2:
        raise InputError(
            f"--n-segments {args.n_segments} must be an integer >= 2 (e.g. {defaults.N_SEGMENTS})."
        )

    t = time.perf_counter()
    # clinical scans (raw studies): refine on the registered, brain-extracted working grid;
    # --pseudo, --gt and --out stay on the reference series' native grid
    case, out_case, to_native, from_native = load_case_clinical(
        args, inverse=True, label_errors="warn", **parse_modality_args(args.modality)
    )  # the case's own labels are not needed
    clinical = out_case is not case

    def read_native(path: str) -> np.ndarray:
        """Labels on the native grid (or, for a clinical case, on the working grid)."""
        if not clinical:
            return read_labels(path, case, args.convention)
        try:
            return read_labels(path, out_case, args.convention)
        except GeometryError:
            try:  # e.g. labels saved from napari on the working grid
                return to_native(read_labels(path, case, args.convention))
            except GeometryError:
                pass
            raise GeometryError(
                f"{path!r} is neither on {case.name}'s reference ({out_case.modalities[0]}) "
                f"native grid {tuple(out_case.file_shape)} nor on its working grid "
                f"{tuple(case.file_shape)} (file order Z, Y, X). Give labels drawn on the "
                "reference series."
            ) from None

    pseudo_native = read_native(args.pseudo)
    gt = read_native(args.gt) if args.gt else None
    pseudo = from_native(pseudo_native) if clinical else pseudo_native
    if not np.any(pseudo > 0):
        raise InputError(
            f"--pseudo {args.pseudo!r} holds no tumour voxel: nothing to grow from. Give a "
            f"pseudo-label (e.g. a model proposal) with at least part of the tumour labelled."
        )
    t = lap("load", t)

    options = R.RefineOptions(
        sim0=sim0,
        n_c=n_c,
        shrink=args.shrink,
        output=output,
        fill=args.fill,
        fill_edge=args.fill_edge,
        mutual=args.mutual,
        mutual_tolerance=args.mutual_tolerance,
        components=False if args.keep_components else None,
    )
    if args.paper:  # Thompson et al.'s Algorithm 1: no extension
        options = options.replace(components=False, mutual="region", mutual_tolerance=0.0)
    result = R.refine_case(
        case,
        pseudo,
        options=options,
        n_segments=n_segments,
        compactness=args.compactness,
        sigma=args.sigma,
        regions=regions,
        cache=not args.no_cache,
    )
    # refine_case's per-stage timings: brain mask, superpixels, features+graph, refine
    n_sp = result.info["superpixels"]
    for name, seconds in result.info["timings"].items():
        if name.startswith("superpixels "):
            name += f" ({n_sp[name.split()[-1].lower()]})"
        times.append((name, seconds))
    t = time.perf_counter()
    # the case's own grid, or the reference's native grid (voxels away from any change
    # keep the --pseudo file's values exactly)
    refined = to_native(result.labels, base=pseudo_native if clinical else None)
    out = save_labels(refined, out_case, args.out)
    t = lap("write", t)

    added = int(result.provenance.sum())
    if clinical:
        print(
            f"refined on the {'x'.join(f'{v:g}' for v in case.scale)} mm working grid "
            f"{'x'.join(str(n) for n in case.shape)}; written on the "
            f"{out_case.modalities[0]}'s native grid"
        )
    print(
        f"refined {case.name}: region(s) {', '.join(x.upper() for x in regions)}, "
        f"sim0={sim0:g}, n_c={n_c}, output={output or 'default'}; "
        f"{added} voxels came from superpixels"
    )
    for r, inf in result.info["regions"].items():
        if "skipped" in inf:
            print(f"  {r.upper()}: {inf['skipped']}")
        else:
            print(
                f"  {r.upper()}: seed {inf['seed_superpixels']} superpixels, merged "
                f"{inf['merged']}, removed {inf['removed']}"
            )
    if gt is not None:
        from napari_ssseg.core.metrics import region_dice

        before, after = region_dice(pseudo_native, gt), region_dice(refined, gt)
        print("Dice       before    after    change")
        for name, b in before.items():
            a = after[name]
            print(f"  {name}     {b:7.4f}  {a:7.4f}  {a - b:+8.4f}")
    print(f"wrote {out}")
    total = time.perf_counter() - t_start
    hits = [r.upper() for r, hit in result.info["feature_cache_hit"].items() if hit]
    print(
        "timing (cold start of the process"
        + (f"; feature cache hit for {', '.join(hits)}" if hits else "")
        + "): "
        + ", ".join(f"{n} {s:.2f} s" for n, s in times)
        + f"; total {total:.2f} s",
        file=sys.stderr,
    )
    return 0
