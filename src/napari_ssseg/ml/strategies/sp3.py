"""``sp3``: SP3-style training from scribbles (weakly semi-supervised) **[ours]**.

Only the abstract of the SP3 paper is public (no code, no formulas); this is the project's
specification (design ``algorithms.md`` section 9, ``docs/scribbles.md``), called
"SP3-style" everywhere:

* **Data.** Fully labelled cases train as in ``supervised``. Every scribbled case (a
  workspace case with saved strokes and no label version) joins the *scribble pool*.
  Cases with neither labels nor scribbles are not used (``pseudo-label-superpixel`` is
  the strategy for those); the ``start`` event's notes say how many.
* **Expansion** (epoch 0, no model): on each pool case's WT superpixels (SLIC on the
  prepared network input, ``n_segments``), a superpixel whose strokes all carry class k
  becomes class k; with conflicting strokes only the scribbled voxels count; every other
  voxel is ignored. The partial DiceCE on this target is the *scribble loss*.
* **Pseudo-labels** (from ``start_fraction`` of the run, re-made every
  ``reinfer_fraction``): the current network predicts each pool case and
  :class:`~napari_ssseg.core.scribbles.ScribblePropagator` (model-assisted mode) turns
  prediction + strokes into superpixel pseudo-labels: per class a dynamic threshold
  τ_k ← λ τ_k + (1 − λ) mean{c_s : class(s) = k} (FreeMatch-like, λ = ``lam`` 0.99; one
  set of thresholds shared by all pool cases, so it moves once per case and
  re-inference, like FreeMatch's dataset-wide thresholds), acceptance when c_s ≥ τ_k
  and purity ≥ ``purity`` (0.8), weight w_s = exp(−u_s / ``uncertainty_scale``) (0.5)
  from the superpixel's mean normalised entropy. Expanded scribbles keep their class
  (weight 1); voxels of rejected superpixels are ignored.
* **Loss** per step: DiceCE on a labelled batch (if any) + scribble loss on a pool batch
  + w(t) · weighted DiceCE on the same crops' pseudo-labelled voxels, with
  w(t) = ``pseudo_weight`` (1.0) · exp(−5 (1 − min((t − t0)/L, 1))²) ramped over
  L = ``rampup_fraction`` (0.3) of the run from the first pseudo-labels at t0.

Region-mode strokes ("tumour, class unknown") are not used for training yet: the weak
target of a case keeps only class and background strokes (``docs/training.md``).
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np
import torch

from napari_ssseg import defaults as _defaults
from napari_ssseg.errors import InputError
from napari_ssseg.ml.data import IGNORE_INDEX, DataSplit
from napari_ssseg.ml.strategies.base import Strategy, masked_dice_ce, register, sigmoid_rampup

__all__ = ["SP3", "scribble_codes", "expanded_target"]


def scribble_codes(target: np.ndarray) -> np.ndarray:
    """Weak training target (0 bg, 1-3, 255 unannotated) → internal scribble codes."""
    from napari_ssseg.core.scribbles import BACKGROUND

    t = np.asarray(target)
    codes = np.zeros(t.shape, np.uint8)
    for v in (1, 2, 3):
        codes[t == v] = v
    codes[t == 0] = BACKGROUND
    return codes


def expanded_target(propagator: Any, codes: np.ndarray) -> np.ndarray:
    """Expansion rule on the propagator's WT superpixels → partial target (255 unknown).

    A superpixel whose strokes all carry one class takes it (background strokes: 0); a
    superpixel with conflicting strokes keeps only its scribbled voxels; scribbled voxels
    always keep their class.
    """
    from napari_ssseg.core.scribbles import BACKGROUND, expand_scribbles

    ses = propagator.sessions["wt"]
    crop, lab = ses.crop, ses.labels
    cls, _ = expand_scribbles(lab, codes[crop], int(ses.n_superpixels))
    cls_c = np.where(cls == BACKGROUND, 0, cls).astype(np.int16)
    out = np.full(codes.shape, IGNORE_INDEX, np.uint8)
    sub = out[crop]
    per_vox = cls_c[lab]
    ok = (lab > 0) & (cls[lab] > 0) & (per_vox <= 3)
    sub[ok] = per_vox[ok].astype(np.uint8)
    out[crop] = sub
    for v in (1, 2, 3):
        out[codes == v] = v
    out[codes == BACKGROUND] = 0
    return out


@register
class SP3(Strategy):
    """SP3-style scribble + pseudo-label training (see the module docstring)."""

    name = "sp3"
    uses_unlabelled = True
    needs_labels = False
    defaults = {
        "start_fraction": 0.2,
        "reinfer_fraction": 0.2,
        "rampup_fraction": 0.3,
        "pseudo_weight": 1.0,
        "lam": 0.99,
        "purity": 0.8,
        "uncertainty_scale": 0.5,
        "n_segments": _defaults.SCRIBBLE_N_SEGMENTS,
    }

    def __init__(self, model, params, schedule) -> None:
        super().__init__(model, params, schedule)
        p = self.params
        for key in ("start_fraction", "rampup_fraction"):
            if not isinstance(p[key], (int, float)) or not 0 <= p[key] <= 1:
                raise InputError(f"{key}={p[key]!r}; expected a number in [0, 1].")
        if (
            not isinstance(p["reinfer_fraction"], (int, float))
            or not 0 < p["reinfer_fraction"] <= 1
        ):
            raise InputError(f"reinfer_fraction={p['reinfer_fraction']!r}; expected (0, 1].")
        if not isinstance(p["pseudo_weight"], (int, float)) or p["pseudo_weight"] < 0:
            raise InputError(f"pseudo_weight={p['pseudo_weight']!r}; expected a number >= 0.")
        n = p["n_segments"]
        if not isinstance(n, int) or isinstance(n, bool) or n < 2:
            raise InputError(f"n_segments={n!r}; expected a whole number >= 2.")
        e = int(schedule["epochs"])
        self.start_epoch = int(round(float(p["start_fraction"]) * e))
        self.k = max(1, int(round(float(p["reinfer_fraction"]) * e)))
        self.ramp_length = float(p["rampup_fraction"]) * float(schedule["total_steps"])
        self.targets: dict[str, dict[str, np.ndarray]] = {}
        self.inferred_at: int | None = None
        self.pseudo_from_step: int | None = None
        self.tau: np.ndarray | None = None
        self._props: dict[str, Any] = {}
        self._codes: dict[str, np.ndarray] = {}
        self._expanded: dict[str, np.ndarray] = {}
        self.epoch = 0

    # ------------------------------------------------------------------ data
    @classmethod
    def split_data(cls, split: DataSplit) -> DataSplit:  # noqa: D102
        weak = [c for c in split.train if c.weak]
        full = [c for c in split.train if not c.weak]
        unused = [c for c in split.unlabelled if c.label is None]
        if not weak and not full and not split.val:
            raise InputError(
                "sp3 needs scribbles: no case has saved scribbles or a label. Draw strokes "
                "on a few cases in the Scribble panel and save them to the workspace (or "
                "label at least one case)."
            )
        notes = list(split.notes)
        if unused:
            notes.append(
                f"sp3 does not use the {len(unused)} case(s) with neither labels nor "
                "scribbles (pseudo-label-superpixel trains on such cases)."
            )
        if not weak:
            notes.append(
                "sp3: no scribbled case; it trains like 'supervised' on the labelled cases."
            )
        return DataSplit(train=full, val=split.val, unlabelled=weak, notes=notes)

    def _propagator(self, case: Any, engine: Any) -> Any:
        if case.name not in self._props:
            from napari_ssseg.core.scribbles import ScribblePropagator

            c = engine.as_case(case)
            self._props[case.name] = ScribblePropagator(
                c.images,
                c.modalities,
                spacing=case.spacing or (1.0, 1.0, 1.0),
                n_segments=int(self.params["n_segments"]),
                lam=float(self.params["lam"]),
                purity=float(self.params["purity"]),
                uncertainty_scale=float(self.params["uncertainty_scale"]),
            )
            self._codes[case.name] = scribble_codes(case.load_label())
            self._expanded[case.name] = expanded_target(
                self._props[case.name], self._codes[case.name]
            )
        return self._props[case.name]

    def _expansion_only(self, name: str) -> dict[str, np.ndarray]:
        """The target of the expanded strokes alone (weight 1, nothing pseudo-labelled).

        Every target carries the same keys, so that crops of cases with and without
        pseudo-labels can share a batch.
        """
        tgt = self._expanded[name]
        return {
            "label": tgt,
            "weight": np.ones(tgt.shape, np.float16),
            "pseudo": np.zeros(tgt.shape, np.uint8),
        }

    def on_epoch_start(self, epoch: int, engine: Any) -> None:  # noqa: D102
        self.epoch = epoch
        pool = list(engine.split.unlabelled)
        if not pool:
            return
        if not self.targets:  # epoch 0 (or a resume before any target): expansion only
            t0 = time.perf_counter()
            for c in pool:
                if engine.should_stop():
                    return
                self._propagator(c, engine)
                self.targets[c.name] = self._expansion_only(c.name)
            known = np.mean([(t["label"] != IGNORE_INDEX).mean() for t in self.targets.values()])
            engine.log(
                message=(
                    f"expanded the scribbles of {len(pool)} case(s) through superpixels: "
                    f"{100 * known:.2f}% of voxels have a target "
                    f"({time.perf_counter() - t0:.1f} s)"
                ),
                epoch=epoch,
            )
        if epoch < self.start_epoch:
            return
        due = self.inferred_at is None or (epoch - self.inferred_at) >= self.k
        if due:
            self._pseudo_labels(epoch, pool, engine)

    def _pseudo_labels(self, epoch: int, pool: list, engine: Any) -> None:
        t0 = time.perf_counter()
        net = self.eval_model()
        accepted, weights, failed = [], [], []
        for c in pool:
            if engine.should_stop():
                return
            prop = self._propagator(c, engine)
            probs = engine.predict_probabilities(net, c)
            prop.tau = None if self.tau is None else self.tau.copy()
            try:
                with warnings.catch_warnings():  # strokes outside the brain: dropped
                    warnings.simplefilter("ignore")
                    res = prop.update(self._codes[c.name], probs)
            except InputError as exc:  # e.g. only background strokes: the expansion only
                failed.append(f"{c.name}: {exc}")
                self.targets[c.name] = self._expansion_only(c.name)
                continue
            self.tau = None if prop.tau is None else np.array(prop.tau, dtype=np.float64)
            base = self._expanded[c.name]
            known = base != IGNORE_INDEX
            pseudo = ~known & ~res.ignore
            label = np.where(known, base, np.where(pseudo, res.labels, IGNORE_INDEX))
            weight = np.where(pseudo, res.weights, 1.0).astype(np.float16)
            self.targets[c.name] = {
                "label": label.astype(np.uint8),
                "weight": weight,
                "pseudo": pseudo.astype(np.uint8),
            }
            accepted.append(float(pseudo.mean()))
            if pseudo.any():
                weights.append(float(res.weights[pseudo].mean()))
        self.inferred_at = epoch
        if self.pseudo_from_step is None:
            self.pseudo_from_step = epoch * int(self.schedule["iterations_per_epoch"])
        msg = (
            f"pseudo-labels for {len(accepted)} scribbled case(s): "
            f"{100 * float(np.mean(accepted)) if accepted else 0:.1f}% of voxels accepted, "
            f"mean weight {float(np.mean(weights)) if weights else 0:.3f}, thresholds "
            f"{[round(float(t), 3) for t in self.tau] if self.tau is not None else None} "
            f"({time.perf_counter() - t0:.1f} s)"
        )
        if failed:
            msg += "; kept the expanded scribbles only for " + "; ".join(failed)
        engine.log(message=msg, epoch=epoch)

    def wants_unlabelled(self, step: int) -> bool:  # noqa: D102
        return bool(self.targets)

    def unlabelled_targets(self) -> dict[str, Any] | None:  # noqa: D102
        return self.targets or None

    # ------------------------------------------------------------------ loss
    def weight(self, step: int) -> float:
        """Pseudo-label loss weight w(step) (0 before the first pseudo-labels)."""
        if self.pseudo_from_step is None:
            return 0.0
        t = step - self.pseudo_from_step
        return float(self.params["pseudo_weight"]) * sigmoid_rampup(t, self.ramp_length)

    def training_step(self, batch_labelled, batch_unlabelled, step):  # noqa: D102
        pool = batch_unlabelled if batch_unlabelled and "label" in batch_unlabelled else None
        xs = []
        if batch_labelled is not None:
            xs.append(batch_labelled["image"])
        if pool is not None:
            xs.append(pool["image"])
        if not xs:
            raise InputError("sp3: a step without labelled or scribbled crops.")
        logits = self.model(torch.cat(xs))
        n_l = 0 if batch_labelled is None else batch_labelled["image"].shape[0]
        zero = logits.sum() * 0.0
        sup = scr = pl = zero
        if batch_labelled is not None:
            sup = masked_dice_ce(
                logits[:n_l], batch_labelled["label"], batch_labelled.get("weight")
            )["loss"]
        w = self.weight(step)
        if pool is not None:
            lab = pool["label"]
            is_pseudo = pool.get("pseudo", torch.zeros_like(lab, dtype=torch.float32)) > 0.5
            ignore = torch.full_like(lab, IGNORE_INDEX)
            scr = masked_dice_ce(logits[n_l:], torch.where(is_pseudo, ignore, lab))["loss"]
            if w > 0 and bool(is_pseudo.any()):
                pl = masked_dice_ce(
                    logits[n_l:], torch.where(is_pseudo, lab, ignore), pool.get("weight")
                )["loss"]
        loss = sup + scr + w * pl
        return {
            "loss": loss,
            "supervised": sup.detach(),
            "scribble": scr.detach(),
            "pseudo": pl.detach(),
            "weight": torch.tensor(w),
        }

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:  # noqa: D102
        return {
            "inferred_at": self.inferred_at,
            "pseudo_from_step": self.pseudo_from_step,
            "tau": None if self.tau is None else torch.from_numpy(self.tau.copy()),
            "targets": {
                name: {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in t.items()}
                for name, t in self.targets.items()
            },
        }

    def load_state_dict(self, state) -> None:  # noqa: D102
        self.inferred_at = state.get("inferred_at")
        self.pseudo_from_step = state.get("pseudo_from_step")
        tau = state.get("tau")
        self.tau = None if tau is None else tau.numpy().astype(np.float64)
        self.targets = {
            name: {k: v.numpy() for k, v in t.items()}
            for name, t in (state.get("targets") or {}).items()
        }
