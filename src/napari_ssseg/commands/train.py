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

When DATA is a workspace, the run is recorded in it (`ssseg workspace runs WS`): as running
at the start, then done, cancelled or failed with its final validation metrics and best.pt
registered as a model. Recording needs the workspace lock for a moment; if another program
(e.g. napari) holds it, training goes on and a warning says how to record the run later
(`ssseg workspace add-run WS RUN_DIR`).
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
        default=None,
        metavar="NAME",
        help=(
            "supervised, pseudo-label, pseudo-label-superpixel, cps, mean-teacher, uamt, "
            "self-training, sp3 (default supervised; with --resume, the run's own)"
        ),
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
    parser.add_argument(
        "--amp",
        action="store_true",
        help="mixed precision on CUDA (less memory, faster; ignored on CPU)",
    )
    parser.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="recompute activations in the backward pass (less memory, ~30%% slower)",
    )
    parser.add_argument(
        "--augmentation",
        default="basic",
        choices=("basic", "strong"),
        help="crop augmentation: basic (flips, +-10%% intensity) or strong (also rotation, "
        "scale, bias field, gamma, noise, blur, low resolution: for models that must work on "
        "other scanners) (basic)",
    )
    parser.add_argument(
        "--modality-dropout",
        type=float,
        default=0.0,
        metavar="P",
        help="probability that a crop loses 1 to C-1 input channels, so the model can propose "
        "on cases without some modalities (0 = off; the default model used 0.3)",
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


#: Environment variable with the pid of the program that started the run (the Retrain panel
#: sets it): when that process is gone, the run stops as on SIGTERM (checkpoint, cancelled).
PARENT_PID_ENV = "SSSEG_PARENT_PID"


def _watch_parent(interval: float = 1.0) -> None:
    """Send SIGTERM to this process once the parent named in :data:`PARENT_PID_ENV` is gone."""
    import os
    import signal
    import threading
    import time

    try:
        parent = int(os.environ.get(PARENT_PID_ENV, ""))
    except ValueError:
        return
    if parent <= 1 or os.name != "posix" or os.getppid() != parent:
        return  # not started directly by that program (e.g. a torchrun worker): no watch

    def watch() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent:  # re-parented: the GUI that started us has died
                print(
                    f"warning: the program that started this run (pid {parent}) has exited; "
                    "stopping (last.pt is saved, the run can be resumed).",
                    file=sys.stderr,
                    flush=True,
                )
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, name="ssseg-parent-watch", daemon=True).start()


def _resumed_strategy(out: str) -> str:
    """The strategy of the run in ``out`` (its ``start`` event, else ``last.pt``)."""
    from pathlib import Path

    from napari_ssseg.errors import InputError
    from napari_ssseg.io.workspace import read_run

    run_dir = Path(out).expanduser()
    try:
        name = read_run(run_dir)["strategy"]
    except InputError:
        name = None
    if name:
        return str(name)
    if (run_dir / "last.pt").is_file():
        from napari_ssseg.ml.train import read_run_state

        try:
            name = read_run_state(run_dir)["strategy"]
        except InputError:  # the engine reports an unreadable last.pt
            name = None
    return str(name) if name else "supervised"


class _WorkspaceRecorder:
    """Record the run in the workspace DATA (rank 0 only); never fails the run.

    The workspace is opened for writing only for the moment of each record
    (:func:`napari_ssseg.io.workspace.record_run_in`); when another program holds it, a
    warning on stderr says how to record the run later.
    """

    def __init__(self, data: str, out: str) -> None:
        import os
        from pathlib import Path

        from napari_ssseg.io.workspace import MANIFEST_NAME

        root = Path(data).expanduser()
        self.root = root if (root / MANIFEST_NAME).is_file() else None
        if os.environ.get("RANK", "0") != "0":
            self.root = None
        self.out = Path(out).expanduser().absolute()
        self.started = False
        self.warned = False

    def _record(self, **fields) -> bool:
        from napari_ssseg.io.workspace import add_run_command, record_run_in

        try:
            entry = record_run_in(self.root, self.out, **fields)
        except Exception as exc:  # noqa: BLE001 - recording must never fail the run
            if not self.warned:
                print(
                    f"warning: this run could not be recorded in workspace {str(self.root)!r} "
                    f"({' '.join(str(exc).split())}). Training is not affected. If the napari "
                    "Retrain panel started it on the workspace open in the Workspace panel, the "
                    "panel records it; otherwise record it once the run has ended with: "
                    f"{add_run_command(self.root, self.out)}",
                    file=sys.stderr,
                    flush=True,
                )
                self.warned = True
            return False
        print(
            f"workspace: run {entry['id']} recorded as {entry['state']}"
            + (f" (model {entry['model']})" if entry.get("model") else ""),
            file=sys.stderr,
            flush=True,
        )
        return True

    def start(self, cfg, resume: bool) -> None:
        """Record the run as running (skipped when the engine is going to refuse it)."""
        if self.root is None:
            return
        has_last = (self.out / "last.pt").exists()
        if has_last != bool(resume):
            return  # a new run over an existing one, or nothing to resume: refused
        import dataclasses

        config = {
            k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()
        }
        self.started = True
        import os

        self._record(state="running", strategy=cfg.strategy, config=config, pid=os.getpid())

    def end(self, exc: BaseException | None = None) -> None:
        """Record the end state from the run folder (or ``failed`` with the exception)."""
        if self.root is None or not self.started:
            return
        from napari_ssseg.errors import InputError
        from napari_ssseg.io.workspace import read_run

        try:
            info = read_run(self.out)
        except InputError:
            info = {"state": "running"}
        if info["state"] == "running" and exc is not None:
            self._record(state="failed", message=str(exc) or type(exc).__name__)
        elif info["state"] != "running":
            self._record()  # from events.jsonl: state, metrics, best.pt as a model


def run(args: argparse.Namespace) -> int:
    """Train; return 0 when the run ends (done or cancelled)."""
    import json
    import os

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
    strategy = args.strategy
    if strategy is None:
        strategy = _resumed_strategy(args.out) if args.resume else "supervised"
    cfg = TrainConfig(
        data=os.path.abspath(os.path.expanduser(args.data)),
        out=os.path.abspath(os.path.expanduser(args.out)),
        strategy=strategy,
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
        amp=args.amp,
        gradient_checkpointing=args.gradient_checkpointing,
        augmentation=args.augmentation,
        modality_dropout=args.modality_dropout,
    )

    def echo(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    _watch_parent()
    recorder = _WorkspaceRecorder(cfg.data, cfg.out)
    recorder.start(cfg, args.resume)
    try:
        result = train(cfg, echo=None if args.quiet else echo)
    except BaseException as exc:
        recorder.end(exc)
        raise
    recorder.end()
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
