"""``cps``: cross pseudo supervision (Chen et al. 2021; Luque et al. on BraTS).

Two networks of the same architecture, initialised differently (the engine seeds them
apart), trained together with one optimiser:

* Ŷ_i = one-hot argmax of network i's softmax P_i (no gradient);
* L = L_sup(P1, Y) + L_sup(P2, Y) + φ · [Dice(P1, Ŷ2) + Dice(P2, Ŷ1)], the cross term over
  the labelled and unlabelled crops of the step; L_sup is the masked DiceCE of the engine;
  φ = ``phi`` = 0.5 **[paper]**;
* a supervised-only warm-up: the cross term starts after ``warmup_fraction`` of the run.
  The paper waits 15 of 1000 epochs (1.5 %); by then its networks had seen 3 750 batches.
  Scaled to a short CPU run that is a handful of steps from random weights, so the default
  is 0.2 of the run **[ours]** (set ``warmup_fraction=0.015`` for the paper's ratio).

Validation and the saved checkpoints use both networks: ``best.pt``/``last.pt`` hold the
pair and prediction averages their softmax (``docs/models.md``); the checkpoint also gives
the disagreement uncertainty. Memory: two networks, two optimiser states and two sets of
activations, roughly twice ``supervised`` (paper: 12.4 → 27.4 GB on UNETR); the engine's
``--gradient-checkpointing`` and (on CUDA) ``--amp`` reduce it.
"""

from __future__ import annotations

import torch
from torch import nn

from napari_ssseg.errors import InputError
from napari_ssseg.ml.strategies.base import Strategy, masked_dice_ce, register

__all__ = ["CPS", "SoftmaxEnsemble"]


class SoftmaxEnsemble(nn.Module):
    """Average the softmax of several networks; returns its log (argmax/softmax-ready).

    ``softmax(log(mean_i softmax(f_i(x)))) == mean_i softmax(f_i(x))``, so code that
    applies a softmax or an argmax to network outputs sees the averaged probabilities.
    """

    def __init__(self, nets: list[nn.Module]) -> None:
        super().__init__()
        self.nets = nn.ModuleList(nets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        p = torch.stack([torch.softmax(n(x).float(), 1) for n in self.nets]).mean(0)
        return torch.log(p.clamp_min(1e-8))


@register
class CPS(Strategy):
    """Cross pseudo supervision with two networks (see the module docstring)."""

    name = "cps"
    uses_unlabelled = True
    n_networks = 2
    defaults = {"phi": 0.5, "warmup_fraction": 0.2}

    def __init__(self, model, params, schedule) -> None:
        super().__init__(model, params, schedule)
        p = self.params
        if not isinstance(p["phi"], (int, float)) or p["phi"] < 0:
            raise InputError(f"phi={p['phi']!r}; expected a number >= 0 (paper: 0.5).")
        if not isinstance(p["warmup_fraction"], (int, float)) or not 0 <= p["warmup_fraction"] < 1:
            raise InputError(
                f"warmup_fraction={p['warmup_fraction']!r}; expected a number in [0, 1)."
            )
        self.warmup_steps = int(round(float(p["warmup_fraction"]) * schedule["total_steps"]))

    def wants_unlabelled(self, step: int) -> bool:  # noqa: D102
        return step >= self.warmup_steps

    def training_step(self, batch_labelled, batch_unlabelled, step):  # noqa: D102
        n_l = batch_labelled["image"].shape[0]
        cross = step >= self.warmup_steps
        xs = [batch_labelled["image"]]
        if cross and batch_unlabelled is not None:
            xs.append(batch_unlabelled["image"])
        x = torch.cat(xs)
        net1, net2 = self.models
        logits1, logits2 = net1(x), net2(x)  # one forward per network (DDP)
        y, w = batch_labelled["label"], batch_labelled.get("weight")
        sup1 = masked_dice_ce(logits1[:n_l], y, w)
        sup2 = masked_dice_ce(logits2[:n_l], y, w)
        loss = sup1["loss"] + sup2["loss"]
        cps = torch.zeros((), device=loss.device)
        if cross:
            with torch.no_grad():
                hard1 = logits1.detach().argmax(1)
                hard2 = logits2.detach().argmax(1)
            cps = (
                masked_dice_ce(logits1, hard2, ce_weight=0.0)["loss"]
                + masked_dice_ce(logits2, hard1, ce_weight=0.0)["loss"]
            )
            loss = loss + float(self.params["phi"]) * cps
        return {
            "loss": loss,
            "supervised_1": sup1["loss"].detach(),
            "supervised_2": sup2["loss"].detach(),
            "cps": cps.detach(),
        }

    def eval_model(self) -> nn.Module:
        """Both networks, their softmax averaged (what ``best.pt`` predicts with)."""
        return SoftmaxEnsemble([getattr(m, "module", m) for m in self.models])

    def save_networks(self) -> list[nn.Module]:  # noqa: D102
        return [getattr(m, "module", m) for m in self.models]
