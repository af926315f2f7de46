"""Command-line options shared by several ``ssseg`` subcommands (standard library only)."""

from __future__ import annotations

import argparse

__all__ = ["add_modality_argument"]


def add_modality_argument(parser: argparse.ArgumentParser) -> None:
    """Add the repeatable ``--modality MOD=FILE`` option (read by
    :func:`napari_ssseg.io.readers.parse_modality_args`)."""
    parser.add_argument(
        "--modality",
        action="append",
        default=[],
        metavar="MOD=FILE",
        help="the file of one modality (t1, t1c/t1ce, t2, flair), e.g. to settle which series "
        "of a PACS / TCIA folder is which; repeat for several",
    )
