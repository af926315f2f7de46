"""The training engine behind ``ssseg train``: data, optimiser, schedule, events, checkpoints.

One call of :func:`train` runs (or resumes) a training run in ``RUN_DIR``:

* ``RUN_DIR/events.jsonl``: one JSON object per line with an ``"event"`` key: ``start``,
  ``skipped`` (a case that failed to load), ``epoch`` (mean losses, learning rate),
  ``validation`` (Dice per region WT/TC/ET on held-out labelled cases), ``checkpoint``, and
  finally ``done``, ``cancelled`` or ``error`` (with ``message``).
* ``RUN_DIR/last.pt``: the latest weights in the package's checkpoint format (usable by
  ``ssseg predict --model``) plus a ``training_state`` entry (optimiser, scheduler, strategy
  state, step) used by ``resume``; ``RUN_DIR/best.pt``: the weights with the best mean
  validation Dice (or the last weights when there is no validation case). Both are
  written atomically: a kill at any moment leaves the previous file intact.
* ``RUN_DIR/cache/``: the preprocessed cases (``.npy``), reused by ``resume``.

Reproducibility: every random draw of step ``s`` (crop positions, augmentation, dropout,
case order) is seeded from ``(seed, s, rank)``, so a run interrupted at any step and resumed
gives the same weights as an uninterrupted run (up to floating-point nondeterminism).

Under ``torchrun --nproc_per_node N`` (environment ``WORLD_SIZE`` > 1) the model is wrapped in
``DistributedDataParallel`` (NCCL on CUDA, gloo on CPU); each rank draws its cases with a
``DistributedSampler``; only rank 0 validates, writes events and checkpoints.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_ssseg.errors import InputError, SsegError

__all__ = ["TrainConfig", "EventLog", "train", "read_events", "validate", "region_dice"]

_STATE_KEY = "training_state"


@dataclass
class TrainConfig:
    """Everything a training run needs (the CLI options of ``ssseg train``).

    Attributes
    ----------
    data : str
        Folder of case folders (labelled: with a label file; unlabelled: without).
    out : str
        Run folder (created).
    strategy : str
        Name in :data:`napari_ssseg.ml.strategies.base.STRATEGIES`.
    epochs, iterations_per_epoch : int
        Schedule; one iteration = one optimiser step on ``batch_size`` crops.
    budget_minutes : float or None
        Stop (status ``done``, reason ``budget``) once this much wall time has passed.
    device : str
        ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``.
    init : str or None
        Checkpoint to start from (its network config and normalisation are used).
    resume : bool
        Continue from ``out/last.pt``.
    seed : int
        Seed of every random draw.
    batch_size, batch_size_unlabelled : int
        Crops per step (per process under DDP).
    patch_size : tuple of 3 int
        Crop size (z, y, x) at the model voxel size; also the sliding-window size.
    spacing_zyx : tuple of 3 float or None
        Model voxel size in mm (None: train at each case's own voxel size).
    lr, weight_decay : float
        AdamW; cosine decay to 1% of ``lr`` over the run.
    network : dict or None
        Network config (default :data:`napari_ssseg.ml.networks.DEFAULT_CONFIG`).
    val_fraction : float
        Share of labelled cases held out for validation.
    val_every : int
        Validate every this many epochs (and after the last).
    strategy_params : dict
        Strategy parameters (see ``docs/training.md``).
    amp : bool
        Automatic mixed precision (float16 autocast + gradient scaling) on CUDA; ignored,
        with a note in the ``start`` event, on other devices.
    gradient_checkpointing : bool
        Recompute each network block's activations in the backward pass instead of
        storing them (``torch.utils.checkpoint``): less memory, more compute.
    augmentation : {"basic", "strong"}
        Crop augmentation (see :class:`napari_ssseg.ml.data.CropSampler`).
    modality_dropout : float
        Probability that a crop has 1 to C-1 of its input channels zeroed (the model learns
        to propose on cases with missing modalities); recorded in the checkpoint's
        provenance, where inference looks for it.
    """

    data: str
    out: str
    strategy: str = "supervised"
    epochs: int = 10
    iterations_per_epoch: int = 20
    budget_minutes: float | None = None
    device: str = "auto"
    init: str | None = None
    resume: bool = False
    seed: int = 0
    batch_size: int = 2
    batch_size_unlabelled: int = 2
    patch_size: tuple[int, int, int] = (64, 64, 64)
    spacing_zyx: tuple[float, float, float] | None = (2.0, 2.0, 2.0)
    lr: float = 2e-3
    weight_decay: float = 1e-4
    network: dict[str, Any] | None = None
    val_fraction: float = 0.2
    val_every: int = 1
    strategy_params: dict[str, Any] = field(default_factory=dict)
    amp: bool = False
    gradient_checkpointing: bool = False
    augmentation: str = "basic"
    modality_dropout: float = 0.0

    def check(self) -> None:
        """Validate the values (InputError naming the bad option)."""
        for key in ("epochs", "iterations_per_epoch", "batch_size", "batch_size_unlabelled"):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise InputError(f"{key}={v!r}; expected a whole number >= 1.")
        if not isinstance(self.val_every, int) or self.val_every < 1:
            raise InputError(f"val_every={self.val_every!r}; expected a whole number >= 1.")
        if self.budget_minutes is not None and not self.budget_minutes > 0:
            raise InputError(f"budget_minutes={self.budget_minutes!r}; expected a number > 0.")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise InputError(f"lr={self.lr!r}; expected a number > 0.")
        if self.augmentation not in ("basic", "strong"):
            raise InputError(f"augmentation={self.augmentation!r}; expected 'basic' or 'strong'.")
        md = self.modality_dropout
        if not (isinstance(md, (int, float)) and 0 <= md <= 1):
            raise InputError(f"modality_dropout={md!r}; expected a probability in [0, 1].")
        ps = tuple(self.patch_size)
        if len(ps) != 3 or not all(isinstance(p, int) and p >= 8 for p in ps):
            raise InputError(f"patch_size={self.patch_size!r}; expected 3 whole numbers >= 8.")


class EventLog:
    """Append-only JSON-lines event file (one flushed line per event; rank 0 only)."""

    def __init__(self, path: str | os.PathLike | None, echo: Callable[[str], None] | None = None):
        self.path = None if path is None else Path(path)
        self.echo = echo

    def write(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append ``{"event": event, "time": unix time, **fields}`` and return it."""
        rec = {"event": event, "time": round(time.time(), 3), **fields}
        if self.path is not None:
            line = json.dumps(rec, default=_jsonable, allow_nan=False)
            try:
                with open(self.path, "a", encoding="utf-8") as fh:
                    fh.write(line + "\n")
                    fh.flush()
                    with contextlib.suppress(OSError):
                        os.fsync(fh.fileno())
            except OSError as exc:  # e.g. disk full: training goes on, the event is lost
                if event == "error":
                    return rec
                msg = f"Could not write the {event!r} event to {self.path}: {exc}"
                warnings.warn(msg, stacklevel=2)
        if self.echo is not None and event != "error":  # errors are raised to the caller
            self.echo(_describe(rec))
        return rec


def _jsonable(v: Any) -> Any:
    if isinstance(v, (np.generic,)):
        return v.item()
    if isinstance(v, Path):
        return str(v)
    return str(v)


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    """Replace NaN/inf by None so that events stay strict JSON."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out[k] = _clean(v)
        elif isinstance(v, float) and not math.isfinite(v):
            out[k] = None
        else:
            out[k] = v
    return out


def _describe(rec: dict[str, Any]) -> str:
    ev = rec["event"]
    if ev == "epoch":
        losses = " ".join(f"{k} {v:.4f}" for k, v in rec["losses"].items() if v is not None)
        return f"epoch {rec['epoch']}/{rec['epochs']}: {losses} lr {rec['lr']:.2e}"
    if ev == "validation":
        return "validation: " + " ".join(
            f"{k} {v:.3f}" if v is not None else f"{k} -" for k, v in rec["metrics"].items()
        )
    if ev == "checkpoint":
        return f"checkpoint {rec['kind']}: {rec['path']}"
    if ev == "strategy":
        return f"{rec.get('strategy')}: {rec.get('message', '')}".rstrip(": ")
    if ev in ("error", "skipped"):
        return f"{ev}: {rec.get('message') or rec.get('reason')}"
    return ev + ("" if ev != "start" else f": {rec.get('strategy')} on {rec.get('device')}")


def read_events(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read ``events.jsonl`` (a torn last line, from a kill mid-write, is ignored)."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out


# ----------------------------------------------------------------------------- metrics
def region_dice(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Dice of WT, TC, ET between two internal label arrays (1.0 when both are empty)."""
    from napari_ssseg.core.case import REGIONS

    out = {}
    for name, classes in REGIONS.items():
        p = np.isin(pred, classes)
        g = np.isin(gt, classes)
        s = int(p.sum()) + int(g.sum())
        out[name] = 1.0 if s == 0 else 2.0 * int(np.logical_and(p, g).sum()) / s
    return out


@torch.no_grad()
def validate(
    net: nn.Module,
    cases: Sequence[Any],
    patch_size: Sequence[int],
    device: torch.device,
) -> dict[str, float]:
    """Mean Dice per region (and their mean, ``"mean"``) of ``net`` on prepared cases.

    Sliding-window inference (MONAI, overlap 0.25) at the training voxel size; argmax of
    the class logits.
    """
    from monai.inferers import sliding_window_inference

    was_training = net.training
    net.eval()
    try:
        scores: dict[str, list[float]] = {"WT": [], "TC": [], "ET": []}
        for case in cases:
            x = torch.from_numpy(np.array(case.load_image(), dtype=np.float32))[None].to(device)
            logits = sliding_window_inference(
                x, tuple(patch_size), 1, net, overlap=0.25, padding_mode="constant"
            )
            pred = torch.argmax(logits, dim=1)[0].cpu().numpy().astype(np.uint8)
            for k, v in region_dice(pred, np.asarray(case.load_label())).items():
                scores[k].append(v)
    finally:
        net.train(was_training)
    out = {k: float(np.mean(v)) if v else float("nan") for k, v in scores.items()}
    out["mean"] = float(np.mean([out["WT"], out["TC"], out["ET"]]))
    return out


# ----------------------------------------------------------------------------- helpers
def _step_seed(seed: int, step: int, rank: int = 0) -> int:
    return int((seed * 1_000_003 + step * 9_176 + rank * 7_919_993) % (2**31 - 1))


class _Cosine:
    """Cosine decay to 1 % over ``total`` steps, restartable at ``offset`` (plain state)."""

    def __init__(self, total: int) -> None:
        self.total = int(total)
        self.offset = 0

    def __call__(self, s: int) -> float:
        span = max(self.total - self.offset, 1)
        t = min(max(s - self.offset, 0), span) / span
        return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * t))


def _save(
    path: Path, nets: Sequence[nn.Module], meta: dict[str, Any], state: dict | None = None
) -> Path:
    """Write a package checkpoint (+ optional training state) atomically.

    Several networks (a CPS pair) make an ensemble checkpoint (prediction averages them).
    """
    from napari_ssseg.io.atomic import atomic_path
    from napari_ssseg.ml.checkpoint import Checkpoint

    ckpt = Checkpoint(
        networks=[{k: v.detach().cpu().clone() for k, v in n.state_dict().items()} for n in nets],
        config=dict(meta["config"]),
        modalities=tuple(meta["modalities"]),
        normalization=dict(meta["normalization"]),
        label_convention="brats2023",
        output="classes",
        regions=("WT", "TC", "ET"),
        patch_size=tuple(meta["patch_size"]),  # type: ignore[arg-type]
        provenance=dict(meta["provenance"]),
        source=str(path),
    )
    data = ckpt.to_dict()
    if state is not None:
        data[_STATE_KEY] = state
    with atomic_path(path) as tmp:
        torch.save(data, tmp)
    return path


def _load_state(path: Path) -> dict[str, Any]:
    from napari_ssseg.ml.checkpoint import checkpoint_from_dict

    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"Cannot resume: {str(path)!r} cannot be read ({exc}).") from None
    checkpoint_from_dict(data, source=str(path))
    if _STATE_KEY not in data:
        raise InputError(
            f"Cannot resume: {str(path)!r} has no training state (it is a plain model "
            "checkpoint). Use it with --init instead of --resume."
        )
    return data


def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return world, rank, local


class _Stop:
    """Signal flag: SIGTERM / SIGINT request a clean stop at the next step."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Stop:
        import threading

        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def no_labels_message(data: str, strategy: str) -> str:
    """The error shown when the data holds no labelled case."""
    from napari_ssseg.ml.strategies.base import STRATEGIES, get_strategy

    get_strategy("supervised")
    can = sorted(n for n, c in STRATEGIES.items() if not c.needs_labels)
    alt = (
        f"Strategies that can run without labelled cases: {', '.join(can)} (it needs "
        "scribbles: a workspace whose cases have strokes saved from the Scribble panel)."
    )
    return (
        f"Training data {data!r} has no labelled case (no case folder with a label file "
        f"'_seg'), so strategy {strategy!r} cannot train. {alt} Add a label file to at least "
        "one case (2 or more give a validation case)."
    )


# ----------------------------------------------------------------------------- engine
def train(
    config: TrainConfig,
    *,
    should_stop: Callable[[int], bool] | None = None,
    echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) a training run; see the module docstring for the files written.

    Parameters
    ----------
    config : TrainConfig
        The run.
    should_stop : callable, optional
        ``should_stop(step)`` is asked after every optimiser step (``step`` = steps done);
        True stops the run like SIGTERM (checkpoint, ``cancelled``).
    echo : callable, optional
        Receives a one-line description of every event (rank 0).

    Returns
    -------
    dict
        ``{"status": "done"|"cancelled", "reason", "step", "epoch", "best", "last",
        "metrics"}``.

    Raises
    ------
    InputError
        Bad options or data (also written as an ``error`` event when the run folder exists).
    """
    config.check()
    world, rank, local = _dist_info()
    out = Path(config.out).expanduser()
    if rank == 0:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"Cannot create the run folder {str(out)!r}: {exc}.") from None
    events = EventLog(out / "events.jsonl" if rank == 0 else None, echo if rank == 0 else None)
    distributed = world > 1
    try:
        if distributed and not torch.distributed.is_initialized():
            backend = "nccl" if torch.cuda.is_available() and config.device != "cpu" else "gloo"
            torch.distributed.init_process_group(backend=backend)
        with _Stop() as stop:
            return _train(config, events, should_stop, world, rank, local, stop)
    except (SsegError, ValueError) as exc:
        events.write("error", message=str(exc))
        raise
    except Exception as exc:
        from napari_ssseg.ml.device import is_oom_error

        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if is_oom_error(exc):
            msg = (
                f"Out of memory ({msg}). To use less memory: --gradient-checkpointing "
                "(recomputes activations, ~30% slower), --amp (mixed precision, on CUDA), a "
                "smaller --patch-size or --batch-size, or a smaller --network"
                + (
                    " (cps trains two networks, about twice the memory)"
                    if config.strategy == "cps"
                    else ""
                )
                + "."
            )
            events.write("error", message=msg)
            raise SsegError(msg) from exc
        events.write("error", message=f"{type(exc).__name__}: {msg}")
        raise
    finally:
        if distributed and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _train(
    cfg: TrainConfig,
    events: EventLog,
    should_stop: Callable[[int], bool] | None,
    world: int,
    rank: int,
    local: int,
    stop: _Stop,
) -> dict[str, Any]:
    from napari_ssseg.ml.checkpoint import DEFAULT_NORMALIZATION, load_checkpoint
    from napari_ssseg.ml.data import CropSampler, prepare_dataset, split_cases
    from napari_ssseg.ml.device import resolve_device
    from napari_ssseg.ml.networks import (
        DEFAULT_CONFIG,
        build_network,
        enable_gradient_checkpointing,
        roi_divisor,
    )
    from napari_ssseg.ml.strategies.base import get_strategy

    t_start = time.monotonic()
    out = Path(cfg.out).expanduser()
    distributed = world > 1
    strategy_cls = get_strategy(cfg.strategy)
    last_path, best_path = out / "last.pt", out / "best.pt"

    # ---- resume / init / fresh
    resume_data: dict[str, Any] | None = None
    if cfg.resume:
        if not last_path.exists():
            raise InputError(
                f"Cannot resume: {str(last_path)!r} does not exist. Start a new run without "
                "--resume."
            )
        resume_data = _load_state(last_path)
        old = resume_data[_STATE_KEY].get("strategy")
        if old != cfg.strategy:
            raise InputError(
                f"Cannot resume run {str(out)!r} with strategy {cfg.strategy!r}: it was "
                f"trained with {old!r}. Resume with --strategy {old}, or start a new run "
                "(new --out, optionally --init the old last.pt)."
            )
        net_cfg = dict(resume_data["config"])
        modalities = tuple(resume_data["modalities"])
        normalization = dict(resume_data["normalization"])
        patch = tuple(int(p) for p in resume_data["patch_size"])
    elif last_path.exists():
        raise InputError(
            f"The run folder {str(out)!r} already holds a run (last.pt). Add --resume to "
            "continue it, or choose a new --out."
        )
    else:
        patch = tuple(int(p) for p in cfg.patch_size)
        if cfg.init:
            init = load_checkpoint(cfg.init)
            if init.output != "classes" or init.axis_order != "zyx":
                raise InputError(
                    f"--init {cfg.init!r}: only 'classes' checkpoints in (z, y, x) order can be "
                    "fine-tuned."
                )
            if init.n_networks not in (1, strategy_cls.n_networks):
                raise InputError(
                    f"--init {cfg.init!r} holds {init.n_networks} networks (a CPS pair); "
                    f"strategy {cfg.strategy!r} trains {strategy_cls.n_networks}. Use it with "
                    "--strategy cps, or --init a single-network checkpoint."
                )
            net_cfg = dict(init.config)
            modalities = tuple(init.modalities)
            normalization = dict(init.normalization)
        else:
            net_cfg = dict(cfg.network or DEFAULT_CONFIG)
            modalities = ("t1", "t1ce", "t2", "flair")
            normalization = dict(DEFAULT_NORMALIZATION)
            normalization["spacing_zyx"] = (
                None if cfg.spacing_zyx is None else [float(s) for s in cfg.spacing_zyx]
            )
    if net_cfg.get("out_channels", 4) != 4:
        raise InputError("Training needs a 'classes' network with out_channels = 4.")
    div = roi_divisor(net_cfg)
    if any(p % div for p in patch):
        raise InputError(
            f"patch_size={list(patch)} must be a multiple of {div} for this network (its "
            "down-sampling factor)."
        )

    # ---- data (rank 0 prepares; other ranks reuse its cache)
    warn_list: list[str] = []
    cache = out / "cache"
    if distributed and rank != 0:
        torch.distributed.barrier()
    from napari_ssseg.ml.data import CancelledError

    try:
        cases, skipped = prepare_dataset(
            cfg.data,
            cache,
            modalities=modalities,
            normalization=normalization,
            warn=warn_list.append,
            should_cancel=lambda: stop.signum is not None,
        )
    except CancelledError:
        if distributed and rank == 0:
            torch.distributed.barrier()  # release the ranks waiting for the cache
        reason = signal.Signals(stop.signum).name if stop.signum else "requested"
        res = {"status": "cancelled", "reason": reason, "step": 0, "epoch": 0.0}
        res |= {"best": None, "last": None, "metrics": None}
        events.write("cancelled", **{k: v for k, v in res.items() if k != "status"})
        return res
    if distributed and rank == 0:
        torch.distributed.barrier()
    split = split_cases(cases, cfg.val_fraction, seed=cfg.seed)
    # counted before the strategy may move cases between pools (sp3)
    n_weak_cases = sum(c.weak for c in cases)
    n_unlabelled_cases = sum(c.label is None for c in cases)
    if split.train or split.val or not strategy_cls.needs_labels:
        split = strategy_cls.split_data(split)
    if not split.train and not split.val:
        if strategy_cls.needs_labels:
            raise InputError(no_labels_message(str(cfg.data), cfg.strategy))
    if not cases:
        raise InputError(f"No case of {cfg.data!r} could be loaded (see the skipped events).")

    device = resolve_device(cfg.device)
    if distributed and device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)

    # ---- model(s), optimiser, schedule, strategy
    n_nets = strategy_cls.n_networks
    nets: list[nn.Module] = []
    for i in range(n_nets):
        torch.manual_seed(cfg.seed + 7_777 * i)  # a CPS pair starts differently initialised
        nets.append(build_network(net_cfg))
    net = nets[0]
    if resume_data is not None:
        # the students (the saved network may be a mean teacher)
        st_models = [resume_data[_STATE_KEY]["model"], *resume_data[_STATE_KEY].get("extra", [])]
        for n, sd in zip(nets, st_models):
            n.load_state_dict(sd)
    elif cfg.init:
        for i, n in enumerate(nets):
            if i < init.n_networks:
                n.load_state_dict(init.networks[i])
            # a single-network --init for a CPS pair: network 2 keeps its own random start
    notes: list[str] = []
    if cfg.gradient_checkpointing:
        n_ckpt = sum(enable_gradient_checkpointing(n) for n in nets)
        if n_ckpt == 0:
            notes.append(
                f"--gradient-checkpointing: {net_cfg.get('name')} has no MONAI block to "
                "checkpoint; it has no effect."
            )
    use_amp = bool(cfg.amp) and device.type in ("cuda", "cpu")
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    if cfg.amp and not use_amp:
        notes.append(f"--amp is not supported on {device.type}; training in float32.")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and device.type == "cuda")
    models: list[nn.Module] = []
    for n in nets:
        n.to(device)
        models.append(
            nn.parallel.DistributedDataParallel(
                n, device_ids=[device.index] if device.type == "cuda" else None
            )
            if distributed
            else n
        )
    model: nn.Module = models[0]
    total = cfg.epochs * cfg.iterations_per_epoch
    opt = torch.optim.AdamW(
        [p for n in nets for p in n.parameters()], lr=cfg.lr, weight_decay=cfg.weight_decay
    )
    cosine = _Cosine(total)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine)
    schedule = {
        "epochs": cfg.epochs,
        "iterations_per_epoch": cfg.iterations_per_epoch,
        "total_steps": total,
    }
    params = dict(cfg.strategy_params)
    if resume_data is not None:
        saved = dict(resume_data[_STATE_KEY].get("strategy_params") or {})
        if params and params != saved:
            raise InputError(
                f"Cannot resume run {str(out)!r} with strategy parameters {params}: it was "
                f"trained with {saved or 'the defaults'}. Resume without --param (the saved "
                "parameters are used), or start a new run."
            )
        params = saved
    strategy = strategy_cls(model, params, schedule)
    strategy.set_networks(models)
    strategy.device = device  # type: ignore[attr-defined]
    strategy.patch_size = patch  # type: ignore[attr-defined]
    step = 0
    best_metric = -math.inf
    acc: dict[str, float] = {}
    acc_n = 0
    if resume_data is not None:
        st = resume_data[_STATE_KEY]
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        if st.get("scaler"):
            scaler.load_state_dict(st["scaler"])
        cosine.total = total  # --epochs may have been extended
        strategy.load_state_dict(st.get("strategy_state") or {})
        step = int(st["step"])
        best_metric = float(st.get("best_metric", -math.inf))
        acc = {k: float(v) for k, v in (st.get("acc") or {}).items()}
        acc_n = int(st.get("acc_n", 0))
        if step >= total:
            raise InputError(
                f"Run {str(out)!r} already finished its {total} steps; give more --epochs to "
                "train further."
            )

    meta = {
        "config": net_cfg,
        "modalities": modalities,
        "normalization": normalization,
        "patch_size": patch,
        "provenance": {
            "strategy": cfg.strategy,
            "n_labelled": sum(c.label is not None and not c.weak for c in cases),
            "n_weak": n_weak_cases,
            "n_unlabelled": n_unlabelled_cases,
            "val_metrics": None,
            "seed": cfg.seed,
            "data": str(cfg.data),
            "augmentation": cfg.augmentation,
            "modality_dropout": float(cfg.modality_dropout),
        },
    }
    sampler = CropSampler(
        patch, augmentation=cfg.augmentation, modality_dropout=float(cfg.modality_dropout)
    )
    run_cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}

    for s in skipped:
        events.write("skipped", case=s["case"], reason=s["reason"])
    events.write(
        "start",
        strategy=cfg.strategy,
        config=run_cfg,
        device=str(device),
        world_size=world,
        n_train=len(split.train),
        n_weak=n_weak_cases,
        n_val=len(split.val),
        n_unlabelled=n_unlabelled_cases,
        train_cases=[c.name for c in split.train],
        val_cases=[c.name for c in split.val],
        skipped=[s["case"] for s in skipped],
        resumed_from_step=step if resume_data is not None else None,
        total_steps=total,
        networks=n_nets,
        amp=str(amp_dtype).replace("torch.", "") if use_amp else None,
        gradient_checkpointing=bool(cfg.gradient_checkpointing),
        notes=notes + list(split.notes),
    )

    def training_state() -> dict[str, Any]:
        return {
            "strategy": cfg.strategy,
            "strategy_params": dict(params),
            "step": step,
            "model": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
            "extra": [
                {k: v.detach().cpu().clone() for k, v in n.state_dict().items()} for n in nets[1:]
            ],
            "optimizer": opt.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else None,
            "scheduler": sched.state_dict(),
            "strategy_state": strategy.state_dict(),
            "best_metric": best_metric if math.isfinite(best_metric) else -1.0,
            "acc": dict(acc),
            "acc_n": acc_n,
            "seed": cfg.seed,
        }

    def save_last() -> None:
        if rank != 0:
            return
        _save(last_path, strategy.save_networks(), meta, training_state())
        events.write("checkpoint", kind="last", path=str(last_path), step=step)

    def run_validation(epoch: int) -> dict[str, float] | None:
        nonlocal best_metric
        if rank != 0:
            return None
        metrics = None
        if split.val:
            metrics = validate(strategy.eval_model(), split.val, patch, device)
            events.write("validation", epoch=epoch, step=step, metrics=_clean(metrics))
            meta["provenance"]["val_metrics"] = _clean(metrics)
        score = metrics["mean"] if metrics else float(step)
        if score > best_metric or not best_path.exists():
            best_metric = max(best_metric, score)
            _save(best_path, strategy.save_networks(), meta)
            events.write("checkpoint", kind="best", path=str(best_path), step=step)
        return metrics

    def reset_model() -> None:
        """Re-initialise the student (seeded), clear the optimiser, restart the cosine."""
        torch.manual_seed(cfg.seed + 1)
        fresh = build_network(net_cfg)
        with torch.no_grad():
            net.load_state_dict(fresh.state_dict())
        opt.state.clear()
        cosine.offset = step
        for group, base_lr in zip(opt.param_groups, sched.base_lrs):
            group["lr"] = base_lr * cosine(step)

    model.train()
    status, reason = "done", "finished"
    metrics = None
    iters = cfg.iterations_per_epoch
    orders: tuple[int, list[int], list[int]] = (-1, [], [])
    while step < total:
        epoch = step // iters
        if step % iters == 0 or resume_data is not None:
            view = _EngineView(
                strategy,
                split,
                patch,
                device,
                modalities,
                events,
                rank,
                should_stop=lambda: stop.signum is not None,
            )
            view.reset_model = reset_model  # type: ignore[attr-defined]
            strategy.on_epoch_start(epoch, view)
            resume_data = None
        if orders[0] != epoch:
            orders = (
                epoch,
                _epoch_order(len(split.train), cfg.seed, epoch, world, rank),
                _epoch_order(len(split.unlabelled), cfg.seed + 1, epoch, world, rank),
            )
        order, order_u = orders[1], orders[2]
        it = step % iters
        s_seed = _step_seed(cfg.seed, step, rank)
        torch.manual_seed(s_seed)
        b = cfg.batch_size
        idx = [order[(it * b + j) % len(order)] for j in range(b)] if order else []
        batch_l = _to(sampler.sample(split.train, idx, s_seed), device) if idx else None
        batch_u = None
        if order_u and strategy.wants_unlabelled(step):
            bu = cfg.batch_size_unlabelled
            idx_u = [order_u[(it * bu + j) % len(order_u)] for j in range(bu)]
            batch_u = _to(
                sampler.sample(
                    split.unlabelled, idx_u, s_seed + 1, labels=strategy.unlabelled_targets()
                ),
                device,
            )
        torch.manual_seed(s_seed)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
            losses = strategy.training_step(batch_l, batch_u, step)
        opt.zero_grad(set_to_none=True)
        scaler.scale(losses["loss"]).backward()
        scaler.step(opt)
        scaler.update()
        sched.step()
        strategy.after_step(step)
        step += 1
        for k, v in losses.items():
            acc[k] = acc.get(k, 0.0) + float(v.detach())
        acc_n += 1

        flag = 0
        if stop.signum is not None or (should_stop is not None and should_stop(step)):
            flag = 2
        elif cfg.budget_minutes and time.monotonic() - t_start > 60 * cfg.budget_minutes:
            flag = 1
        if distributed:
            t = torch.tensor([flag], dtype=torch.int64)
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
            flag = int(t.item())

        if step % iters == 0:
            if rank == 0:
                events.write(
                    "epoch",
                    epoch=epoch + 1,
                    epochs=cfg.epochs,
                    step=step,
                    losses=_clean({k: v / max(acc_n, 1) for k, v in acc.items()}),
                    lr=float(sched.get_last_lr()[0]),
                    elapsed=round(time.monotonic() - t_start, 3),
                )
            acc, acc_n = {}, 0
            if (epoch + 1) % cfg.val_every == 0 or step >= total or flag == 1:
                metrics = run_validation(epoch + 1) or metrics
            save_last()
            if distributed:
                torch.distributed.barrier()
        if flag == 2:
            status, reason = (
                "cancelled",
                (signal.Signals(stop.signum).name if stop.signum else "requested"),
            )
            if step % iters != 0:
                save_last()
            break
        if flag == 1:
            reason = "budget"
            if step % iters != 0:
                metrics = run_validation(step // iters + 1) or metrics
                save_last()
            break
    if distributed:
        torch.distributed.barrier()
    result = {
        "status": status,
        "reason": reason,
        "step": step,
        "epoch": step / iters,
        "best": str(best_path) if best_path.exists() else None,
        "last": str(last_path),
        "metrics": _clean(metrics) if metrics else None,
    }
    events.write(status, **{k: v for k, v in result.items() if k != "status"})
    for w in warn_list:
        warnings.warn(w, stacklevel=2)
    return result


def _epoch_order(n: int, seed: int, epoch: int, world: int, rank: int) -> list[int]:
    """Case order of one epoch for this rank (a ``DistributedSampler`` over the cases)."""
    if n == 0:
        return []
    from torch.utils.data import DistributedSampler

    ds = list(range(n))
    smp = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=seed)  # type: ignore[arg-type]
    smp.set_epoch(epoch)
    return list(smp)


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


class _EngineView:
    """What a strategy's ``on_epoch_start`` may use.

    ``split`` (train / val / unlabelled prepared cases), ``predict_probabilities(net,
    case)``, ``as_case(case)`` (a core ``Case`` of a prepared case, for refinement and
    propagation), ``log(**fields)`` (a ``strategy`` event, rank 0), ``should_stop()`` and
    ``reset_model()`` (re-initialise the student, clear the optimiser state and restart the
    cosine schedule over the remaining steps).
    """

    def __init__(
        self,
        strategy: Any,
        split: Any,
        patch: Sequence[int],
        device: torch.device,
        modalities: Sequence[str] = ("t1", "t1ce", "t2", "flair"),
        events: EventLog | None = None,
        rank: int = 0,
        should_stop: Callable[[], bool] | None = None,
    ):
        self.strategy = strategy
        self.split = split
        self.patch_size = tuple(patch)
        self.device = device
        self.modalities = tuple(modalities)
        self._events = events
        self.rank = rank
        self._should_stop = should_stop

    def as_case(self, case: Any) -> Any:
        """The prepared case as a :class:`~napari_ssseg.core.case.Case`."""
        from napari_ssseg.ml.data import prepared_to_case

        return prepared_to_case(case, self.modalities)

    def log(self, **fields: Any) -> None:
        """Write a ``strategy`` event (what a strategy did, e.g. pseudo-label statistics)."""
        if self._events is not None and self.rank == 0:
            self._events.write("strategy", strategy=getattr(self.strategy, "name", ""), **fields)

    def should_stop(self) -> bool:
        """Whether a stop was requested (long strategy work should check it per case)."""
        return bool(self._should_stop and self._should_stop())

    @torch.no_grad()
    def predict_probabilities(self, net: nn.Module, case: Any) -> np.ndarray:
        """Softmax (K, z, y, x) float32 of ``net`` on a prepared case (sliding window)."""
        from monai.inferers import sliding_window_inference

        was = net.training
        net.eval()
        try:
            x = torch.from_numpy(np.array(case.load_image(), dtype=np.float32))[None]
            logits = sliding_window_inference(
                x.to(self.device), self.patch_size, 1, net, overlap=0.25
            )
            return torch.softmax(logits.float(), 1)[0].cpu().numpy()
        finally:
            net.train(was)
