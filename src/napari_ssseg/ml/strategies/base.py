"""Strategy interface, registry and the masked, weighted DiceCE loss shared by strategies.

A strategy turns batches into losses. The engine (:mod:`napari_ssseg.ml.train`) owns the
data, optimiser, schedule, checkpoints and events; a strategy only implements
:meth:`Strategy.training_step` (and optionally the hooks). To add one, subclass
:class:`Strategy`, set ``name`` and decorate it with :func:`register`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from napari_ssseg.core.case import REGIONS
from napari_ssseg.errors import InputError

__all__ = [
    "Strategy",
    "STRATEGIES",
    "register",
    "get_strategy",
    "masked_dice_ce",
    "masked_region_dice",
    "sigmoid_rampup",
]

IGNORE_INDEX = 255

#: Modules of this package that define strategies.
_MODULES: tuple[str, ...] = (
    "supervised",
    "pseudo_label",
    "cps",
    "mean_teacher",
    "self_training",
    "sp3",
)

#: name -> Strategy subclass (filled by :func:`register`).
STRATEGIES: dict[str, type[Strategy]] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator adding a strategy to :data:`STRATEGIES` under ``cls.name``."""
    STRATEGIES[cls.name] = cls
    return cls


def get_strategy(name: str) -> type[Strategy]:
    """Return the strategy class called ``name`` (InputError listing the valid names)."""
    import importlib

    for mod in _MODULES:  # importing a module registers its strategies
        importlib.import_module(f"napari_ssseg.ml.strategies.{mod}")

    if name not in STRATEGIES:
        raise InputError(
            f"Unknown training strategy {name!r}. Choose one of: {', '.join(sorted(STRATEGIES))}."
        )
    return STRATEGIES[name]


def sigmoid_rampup(current: float, length: float) -> float:
    """``exp(-5 (1 - min(t/L, 1))^2)`` (Laine & Aila; SSL4MIS); 1 when ``length`` <= 0."""
    if length <= 0:
        return 1.0
    t = min(max(float(current), 0.0), float(length)) / float(length)
    return float(torch.exp(torch.tensor(-5.0 * (1.0 - t) ** 2)))


def masked_dice_ce(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    *,
    ignore_index: int = IGNORE_INDEX,
    smooth: float = 1e-5,
    dice_weight: float = 1.0,
    ce_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """Soft Dice + cross-entropy over the voxels that are not ignored, with voxel weights.

    Parameters
    ----------
    logits : (B, K, Z, Y, X) tensor
        Network output.
    target : (B, Z, Y, X) long tensor
        Class index per voxel; ``ignore_index`` voxels are excluded from both terms.
    weight : (B, Z, Y, X) tensor, optional
        Non-negative voxel weights (default 1).

    Returns
    -------
    dict
        ``{"loss", "dice", "ce"}`` scalar tensors; ``loss = dice_weight * dice +
        ce_weight * ce``. With no valid voxel every term is 0 (and still differentiable).
    """
    if logits.ndim != 5 or target.shape != logits.shape[:1] + logits.shape[2:]:
        raise InputError(
            f"masked_dice_ce needs logits (B, K, Z, Y, X) and target (B, Z, Y, X); got "
            f"{tuple(logits.shape)} and {tuple(target.shape)}."
        )
    valid = target != ignore_index
    w = valid.float() if weight is None else valid.float() * weight.float()
    tgt = torch.where(valid, target, torch.zeros_like(target)).long()
    # one log-softmax for both terms; a float one-hot built in place (channel-contiguous)
    logp = torch.log_softmax(logits.float(), dim=1)
    ce_vox = -logp.gather(1, tgt[:, None])[:, 0]
    wsum = w.sum()
    ce = (ce_vox * w).sum() / wsum.clamp_min(1e-8)
    p = logp.exp()
    onehot = torch.zeros_like(p).scatter_(1, tgt[:, None], 1.0)
    wk = w[:, None]
    dims = (0, 2, 3, 4)
    pw = p * wk
    inter = (pw * onehot).sum(dims)
    denom = pw.sum(dims) + (onehot * wk).sum(dims)
    dice = 1.0 - ((2.0 * inter + smooth) / (denom + smooth)).mean()
    if float(wsum) == 0.0:
        zero = logits.sum() * 0.0
        return {"loss": zero, "dice": zero.detach(), "ce": zero.detach()}
    loss = dice_weight * dice + ce_weight * ce
    return {"loss": loss, "dice": dice.detach(), "ce": ce.detach()}


def masked_region_dice(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    *,
    regions: Mapping[str, tuple[int, ...]] = REGIONS,
    ignore_index: int = IGNORE_INDEX,
    smooth: float = 1e-5,
) -> torch.Tensor:
    """Mean soft Dice loss of the evaluated regions (WT, TC, ET) of a softmax output.

    A region's probability is the sum of its classes' softmax probabilities (WT = NCR + ED
    + ET, TC = NCR + ET, ET = ET): the overlapping regions that BraTS scores, optimised
    directly next to the per-class DiceCE (region-based training, as in nnU-Net's BraTS
    entries). Batch Dice (summed over the batch, then one ratio per region); ``ignore_index``
    voxels and voxel ``weight`` as in :func:`masked_dice_ce`.

    Parameters
    ----------
    logits : (B, K, Z, Y, X) tensor
        Network output (K classes, internal convention: 0 bg, 1 NCR, 2 ED, 3 ET).
    target : (B, Z, Y, X) long tensor
        Class index per voxel.
    weight : (B, Z, Y, X) tensor, optional
        Non-negative voxel weights (default 1).
    regions : mapping of str to tuple of int
        Region name -> its classes (default :data:`~napari_ssseg.core.case.REGIONS`).

    Returns
    -------
    torch.Tensor
        Scalar ``1 - mean region Dice``; 0 (and still differentiable) with no valid voxel.
    """
    if logits.ndim != 5 or target.shape != logits.shape[:1] + logits.shape[2:]:
        raise InputError(
            f"masked_region_dice needs logits (B, K, Z, Y, X) and target (B, Z, Y, X); got "
            f"{tuple(logits.shape)} and {tuple(target.shape)}."
        )
    k = logits.shape[1]
    bad = sorted({c for cls in regions.values() for c in cls if not 0 < c < k})
    if bad:
        raise InputError(
            f"masked_region_dice: region classes {bad} are not foreground classes of a "
            f"{k}-class output (expected 1 to {k - 1})."
        )
    valid = target != ignore_index
    w = valid.float() if weight is None else valid.float() * weight.float()
    if float(w.sum()) == 0.0:
        return logits.sum() * 0.0
    p = torch.softmax(logits.float(), dim=1)
    dices = []
    for cls in regions.values():
        idx = list(cls)
        pr = p[:, idx].sum(1) * w
        gt = torch.isin(target, torch.tensor(idx, device=target.device)) & valid
        gt_w = gt.float() * w
        inter = (pr * gt_w).sum()
        dices.append((2.0 * inter + smooth) / (pr.sum() + gt_w.sum() + smooth))
    return 1.0 - torch.stack(dices).mean()


class Strategy:
    """Base class of training strategies.

    Parameters
    ----------
    model : nn.Module
        The student network (possibly wrapped in DistributedDataParallel).
    params : mapping
        Strategy parameters (defaults in :attr:`defaults`, unknown keys rejected).
    schedule : mapping
        ``{"epochs", "iterations_per_epoch", "total_steps"}`` of the run, used to scale
        the paper schedules to the user's budget.
    """

    name: ClassVar[str] = "base"
    #: Whether the strategy uses unlabelled batches.
    uses_unlabelled: ClassVar[bool] = False
    #: Whether it can run without any labelled case.
    needs_labels: ClassVar[bool] = True
    #: Networks trained together (2 for cross pseudo supervision); the engine builds,
    #: initialises (differently seeded), optimises and checkpoints all of them.
    n_networks: ClassVar[int] = 1
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(
        self, model: nn.Module, params: Mapping[str, Any] | None, schedule: Mapping[str, int]
    ) -> None:
        params = dict(params or {})
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise InputError(
                f"Strategy {self.name!r} has no parameter(s) {unknown}; valid: "
                f"{sorted(self.defaults) or 'none'}."
            )
        self.model = model
        self.models: list[nn.Module] = [model]
        self.params = {**self.defaults, **params}
        self.schedule = dict(schedule)

    def set_networks(self, models: list[nn.Module]) -> None:
        """Give the strategy all its networks (``models[0]`` is :attr:`model`)."""
        if len(models) != self.n_networks:
            raise InputError(
                f"{self.name!r} trains {self.n_networks} network(s), not {len(models)}."
            )
        self.models = list(models)
        self.model = self.models[0]

    @classmethod
    def split_data(cls, split: Any) -> Any:
        """Reassign the prepared cases before training (default: unchanged).

        ``split`` is a :class:`~napari_ssseg.ml.data.DataSplit`; e.g. ``sp3`` moves the
        scribbled cases from ``train`` to the pool it pseudo-labels.
        """
        return split

    # --------------------------------------------------------------- hooks
    def on_epoch_start(self, epoch: int, engine: Any) -> None:
        """Called before each epoch (e.g. to re-infer pseudo-labels)."""

    def training_step(
        self,
        batch_labelled: dict[str, torch.Tensor] | None,
        batch_unlabelled: dict[str, torch.Tensor] | None,
        step: int,
    ) -> dict[str, torch.Tensor]:
        """Return a dict of scalar losses; ``"loss"`` is back-propagated.

        ``batch_labelled`` is None only for a strategy that does not need labels
        (``needs_labels = False``) trained without a labelled case.
        """
        raise NotImplementedError

    def wants_unlabelled(self, step: int) -> bool:
        """Whether step ``step`` needs an unlabelled batch (default: :attr:`uses_unlabelled`)."""
        return self.uses_unlabelled

    def unlabelled_targets(self) -> dict[str, Any] | None:
        """Pseudo-labels by case name for the unlabelled sampler (None: images only)."""
        return None

    def after_step(self, step: int) -> None:
        """Called after each optimiser step (e.g. EMA update)."""

    def eval_model(self) -> nn.Module:
        """The network to validate (default: the unwrapped student)."""
        return getattr(self.model, "module", self.model)

    def save_networks(self) -> list[nn.Module]:
        """The networks written to ``best.pt``/``last.pt`` (default: :meth:`eval_model`).

        Several networks make an ensemble checkpoint: prediction averages their softmax.
        """
        return [self.eval_model()]

    def state_dict(self) -> dict[str, Any]:
        """Extra state to checkpoint (tensors and plain values only)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
