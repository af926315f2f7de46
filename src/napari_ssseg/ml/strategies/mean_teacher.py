"""``mean-teacher`` and ``uamt``: an EMA teacher and a consistency loss (SSL4MIS defaults).

* Teacher: exponential moving average of the student's parameters (and buffers) with
  α_t = min(1 − 1/(t + 1), ``ema_decay`` = 0.99), via ``torch.optim.swa_utils.AveragedModel``
  and a custom ``avg_fn``.
* Consistency weight w(t) = ``consistency`` (0.1) · exp(−5 (1 − min(t/L, 1))²), with the ramp
  length L = ``rampup_fraction`` (1.0) × the run's total steps (SSL4MIS ramps over its whole
  iteration budget: 200 "epochs" of 150 iterations = 30 000 iterations).
* MT: teacher input x + clamp(N(0, ``noise_std``²), ±``noise_clip``) (0.1, 0.2);
  L = L_sup + w(t) · mean((softmax student − softmax teacher)²) over the labelled and
  unlabelled crops of the step.
* UAMT: ``passes`` (T = 8) noisy teacher passes with dropout on; p̄ = mean softmax,
  U = −Σ p̄ log p̄; only voxels with U < τ(t) = (0.75 + 0.25 · ramp(t)) · ln K count in the
  consistency term (averaged over those voxels).

The teacher is what is validated and saved (``eval_teacher`` = True; set False to save the
student).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel

from napari_ssseg.errors import InputError
from napari_ssseg.ml.strategies.base import Strategy, masked_dice_ce, register, sigmoid_rampup

__all__ = ["MeanTeacher", "UAMT", "ema_avg_fn"]


def ema_avg_fn(decay: float):
    """``avg_fn`` for AveragedModel: α_t = min(1 − 1/(t + 1), decay), t = updates so far."""

    def fn(avg: torch.Tensor, cur: torch.Tensor, num: torch.Tensor | int) -> torch.Tensor:
        t = int(num)
        alpha = min(1.0 - 1.0 / (t + 1), decay)
        return alpha * avg + (1.0 - alpha) * cur

    return fn


@register
class MeanTeacher(Strategy):
    """Mean teacher (Tarvainen & Valpola; SSL4MIS 3D defaults)."""

    name = "mean-teacher"
    uses_unlabelled = True
    defaults = {
        "ema_decay": 0.99,
        "consistency": 0.1,
        "rampup_fraction": 1.0,
        "noise_std": 0.1,
        "noise_clip": 0.2,
        "eval_teacher": True,
    }

    def __init__(self, model, params, schedule) -> None:
        super().__init__(model, params, schedule)
        p = self.params
        if not 0 <= p["ema_decay"] < 1:
            raise InputError(f"ema_decay={p['ema_decay']!r}; expected a number in [0, 1).")
        if p["consistency"] < 0 or p["rampup_fraction"] < 0 or p["noise_std"] < 0:
            raise InputError(f"{self.name}: consistency, rampup_fraction, noise_std must be >= 0.")
        net = getattr(model, "module", model)
        self.teacher = AveragedModel(
            net, avg_fn=ema_avg_fn(float(p["ema_decay"])), use_buffers=True
        )
        self.teacher.train()
        self.ramp_length = float(p["rampup_fraction"]) * float(schedule["total_steps"])

    def weight(self, step: int) -> float:
        """Consistency weight w(step)."""
        return float(self.params["consistency"]) * sigmoid_rampup(step, self.ramp_length)

    def _noisy(self, x: torch.Tensor) -> torch.Tensor:
        c = float(self.params["noise_clip"])
        return x + torch.clamp(torch.randn_like(x) * float(self.params["noise_std"]), -c, c)

    def _consistency(self, x: torch.Tensor, p_student: torch.Tensor, step: int):
        with torch.no_grad():
            p_teacher = torch.softmax(self.teacher(self._noisy(x)).float(), 1)
        return ((p_student - p_teacher) ** 2).mean(), {}

    def training_step(self, batch_labelled, batch_unlabelled, step):  # noqa: D102
        xs = [batch_labelled["image"]]
        if batch_unlabelled is not None:
            xs.append(batch_unlabelled["image"])
        x = torch.cat(xs)
        n_l = batch_labelled["image"].shape[0]
        logits = self.model(x)  # one student forward (DDP needs one per backward)
        sup = masked_dice_ce(logits[:n_l], batch_labelled["label"], batch_labelled.get("weight"))
        cons, extra = self._consistency(x, torch.softmax(logits.float(), 1), step)
        w = self.weight(step)
        loss = sup["loss"] + w * cons
        return {
            "loss": loss,
            "supervised": sup["loss"].detach(),
            "consistency": cons.detach(),
            "weight": torch.tensor(w),
            **extra,
        }

    def after_step(self, step: int) -> None:  # noqa: D102
        self.teacher.update_parameters(getattr(self.model, "module", self.model))

    def eval_model(self):  # noqa: D102
        if self.params["eval_teacher"]:
            return self.teacher.module
        return super().eval_model()

    def state_dict(self) -> dict[str, Any]:  # noqa: D102
        return {
            "teacher": {k: v.detach().cpu().clone() for k, v in self.teacher.state_dict().items()}
        }

    def load_state_dict(self, state) -> None:  # noqa: D102
        if state.get("teacher"):
            self.teacher.load_state_dict(state["teacher"])
            dev = next(getattr(self.model, "module", self.model).parameters()).device
            self.teacher.to(dev)


@register
class UAMT(MeanTeacher):
    """Uncertainty-aware mean teacher (Yu et al. 2019; SSL4MIS defaults)."""

    name = "uamt"
    defaults = {**MeanTeacher.defaults, "passes": 8}

    def __init__(self, model, params, schedule) -> None:
        super().__init__(model, params, schedule)
        if not isinstance(self.params["passes"], int) or self.params["passes"] < 1:
            raise InputError(f"passes={self.params['passes']!r}; expected a whole number >= 1.")

    def threshold(self, step: int, n_classes: int) -> float:
        """τ(t) = (0.75 + 0.25 · ramp(t)) · ln K."""
        return (0.75 + 0.25 * sigmoid_rampup(step, self.ramp_length)) * math.log(n_classes)

    def _consistency(self, x: torch.Tensor, p_student: torch.Tensor, step: int):
        with torch.no_grad():
            p_teacher = torch.softmax(self.teacher(self._noisy(x)).float(), 1)
            acc = torch.zeros_like(p_teacher)
            for _ in range(int(self.params["passes"])):
                acc += torch.softmax(self.teacher(self._noisy(x)).float(), 1)
            p_bar = acc / int(self.params["passes"])
            u = -(p_bar * torch.log(p_bar + 1e-6)).sum(1)  # (B, Z, Y, X)
            mask = (u < self.threshold(step, p_bar.shape[1])).float()
        dist = ((p_student - p_teacher) ** 2).mean(1)
        cons = (dist * mask).sum() / (mask.sum() + 1e-16)
        return cons, {"certain_fraction": mask.mean().detach()}
