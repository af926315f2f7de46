"""Run the whole pipeline on the embedded sample data.

With a display (and without --headless) napari opens with a sample case loaded and the
plugin's panels docked. Without a display, or with --headless, every stage runs on the sample
case (generate, load, preprocess, propose, refine, scribble, evaluate, a sample workspace, a
short retraining) and writes its outputs, a summary
(summary.md, summary.json) and real screenshots of the viewer rendered under a virtual X
display (Xvfb) into the output folder.
"""

from __future__ import annotations

import argparse
import os


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
        "--shape",
        nargs=3,
        type=int,
        metavar=("Z", "Y", "X"),
        default=(155, 240, 240),
        help="phantom grid (default: the BraTS grid 155 240 240)",
    )
    parser.add_argument(
        "--spacing",
        type=float,
        default=1.0,
        help="isotropic voxel size of the phantom in mm (default: 1)",
    )
    parser.add_argument("--seed", type=int, default=0, help="phantom seed (default: 0)")
    parser.add_argument("--no-screenshot", action="store_true", help="skip the napari screenshots")
    parser.add_argument("--no-propose", action="store_true", help="skip the model proposal")
    parser.add_argument("--no-retrain", action="store_true", help="skip the short retraining run")


def run(args: argparse.Namespace) -> int:
    """Run the demo; returns 0 when every stage that ran succeeded."""
    from pathlib import Path

    from napari_ssseg.errors import InputError

    shape = tuple(int(s) for s in args.shape)
    if min(shape) < 16:
        raise InputError(f"--shape {shape}: every axis needs at least 16 voxels.")
    if not 0.2 <= args.spacing <= 5:
        raise InputError(f"--spacing {args.spacing}: expected a voxel size between 0.2 and 5 mm.")
    interactive = not args.headless and bool(os.environ.get("DISPLAY"))
    if interactive:
        from napari_ssseg._napari.launch import launch_demo_viewer

        launch_demo_viewer(shape=shape, seed=args.seed, spacing=(args.spacing,) * 3)
        return 0
    from napari_ssseg.demo import DemoConfig, run_demo

    summary = run_demo(
        DemoConfig(
            out_dir=Path(args.out),
            shape=shape,
            spacing=(args.spacing,) * 3,
            seed=args.seed,
            screenshot=not args.no_screenshot,
            propose=not args.no_propose,
            retrain=not args.no_retrain,
        )
    )
    failed = [name for name, rec in summary["stages"].items() if rec["status"] == "failed"]
    if failed:
        print(f"demo: stages failed: {', '.join(failed)} (see {args.out}/summary.md)")
        return 1
    return 0
