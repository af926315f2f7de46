"""The ``ssseg`` command line.

Each subcommand lives in :mod:`napari_ssseg.commands.<name>` and exposes
``add_arguments(parser)`` and ``run(args) -> int``. Command modules import only the standard
library at module level; heavy imports (SimpleITK, torch, napari) happen inside ``run`` so
that ``ssseg --help`` starts in well under a second.

Errors the user can fix (:class:`napari_ssseg.errors.SsegError`) are printed as one paragraph
without a traceback, and the exit status is 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings

from napari_ssseg import __version__

#: (command name, module under napari_ssseg.commands, one-line help)
COMMANDS: list[tuple[str, str, str]] = [
    ("info", "info", "show a case's modalities, files, shape, spacing, orientation, labels"),
    ("phantom", "phantom", "generate synthetic multimodal brain-tumour cases with ground truth"),
    ("evaluate", "evaluate", "Dice/HD95/IoU/NSD/ASD/RAVD per region (WT, TC, ET)"),
    ("labels", "labels", "label-file utilities (convert between conventions)"),
    ("preprocess", "preprocess", "brain mask, crop, clip and z-score a case; write the result"),
    ("refine", "refine", "refine a pseudo-label by superpixel region growing (Algorithm 1)"),
    ("predict", "predict", "propose labels and uncertainty with a MONAI network"),
    ("propagate", "propagate", "spread scribbles through superpixels into dense pseudo-labels"),
    ("train", "train", "train or retrain a network (supervised / semi-supervised), resumable"),
    ("workspace", "workspace", "annotation workspace: init, status, suggest, export, import"),
    ("demo", "demo", "run the whole pipeline on the sample data (opens napari if possible)"),
]


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="ssseg",
        description="napari-ssseg: semi-supervised brain-tumour MRI segmentation.",
    )
    parser.add_argument("--version", action="version", version=f"napari-ssseg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name, help_text in COMMANDS:
        # every listed command must import: a missing one is a packaging bug, not something
        # to hide from --help (tests/test_cli_startup.py checks that each appears)
        module = importlib.import_module(f"napari_ssseg.commands.{module_name}")
        p = sub.add_parser(name, help=help_text, description=module.__doc__)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ssseg`` console script.

    Returns
    -------
    int
        Exit status: 0 success, 1 unexpected failure, 2 bad input or usage, 130 interrupted.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    warnings.simplefilter("default", UserWarning)
    warnings.showwarning = _show_warning
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    from napari_ssseg.errors import SsegError

    try:
        return int(args._run(args) or 0)
    except SsegError as exc:
        print(f"ssseg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ssseg {args.command}: interrupted", file=sys.stderr)
        return 130


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
