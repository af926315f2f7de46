#!/usr/bin/env python
"""Train the default model (v2, v3): labelled real MRI cases (+ phantoms), modality dropout.

The shipped default is **v3**: ``--phantoms 0 --lr 5e-4 --model-version 3`` (real cases
only; better on real scans than v2, worse on phantoms, 4-6x cheaper; docs/models.md). The
script's defaults (``--phantoms 12 --lr 7e-4``) rebuild v2.

Seeded and reproducible; uses the package's own training engine
(:func:`napari_ssseg.ml.train.train`, strategy ``supervised``) rather than a separate loop.

Recipe
------
* **Start**: the v1 default model (``--init``, phantoms only), same network (MONAI UNet
  16-32-64-128, 0.6 M parameters), same 2 mm working resolution, so a full case stays well
  under the 15 s CPU budget of ``ssseg predict``.
* **Data**: the labelled real cases of ``../shared/data/real`` (2 BraTS 2023, 4 UPENN-GBM:
  challenge training cases, never copied into the repository) each listed ``--real-repeat``
  times (3: about 60 % of the crops come from real scans), plus ``--phantoms`` phantoms
  (12, seeds 60000+) with the *wide* appearance of
  :meth:`napari_ssseg.core.phantom.PhantomStyle.sample_wide` (strength U(0.3, 1.2)), half made
  at 1 mm (downsampled by the pipeline like a real case), half at 2 mm.
* **Training**: DiceCE (the ``supervised`` strategy), AdamW lr ``--lr`` with cosine decay,
  batches of two 64^3 crops (2:1 tumour-centred), ``augmentation="strong"`` (rotation/scale,
  bias field, gamma, intensity scale/shift, noise, smoothing, low resolution) and
  ``modality_dropout`` 0.3 (1-3 of the 4 inputs zeroed in 30 % of the crops), seed 0.
* **Estimate**: 3 folds of the 6 real cases (2 held out per fold; phantoms always in
  training), each fold trained exactly like the final model; held-out Dice / HD95 with the
  package's inference pipeline (``benchmarks/real_proposal.py``), next to the v1 model on the
  same cases. The final model is trained on all 6 real cases: its real-case accuracy is only
  known through this k-fold estimate.

Stages (logs and runs in ``--work``, default ``/tmp/model_v2``)::

    python scripts/train_default_model_v2.py prepare        # data folders + shared cache
    python scripts/train_default_model_v2.py run --fold 1   # ... --fold 2, 3, final
    python scripts/train_default_model_v2.py evaluate --fold 1
    python scripts/train_default_model_v2.py ship --min-component-fraction 0.5  # -> default.pt

For v3 add ``--work /tmp/model_v3 --phantoms 0 --lr 5e-4`` to every stage and
``--model-version 3`` to ``ship``. ``--region-dice W`` adds the supervised strategy's WT / TC
/ ET region Dice term. ``--members W1 W2`` (``evaluate``, ``ship``): the softmax ensemble of
the fold's model in ``--work`` and in the other seeds' work folders (measured: no gain over
single models, docs/models.md).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "src" / "napari_ssseg" / "ml" / "weights" / "default.pt"

FOLDS: dict[str, tuple[str, ...]] = {
    "1": ("BraTS-GLI-00000-000", "UPENN-GBM-00002_11"),
    "2": ("BraTS-GLI-00012-000", "UPENN-GBM-00008_11"),
    "3": ("UPENN-GBM-00011_11", "UPENN-GBM-00075_11"),
    "final": (),
}


#: The last commit whose shipped default model was v1 (phantoms only), and its path there.
V1_REV = "b8be94c^"
V1_PATH = "src/napari_ssseg/ml/weights/default.pt"


def _v1_from_git() -> bytes:
    """The bytes of the phantom-only v1 default model, from the repository's history."""
    return subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{V1_REV}:{V1_PATH}"],
        check=True,
        capture_output=True,
    ).stdout


def _real_module():
    spec = importlib.util.spec_from_file_location(
        "real_proposal", ROOT / "benchmarks" / "real_proposal.py"
    )
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _modalities_and_norm(init: Path):
    from napari_ssseg.ml.checkpoint import load_checkpoint

    ck = load_checkpoint(init)
    return tuple(ck.modalities), dict(ck.normalization)


def phantom_names(n: int, first_seed: int) -> list[str]:
    return [f"phantom_wide_{first_seed + i}" for i in range(n)]


def prepare(args) -> None:
    """Write the source folders (symlinks to the real cases, phantoms) and the shared cache."""
    from napari_ssseg.core.phantom import PhantomStyle, make_phantom
    from napari_ssseg.io.writers import write_case
    from napari_ssseg.ml.data import prepare_dataset

    real_mod = _real_module()
    src = args.work / "src"
    real_mod.link_cases(args.real, src, real_mod.LABELLED)
    rng = np.random.default_rng(args.seed + 12345)
    for i, name in enumerate(phantom_names(args.phantoms, args.phantom_seed)):
        seed = args.phantom_seed + i
        strength = float(rng.uniform(0.3, 1.2))
        if (src / name).exists():
            continue
        sp = 1.0 if i % 2 == 0 else 2.0
        shape = tuple(int(round(s / sp)) for s in (155, 240, 240))
        style = PhantomStyle.sample(np.random.default_rng(seed), strength=strength, variety="wide")
        ph = make_phantom(shape=shape, spacing=(sp,) * 3, seed=seed, style=style)
        write_case(ph.to_case(name=name), src, naming="brats2021")
        log(f"phantom {name}: {sp} mm, strength {strength:.2f}, kind {ph.tumour_kind}")
    mods, norm = _modalities_and_norm(args.init)
    t0 = time.perf_counter()
    cases, skipped = prepare_dataset(
        src, args.work / "cache", modalities=mods, normalization=norm, warn=log
    )
    log(f"prepared {len(cases)} cases in {time.perf_counter() - t0:.0f} s; skipped {skipped}")
    for c in cases:
        log(f"  {c.name}: {c.shape} labelled={c.label is not None}")


def _fold_data(args, fold: str) -> tuple[Path, list[str]]:
    """Data folder of a run (links, real cases repeated) and its cache index."""
    real_mod = _real_module()
    held = set(FOLDS[fold])
    run = args.work / f"run_{fold}"
    data = run / "data"
    data.mkdir(parents=True, exist_ok=True)
    src = args.work / "src"
    index = json.loads((args.work / "cache" / "index.json").read_text())
    entries = {}
    train_real = [c for c in real_mod.LABELLED if c not in held]
    names: list[str] = []
    for c in train_real:
        for r in range(args.real_repeat):
            names.append(f"{c}__r{r}")
            entries[names[-1]] = index["cases"][c]
    for p in phantom_names(args.phantoms, args.phantom_seed):
        names.append(p)
        entries[p] = index["cases"][p]
    for n in names:
        link = data / n
        if not link.exists():
            link.symlink_to((src / n.split("__r")[0]).resolve())
    cache = run / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "index.json").write_text(json.dumps({"key": index["key"], "cases": entries}))
    return data, names


def finetune_config(
    data: Path,
    out: Path,
    *,
    init: Path,
    iterations: int,
    ipe: int,
    lr: float,
    modality_dropout: float,
    seed: int,
    budget_minutes: float | None = None,
    strategy: str = "supervised",
    region_dice: float = 0.0,
):
    """The v2 recipe's fine-tuning options as a :class:`~napari_ssseg.ml.train.TrainConfig`.

    AdamW (weight decay 1e-4) at ``lr`` with cosine decay, batches of two 64^3 crops,
    strong augmentation, ``modality_dropout``, no validation split; ``iterations`` steps in
    epochs of ``ipe``; ``region_dice`` > 0 adds the supervised strategy's WT / TC / ET region
    Dice term with that weight. Shared with ``benchmarks/real_loop.py``.
    """
    from napari_ssseg.ml.train import TrainConfig

    epochs = max(1, iterations // ipe)
    return TrainConfig(
        data=str(data),
        out=str(out),
        strategy=strategy,
        epochs=epochs,
        iterations_per_epoch=min(ipe, iterations),
        budget_minutes=budget_minutes,
        device="cpu",
        init=str(init),
        seed=seed,
        batch_size=2,
        patch_size=(64, 64, 64),
        lr=lr,
        weight_decay=1e-4,
        val_fraction=0.0,
        val_every=epochs,
        augmentation="strong",
        modality_dropout=modality_dropout,
        strategy_params={"region_dice": region_dice} if region_dice else {},
    )


def run(args) -> None:
    """Train one fold (or the final model) with the package's engine."""
    import torch

    from napari_ssseg.ml.train import train

    torch.set_num_threads(args.threads)
    data, names = _fold_data(args, args.fold)
    out = args.work / f"run_{args.fold}"
    epochs = max(1, args.iterations // args.ipe)
    cfg = finetune_config(
        data,
        out,
        init=args.init,
        iterations=args.iterations,
        ipe=args.ipe,
        lr=args.lr,
        modality_dropout=args.modality_dropout,
        seed=args.seed,
        budget_minutes=args.budget_minutes,
        region_dice=args.region_dice,
    )
    log(f"fold {args.fold}: {len(names)} training entries, {epochs} x {args.ipe} steps")
    t0 = time.perf_counter()
    res = train(cfg, echo=log)
    minutes = (time.perf_counter() - t0) / 60
    res["train_minutes"] = round(minutes, 1)
    (out / "result.json").write_text(json.dumps(res, indent=2))
    log(
        f"fold {args.fold} done: {res['status']} {res['reason']} "
        f"step {res['step']} {minutes:.1f} min"
    )


def _run_checkpoints(args, fold: str) -> list[Path]:
    """``last.pt`` of a fold's run in ``--work`` and in every ``--members`` folder."""
    paths = [w / f"run_{fold}" / "last.pt" for w in (args.work, *args.members)]
    # last.pt is written every epoch; result.json only when the run has finished
    missing = [str(p) for p in paths if not (p.parent / "result.json").is_file()]
    if missing:
        raise SystemExit(
            f"no finished run for {', '.join(missing)}: run (or finish) --fold {fold} first"
        )
    return paths


def _load_members(paths: list[Path]) -> list:
    """The checkpoints of ``paths``, loaded once; they must share network and inputs."""
    from napari_ssseg.ml.checkpoint import load_checkpoint

    cks = [load_checkpoint(p) for p in paths]
    for p, ck in zip(paths[1:], cks[1:]):
        if ck.config != cks[0].config or ck.modalities != cks[0].modalities:
            raise SystemExit(f"{p}: not the same network and inputs as {paths[0]}")
    return cks


def ensemble_checkpoint(cks: list):
    """One checkpoint holding the networks of ``cks`` (see :func:`_load_members`).

    Prediction averages their softmax and maps their disagreement
    (:func:`napari_ssseg.ml.inference.predict_case`); the first checkpoint's metadata is kept.
    """
    import dataclasses

    return dataclasses.replace(cks[0], networks=[n for ck in cks for n in ck.networks])


def _heldout_name(args) -> str:
    frac = args.min_component_fraction
    ens = f"_ens{1 + len(args.members)}" if args.members else ""
    return f"heldout{ens}.json" if not frac else f"heldout{ens}_pp{frac:g}.json"


def evaluate(args) -> None:
    """Held-out Dice / HD95 of a fold's model, and of the v1 model on the same cases.

    With ``--members``, the model evaluated is the softmax ensemble of the fold's model in
    ``--work`` and in each member folder (other seeds of the same recipe).
    """
    import torch

    torch.set_num_threads(args.threads)
    real_mod = _real_module()
    cases = FOLDS[args.fold] or real_mod.LABELLED
    out = args.work / f"run_{args.fold}"
    frac = args.min_component_fraction
    paths = _run_checkpoints(args, args.fold)
    model = ensemble_checkpoint(_load_members(paths)) if len(paths) > 1 else paths[0]
    res = {
        "fold": args.fold,
        "cases": list(cases),
        "min_component_fraction": frac,
        "members": [str(p) for p in paths],
        "v2": real_mod.evaluate(model, cases, args.real, log=log, min_component_fraction=frac),
    }
    if args.baseline:
        res["v1"] = real_mod.evaluate(args.init, cases, args.real, log=log)
    name = _heldout_name(args)
    (out / name).write_text(json.dumps(res, indent=2))
    log(json.dumps({k: res[k]["mean"] for k in ("v2", "v1") if k in res}))


def ship(args) -> None:
    """Copy the final model to weights/default.pt with provenance saying what it saw."""
    from napari_ssseg.ml.checkpoint import save_checkpoint

    real_mod = _real_module()
    run_dir = args.work / "run_final"
    members = _load_members(_run_checkpoints(args, "final"))
    ck = ensemble_checkpoint(members)
    result = json.loads((run_dir / "result.json").read_text())
    kfold = {}
    for f in ("1", "2", "3"):
        p = args.work / f"run_{f}" / _heldout_name(args)
        if p.is_file():
            kfold[f] = json.loads(p.read_text())["v2"]
    rows = [r for v in kfold.values() for r in v["per_case"]]
    prov = dict(ck.provenance)
    phantoms = (
        f" + {args.phantoms} napari_ssseg phantoms (seeds {args.phantom_seed}-"
        f"{args.phantom_seed + args.phantoms - 1}, PhantomStyle.sample_wide)"
        if args.phantoms
        else " (no phantoms)"
    )
    prov.update(
        {
            "strategy": (
                "supervised ("
                + ("phantoms + " if args.phantoms else "")
                + "labelled real MRI), fine-tuned from v1"
            ),
            "model_version": args.model_version,
            "n_labelled": len(real_mod.LABELLED) + args.phantoms,
            "n_unlabelled": 0,
            "training_data": (
                f"{len(real_mod.LABELLED)} labelled real MRI cases "
                f"({', '.join(real_mod.LABELLED)}; "
                "BraTS 2023 and UPENN-GBM challenge training cases, each repeated "
                f"{args.real_repeat}x){phantoms}; initialised from the v1 default model "
                "(phantoms only, seeds 10000-10099)"
            ),
            "real_cases": list(real_mod.LABELLED),
            "validation_data": "none at training time; 3-fold estimate on the real cases",
            "kfold_heldout_mean": real_mod.summarise(rows) if rows else None,
            "kfold_folds": {f: list(FOLDS[f]) for f in ("1", "2", "3")},
            "iterations": result["step"],
            "train_minutes": result.get("train_minutes"),
            "recipe": "scripts/train_default_model_v2.py (prepare; run --fold 1/2/3/final; "
            f"evaluate; ship) --phantoms {args.phantoms} --lr {args.lr} --iterations "
            f"{args.iterations} --modality-dropout {args.modality_dropout} --seed {args.seed}"
            + (f" --region-dice {args.region_dice:g}" if args.region_dice else ""),
            "loss": "DiceCE (per class)"
            + (f" + {args.region_dice:g} x WT/TC/ET region Dice" if args.region_dice else ""),
            "augmentation": "strong",
            "modality_dropout": float(args.modality_dropout),
            "data": "see training_data",
        }
    )
    if len(members) > 1:
        seeds = ", ".join(str(m.provenance.get("seed")) for m in members)
        prov["ensemble"] = (
            f"softmax average of {len(members)} networks trained with the same recipe and "
            f"data, seeds {seeds} (uncertainty: their disagreement)"
        )
    normalization = dict(ck.normalization)
    if args.min_component_fraction:
        # post-processing chosen on the k-fold held-out predictions (docs/models.md)
        normalization["postprocess"] = {"min_component_fraction": args.min_component_fraction}
        prov["postprocess"] = (
            f"whole-tumour components < {args.min_component_fraction:g} x the largest removed "
            "(chosen on the 3-fold held-out predictions)"
        )
    out = save_checkpoint(
        args.out,
        ck.networks,  # state dicts, one per member
        ck.config,
        modalities=ck.modalities,
        normalization=normalization,
        label_convention=ck.label_convention,
        output=ck.output,
        patch_size=ck.patch_size,
        provenance=prov,
    )
    log(f"saved {out} ({out.stat().st_size / 1e6:.2f} MB)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("stage", choices=("prepare", "run", "evaluate", "ship"))
    p.add_argument("--fold", choices=tuple(FOLDS), default="final")
    p.add_argument("--work", type=Path, default=Path("/tmp/model_v2"))
    p.add_argument("--real", type=Path, default=ROOT / ".." / "shared" / "data" / "real")
    p.add_argument("--init", type=Path, default=None, help="start model (default: v1 copy)")
    p.add_argument("--out", type=Path, default=WEIGHTS)
    p.add_argument("--phantoms", type=int, default=12)
    p.add_argument("--phantom-seed", type=int, default=60000)
    p.add_argument("--real-repeat", type=int, default=3)
    p.add_argument("--iterations", type=int, default=700)
    p.add_argument("--ipe", type=int, default=25)
    p.add_argument("--budget-minutes", type=float, default=None)
    p.add_argument("--lr", type=float, default=7e-4)
    p.add_argument("--modality-dropout", type=float, default=0.3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--region-dice",
        type=float,
        default=0.0,
        help="weight of a WT/TC/ET region Dice term added to the loss (0 = none, the v3 recipe)",
    )
    p.add_argument(
        "--min-component-fraction",
        type=float,
        default=0.0,
        help="ship: post-processing of the proposal (0 = none)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--model-version", type=int, default=2, help="ship: the model_version it records"
    )
    p.add_argument("--baseline", action="store_true", help="also evaluate --init (v1)")
    p.add_argument(
        "--members",
        type=Path,
        nargs="*",
        default=[],
        help="evaluate/ship: --work folders of other seeds of the same recipe; their model of "
        "the same fold joins a softmax ensemble with --work's",
    )
    args = p.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.init is None:
        # a frozen copy of the v1 model (phantoms only), so that shipping v2 does not change
        # later runs: the shipped default has seen every real case, a fold must not start there
        v1 = args.work / "default_v1.pt"
        if not v1.is_file():
            try:
                v1.write_bytes(_v1_from_git())
            except (OSError, subprocess.CalledProcessError) as exc:
                print(
                    f"cannot get the v1 start model from git ({exc}); pass --init with the "
                    f"phantom-only v1 checkpoint (git show {V1_REV}:{V1_PATH})",
                    file=sys.stderr,
                )
                return 2
        args.init = v1
    if not args.real.is_dir():
        print(f"real data folder {args.real} not found", file=sys.stderr)
        return 2
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    {"prepare": prepare, "run": run, "evaluate": evaluate, "ship": ship}[args.stage](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
