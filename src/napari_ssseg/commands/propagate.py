"""Propagate scribbles (a few thin strokes) to a dense 3D label (SP3-style, docs/scribbles.md).

The scribble file must be on the case's grid. It holds 0 where nothing was drawn, the
case's label values (e.g. BraTS 1 NCR, 2 ED, 4 ET) for strokes inside the tumour, and the
background label (default 255) for strokes on healthy tissue. Without --probabilities the
strokes are expanded to superpixels and propagated by superpixel similarity (cold start);
with a model's per-class probabilities (a 4-channel file: bg, NCR, ED, ET) superpixels are
accepted by dynamic confidence thresholds, purity and uncertainty. The result is written
in the case's label convention and exact geometry; --weights-out writes the per-voxel
weight map (0 = ignored). Prints the annotated fraction (scribbled voxels / tumour voxels).

Example:
  ssseg propagate BraTS2021_00000/ --scribbles strokes.nii.gz --out dense.nii.gz
"""

from __future__ import annotations

import argparse
import sys

from napari_ssseg import defaults
from napari_ssseg.commands._args import add_modality_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the propagate options to ``parser``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("case", metavar="CASE", help="case folder or file (the images)")
    parser.add_argument(
        "--scribbles", required=True, metavar="SCRIBBLES", help="scribble label file"
    )
    parser.add_argument("--out", required=True, metavar="OUT", help="dense label file to write")
    parser.add_argument(
        "--probabilities",
        default=None,
        metavar="P",
        help="a model's probability image: 4 channels (bg, NCR, ED, ET) or 3 regions "
        "(WT, TC, ET) (optional)",
    )
    parser.add_argument(
        "--weights-out", default=None, metavar="W", help="write the per-voxel weight map here"
    )
    parser.add_argument(
        "--background-label",
        type=int,
        default=defaults.SCRIBBLE_BACKGROUND_LABEL,
        metavar="N",
        help="value of healthy-tissue strokes in the scribble file (default: %(default)s)",
    )
    parser.add_argument(
        "--tumour-label",
        type=int,
        default=None,
        metavar="N",
        help="value of region strokes (tumour, class unknown) in the scribble file (default: "
        f"{defaults.SCRIBBLE_TUMOUR_LABEL})",
    )
    add_modality_argument(parser)
    parser.add_argument(
        "--n-segments",
        type=int,
        default=None,
        metavar="N",
        help=f"approximate number of superpixels in the brain (default: "
        f"{defaults.SCRIBBLE_N_SEGMENTS})",
    )
    from napari_ssseg.commands._clinical import add_clinical_arguments

    add_clinical_arguments(parser)  # --brain-extraction --register --resample (clinical scans)


def _read_scribbles(path, case, background_label: int, tumour_label: int | None = None):
    """Scribble file → internal codes (canonical), with the geometry check of read_labels."""
    import numpy as np

    from napari_ssseg.core.scribbles import decode_scribbles
    from napari_ssseg.errors import InputError
    from napari_ssseg.io.readers import read_label_values

    arr = read_label_values(path, case, what="Scribble file")
    arr = np.asarray(arr)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise InputError(f"Scribble file {str(path)!r} holds non-integer values.")
        arr = arr.astype(np.int64)
    kw = {} if tumour_label is None else {"tumour_label": tumour_label}
    internal = decode_scribbles(arr, case.convention, background_label, **kw)
    return case.orientation.to_canonical(internal)


def run(args: argparse.Namespace) -> int:
    """Propagate ``--scribbles`` on CASE and write ``--out``; returns 0."""
    import numpy as np

    from napari_ssseg.core.scribbles import DEFAULT_N_SEGMENTS, ScribblePropagator
    from napari_ssseg.errors import GeometryError, InputError
    from napari_ssseg.io.readers import parse_modality_args, read_image
    from napari_ssseg.io.writers import save_image, save_labels

    n_segments = DEFAULT_N_SEGMENTS if args.n_segments is None else args.n_segments
    if n_segments < 2:
        raise InputError(
            f"--n-segments {n_segments} must be an integer >= 2 "
            f"(e.g. {defaults.SCRIBBLE_N_SEGMENTS})."
        )
    from napari_ssseg.commands._clinical import load_case_clinical

    # clinical scans (raw studies): work on the registered, brain-extracted working grid; the
    # scribbles and the output stay on the reference series' native grid
    case, out_case, to_native, from_native = load_case_clinical(
        args, inverse=True, label_errors="warn", **parse_modality_args(args.modality)
    )  # the case's own labels are not needed
    clinical = out_case is not case
    scribbles = _read_scribbles(args.scribbles, out_case, args.background_label, args.tumour_label)
    scribbles = from_native(scribbles)
    prob = None
    if args.probabilities and clinical:
        raise InputError(
            "--probabilities cannot be used yet on a case that goes through the clinical "
            "working grid (registration, resampling or brain extraction). Pass "
            "--brain-extraction off --register off to propagate on the native grid, or "
            "leave out --probabilities."
        )
    if args.probabilities:
        arr, geom = read_image(args.probabilities)
        if arr.ndim != 4 or arr.shape[0] not in (3, 4):
            raise InputError(
                f"--probabilities {args.probabilities!r} has shape {arr.shape}; expected a "
                "4-channel (bg, NCR, ED, ET) or 3-channel (WT, TC, ET) image on the case's "
                "grid."
            )
        if tuple(arr.shape[1:]) != tuple(case.file_shape):
            raise GeometryError(
                f"--probabilities {args.probabilities!r} has grid {arr.shape[1:]}, the case "
                f"{tuple(case.file_shape)}."
            )
        prob = np.stack([case.orientation.to_canonical(a) for a in arr])
        if prob.shape[0] == 3:
            from napari_ssseg.core.scribbles import classes_from_region_probabilities

            prob = classes_from_region_probabilities(prob)
    from napari_ssseg.core.scribbles import check_scribbles

    check_scribbles(scribbles, case.shape, None, source=f"scribble file {args.scribbles!r}")
    prop = ScribblePropagator(case.images, case.modalities, None, case.scale, n_segments=n_segments)
    res = prop.update(scribbles, prob)
    save_labels(to_native(res.labels), out_case, args.out)
    if args.weights_out:
        save_image(to_native(res.weights.astype(np.float32)), out_case, args.weights_out)
    n = res.info["scribbled_voxels"]
    print(
        f"annotated fraction: {res.annotated_fraction:.4f} ({n} scribbled voxels / "
        f"{int((res.labels > 0).sum())} tumour voxels); mode {res.info['mode']}; "
        f"wrote {args.out}"
    )
    print(
        f"set-up {prop.setup_seconds:.2f} s, propagation {res.info['seconds']:.3f} s",
        file=sys.stderr,
    )
    return 0
