"""``self-training`` (Zhu & Tian): teacher M1 → hard pseudo-labels → student M2 from scratch.

One run, two phases:

1. Epochs ``[0, E1)`` with E1 = max(1, round(``teacher_fraction`` · E)): M1 trains on the
   labelled crops (supervised DiceCE).
2. At epoch E1, M1 predicts every unlabelled case (sliding window, argmax: hard
   pseudo-labels; optionally voxels whose max probability is below ``threshold`` are
   ignored **[ours]**); the network is re-initialised (M2 "from scratch", seeded), the
   optimiser state cleared and the cosine schedule restarted over the remaining steps.
   M2 trains on labelled + pseudo-labelled crops (one forward on both, DiceCE on each).

The saved ``best.pt`` is the best validated network of either phase; ``last.pt`` is M2.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from napari_ssseg.errors import InputError
from napari_ssseg.ml.data import IGNORE_INDEX
from napari_ssseg.ml.strategies.base import Strategy, masked_dice_ce, register

__all__ = ["SelfTraining"]


@register
class SelfTraining(Strategy):
    """Zhu & Tian self-training in one run (see the module docstring)."""

    name = "self-training"
    uses_unlabelled = True
    defaults = {"teacher_fraction": 0.5, "threshold": 0.0}

    def __init__(self, model, params, schedule) -> None:
        super().__init__(model, params, schedule)
        f = self.params["teacher_fraction"]
        if not 0 < f < 1:
            raise InputError(f"teacher_fraction={f!r}; expected a number in (0, 1).")
        if not 0 <= self.params["threshold"] < 1:
            raise InputError(f"threshold={self.params['threshold']!r}; expected [0, 1).")
        e = int(schedule["epochs"])
        if e < 2:
            raise InputError("self-training needs --epochs >= 2 (one phase each for M1 and M2).")
        self.switch_epoch = min(e - 1, max(1, int(round(f * e))))
        self.phase = 1
        self.labels: dict[str, np.ndarray] = {}

    def on_epoch_start(self, epoch: int, engine: Any) -> None:  # noqa: D102
        if self.phase == 1 and epoch >= self.switch_epoch:
            net = self.eval_model()
            tau = float(self.params["threshold"])
            labels = {}
            for c in engine.split.unlabelled:
                p = engine.predict_probabilities(net, c)
                lab = p.argmax(0).astype(np.uint8)
                if tau > 0:
                    lab[p.max(0) < tau] = IGNORE_INDEX
                labels[c.name] = lab
            self.labels = labels
            engine.reset_model()
            self.phase = 2

    def wants_unlabelled(self, step: int) -> bool:  # noqa: D102
        return self.phase == 2 and bool(self.labels)

    def unlabelled_targets(self) -> dict[str, Any] | None:  # noqa: D102
        return self.labels or None

    def training_step(self, batch_labelled, batch_unlabelled, step):  # noqa: D102
        pseudo = batch_unlabelled if batch_unlabelled and "label" in batch_unlabelled else None
        xs = [batch_labelled["image"]] + ([pseudo["image"]] if pseudo else [])
        logits = self.model(torch.cat(xs))
        n = batch_labelled["image"].shape[0]
        sup = masked_dice_ce(logits[:n], batch_labelled["label"], batch_labelled.get("weight"))
        out = {"loss": sup["loss"], "supervised": sup["loss"].detach()}
        pl = torch.zeros(())
        if pseudo is not None:
            pl_out = masked_dice_ce(logits[n:], pseudo["label"])
            out["loss"] = out["loss"] + pl_out["loss"]
            pl = pl_out["loss"].detach()
        out["pseudo"] = pl
        out["phase"] = torch.tensor(float(self.phase))
        return out

    def state_dict(self) -> dict[str, Any]:  # noqa: D102
        return {
            "phase": self.phase,
            "labels": {k: torch.from_numpy(np.array(v)) for k, v in self.labels.items()},
        }

    def load_state_dict(self, state) -> None:  # noqa: D102
        self.phase = int(state.get("phase", 1))
        labels = state.get("labels") or {}
        self.labels = {k: v.numpy().astype(np.uint8) for k, v in labels.items()}
