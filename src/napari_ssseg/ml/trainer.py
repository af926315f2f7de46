"""The training loop behind :func:`napari_ssseg.ml.train.train`, as a :class:`Trainer`.

:func:`~napari_ssseg.ml.train.train` is the public entry (options, process group, signal
handling, error events); it builds a :class:`Trainer` and calls :meth:`Trainer.run`. The
class splits the run along its stages:

* set-up: :meth:`Trainer.setup_source` (resume / ``--init`` / fresh network config),
  :meth:`Trainer.setup_data` (prepared cases, split), :meth:`Trainer.setup_model`
  (device, networks, AMP, DDP, optimiser, schedule), :meth:`Trainer.setup_strategy`
  (strategy and, on resume, the saved optimiser / schedule / strategy state) and
  :meth:`Trainer.start` (checkpoint metadata, the ``start`` event);
* :meth:`Trainer.begin_epoch` and :meth:`Trainer.train_step` (one optimiser step);
* :meth:`Trainer.stop_flag` (cancel, ``should_stop``, time budget; agreed across ranks);
* :meth:`Trainer.end_epoch`, :meth:`Trainer.run_validation`, :meth:`Trainer.save_last`
  (events, validation, ``best.pt`` / ``last.pt``);
* :meth:`Trainer.finish` (the ``done`` / ``cancelled`` event and the result).

The random draws are made in a fixed order (network initialisation per network, then per
step: the strategy's epoch start, the case order, the crop seeds), so a seeded run gives the
same numbers however it is resumed. The helpers below (step seeds, the cosine schedule,
checkpoint writing, the strategy's view of the engine) are private to the engine;
:mod:`napari_ssseg.ml.train` re-exports the ones benchmarks and tests use.
"""

from __future__ import annotations

import math
import os
import signal
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch import nn

from napari_ssseg.errors import InputError
from napari_ssseg.ml.events import EventLog, clean

if TYPE_CHECKING:
    from napari_ssseg.ml.train import TrainConfig

__all__ = ["Trainer", "STATE_KEY"]

#: Key of the training state (optimiser, schedule, strategy state, step) in ``last.pt``.
STATE_KEY = "training_state"


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
        patch_size=tuple(meta["patch_size"]),
        provenance=dict(meta["provenance"]),
        source=str(path),
    )
    data = ckpt.to_dict()
    if state is not None:
        data[STATE_KEY] = state
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
    if STATE_KEY not in data:
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


def _epoch_order(n: int, seed: int, epoch: int, world: int, rank: int) -> list[int]:
    """Case order of one epoch for this rank (a ``DistributedSampler`` over the cases)."""
    if n == 0:
        return []
    from torch.utils.data import DistributedSampler

    ds = list(range(n))
    # the sampler only takes len() of its dataset; torch's stub wants a Dataset
    smp: DistributedSampler[int] = DistributedSampler(
        ds,  # type: ignore[arg-type]
        num_replicas=world,
        rank=rank,
        shuffle=True,
        seed=seed,
    )
    smp.set_epoch(epoch)
    return list(smp)


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def _stop_reason(stop: _Stop) -> str:
    return signal.Signals(stop.signum).name if stop.signum else "requested"


# ----------------------------------------------------------------------------- engine
class Trainer:
    """One training run (or its resumption) in ``cfg.out``; :meth:`run` does it all.

    Parameters
    ----------
    cfg : TrainConfig
        The run (already checked).
    events : EventLog
        Where the events go (a log without a path on ranks other than 0).
    should_stop : callable, optional
        ``should_stop()``, asked after every optimiser step.
    world, rank, local : int
        Process count, this process's global and local rank (1, 0, 0 without DDP).
    stop : _Stop
        The signal flag (SIGTERM / SIGINT) of the calling :func:`train`.

    Notes
    -----
    The set-up methods must be called in the order :meth:`run` calls them; after
    :meth:`start`, the attributes ``step``, ``best_metric``, ``metrics``, ``acc`` /
    ``acc_n`` (running loss sums of the epoch) hold the state that ``last.pt`` saves.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        events: EventLog,
        should_stop: Callable[[], bool] | None,
        world: int,
        rank: int,
        local: int,
        stop: _Stop,
    ) -> None:
        from napari_ssseg.ml.strategies.base import get_strategy

        self.t_start = time.monotonic()
        self.cfg = cfg
        self.events = events
        self.should_stop = should_stop
        self.world, self.rank, self.local = world, rank, local
        self.stop = stop
        self.out = Path(cfg.out).expanduser()
        self.distributed = world > 1
        self.strategy_cls = get_strategy(cfg.strategy)
        self.last_path, self.best_path = self.out / "last.pt", self.out / "best.pt"
        self.resume_data: dict[str, Any] | None = None
        self.warn_list: list[str] = []
        self.notes: list[str] = []
        self.step = 0
        self.best_metric = -math.inf
        self.acc: dict[str, float] = {}
        self.acc_n = 0
        self.metrics: dict[str, float] | None = None

    # ------------------------------------------------------------------ the whole run
    def run(self) -> dict[str, Any]:
        """Set up, train until the last step, a stop request or the budget; the result.

        Returns
        -------
        dict
            As :func:`napari_ssseg.ml.train.train`.
        """
        self.setup_source()
        cancelled = self.setup_data()
        if cancelled is not None:
            return cancelled
        self.setup_model()
        self.setup_strategy()
        self.start()
        self.model.train()
        status, reason = "done", "finished"
        iters = self.cfg.iterations_per_epoch
        while self.step < self.total:
            epoch = self.step // iters
            if self.step % iters == 0 or self.resume_data is not None:
                self.begin_epoch(epoch)
            self.train_step(epoch)
            flag = self.stop_flag()
            if self.step % iters == 0:
                self.end_epoch(epoch, flag)
            if flag == 2:
                status, reason = "cancelled", _stop_reason(self.stop)
                if self.step % iters != 0:
                    self.save_last()
                break
            if flag == 1:
                reason = "budget"
                if self.step % iters != 0:
                    self.metrics = self.run_validation(self.step // iters + 1) or self.metrics
                    self.save_last()
                break
        return self.finish(status, reason)

    # ------------------------------------------------------------------ set-up
    def setup_source(self) -> None:
        """Network config, modalities, normalisation and patch: from resume, init or options.

        Raises
        ------
        InputError
            Nothing to resume, a run already in the folder, an unusable ``--init``, a
            network that is not a 4-class one, or a patch size the network cannot take.
        """
        from napari_ssseg.ml.checkpoint import DEFAULT_NORMALIZATION, load_checkpoint
        from napari_ssseg.ml.networks import DEFAULT_CONFIG, roi_divisor

        cfg, out, last_path = self.cfg, self.out, self.last_path
        self.init = None
        if cfg.resume:
            if not last_path.exists():
                raise InputError(
                    f"Cannot resume: {str(last_path)!r} does not exist. Start a new run "
                    "without --resume."
                )
            self.resume_data = resume_data = _load_state(last_path)
            old = resume_data[STATE_KEY].get("strategy")
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
                self.init = init = load_checkpoint(cfg.init)
                if init.output != "classes" or init.axis_order != "zyx":
                    raise InputError(
                        f"--init {cfg.init!r}: only 'classes' checkpoints in (z, y, x) order "
                        "can be fine-tuned."
                    )
                if init.n_networks not in (1, self.strategy_cls.n_networks):
                    raise InputError(
                        f"--init {cfg.init!r} holds {init.n_networks} networks (a CPS pair); "
                        f"strategy {cfg.strategy!r} trains {self.strategy_cls.n_networks}. Use "
                        "it with --strategy cps, or --init a single-network checkpoint."
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
        self.net_cfg, self.modalities = net_cfg, modalities
        self.normalization, self.patch = normalization, patch

    def setup_data(self) -> dict[str, Any] | None:
        """Prepare the cases (rank 0; the other ranks reuse its cache) and split them.

        Returns
        -------
        dict or None
            The ``cancelled`` result when a stop came during preparation, else None.
        """
        from napari_ssseg.core.progress import Cancelled
        from napari_ssseg.ml.data import prepare_dataset, split_cases
        from napari_ssseg.ml.train import no_labels_message

        cfg, distributed, rank = self.cfg, self.distributed, self.rank
        if distributed and rank != 0:
            torch.distributed.barrier()
        try:
            cases, skipped = prepare_dataset(
                cfg.data,
                self.out / "cache",
                modalities=self.modalities,
                normalization=self.normalization,
                warn=self.warn_list.append,
                should_stop=lambda: self.stop.signum is not None,
            )
        except Cancelled:
            if distributed and rank == 0:
                torch.distributed.barrier()  # release the ranks waiting for the cache
            res = {"status": "cancelled", "reason": _stop_reason(self.stop), "step": 0}
            res |= {"epoch": 0.0, "best": None, "last": None, "metrics": None}
            self.events.write("cancelled", **{k: v for k, v in res.items() if k != "status"})
            return res
        if distributed and rank == 0:
            torch.distributed.barrier()
        split = split_cases(cases, cfg.val_fraction, seed=cfg.seed)
        # counted before the strategy may move cases between pools (sp3)
        self.n_weak_cases = sum(c.weak for c in cases)
        self.n_unlabelled_cases = sum(c.label is None for c in cases)
        if split.train or split.val or not self.strategy_cls.needs_labels:
            split = self.strategy_cls.split_data(split)
        if not split.train and not split.val:
            if self.strategy_cls.needs_labels:
                raise InputError(no_labels_message(str(cfg.data), cfg.strategy))
        if not cases:
            raise InputError(f"No case of {cfg.data!r} could be loaded (see the skipped events).")
        self.cases, self.split, self.skipped = cases, split, skipped
        return None

    def setup_model(self) -> None:
        """Device, networks (seeded), resumed / init weights, AMP, DDP, optimiser, schedule."""
        from napari_ssseg.ml.device import resolve_device
        from napari_ssseg.ml.networks import build_network, enable_gradient_checkpointing

        cfg = self.cfg
        device = resolve_device(cfg.device)
        if self.distributed and device.type == "cuda":
            device = torch.device("cuda", self.local)
            torch.cuda.set_device(device)
        self.device = device

        n_nets = self.strategy_cls.n_networks
        nets: list[nn.Module] = []
        for i in range(n_nets):
            torch.manual_seed(cfg.seed + 7_777 * i)  # a CPS pair starts differently initialised
            nets.append(build_network(self.net_cfg))
        if self.resume_data is not None:
            # the students (the saved network may be a mean teacher)
            st = self.resume_data[STATE_KEY]
            for n, sd in zip(nets, [st["model"], *st.get("extra", [])]):
                n.load_state_dict(sd)
        elif self.init is not None:
            for i, n in enumerate(nets):
                if i < self.init.n_networks:
                    n.load_state_dict(self.init.networks[i])
                # a single-network --init for a CPS pair: network 2 keeps its own random start
        if cfg.gradient_checkpointing:
            n_ckpt = sum(enable_gradient_checkpointing(n) for n in nets)
            if n_ckpt == 0:
                self.notes.append(
                    f"--gradient-checkpointing: {self.net_cfg.get('name')} has no MONAI block "
                    "to checkpoint; it has no effect."
                )
        self.use_amp = bool(cfg.amp) and device.type in ("cuda", "cpu")
        self.amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
        if cfg.amp and not self.use_amp:
            self.notes.append(f"--amp is not supported on {device.type}; training in float32.")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and device.type == "cuda")
        models: list[nn.Module] = []
        for n in nets:
            n.to(device)
            models.append(
                nn.parallel.DistributedDataParallel(
                    n, device_ids=[device.index] if device.type == "cuda" else None
                )
                if self.distributed
                else n
            )
        self.nets, self.net, self.models, self.model = nets, nets[0], models, models[0]
        self.total = total = cfg.epochs * cfg.iterations_per_epoch
        self.opt = torch.optim.AdamW(
            [p for n in nets for p in n.parameters()], lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        self.cosine = _Cosine(total)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, self.cosine)

    def setup_strategy(self) -> None:
        """Build the strategy; on resume, restore optimiser, schedule and strategy state.

        Raises
        ------
        InputError
            Resuming with other strategy parameters, or a run that has no step left.
        """
        cfg, resume_data = self.cfg, self.resume_data
        schedule = {
            "epochs": cfg.epochs,
            "iterations_per_epoch": cfg.iterations_per_epoch,
            "total_steps": self.total,
        }
        params = dict(cfg.strategy_params)
        if resume_data is not None:
            saved = dict(resume_data[STATE_KEY].get("strategy_params") or {})
            if params and params != saved:
                raise InputError(
                    f"Cannot resume run {str(self.out)!r} with strategy parameters {params}: "
                    f"it was trained with {saved or 'the defaults'}. Resume without --param "
                    "(the saved parameters are used), or start a new run."
                )
            params = saved
        self.params = params
        strategy = self.strategy_cls(self.model, params, schedule)
        strategy.set_networks(self.models)
        strategy.device = self.device  # type: ignore[attr-defined]
        strategy.patch_size = self.patch  # type: ignore[attr-defined]
        self.strategy = strategy
        if resume_data is not None:
            st = resume_data[STATE_KEY]
            self.opt.load_state_dict(st["optimizer"])
            self.sched.load_state_dict(st["scheduler"])
            if st.get("scaler"):
                self.scaler.load_state_dict(st["scaler"])
            self.cosine.total = self.total  # --epochs may have been extended
            strategy.load_state_dict(st.get("strategy_state") or {})
            self.step = int(st["step"])
            self.best_metric = float(st.get("best_metric", -math.inf))
            self.acc = {k: float(v) for k, v in (st.get("acc") or {}).items()}
            self.acc_n = int(st.get("acc_n", 0))
            if self.step >= self.total:
                raise InputError(
                    f"Run {str(self.out)!r} already finished its {self.total} steps; give more "
                    "--epochs to train further."
                )

    def start(self) -> None:
        """Checkpoint metadata, crop sampler; the ``skipped`` and ``start`` events."""
        from napari_ssseg.ml.data import CropSampler

        cfg, split = self.cfg, self.split
        self.meta: dict[str, Any] = {
            "config": self.net_cfg,
            "modalities": self.modalities,
            "normalization": self.normalization,
            "patch_size": self.patch,
            "provenance": {
                "strategy": cfg.strategy,
                "n_labelled": sum(c.label is not None and not c.weak for c in self.cases),
                "n_weak": self.n_weak_cases,
                "n_unlabelled": self.n_unlabelled_cases,
                "val_metrics": None,
                "seed": cfg.seed,
                "data": str(cfg.data),
                "augmentation": cfg.augmentation,
                "modality_dropout": float(cfg.modality_dropout),
            },
        }
        self.sampler = CropSampler(
            self.patch, augmentation=cfg.augmentation, modality_dropout=float(cfg.modality_dropout)
        )
        run_cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}
        for s in self.skipped:
            self.events.write("skipped", case=s["case"], reason=s["reason"])
        self.events.write(
            "start",
            strategy=cfg.strategy,
            config=run_cfg,
            device=str(self.device),
            world_size=self.world,
            n_train=len(split.train),
            n_weak=self.n_weak_cases,
            n_val=len(split.val),
            n_unlabelled=self.n_unlabelled_cases,
            train_cases=[c.name for c in split.train],
            val_cases=[c.name for c in split.val],
            skipped=[s["case"] for s in self.skipped],
            resumed_from_step=self.step if self.resume_data is not None else None,
            total_steps=self.total,
            networks=len(self.nets),
            amp=str(self.amp_dtype).replace("torch.", "") if self.use_amp else None,
            gradient_checkpointing=bool(cfg.gradient_checkpointing),
            notes=self.notes + list(self.split.notes),
        )
        self._orders: tuple[int, list[int], list[int]] = (-1, [], [])

    # ------------------------------------------------------------------ training
    def begin_epoch(self, epoch: int) -> None:
        """The strategy's ``on_epoch_start`` (also at the first step of a resumed run)."""
        view = _EngineView(
            self.strategy,
            self.split,
            self.patch,
            self.device,
            self.modalities,
            self.events,
            self.rank,
            should_stop=lambda: self.stop.signum is not None,
        )
        view.reset_model = self.reset_model  # type: ignore[attr-defined]
        self.strategy.on_epoch_start(epoch, view)
        self.resume_data = None

    def train_step(self, epoch: int) -> dict[str, torch.Tensor]:
        """One optimiser step on this step's seeded crops; add its losses to the epoch's.

        Returns
        -------
        dict of str to tensor
            The strategy's losses of the step (``"loss"`` is the one back-propagated).
        """
        cfg, step, strategy, device = self.cfg, self.step, self.strategy, self.device
        sampler = self.sampler
        if self._orders[0] != epoch:
            world, rank = self.world, self.rank
            self._orders = (
                epoch,
                _epoch_order(len(self.split.train), cfg.seed, epoch, world, rank),
                _epoch_order(len(self.split.unlabelled), cfg.seed + 1, epoch, world, rank),
            )
        order, order_u = self._orders[1], self._orders[2]
        it = step % cfg.iterations_per_epoch
        s_seed = _step_seed(cfg.seed, step, self.rank)
        torch.manual_seed(s_seed)
        b = cfg.batch_size
        idx = [order[(it * b + j) % len(order)] for j in range(b)] if order else []
        batch_l = _to(sampler.sample(self.split.train, idx, s_seed), device) if idx else None
        batch_u = None
        if order_u and strategy.wants_unlabelled(step):
            bu = cfg.batch_size_unlabelled
            idx_u = [order_u[(it * bu + j) % len(order_u)] for j in range(bu)]
            batch_u = _to(
                sampler.sample(
                    self.split.unlabelled, idx_u, s_seed + 1, labels=strategy.unlabelled_targets()
                ),
                device,
            )
        torch.manual_seed(s_seed)
        with torch.autocast(device.type, dtype=self.amp_dtype, enabled=self.use_amp):
            losses = strategy.training_step(batch_l, batch_u, step)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(losses["loss"]).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        strategy.after_step(step)
        self.step += 1
        for k, v in losses.items():
            self.acc[k] = self.acc.get(k, 0.0) + float(v.detach())
        self.acc_n += 1
        return losses

    def stop_flag(self) -> int:
        """0: go on, 1: the time budget is spent, 2: stop requested (the maximum over ranks)."""
        cfg = self.cfg
        flag = 0
        if self.stop.signum is not None or (self.should_stop is not None and self.should_stop()):
            flag = 2
        elif cfg.budget_minutes and time.monotonic() - self.t_start > 60 * cfg.budget_minutes:
            flag = 1
        if self.distributed:
            t = torch.tensor([flag], dtype=torch.int64)
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
            flag = int(t.item())
        return flag

    def end_epoch(self, epoch: int, flag: int) -> None:
        """``epoch`` event, validation when due, ``last.pt`` (then all ranks meet)."""
        cfg = self.cfg
        if self.rank == 0:
            self.events.write(
                "epoch",
                epoch=epoch + 1,
                epochs=cfg.epochs,
                step=self.step,
                losses=clean({k: v / max(self.acc_n, 1) for k, v in self.acc.items()}),
                lr=float(self.sched.get_last_lr()[0]),
                elapsed=round(time.monotonic() - self.t_start, 3),
            )
        self.acc, self.acc_n = {}, 0
        if (epoch + 1) % cfg.val_every == 0 or self.step >= self.total or flag == 1:
            self.metrics = self.run_validation(epoch + 1) or self.metrics
        self.save_last()
        if self.distributed:
            torch.distributed.barrier()

    def reset_model(self) -> None:
        """Re-initialise the student (seeded), clear the optimiser, restart the cosine."""
        from napari_ssseg.ml.networks import build_network

        torch.manual_seed(self.cfg.seed + 1)
        fresh = build_network(self.net_cfg)
        with torch.no_grad():
            self.net.load_state_dict(fresh.state_dict())
        self.opt.state.clear()
        self.cosine.offset = self.step
        for group, base_lr in zip(self.opt.param_groups, self.sched.base_lrs):
            group["lr"] = base_lr * self.cosine(self.step)

    # ------------------------------------------------------------------ validation, checkpoints
    def run_validation(self, epoch: int) -> dict[str, float] | None:
        """Validate (rank 0), write the event; keep ``best.pt`` when the mean Dice improved.

        Without a validation case the score is the step, so ``best.pt`` follows ``last``.
        """
        from napari_ssseg.ml.train import validate

        if self.rank != 0:
            return None
        metrics = None
        if self.split.val:
            metrics = validate(self.strategy.eval_model(), self.split.val, self.patch, self.device)
            self.events.write("validation", epoch=epoch, step=self.step, metrics=clean(metrics))
            self.meta["provenance"]["val_metrics"] = clean(metrics)
        score = metrics["mean"] if metrics else float(self.step)
        if score > self.best_metric or not self.best_path.exists():
            self.best_metric = max(self.best_metric, score)
            _save(self.best_path, self.strategy.save_networks(), self.meta)
            self.events.write("checkpoint", kind="best", path=str(self.best_path), step=self.step)
        return metrics

    def training_state(self) -> dict[str, Any]:
        """What ``last.pt`` holds besides the weights, for :func:`train` ``resume``."""
        return {
            "strategy": self.cfg.strategy,
            "strategy_params": dict(self.params),
            "step": self.step,
            "model": {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()},
            "extra": [
                {k: v.detach().cpu().clone() for k, v in n.state_dict().items()}
                for n in self.nets[1:]
            ],
            "optimizer": self.opt.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "scheduler": self.sched.state_dict(),
            "strategy_state": self.strategy.state_dict(),
            "best_metric": self.best_metric if math.isfinite(self.best_metric) else -1.0,
            "acc": dict(self.acc),
            "acc_n": self.acc_n,
            "seed": self.cfg.seed,
        }

    def save_last(self) -> None:
        """Write ``last.pt`` (weights + training state; rank 0) and its ``checkpoint`` event."""
        if self.rank != 0:
            return
        _save(self.last_path, self.strategy.save_networks(), self.meta, self.training_state())
        self.events.write("checkpoint", kind="last", path=str(self.last_path), step=self.step)

    # ------------------------------------------------------------------ teardown
    def finish(self, status: str, reason: str) -> dict[str, Any]:
        """All ranks meet; write the final event; pass on the data warnings; the result."""
        if self.distributed:
            torch.distributed.barrier()
        result = {
            "status": status,
            "reason": reason,
            "step": self.step,
            "epoch": self.step / self.cfg.iterations_per_epoch,
            "best": str(self.best_path) if self.best_path.exists() else None,
            "last": str(self.last_path),
            "metrics": clean(self.metrics) if self.metrics else None,
        }
        self.events.write(status, **{k: v for k, v in result.items() if k != "status"})
        for w in self.warn_list:
            # finish <- run <- train: attributed to train, as before the Trainer class
            warnings.warn(w, stacklevel=3)
        return result


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
            # MONAI types the result as a union; a network returning a Tensor gives a Tensor
            logits = cast(
                torch.Tensor,
                sliding_window_inference(x.to(self.device), self.patch_size, 1, net, overlap=0.25),
            )
            return torch.softmax(logits.float(), 1)[0].cpu().numpy()
        finally:
            net.train(was)
