"""``pseudo-label``: Lee (2013) pseudo-labelling with the schedule used by Thompson et al.

Schedule (``docs/training.md``; paper epochs scaled to the run's epochs ``E``):

* α(e) = 0 for e < T1; α_f (e − T1) / (T2 − T1) for T1 ≤ e < T2; α_f for e ≥ T2, with
  α_f = 3, T1 = 200/1000 · E, T2 = 700/1000 · E (paper: 1000 epochs).
* Of the N_T = ``iterations_per_epoch`` batches of epoch e, N_e = ceil(N_T · α/(α + 1)) are
  pseudo-labelled unlabelled crops (spread evenly over the epoch); the others are labelled.
* Pseudo-labels (argmax of the current model, sliding window on each whole unlabelled
  case) are inferred when α first becomes > 0 and re-inferred every K = 200/1000 · E epochs.

``pseudo-label-superpixel`` (Thompson et al. 2022) is the same schedule with every
re-inferred pseudo-label refined by 3D superpixel region growing (Algorithm 1,
:func:`napari_ssseg.core.refine.refine_case`, the defaults of ``ssseg refine``) on the
prepared case (the network input: brain crop, z-score, model voxel size) before it is
used as a target. Cost: SLIC + growth per unlabelled case at every re-inference (about a
second per case at 2 mm; logged in ``strategy`` events). A case whose refinement fails
keeps its unrefined pseudo-label (the event says which and why).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from napari_ssseg import defaults as _defaults
from napari_ssseg.errors import InputError
from napari_ssseg.ml.strategies.base import Strategy, masked_dice_ce, register

__all__ = ["PseudoLabel", "PseudoLabelSuperpixel", "lee_alpha", "pseudo_batches"]


def lee_alpha(epoch: float, alpha_f: float, t1: float, t2: float) -> float:
    """Lee's α(e): 0 before ``t1``, linear ramp to ``alpha_f`` at ``t2``, then constant."""
    if epoch < t1:
        return 0.0
    if epoch >= t2 or t2 <= t1:
        return float(alpha_f)
    return float(alpha_f) * (epoch - t1) / (t2 - t1)


def pseudo_batches(n_total: int, alpha: float) -> int:
    """N_e = ceil(N_T · α / (α + 1)) (0 when α = 0)."""
    if alpha <= 0:
        return 0
    return min(n_total, int(math.ceil(n_total * alpha / (alpha + 1.0) - 1e-9)))


@register
class PseudoLabel(Strategy):
    """Supervised DiceCE, with a growing share of batches on pseudo-labelled cases.

    Parameters (``params``): ``alpha_f`` (3.0), ``t1_fraction`` (0.2), ``t2_fraction``
    (0.7), ``reinfer_fraction`` (0.2): T1, T2 and K as fractions of the run's epochs.
    """

    name = "pseudo-label"
    uses_unlabelled = True
    defaults = {"alpha_f": 3.0, "t1_fraction": 0.2, "t2_fraction": 0.7, "reinfer_fraction": 0.2}

    def __init__(self, model, params, schedule) -> None:
        super().__init__(model, params, schedule)
        p = self.params
        if not (0 <= p["t1_fraction"] <= p["t2_fraction"] <= 1) or p["alpha_f"] < 0:
            raise InputError(
                "pseudo-label needs 0 <= t1_fraction <= t2_fraction <= 1 and alpha_f >= 0; "
                f"got {p}."
            )
        if not 0 < p["reinfer_fraction"] <= 1:
            raise InputError(f"reinfer_fraction={p['reinfer_fraction']!r}; expected (0, 1].")
        e = int(schedule["epochs"])
        self.t1 = p["t1_fraction"] * e
        self.t2 = p["t2_fraction"] * e
        self.k = max(1, int(round(p["reinfer_fraction"] * e)))
        self.labels: dict[str, np.ndarray] = {}
        self.inferred_at: int | None = None
        self.epoch = 0

    def alpha(self, epoch: int) -> float:
        """α at ``epoch`` (0-based)."""
        return lee_alpha(epoch, self.params["alpha_f"], self.t1, self.t2)

    def n_pseudo(self, epoch: int) -> int:
        """Pseudo-labelled batches in ``epoch``."""
        return pseudo_batches(int(self.schedule["iterations_per_epoch"]), self.alpha(epoch))

    def on_epoch_start(self, epoch: int, engine: Any) -> None:  # noqa: D102
        self.epoch = epoch
        if self.alpha(epoch) <= 0 or not engine.split.unlabelled:
            return
        due = self.inferred_at is None or (epoch - self.inferred_at) >= self.k
        if not due:
            return
        net = self.eval_model()
        labels = {}
        for c in engine.split.unlabelled:
            labels[c.name] = self.pseudo_label(
                c, engine.predict_probabilities(net, c).argmax(0).astype(np.uint8), engine
            )
        self.labels = labels
        self.inferred_at = epoch
        self.after_inference(engine)

    def pseudo_label(self, case: Any, pred: np.ndarray, engine: Any) -> np.ndarray:
        """The training target made from the model's argmax ``pred`` (here: ``pred``)."""
        return pred

    def after_inference(self, engine: Any) -> None:
        """Called once all pseudo-labels of a re-inference are made."""

    def is_pseudo_step(self, step: int) -> bool:
        """Whether ``step`` trains on a pseudo-labelled batch (evenly spread N_e per epoch)."""
        n_t = int(self.schedule["iterations_per_epoch"])
        it = step % n_t
        n_e = self.n_pseudo(step // n_t)
        return (it + 1) * n_e // n_t > it * n_e // n_t

    def wants_unlabelled(self, step: int) -> bool:  # noqa: D102
        return bool(self.labels) and self.is_pseudo_step(step)

    def unlabelled_targets(self) -> dict[str, Any] | None:  # noqa: D102
        return self.labels or None

    def training_step(self, batch_labelled, batch_unlabelled, step):  # noqa: D102
        use_pseudo = (
            batch_unlabelled is not None
            and "label" in batch_unlabelled
            and self.is_pseudo_step(step)
        )
        batch = batch_unlabelled if use_pseudo else batch_labelled
        out = masked_dice_ce(self.model(batch["image"]), batch["label"], batch.get("weight"))
        flag = torch.tensor(1.0 if use_pseudo else 0.0)
        return {"loss": out["loss"], "dice": out["dice"], "ce": out["ce"], "pseudo": flag}

    def state_dict(self) -> dict[str, Any]:  # noqa: D102
        return {
            "inferred_at": self.inferred_at,
            "labels": {
                k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.labels.items()
            },
        }

    def load_state_dict(self, state) -> None:  # noqa: D102
        self.inferred_at = state.get("inferred_at")
        self.labels = {
            k: v.numpy().astype(np.uint8) for k, v in (state.get("labels") or {}).items()
        }


@register
class PseudoLabelSuperpixel(PseudoLabel):
    """Lee's schedule with superpixel-refined pseudo-labels (Thompson et al. 2022).

    Parameters (``params``): those of ``pseudo-label`` plus ``n_segments`` (350, SLIC
    superpixels per case, paper default) and ``sim0`` (None: the tuned per-region defaults
    of :func:`~napari_ssseg.core.refine.refine_case`).
    """

    name = "pseudo-label-superpixel"
    defaults = {**PseudoLabel.defaults, "n_segments": _defaults.N_SEGMENTS, "sim0": None}

    def __init__(self, model, params, schedule) -> None:
        super().__init__(model, params, schedule)
        n = self.params["n_segments"]
        if not isinstance(n, int) or isinstance(n, bool) or n < 2:
            raise InputError(f"n_segments={n!r}; expected a whole number >= 2.")
        self._stats: list[dict[str, Any]] = []

    def pseudo_label(self, case: Any, pred: np.ndarray, engine: Any) -> np.ndarray:  # noqa: D102
        import time

        from napari_ssseg.core.refine import refine_case

        t0 = time.perf_counter()
        kw: dict[str, Any] = {"n_segments": int(self.params["n_segments"])}
        if self.params["sim0"] is not None:
            kw["sim0"] = self.params["sim0"]
        try:
            refined = refine_case(engine.as_case(case), pred, **kw).labels.astype(np.uint8)
        except Exception as exc:  # refinement is an improvement, never a reason to stop
            reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            self._stats.append({"case": case.name, "error": reason})
            return pred
        wt0, wt1 = int((pred > 0).sum()), int((refined > 0).sum())
        self._stats.append(
            {
                "case": case.name,
                "changed": float((refined != pred).mean()),
                "wt_before": wt0,
                "wt_after": wt1,
                "seconds": round(time.perf_counter() - t0, 3),
            }
        )
        return refined

    def after_inference(self, engine: Any) -> None:  # noqa: D102
        stats, self._stats = self._stats, []
        ok = [s for s in stats if "error" not in s]
        failed = [s for s in stats if "error" in s]
        msg = f"refined {len(ok)} pseudo-label(s) with superpixels"
        if ok:
            grow = sum(s["wt_after"] for s in ok) / max(sum(s["wt_before"] for s in ok), 1)
            msg += (
                f" (WT volume x{grow:.2f}, {100 * np.mean([s['changed'] for s in ok]):.2f}% "
                f"of voxels changed, {sum(s['seconds'] for s in ok):.1f} s)"
            )
        if failed:
            msg += f"; {len(failed)} kept unrefined: " + "; ".join(
                f"{s['case']}: {s['error']}" for s in failed
            )
        engine.log(message=msg, epoch=self.epoch, cases=stats)
