"""Train a segmentation model on a folder of cases or a workspace (semi-supervised or not).

DATA is a folder with one sub-folder per case (a case with a label file (_seg) is labelled,
one without is unlabelled, used by the semi-supervised strategies), a workspace (label
versions are labels, scribbles of an unlabelled case are weak labels) or a snapshot. One
labelled case in five (at least one when there are two or more) is held out for validation.

Writes RUN_DIR/events.jsonl (one JSON object per line: start, epoch, validation, checkpoint,
then done, cancelled or error), RUN_DIR/best.pt and RUN_DIR/last.pt (use them with
`ssseg predict --model`). SIGTERM or Ctrl-C saves last.pt, writes `cancelled` and exits 0;
--resume continues the run from last.pt. Under `torchrun --nproc_per_node N` the same
command trains with DistributedDataParallel. See docs/training.md.
"""

from __future__ import annotations

import argparse
import sys


def _triple(kind: type):
    def parse(text: str):
        parts = [p for p in text.replace("x", ",").split(",") if p.strip()]
        if len(parts) == 1:
            parts = parts * 3
        if len(parts) != 3:
            raise argparse.ArgumentTypeError(f"{text!r}: expected one value or three (Z,Y,X)")
        try:
            return tuple(kind(p) for p in parts)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected numbers") from None

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the train options to ``parser``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("data", metavar="DATA", help="folder of case folders")
    parser.add_argument(
        "--strategy",
        default="supervised",
        metavar="NAME",
        help="supervised, pseudo-label, mean-teacher, uamt, self-training (default supervised)",
    )
    parser.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder")
    parser.add_argument("--epochs", type=int, default=10, metavar="N", help="epochs (10)")
    parser.add_argument(
        "--iterations-per-epoch", type=int, default=20, metavar="N", help="steps per epoch (20)"
    )
    parser.add_argument(
        "--budget-minutes", type=float, default=None, metavar="M", help="stop after M minutes"
    )
    parser.add_argument("--device", default="auto", metavar="DEV", help="auto, cpu, cuda[:N], mps")
    parser.add_argument("--init", default=None, metavar="CKPT", help="start from this checkpoint")
    parser.add_argument("--resume", action="store_true", help="continue RUN_DIR/last.pt")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (0)")
    parser.add_argument("--batch-size", type=int, default=2, metavar="B", help="crops/step (2)")
    parser.add_argument(
        "--patch-size", type=_triple(int), default=(64, 64, 64), metavar="P", help="crop (64)"
    )
    parser.add_argument(
        "--spacing",
        type=_triple(float),
        default=(2.0, 2.0, 2.0),
        metavar="MM",
        help="model voxel size in mm (2)",
    )
    parser.add_argument("--lr", type=float, default=2e-3, help="AdamW learning rate (2e-3)")
    parser.add_argument(
        "--val-fraction", type=float, default=0.2, help="labelled cases held out (0.2)"
    )
    parser.add_argument(
        "--network",
        default=None,
        metavar="JSON",
        help="network config as JSON (default: the package's small UNet)",
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="strategy parameter (repeatable; VALUE is JSON, e.g. alpha_f=3)",
    )
    parser.add_argument("--quiet", action="store_true", help="do not echo events to stderr")


def _params(items: list[str]) -> dict:
    import json

    from napari_ssseg.errors import InputError

    out = {}
    for item in items:
        if "=" not in item:
            raise InputError(f"--param {item!r}: expected KEY=VALUE, e.g. --param alpha_f=3.")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def run(args: argparse.Namespace) -> int:
    """Train; return 0 when the run ends (done or cancelled)."""
    import json

    from napari_ssseg.errors import InputError
    from napari_ssseg.ml.train import TrainConfig, train

    network = None
    if args.network:
        try:
            network = json.loads(args.network)
        except ValueError as exc:
            raise InputError(f"--network {args.network!r} is not valid JSON ({exc}).") from None
        if not isinstance(network, dict):
            raise InputError('--network must be a JSON object, e.g. \'{"name": "UNet"}\'.')
    cfg = TrainConfig(
        data=args.data,
        out=args.out,
        strategy=args.strategy,
        epochs=args.epochs,
        iterations_per_epoch=args.iterations_per_epoch,
        budget_minutes=args.budget_minutes,
        device=args.device,
        init=args.init,
        resume=args.resume,
        seed=args.seed,
        batch_size=args.batch_size,
        batch_size_unlabelled=args.batch_size,
        patch_size=tuple(args.patch_size),
        spacing_zyx=tuple(args.spacing),
        lr=args.lr,
        network=network,
        val_fraction=args.val_fraction,
        strategy_params=_params(args.param),
    )

    def echo(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    import os

    result = train(cfg, echo=None if args.quiet else echo)
    if os.environ.get("RANK", "0") != "0":
        return 0
    print(
        f"{result['status']} ({result['reason']}) after {result['step']} steps; best: "
        f"{result['best']}, last: {result['last']}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m napari_ssseg.commands.train``)."""
    parser = argparse.ArgumentParser(prog="ssseg train", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except Exception as exc:  # mirror the CLI: InputError -> message, exit 2
        from napari_ssseg.errors import InputError

        if isinstance(exc, InputError):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
