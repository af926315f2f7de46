"""``supervised``: DiceCE on labelled crops only (the baseline every strategy is compared to)."""

from __future__ import annotations

from napari_ssseg.ml.strategies.base import (
    Strategy,
    masked_dice_ce,
    masked_region_dice,
    register,
)

__all__ = ["Supervised"]


@register
class Supervised(Strategy):
    """Masked DiceCE on labelled batches; unlabelled cases are ignored.

    Parameters (``params``): ``dice_weight`` (1.0), ``ce_weight`` (1.0), ``region_dice``
    (0.0: the weight of :func:`~napari_ssseg.ml.strategies.base.masked_region_dice`, a soft
    Dice on the WT / TC / ET regions added to the per-class DiceCE; 0 leaves it out).
    """

    name = "supervised"
    defaults = {"dice_weight": 1.0, "ce_weight": 1.0, "region_dice": 0.0}

    def training_step(self, batch_labelled, batch_unlabelled, step):  # noqa: D102
        logits = self.model(batch_labelled["image"])
        out = masked_dice_ce(
            logits,
            batch_labelled["label"],
            batch_labelled.get("weight"),
            dice_weight=float(self.params["dice_weight"]),
            ce_weight=float(self.params["ce_weight"]),
        )
        res = {"loss": out["loss"], "dice": out["dice"], "ce": out["ce"]}
        rw = float(self.params["region_dice"])
        if rw:
            region = masked_region_dice(
                logits, batch_labelled["label"], batch_labelled.get("weight")
            )
            res["loss"] = res["loss"] + rw * region
            res["region_dice"] = region.detach()
        return res
