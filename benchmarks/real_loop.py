#!/usr/bin/env python
"""Annotator loop on real MRI: retrain on k corrected cases, suggested vs random (issue 12.3).

Protocol
--------
* **Start model**: the v1 default model (phantoms only), e.g.
  ``git show 5d56a9c:src/napari_ssseg/ml/weights/default.pt > /tmp/v1.pt``. v2 was trained
  on all six labelled real cases, so it cannot start a held-out measurement; the script
  refuses a checkpoint whose provenance says it saw real cases.
* **Cases** (``../shared/data/real``, challenge training cases, never copied into the
  repository): a fixed held-out pair, one BraTS 2023 and one UPENN-GBM case
  (:data:`HELD_OUT`, the v2 recipe's fold 1), and a pool of the other four
  (:data:`POOL`) that the "annotator" corrects; their ground truth stands for the
  corrected labels.
* **Suggestion**: as ``ssseg workspace suggest --model`` does it: each pool case is
  predicted with the start model (:func:`napari_ssseg.ml.inference.predict_case`), scored
  with :func:`napari_ssseg.core.suggest.uncertainty_score` (mean entropy inside the
  predicted tumour) and ranked with :func:`napari_ssseg.core.suggest.rank_cases`
  (``strategy="entropy"``, no diversity, the panel's default). The random baseline is
  ``rank_cases(ids, strategy="random", seed=s)``, the same call as the CLI's and panel's.
  The first k cases of a ranking are corrected (nested sets, as an annotator works).
* **Retraining**: :func:`napari_ssseg.ml.train.train`, strategy ``supervised`` (what the
  Retrain panel's one click picks), fine-tuned from the start model on the k corrected
  cases only (what a workspace holds; no phantoms), with the option values of
  ``scripts/train_default_model_v2.py``: AdamW lr 7e-4 with cosine decay, batches of two
  64^3 crops, ``augmentation="strong"``, ``modality_dropout=0.3``, no validation split,
  training seed 0 for every run. Every run gets the same number of steps.
  With ``--semi STRATEGY`` (default ``cps``, the semi-supervised strategy that came out
  ahead on phantoms) the suggested k cases are also trained with that strategy, the three
  unlabelled real cases (:data:`UNLABELLED`) added as unlabelled data: what the Retrain
  panel runs when "semi-supervised" is chosen under Advanced.
* **Evaluation**: held-out WT / TC / ET Dice and HD95 (mm) of each model's proposal with
  the package's pipeline and metrics (``benchmarks/real_proposal.py``), next to the start
  model (k = 0).

Usage (runs and logs in ``--work``, results JSON in ``--json``, both incremental)::

    python benchmarks/real_loop.py --init /tmp/v1.pt --iterations 150 [--seeds 0,1]
    python benchmarks/real_loop.py --init /tmp/v1.pt --iterations 10 --only time  # a short run

A finished run (same selection and settings) found in the JSON is not trained again.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT / ".." / "shared" / "data" / "real"
RESULTS = ROOT / "benchmarks" / "ssl_results" / "real_loop.json"

#: Held out for evaluation (one BraTS 2023, one UPENN-GBM): fold 1 of the v2 recipe.
HELD_OUT = ("BraTS-GLI-00000-000", "UPENN-GBM-00002_11")
#: The cases the annotator corrects.
POOL = ("BraTS-GLI-00012-000", "UPENN-GBM-00008_11", "UPENN-GBM-00011_11", "UPENN-GBM-00075_11")
#: Unlabelled real cases a semi-supervised run adds (images only in ``../shared/data/real``).
UNLABELLED = ("BraTS-GLI-00001-000", "BraTS-GLI-00027-000", "BraTS-GLI-00028-000")


def log(msg: str) -> None:
    """Print a time-stamped line."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _load_script(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def _real_module():
    return _load_script("real_proposal", ROOT / "benchmarks" / "real_proposal.py")


def _v2_recipe():
    return _load_script("train_default_model_v2", ROOT / "scripts" / "train_default_model_v2.py")


def check_start_model(path: Path) -> dict:
    """The start model's provenance; refuse one trained on real cases (no held-out test)."""
    from napari_ssseg.ml.checkpoint import load_checkpoint

    ck = load_checkpoint(path)
    prov = dict(ck.provenance)
    if prov.get("real_cases") or prov.get("model_version", 1) != 1 and prov.get("model_version"):
        raise SystemExit(
            f"{path} was trained on real cases ({prov.get('real_cases')}); the loop must start "
            "from the phantom-only v1 model: git show "
            "5d56a9c:src/napari_ssseg/ml/weights/default.pt > /tmp/v1.pt"
        )
    keep = ("strategy", "training_data", "iterations", "model_version")
    return {k: prov.get(k) for k in keep} | {
        "modalities": list(ck.modalities),
        "normalization": dict(ck.normalization),
    }


def prepare(work: Path, real: Path, init: Path) -> dict:
    """Link the pool cases (UPENN files renamed to BraTS 2021 naming) and fill the cache."""
    from napari_ssseg.ml.checkpoint import load_checkpoint
    from napari_ssseg.ml.data import prepare_dataset

    real_mod = _real_module()
    src = work / "src"
    real_mod.link_cases(real, src, POOL + UNLABELLED)
    ck = load_checkpoint(init)
    t0 = time.perf_counter()
    cases, skipped = prepare_dataset(
        src,
        work / "cache",
        modalities=tuple(ck.modalities),
        normalization=dict(ck.normalization),
        warn=log,
    )
    if skipped or len(cases) != len(POOL) + len(UNLABELLED):
        raise SystemExit(f"pool preparation failed: {skipped}")
    log(f"prepared {len(cases)} pool + unlabelled cases in {time.perf_counter() - t0:.0f} s")
    return json.loads((work / "cache" / "index.json").read_text())


def suggestion_scores(init: Path, real: Path) -> dict:
    """Entropy score of every pool case under the start model, and its Dice (for the record)."""
    from napari_ssseg.core.case import region_masks
    from napari_ssseg.core.metrics import dice
    from napari_ssseg.core.suggest import uncertainty_score
    from napari_ssseg.ml.checkpoint import load_model
    from napari_ssseg.ml.inference import predict_case

    real_mod = _real_module()
    ckpt = load_model(init)
    out: dict = {}
    for name in POOL:
        case = real_mod.load_real_case(real / name)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = predict_case(case, ckpt, device="cpu")
        secs = time.perf_counter() - t0
        score = uncertainty_score(res["uncertainty"], res["labels"])
        pm, gm = region_masks(res["labels"]), region_masks(case.labels)
        out[name] = {
            "entropy_score": round(float(score), 6),
            "predict_seconds": round(secs, 1),
            **{f"start_dice_{r}": round(float(dice(pm[r], gm[r])), 4) for r in ("WT", "TC", "ET")},
        }
        log(f"suggest: {name} {json.dumps(out[name])}")
    return out


def selections(
    scores: dict, seeds: list[int], ks: list[int], semi: str | None = None
) -> list[dict]:
    """The (ranking, k, strategy) runs: suggestion and the random baseline for each seed
    with ``supervised``; with ``semi``, also the suggested cases with that semi-supervised
    strategy (the k corrected cases + :data:`UNLABELLED`)."""
    from napari_ssseg.core.suggest import rank_cases

    ranked = [s.case_id for s in rank_cases({n: scores[n]["entropy_score"] for n in POOL})]
    rankings = {"suggested": ranked}
    for s in seeds:
        rankings[f"random_seed{s}"] = [
            r.case_id for r in rank_cases(list(POOL), strategy="random", seed=s)
        ]
    runs = []
    for k in ks:
        for how, order in rankings.items():
            runs.append(
                {
                    "choice": how,
                    "k": k,
                    "strategy": "supervised",
                    "cases": sorted(order[:k]),
                    "order": order,
                }
            )
        if semi:
            order = rankings["suggested"]
            runs.append(
                {
                    "choice": "suggested",
                    "k": k,
                    "strategy": semi,
                    "cases": sorted(order[:k]),
                    "unlabelled": list(UNLABELLED),
                    "order": order,
                }
            )
    return runs


def run_key(cases: list[str], strategy: str = "supervised") -> str:
    """Run folder name of a selection."""
    key = f"k{len(cases)}_" + "+".join(c.split("-")[-1] for c in cases)
    return key if strategy == "supervised" else f"{key}_{strategy}"


def train_run(args, cases: list[str], index: dict, strategy: str = "supervised") -> dict:
    """Fine-tune the start model on ``cases`` (their labels = the corrections); a
    semi-supervised ``strategy`` also gets :data:`UNLABELLED`."""
    from napari_ssseg.ml.train import train

    out = args.work / "runs" / run_key(cases, strategy)
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    members = list(cases) + ([] if strategy == "supervised" else list(UNLABELLED))
    for c in members:
        link = data / c
        if not link.exists():
            link.symlink_to((args.work / "src" / c).resolve())
    cache = out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    entries = {c: index["cases"][c] for c in members}
    (cache / "index.json").write_text(json.dumps({"key": index["key"], "cases": entries}))
    cfg = _v2_recipe().finetune_config(
        data,
        out,
        init=args.init,
        iterations=args.iterations,
        ipe=args.ipe,
        lr=args.lr,
        modality_dropout=args.modality_dropout,
        seed=args.train_seed,
        strategy=strategy,
    )
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    res = train(cfg, echo=lambda m: None)
    wall = time.perf_counter() - t0
    return {
        "status": res["status"],
        "reason": res.get("reason"),
        "steps": res["step"],
        "train_seconds": round(wall, 1),
        "load_average_start": round(load0, 2),
        "load_average_end": round(os.getloadavg()[0], 2),
        "checkpoint": str(out / "last.pt"),
    }


def evaluate(checkpoint, real: Path) -> dict:
    """Held-out Dice / HD95 (the checkpoint's own post-processing: none for v1 and its runs)."""
    real_mod = _real_module()
    return real_mod.evaluate(checkpoint, HELD_OUT, real, log=log)


def _git_head() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _save(path: Path, results: dict) -> None:
    from napari_ssseg.io.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(results, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--init", type=Path, required=True, help="start model (v1, phantoms only)")
    p.add_argument("--real", type=Path, default=REAL)
    p.add_argument("--work", type=Path, default=Path("/tmp/real_loop"))
    p.add_argument("--json", type=Path, default=RESULTS)
    p.add_argument("--iterations", type=int, default=150)
    p.add_argument("--ipe", type=int, default=25)
    p.add_argument("--lr", type=float, default=7e-4)
    p.add_argument("--modality-dropout", type=float, default=0.3)
    p.add_argument("--train-seed", type=int, default=0)
    p.add_argument("--seeds", default="0,1", help="seeds of the random baseline")
    p.add_argument("--ks", default="1,2,4")
    p.add_argument(
        "--semi",
        default="cps",
        help="semi-supervised strategy also run on the suggested cases + the unlabelled "
        "real cases ('' for none)",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--only", choices=("all", "time"), default="all", help="time: one k=1 run, not saved"
    )
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if not args.real.is_dir():
        print(f"real data folder {args.real} not found", file=sys.stderr)
        return 2
    args.work.mkdir(parents=True, exist_ok=True)
    start = check_start_model(args.init)
    index = prepare(args.work, args.real, args.init)
    if args.only == "time":
        r = train_run(args, [POOL[0]], index, args.semi or "supervised")
        log(f"timing run: {json.dumps(r)}")
        return 0

    settings = {
        "iterations": args.iterations,
        "iterations_per_epoch": args.ipe,
        "lr": args.lr,
        "modality_dropout": args.modality_dropout,
        "train_seed": args.train_seed,
        "batch_size": 2,
        "patch_size": [64, 64, 64],
        "augmentation": "strong",
        "strategies": ["supervised"] + ([args.semi] if args.semi else []),
        "threads": args.threads,
    }
    results: dict = {}
    if args.json.is_file():
        results = json.loads(args.json.read_text())
        if results.get("settings") != settings:
            log("settings differ from the saved results: starting a new results file")
            results = {}
    results.setdefault("protocol", __doc__.split("Usage")[0].strip())
    results["settings"] = settings
    results["held_out"] = list(HELD_OUT)
    results["pool"] = list(POOL)
    results["start_model"] = {"path": str(args.init), **start}
    results["machine"] = {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "git_head": _git_head(),
        "package": str(Path(__import__("napari_ssseg").__file__).parent),
    }
    if "k0" not in results:
        log("evaluating the start model (k = 0)")
        results["k0"] = evaluate(args.init, args.real)
        _save(args.json, results)
    if "suggestion" not in results:
        results["suggestion"] = suggestion_scores(args.init, args.real)
        _save(args.json, results)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    ks = [int(k) for k in args.ks.split(",") if k]
    plan = selections(results["suggestion"], seeds, ks, args.semi or None)
    results["plan"] = plan
    trained = results.setdefault("trained", {})
    todo = []
    for r in plan:
        key = run_key(r["cases"], r["strategy"])
        if key not in trained and key not in todo:
            todo.append(key)
    log(f"{len(plan)} (choice, k, strategy) rows; {len(todo)} trainings left: {todo}")
    for r in plan:
        key = run_key(r["cases"], r["strategy"])
        if key in trained:
            continue
        log(f"training {key} ({r['choice']}, k={r['k']}, {r['strategy']}): {r['cases']}")
        info = train_run(args, r["cases"], index, r["strategy"])
        log(f"trained {key}: {json.dumps(info)}")
        ev = evaluate(info["checkpoint"], args.real)
        trained[key] = {"cases": r["cases"], **info, **ev}
        log(f"{key}: held-out mean {json.dumps(ev['mean'])}")
        _save(args.json, results)
    rows = []
    for r in plan:
        t = trained[run_key(r["cases"], r["strategy"])]
        rows.append(
            {
                "choice": r["choice"],
                "k": r["k"],
                "strategy": r["strategy"],
                "cases": r["cases"],
                "train_seconds": t["train_seconds"],
                "mean": t["mean"],
            }
        )
    results["rows"] = rows
    _save(args.json, results)
    log("done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
