"""Propose tumour labels, probabilities and an uncertainty map with a MONAI network.

Loads CASE (any layout `ssseg info` reads), runs the model (default: the small UNet shipped
with napari-ssseg, trained on 6 real labelled cases and phantoms - see docs/models.md) with
MONAI sliding-window inference on the brain crop, and writes the labels (NIfTI, the case's exact
geometry, the case's label convention unless --convention is given). Optional outputs: the
uncertainty map (float32 in [0, 1]: predictive entropy; mutual information with
--mc-samples; disagreement for a checkpoint with several networks) and the per-class
probabilities (4D, channels = background, NCR, ED, ET; or WT, TC, ET for region models).

--model takes a napari-ssseg checkpoint (.pt) or a MONAI bundle folder (configs/ +
models/model.pt); bundles are read without running any code from them and only allow-listed
MONAI networks are built. Progress goes to stderr.
"""

from __future__ import annotations

import argparse

from napari_ssseg.commands._args import add_modality_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the predict options to ``parser``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("case", metavar="CASE", help="case folder or file")
    parser.add_argument("--out", required=True, metavar="LABELS", help="output label file")
    parser.add_argument(
        "--model",
        default="default",
        metavar="CKPT_OR_BUNDLE_DIR",
        help="checkpoint file or MONAI bundle folder (default: the shipped model)",
    )
    parser.add_argument(
        "--device",
        default="auto",
        metavar="DEV",
        help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps (auto)",
    )
    parser.add_argument("--uncertainty", metavar="OUT", help="write the uncertainty map here")
    parser.add_argument(
        "--uncertainty-kind",
        default="auto",
        choices=("auto", "entropy", "mutual_information", "disagreement"),
        help="which map --uncertainty writes (auto)",
    )
    parser.add_argument("--probabilities", metavar="OUT", help="write the probabilities here")
    parser.add_argument("--tta", action="store_true", help="test-time flips (4 passes)")
    parser.add_argument(
        "--mc-samples", type=int, default=0, metavar="N", help="MC-dropout passes (0 = off)"
    )
    parser.add_argument(
        "--no-cpu-fallback",
        action="store_true",
        help="fail instead of using the CPU when the requested GPU is absent or out of memory",
    )
    parser.add_argument(
        "--roi-size", type=int, nargs=3, metavar=("Z", "Y", "X"), help="window size (model's)"
    )
    parser.add_argument("--sw-batch-size", type=int, default=2, metavar="N", help="windows/batch")
    parser.add_argument("--overlap", type=float, default=0.25, help="window overlap (0.25)")
    parser.add_argument(
        "--convention",
        metavar="CONV",
        help="label convention of the output (default: the case's; brats2013, brats2021, "
        "brats2023, brats2024 or msd)",
    )
    add_modality_argument(parser)
    parser.add_argument(
        "--missing-modalities",
        default="auto",
        choices=("auto", "zero", "error"),
        help="a case without some of the model's inputs: auto (zero-filled if the model was "
        "trained with modality dropout, as the default model is; else an error), zero, error",
    )
    parser.add_argument(
        "--min-component-fraction",
        type=float,
        default=None,
        metavar="F",
        help="remove whole-tumour components smaller than F x the largest (0 keeps all; "
        "default: the model's setting, see docs/models.md)",
    )
    parser.add_argument(
        "--case-convention", metavar="CONV", help="label convention of the case's label file"
    )
    from napari_ssseg.commands._clinical import add_clinical_arguments

    add_clinical_arguments(parser)  # --brain-extraction --register --resample (clinical scans)


class _StderrProgress:
    """Print progress events to stderr at most ~2 times a second, at least on every change."""

    def __init__(self) -> None:
        import sys
        import time

        self._sys = sys
        self._time = time
        self._last = 0.0
        self._last_msg = ""
        self._tty = sys.stderr.isatty()

    def __call__(self, event: dict) -> None:
        now = self._time.monotonic()
        msg = f"[{100 * event['fraction']:5.1f}%] {event['message']}"
        if msg == self._last_msg and now - self._last < 1.0:
            return
        if msg != self._last_msg and now - self._last < 0.2 and event["stage"] == "inference":
            return
        self._last, self._last_msg = now, msg
        end = "\r" if self._tty else "\n"
        print(f"{msg:<78}", end=end, file=self._sys.stderr, flush=True)

    def finish(self) -> None:
        if self._tty:
            print(file=self._sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Predict and write the outputs; print a summary. Returns 0."""
    import time
    from pathlib import Path

    from napari_ssseg.commands._clinical import load_case_clinical
    from napari_ssseg.core.case import get_convention
    from napari_ssseg.errors import InputError
    from napari_ssseg.io.readers import parse_modality_args
    from napari_ssseg.io.writers import save_image, save_labels
    from napari_ssseg.ml.inference import predict_case

    t0 = time.perf_counter()
    if args.mc_samples < 0:
        raise InputError(f"--mc-samples {args.mc_samples}; expected 0 (off) or a positive count.")
    outputs = [Path(args.out)] + [Path(p) for p in (args.uncertainty, args.probabilities) if p]
    if len(set(outputs)) != len(outputs):
        raise InputError("--out, --uncertainty and --probabilities must be different files.")
    conv = get_convention(args.convention) if args.convention else None
    case, out_case, to_native = load_case_clinical(  # clinical scans: working grid
        args,
        convention=args.case_convention,
        label_errors="warn",
        **parse_modality_args(args.modality),
    )
    reporter = _StderrProgress()
    try:
        result = predict_case(
            case,
            args.model,
            device=args.device,
            roi_size=args.roi_size,
            sw_batch_size=args.sw_batch_size,
            overlap=args.overlap,
            tta=args.tta,
            mc_samples=args.mc_samples,
            allow_cpu_fallback=not args.no_cpu_fallback,
            uncertainty=args.uncertainty_kind,
            missing_modalities=args.missing_modalities,
            min_component_fraction=args.min_component_fraction,
            progress=reporter,
        )
    finally:
        reporter.finish()
    written = [save_labels(to_native(result["labels"]), out_case, args.out, convention=conv)]
    if args.uncertainty:
        written.append(save_image(to_native(result["uncertainty"]), out_case, args.uncertainty))
    if args.probabilities:
        written.append(save_image(to_native(result["probabilities"]), out_case, args.probabilities))
    info = result["info"]
    print(
        f"predicted {case.name} with {info['model']} on {info['device']} in "
        f"{time.perf_counter() - t0:.1f} s ({info['n_passes']} pass(es), uncertainty "
        f"{info['uncertainty']})"
    )
    post = info.get("postprocess") or {}
    if post.get("removed_voxels"):
        print(
            f"post-processing: removed {post['removed_voxels']} voxels of tumour components "
            f"smaller than {post['min_component_fraction']:g} x the largest "
            "(--min-component-fraction 0 keeps them)"
        )
    if info.get("missing_modalities"):
        print(
            f"missing inputs: {', '.join(info['missing_modalities'])} (set to zero; "
            "see the warning above for the regions that are weaker)"
        )
    if case.labels is not None:
        from napari_ssseg.core.metrics import region_dice

        dices = region_dice(result["labels"], case.labels)
        parts = [f"{r} {d:.3f}" for r, d in dices.items()]
        print("Dice against the case's labels: " + ", ".join(parts))
    for path in written:
        print(f"wrote {path}")
    return 0
