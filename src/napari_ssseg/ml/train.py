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

This module is the public entry (options, events, validation, :func:`train`,
:func:`read_run_state`); the loop itself is :class:`napari_ssseg.ml.trainer.Trainer` and the
event file :mod:`napari_ssseg.ml.events`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from napari_ssseg.errors import InputError, SsegError
from napari_ssseg.ml.events import EventLog, read_events

# the engine and the helpers that benchmarks and tests use, re-exported
from napari_ssseg.ml.trainer import (  # noqa: F401
    STATE_KEY as _STATE_KEY,
)
from napari_ssseg.ml.trainer import (  # noqa: F401
    Trainer,
    _Cosine,
    _dist_info,
    _EngineView,
    _epoch_order,
    _load_state,
    _save,
    _step_seed,
    _Stop,
)

__all__ = [
    "TrainConfig",
    "EventLog",
    "train",
    "read_events",
    "read_run_state",
    "validate",
    "region_dice",
]


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


# ----------------------------------------------------------------------------- metrics
def region_dice(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Dice of WT, TC, ET between two internal label arrays (1.0 when both are empty).

    :func:`napari_ssseg.core.metrics.region_dice`, kept here for the training API.
    """
    from napari_ssseg.core.metrics import region_dice as _region_dice

    return _region_dice(pred, gt)


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
            # MONAI types the result as a union; a network returning a Tensor gives a Tensor
            logits = cast(
                torch.Tensor,
                sliding_window_inference(
                    x, tuple(patch_size), 1, net, overlap=0.25, padding_mode="constant"
                ),
            )
            pred = torch.argmax(logits, dim=1)[0].cpu().numpy().astype(np.uint8)
            for k, v in region_dice(pred, np.asarray(case.load_label())).items():
                scores[k].append(v)
    finally:
        net.train(was_training)
    out = {k: float(np.mean(v)) if v else float("nan") for k, v in scores.items()}
    out["mean"] = float(np.mean([out["WT"], out["TC"], out["ET"]]))
    return out


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
    should_stop: Callable[[], bool] | None = None,
    echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) a training run; see the module docstring for the files written.

    Parameters
    ----------
    config : TrainConfig
        The run.
    should_stop : callable, optional
        ``should_stop()`` (the core protocol, :mod:`napari_ssseg.core.progress`) is asked
        after every optimiser step; True stops the run like SIGTERM (checkpoint,
        ``cancelled``).
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
            return Trainer(config, events, should_stop, world, rank, local, stop).run()
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


def read_run_state(path: str | os.PathLike) -> dict[str, Any]:
    """The training state that a run's ``last.pt`` records (what ``resume`` continues).

    Parameters
    ----------
    path : str or path-like
        A run folder (``RUN_DIR``) or its ``last.pt``.

    Returns
    -------
    dict
        ``{"strategy": str, "strategy_params": dict, "step": int, "seed": int or None,
        "best_metric": float or None}`` (the weights and optimiser state are left out).

    Raises
    ------
    InputError
        No ``last.pt``, a file that cannot be read, or a plain model checkpoint without
        training state.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "last.pt"
    if not p.is_file():
        raise InputError(f"No training state: {str(p)!r} does not exist.")
    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise InputError(f"{str(p)!r} cannot be read ({exc}).") from None
    state = data.get(_STATE_KEY) if isinstance(data, dict) else None
    if not isinstance(state, dict):
        raise InputError(
            f"{str(p)!r} has no training state (it is a plain model checkpoint, not a run's "
            "last.pt)."
        )
    best, seed = state.get("best_metric"), state.get("seed")
    try:
        return {
            "strategy": state.get("strategy"),
            "strategy_params": dict(state.get("strategy_params") or {}),
            "step": int(state.get("step", 0)),
            "seed": None if seed is None else int(seed),
            "best_metric": None if best is None else float(best),
        }
    except (TypeError, ValueError) as exc:
        raise InputError(f"{str(p)!r} has a damaged training state ({exc}).") from None
