"""``supervised``: DiceCE on labelled crops only (the baseline every strategy is compared to)."""

from __future__ import annotations

from napari_ssseg.ml.strategies.base import Strategy, masked_dice_ce, register

__all__ = ["Supervised"]


@register
class Supervised(Strategy):
    """Masked DiceCE on labelled batches; unlabelled cases are ignored.

    Parameters (``params``): ``dice_weight`` (1.0), ``ce_weight`` (1.0).
    """

    name = "supervised"
    defaults = {"dice_weight": 1.0, "ce_weight": 1.0}

    def training_step(self, batch_labelled, batch_unlabelled, step):  # noqa: D102
        logits = self.model(batch_labelled["image"])
        out = masked_dice_ce(
            logits,
            batch_labelled["label"],
            batch_labelled.get("weight"),
            dice_weight=float(self.params["dice_weight"]),
            ce_weight=float(self.params["ce_weight"]),
        )
        return {"loss": out["loss"], "dice": out["dice"], "ce": out["ce"]}
