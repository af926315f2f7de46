"""Run the whole pipeline on the embedded sample data, or on a real case with --case.

With a display (and without --headless) napari opens with the sample case (or the --case)
loaded and the plugin's panels docked. Without a display, or with --headless, every stage runs
on the sample case (generate, load, preprocess, propose, refine, scribble, evaluate, a sample
workspace, a short retraining) and writes its outputs, a summary
(summary.md, summary.json) and real screenshots of the viewer rendered under a virtual X
display (Xvfb) into the output folder. With --case PATH the same stages run on a real case
(any case folder `ssseg predict` reads, such as those in ../shared/data/real) instead of the
phantom: the case is read in place, never written to; metrics are reported only if it has a
usable label file, and the scripted scribbles are drawn from the proposal when it has none.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the demo's options to ``parser``."""
    parser.add_argument("--out", default="demo-output", help="output folder (default: %(default)s)")
    parser.add_argument(
        "--headless",
        action="store_true",
        help="run every stage and write outputs instead of opening napari "
        "(the default when there is no display)",
    )
    parser.add_argument(
        "--case",
        metavar="PATH",
        default=None,
        help="run on this real case (a case folder or file, as for ssseg predict) instead of "
        "the phantom",
    )
    parser.add_argument(
        "--shape",
        nargs=3,
        type=int,
        metavar=("Z", "Y", "X"),
        default=None,
        help="phantom grid (default: the BraTS grid 155 240 240; not with --case)",
    )
    parser.add_argument(
        "--spacing",
        type=float,
        default=None,
        help="isotropic voxel size of the phantom in mm (default: 1; not with --case)",
    )
    parser.add_argument("--seed", type=int, default=0, help="phantom seed (default: 0)")
    parser.add_argument(
        "--workspace-cases",
        type=int,
        default=3,
        metavar="N",
        help="small phantom cases added to the sample workspace (default: %(default)s; "
        "0 skips the workspace and retraining stages)",
    )
    parser.add_argument("--no-screenshot", action="store_true", help="skip the napari screenshots")
    parser.add_argument("--no-propose", action="store_true", help="skip the model proposal")
    parser.add_argument(
        "--no-scribble", action="store_true", help="skip the scripted scribbles (the slowest stage)"
    )
    parser.add_argument("--no-retrain", action="store_true", help="skip the short retraining run")


def check_case_path(path: str | os.PathLike) -> Path:
    """Check that ``path`` is a case the readers recognise (no voxels are read).

    Parameters
    ----------
    path : path-like
        What was given to ``--case``.

    Returns
    -------
    Path
        The path, user-expanded.

    Raises
    ------
    InputError
        ``path`` does not exist or holds no recognisable case; the message names the path and
        what a case looks like.
    """
    from napari_ssseg.errors import InputError
    from napari_ssseg.io.readers import find_case_files

    p = Path(path).expanduser()
    expected = (
        "a case folder with one image per modality named like BraTS 2021 (CASE_t1, _t1ce, _t2, "
        "_flair), BraTS 2023 (CASE-t1n, -t1c, -t2w, -t2f) or UPENN-GBM (CASE_T1, _T1GD, _T2, "
        "_FLAIR), or an MSD 4D image, e.g. ../shared/data/real/BraTS-GLI-00000-000"
    )
    if not p.exists():
        raise InputError(
            f"ssseg demo --case {str(path)!r}: no such file or folder (relative paths start at "
            f"{os.getcwd()!r}). Expected {expected}."
        )
    try:
        find_case_files(p)
    except InputError as exc:
        raise InputError(
            f"ssseg demo --case {str(path)!r} is not a case: {exc} Expected {expected}; "
            "or leave out --case to run the demo on the phantom."
        ) from exc
    return p


def run(args: argparse.Namespace) -> int:
    """Run the demo; returns 0 when every stage that ran succeeded."""
    from napari_ssseg.errors import InputError

    if args.workspace_cases < 0:
        raise InputError(
            f"--workspace-cases {args.workspace_cases}: expected 0 (no workspace) or more."
        )
    case_dir = None
    if args.case is not None:
        given = [opt for opt, v in (("--shape", args.shape), ("--spacing", args.spacing)) if v]
        if given:
            raise InputError(
                f"{' and '.join(given)} set the phantom's grid and cannot be used with --case "
                f"{args.case!r} (the case has its own). Leave {' and '.join(given)} out."
            )
        case_dir = check_case_path(args.case)
        shape, spacing = (155, 240, 240), 1.0  # replaced by the case's own on loading
    else:
        shape = tuple(int(s) for s in (args.shape or (155, 240, 240)))
        spacing = 1.0 if args.spacing is None else args.spacing
        if min(shape) < 16:
            raise InputError(f"--shape {shape}: every axis needs at least 16 voxels.")
        if not 0.2 <= spacing <= 5:
            raise InputError(f"--spacing {spacing}: expected a voxel size between 0.2 and 5 mm.")
    interactive = not args.headless and bool(os.environ.get("DISPLAY"))
    if interactive:
        from napari_ssseg._napari.launch import launch_demo_viewer

        launch_demo_viewer(shape=shape, seed=args.seed, spacing=(spacing,) * 3, case=case_dir)
        return 0
    from napari_ssseg.demo import DemoConfig, run_demo

    summary = run_demo(
        DemoConfig(
            out_dir=Path(args.out),
            shape=shape,
            spacing=(spacing,) * 3,
            seed=args.seed,
            screenshot=not args.no_screenshot,
            propose=not args.no_propose,
            retrain=not args.no_retrain,
            workspace_cases=args.workspace_cases,
            scribble=not args.no_scribble,
            case_dir=case_dir,
        )
    )
    failed = [name for name, rec in summary["stages"].items() if rec["status"] == "failed"]
    if failed:
        print(f"demo: stages failed: {', '.join(failed)} (see {args.out}/summary.md)")
        return 1
    return 0
