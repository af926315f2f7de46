"""Generate synthetic multimodal brain-tumour cases (phantoms) with ground-truth labels.

Writes N case folders under OUT_DIR; case i is drawn from seed S+i, so the same command
always writes the same voxels. Each case holds T1, T1Gd, T2 and FLAIR images (skull-stripped,
zero background) and a label file with necrotic core, oedema and enhancing tumour, in the
dataset layout chosen with --naming (labels in that layout's convention). The images are
synthetic: use them to try the tools and to test, not to judge clinical performance (see
docs/sample-data.md).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the phantom options to ``parser``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder to write the case folders to")
    parser.add_argument("--cases", type=int, default=1, metavar="N", help="number of cases (1)")
    parser.add_argument(
        "--seed", type=int, default=0, metavar="S", help="seed of the first case (0)"
    )
    parser.add_argument(
        "--shape",
        type=int,
        nargs=3,
        default=(155, 240, 240),
        metavar=("Z", "Y", "X"),
        help="grid size (default: the BraTS grid 155 240 240)",
    )
    parser.add_argument(
        "--spacing",
        type=float,
        nargs=3,
        default=(1.0, 1.0, 1.0),
        metavar=("Z", "Y", "X"),
        help="voxel size in mm (default 1 1 1)",
    )
    parser.add_argument(
        "--naming",
        default="brats2021",
        help="file layout: brats2021 (*_t1, *_t1ce, *_t2, *_flair, *_seg; labels 1/2/4), "
        "brats2023 (*-t1n, *-t1c, *-t2w, *-t2f, *-seg; labels 1/2/3) or msd (4D image + "
        "label) (default brats2021)",
    )
    parser.add_argument(
        "--anatomy",
        default="synthetic",
        help="synthetic (default) or mni (MNI152 template tissue maps; needs "
        "`pip install napari-ssseg[anatomy]`)",
    )
    parser.add_argument(
        "--prefix", default="phantom", help="case names are PREFIX_SEED (default phantom)"
    )
    parser.add_argument(
        "--fixed-style",
        action="store_true",
        help="use the default appearance for every case (default: a random scanner-like "
        "appearance per seed)",
    )


def run(args: argparse.Namespace) -> int:
    """Generate and write the cases; print one line per case. Returns 0."""
    import re
    import time
    from pathlib import Path

    import numpy as np

    from napari_ssseg.core.phantom import PhantomStyle, make_phantom
    from napari_ssseg.errors import InputError, check_choice
    from napari_ssseg.io.atomic import check_writable_dir
    from napari_ssseg.io.naming import NAMINGS
    from napari_ssseg.io.writers import write_case

    if args.cases < 1 or args.cases > 10000:
        raise InputError(f"--cases {args.cases}: expected a number of cases between 1 and 10000.")
    if args.seed < 0:
        raise InputError(f"--seed {args.seed}: expected a non-negative integer.")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", args.prefix or ""):
        raise InputError(
            f"--prefix {args.prefix!r}: use letters, digits, '.', '_' or '-' (it becomes part of "
            "the folder and file names)."
        )
    naming = check_choice("--naming", args.naming, NAMINGS)
    anatomy = check_choice("--anatomy", args.anatomy, ("synthetic", "mni"))
    out = check_writable_dir(Path(args.out_dir).expanduser())
    style = PhantomStyle() if args.fixed_style else None
    shape = tuple(args.shape)
    print(
        f"writing {args.cases} phantom case(s) of shape {shape[0]}x{shape[1]}x{shape[2]} "
        f"(spacing {'x'.join(f'{s:g}' for s in args.spacing)} mm, {anatomy} anatomy, "
        f"{naming} naming) to {out}"
    )
    for i in range(args.cases):
        seed = args.seed + i
        t0 = time.perf_counter()
        ph = make_phantom(shape, tuple(args.spacing), seed, style, anatomy=anatomy)
        name = f"{args.prefix}_{seed:05d}"
        case = ph.to_case(name=name)
        folder = write_case(case, out, naming=naming, name=name)
        dt = time.perf_counter() - t0
        counts = np.bincount(ph.labels.ravel(), minlength=4)
        vox_ml = float(np.prod(ph.spacing)) / 1000.0
        files = ", ".join(sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")))
        print(
            f"{folder}  seed {seed}  NCR {counts[1] * vox_ml:.1f} ml, ED {counts[2] * vox_ml:.1f} "
            f"ml, ET {counts[3] * vox_ml:.1f} ml  ({dt:.1f} s): {files}"
        )
    return 0
