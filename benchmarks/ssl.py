#!/usr/bin/env python
"""Benchmark the semi-supervised training strategies of ``ssseg train`` on phantoms (CPU).

Sized for a small shared CPU machine (issue 6, "Benchmarks"):

* **Data** (written once into ``--work``, reused while its settings do not change):
  reduced-resolution phantoms (:func:`napari_ssseg.core.phantom.make_phantom`, default
  ``(48, 64, 64)`` voxels of 3 mm): 5 labelled training cases (seeds 1000+), 20 unlabelled
  training cases (seeds 2000+; written without their label file) and 10 held-out test cases
  (seeds 9000+). For ``sp3`` a workspace holds the same 5 labelled cases (label version
  ``import``) and the same 20 training cases with simulated strokes only
  (:func:`napari_ssseg.core.scribbles.simulate_scribbles` on their ground truth; the
  workspace never sees their label file). The variant ``supervised+scribbles`` trains
  ``supervised`` on that workspace (labels + raw strokes as partial labels): the fair
  baseline for ``sp3``.
* **Training**: one child process per run, ``python -m napari_ssseg.cli train ...`` with the
  same network, crop, batch, learning rate and the **same number of optimiser steps** for
  every strategy (``--budget-minutes`` is only a safety cap). ``--val-fraction 0`` by
  default: all 5 labelled cases train and the final model is evaluated (no model selection
  on a held-out labelled case). ``OMP_NUM_THREADS`` = cores / ``--jobs``.
* **Measured per run**: steps done (the final ``done`` event of ``RUN/events.jsonl``), wall
  time of the child, training time (``start`` to ``done`` event), peak RSS of the child
  (``os.wait4`` on its pid, so each measurement is that run's own), and test WT/TC/ET Dice
  and HD95 of ``RUN/best.pt`` on the 10 test phantoms (predicted by
  :func:`napari_ssseg.ml.inference.predict_case` on the case grid, scored by
  :func:`napari_ssseg.core.metrics.region_metrics`; evaluation runs in its own child
  process after training). HD95 is the image diagonal when exactly one mask is empty.
* **Results**: one JSON file per run in ``--results`` (written as soon as the run is
  evaluated, so a partial matrix can be tabulated); ``--report`` rebuilds the Markdown
  report from them.

A strategy unknown to :func:`napari_ssseg.ml.strategies.base.get_strategy` is skipped with
a message. A failed run is recorded with its command, return code and the tail of its
stderr.

Usage::

    python benchmarks/ssl.py --seeds 0 --jobs 2            # run the matrix (seed 0)
    python benchmarks/ssl.py --seeds 0,1,2 --jobs 2        # more seeds (existing kept)
    python benchmarks/ssl.py --steps 900 --results benchmarks/ssl_results/steps900
    python benchmarks/ssl.py --report --out docs/benchmarks/ssl.md
    python benchmarks/ssl.py --tiny --strategies supervised,mean-teacher --results /tmp/r

``--report`` also renders every sub-folder of ``--results`` that holds a ``meta.json`` (a
"check" matrix such as the 900-step one above) and appends ``--results/notes.md`` verbatim.
``touch WORK/STOP`` makes a running matrix start no further run.
"""

from __future__ import annotations

import os
import sys

# This file is called ssl.py: run as a script, its folder comes first on sys.path and would
# shadow the standard library's ``ssl`` (imported by asyncio, hence by torch). Drop it.
_HERE = os.path.dirname(os.path.abspath(__file__))
if __name__ == "ssl":
    # Imported *as* the standard library's ssl by another script of this folder (``python
    # benchmarks/X.py`` puts the folder first on sys.path): load the real module, without
    # this folder on the path, and let the import return it (``import`` hands back whatever
    # ``sys.modules["ssl"]`` holds once this file has run). The rest of this file only
    # defines names (``main`` runs under ``__main__`` only).
    import importlib

    _saved_path = list(sys.path)
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
    try:
        del sys.modules["ssl"]
        sys.modules["ssl"] = importlib.import_module("ssl")
    finally:
        sys.path[:] = _saved_path
else:
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

#: strategies of issue 6, in report order
STRATEGIES: tuple[str, ...] = (
    "supervised",
    "pseudo-label",
    "pseudo-label-superpixel",
    "cps",
    "mean-teacher",
    "uamt",
    "self-training",
    "sp3",
)
#: the sp3 baseline: ``supervised`` on the scribbled workspace
SCRIBBLE_BASELINE = "supervised+scribbles"
#: strategies trained on the scribbled workspace instead of the case folder
ON_WORKSPACE = {"sp3", SCRIBBLE_BASELINE}

DEFAULT_NETWORK: dict[str, Any] = {
    "name": "UNet",
    "in_channels": 4,
    "out_channels": 4,
    "channels": [8, 16, 32],
    "strides": [2, 2],
    "num_res_units": 1,
    "dropout": 0.1,
}
REGIONS = ("WT", "TC", "ET")
#: rough relative cost of a run (measured: supervised 1, uamt ~6.5; new strategies guessed),
#: used only to start the slowest runs first so that the parallel jobs end together
EXPECTED_COST = {
    "uamt": 9,
    "sp3": 6,
    "pseudo-label-superpixel": 6,
    "pseudo-label": 3,
    "self-training": 3,
    "cps": 3,
    "mean-teacher": 2,
    SCRIBBLE_BASELINE: 1.2,
    "supervised": 1,
}


# ----------------------------------------------------------------------------- helpers
def _write_json(path: Path, data: Any) -> None:
    from napari_ssseg.io.atomic import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=1, allow_nan=False) + "\n")


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S', time.gmtime())}] {msg}", file=sys.stderr, flush=True)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _code_version() -> dict[str, Any]:
    """Which napari_ssseg is imported, the git commit and the modified source files."""
    import napari_ssseg

    src = Path(napari_ssseg.__file__).resolve().parent
    out: dict[str, Any] = {"package": str(src)}
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], cwd=ROOT, capture_output=True, text=True
        )
        out["git_head"] = head.stdout.strip()
        out["modified_src"] = [ln[3:] for ln in dirty.stdout.splitlines()]
    except OSError:
        pass
    return out


def _seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if ":" in part:
            a, b = part.split(":")
            out.extend(range(int(a), int(b)))
        else:
            out.append(int(part))
    if not out:
        raise SystemExit(f"--seeds {text!r}: no seed given (e.g. 0,1,2 or 0:3).")
    return out


# ----------------------------------------------------------------------------- data
def data_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings that define the data set (a change rebuilds the data)."""
    return {
        "shape": list(args.shape),
        "spacing_mm": args.phantom_spacing,
        "n_labelled": args.n_labelled,
        "n_unlabelled": args.n_unlabelled,
        "n_test": args.n_test,
        "labelled_seeds": [1000 + i for i in range(args.n_labelled)],
        "unlabelled_seeds": [2000 + i for i in range(args.n_unlabelled)],
        "test_seeds": [9000 + i for i in range(args.n_test)],
        "scribbles": {"n_slices": args.scribble_slices, "ring": 3, "keep": 1.0},
        "version": 1,
    }


def prepare_data(work: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """Write the case folders, the test folder and the scribbled workspace (or reuse them).

    Layout: ``work/data/train`` (labelled ``L*`` with ``_seg``, unlabelled ``U*`` without),
    ``work/data/test`` (``T*`` with ``_seg``; never given to training), ``work/data/ws``
    (workspace: ``L*`` with an imported label version, ``U*`` with scribbles only).
    """
    import dataclasses

    import numpy as np

    from napari_ssseg.core.phantom import make_phantom
    from napari_ssseg.core.scribbles import simulate_scribbles
    from napari_ssseg.io.workspace import Workspace
    from napari_ssseg.io.writers import write_case

    data = work / "data"
    info_path = data / "data.json"
    if info_path.exists():
        info = json.loads(info_path.read_text())
        if info.get("settings") == settings:
            return info
    if data.exists():
        shutil.rmtree(data)
    train, test = data / "train", data / "test"
    train.mkdir(parents=True)
    test.mkdir(parents=True)
    t0 = time.perf_counter()
    shape = tuple(settings["shape"])
    sp = (settings["spacing_mm"],) * 3

    def phantom(seed: int):
        return make_phantom(shape, sp, seed=seed)

    labelled, unlabelled, scribbles = [], [], {}
    stats = {"tumour_voxels": [], "scribbled_voxels": [], "scribbled_tumour_voxels": []}
    for s in settings["labelled_seeds"]:
        name = f"L{s}"
        write_case(phantom(s).to_case(name=name), train, naming="brats2021")
        labelled.append(name)
    sc = settings["scribbles"]
    for s in settings["unlabelled_seeds"]:
        name = f"U{s}"
        ph = phantom(s)
        case = dataclasses.replace(ph.to_case(name=name), labels=None)
        write_case(case, train, naming="brats2021")
        scr = simulate_scribbles(
            ph.labels, ph.brain, n_slices=sc["n_slices"], ring=sc["ring"], keep=sc["keep"]
        )
        scribbles[name] = scr
        stats["tumour_voxels"].append(int((ph.labels > 0).sum()))
        stats["scribbled_voxels"].append(int((scr > 0).sum()))
        stats["scribbled_tumour_voxels"].append(int(((scr > 0) & (scr < 4)).sum()))
        unlabelled.append(name)
    tests = []
    for s in settings["test_seeds"]:
        name = f"T{s}"
        write_case(phantom(s).to_case(name=name), test, naming="brats2021")
        tests.append(name)

    ws = Workspace.create(data / "ws")
    try:
        for name in labelled:
            rec = ws.add_case(train / name)
            gt = ws.ground_truth(rec.case_id)
            if gt is None:
                raise RuntimeError(f"labelled case {name} has no label file")
            ws.save_labels(rec.case_id, gt, source="import", note="benchmark: full label")
        for name in unlabelled:
            rec = ws.add_case(train / name)
            if ws.ground_truth(rec.case_id) is not None:
                raise RuntimeError(f"unlabelled case {name} must not carry a label file")
            ws.save_scribbles(rec.case_id, scribbles[name], note="simulated strokes")
    finally:
        ws.close()

    tv = np.asarray(stats["tumour_voxels"], float)
    st = np.asarray(stats["scribbled_tumour_voxels"], float)
    info = {
        "settings": settings,
        "labelled": labelled,
        "unlabelled": unlabelled,
        "test": tests,
        "train_dir": str(train),
        "test_dir": str(test),
        "workspace": str(data / "ws"),
        "scribbles": {
            "mean_scribbled_voxels": float(np.mean(stats["scribbled_voxels"])),
            "mean_tumour_voxels": float(tv.mean()),
            "mean_share_of_tumour_annotated": float(np.mean(st / np.maximum(tv, 1))),
        },
        "seconds": round(time.perf_counter() - t0, 1),
    }
    _write_json(info_path, info)
    return info


# ----------------------------------------------------------------------------- runs
def check_strategy(name: str) -> str | None:
    """None if ``ssseg train`` knows strategy ``name``, else the reason it cannot run."""
    from napari_ssseg.errors import InputError
    from napari_ssseg.ml.strategies.base import get_strategy

    try:
        get_strategy(name)
    except InputError as exc:
        return f"unknown strategy: {str(exc).splitlines()[0]}"
    except Exception as exc:  # a strategy module that fails to import
        msg = str(exc).splitlines()[0] if str(exc) else ""
        return f"the strategy registry failed to load ({type(exc).__name__}: {msg})"
    return None


def run_key(label: str, seed: int) -> str:
    return f"{label.replace('+', '_')}_seed{seed}"


def _events(path: Path) -> list[dict[str, Any]]:
    out = []
    if not path.exists():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def _run_child(cmd: list[str], env: dict[str, str], log: Path) -> dict[str, Any]:
    """Run ``cmd``; return code, wall time and this child's own peak RSS (``os.wait4``)."""
    t0 = time.perf_counter()
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "returncode": proc.returncode,
        "wall_seconds": round(time.perf_counter() - t0, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024.0, 1),  # Linux: kilobytes
    }


def train_and_evaluate(
    label: str, seed: int, args: argparse.Namespace, info: dict[str, Any]
) -> dict[str, Any]:
    """Train one (strategy, seed) run in a child process, evaluate it in another."""
    strategy = "supervised" if label == SCRIBBLE_BASELINE else label
    data = info["workspace"] if label in ON_WORKSPACE else info["train_dir"]
    run = Path(args.work) / "runs" / run_key(label, seed)
    if run.exists():
        shutil.rmtree(run)
    run.mkdir(parents=True)
    iters = args.iterations_per_epoch
    epochs = max(1, math.ceil(args.steps / iters))
    cmd = [
        sys.executable,
        "-m",
        "napari_ssseg.cli",
        "train",
        str(data),
        "--strategy",
        strategy,
        "--out",
        str(run),
        "--epochs",
        str(epochs),
        "--iterations-per-epoch",
        str(iters),
        "--seed",
        str(seed),
        "--device",
        "cpu",
        "--batch-size",
        str(args.batch_size),
        "--patch-size",
        str(args.patch_size),
        "--spacing",
        str(args.phantom_spacing),
        "--network",
        json.dumps(args.network, separators=(",", ":")),
        "--val-fraction",
        str(args.val_fraction),
        "--quiet",
    ]
    if args.budget_minutes:
        cmd += ["--budget-minutes", str(args.budget_minutes)]
    threads = str(args.threads)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "OPENBLAS_NUM_THREADS": threads,
        "PYTHONWARNINGS": "ignore",
    }
    res: dict[str, Any] = {
        "label": label,
        "strategy": strategy,
        "seed": seed,
        "data": "workspace (labels + scribbles)" if label in ON_WORKSPACE else "case folders",
        "command": " ".join(shlex.quote(c) for c in cmd[1:]).replace(
            "-m napari_ssseg.cli", "ssseg", 1
        ),
        "threads": args.threads,
        "steps_requested": epochs * iters,
        "code": getattr(args, "code", None),
        "started": _now(),
    }
    _log(f"start {label} seed {seed}")
    train = _run_child(cmd, env, run / "train.log")
    res["train"] = train
    ev = _events(run / "events.jsonl")
    start = next((e for e in ev if e["event"] == "start"), None)
    end = next((e for e in reversed(ev) if e["event"] in ("done", "cancelled", "error")), None)
    res["status"] = end["event"] if end else "no-events"
    if end is not None and end["event"] != "error":
        res["steps_done"] = end.get("step")
        res["stop_reason"] = end.get("reason")
    if start is not None:
        res["n_train"] = start.get("n_train")
        res["n_weak"] = start.get("n_weak")
        res["n_unlabelled"] = start.get("n_unlabelled")
        res["n_val"] = start.get("n_val")
        if end is not None:
            res["train_seconds"] = round(end["time"] - start["time"], 2)
    if train["returncode"] != 0 or res["status"] != "done" or not (run / "best.pt").exists():
        tail = (run / "train.log").read_text(errors="replace")[-3000:]
        res["status"] = "error" if res["status"] in ("done", "no-events") else res["status"]
        res["error"] = {
            "returncode": train["returncode"],
            "event": end.get("message") if end else None,
            "log_tail": tail,
        }
        _log(f"FAILED {label} seed {seed} (rc {train['returncode']}): {tail[-400:]}")
        return res
    # ---- evaluation in its own child (same thread budget)
    eval_json = run / "eval.json"
    ecmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--evaluate-run",
        str(run / "best.pt"),
        "--test-dir",
        info["test_dir"],
        "--eval-out",
        str(eval_json),
    ]
    ev_child = _run_child(ecmd, env, run / "eval.log")
    res["eval"] = ev_child
    if ev_child["returncode"] != 0 or not eval_json.exists():
        res["status"] = "eval-error"
        res["error"] = {"log_tail": (run / "eval.log").read_text(errors="replace")[-3000:]}
        _log(f"EVAL FAILED {label} seed {seed}")
        return res
    res["test"] = json.loads(eval_json.read_text())
    res["finished"] = _now()
    m = res["test"]["mean"]
    _log(
        f"done {label} seed {seed}: steps {res.get('steps_done')}, "
        f"{train['wall_seconds']:.0f} s, {train['peak_rss_mb']:.0f} MB, Dice WT/TC/ET "
        f"{m['WT']['dice']:.3f}/{m['TC']['dice']:.3f}/{m['ET']['dice']:.3f}"
    )
    return res


def evaluate_run(ckpt_path: Path, test_dir: Path, out: Path) -> None:
    """Predict every test case with the checkpoint; WT/TC/ET Dice and HD95 per case."""
    import numpy as np
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from napari_ssseg.core.metrics import region_metrics, to_jsonable
    from napari_ssseg.io.readers import load_case
    from napari_ssseg.ml.checkpoint import load_checkpoint
    from napari_ssseg.ml.data import discover_cases
    from napari_ssseg.ml.inference import predict_case

    ckpt = load_checkpoint(ckpt_path)
    t0 = time.perf_counter()
    per_case = {}
    for folder in discover_cases(test_dir):
        case = load_case(folder)
        if case.labels is None:
            raise SystemExit(f"test case {folder} has no labels")
        pred = predict_case(case, ckpt, device="cpu")["labels"]
        met = region_metrics(pred, case.labels, case.canonical_geometry.spacing_zyx)
        per_case[folder.name] = {
            r: {"dice": met[r]["dice"], "hd95": met[r]["hd95"]} for r in REGIONS
        }
    if not per_case:
        raise SystemExit(f"no test case in {test_dir}")
    mean = {
        r: {k: float(np.nanmean([c[r][k] for c in per_case.values()])) for k in ("dice", "hd95")}
        for r in REGIONS
    }
    _write_json(
        out,
        to_jsonable(
            {
                "n_cases": len(per_case),
                "n_networks": ckpt.n_networks,
                "mean": mean,
                "cases": per_case,
                "seconds": round(time.perf_counter() - t0, 2),
            }
        ),
    )


# ----------------------------------------------------------------------------- report
def _ms(values: list[float], digits: int = 3) -> str:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return "–"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{statistics.mean(vals):.{digits}f} ± {statistics.stdev(vals):.{digits}f}"


def _mean(values: list[float]) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.mean(vals) if vals else None


def load_results(results: Path) -> list[dict[str, Any]]:
    out = []
    for p in sorted(results.glob("*.json")):
        if p.name == "meta.json":
            continue
        try:
            out.append(json.loads(p.read_text()))
        except ValueError:
            continue
    return out


def _main_table(ok: dict[str, list[dict[str, Any]]], labels: list[str]) -> list[str]:
    """Summary table (mean ± std over seeds), median HD95 table and the memory note."""
    sup = ok.get("supervised", [])
    sup_wt = _mean([r["test"]["mean"]["WT"]["dice"] for r in sup])
    sup_rss = _mean([r["train"]["peak_rss_mb"] for r in sup])
    lines = [
        "| strategy | data | seeds | steps | Dice WT | Dice TC | Dice ET | HD95 WT (mm) | "
        "HD95 TC (mm) | HD95 ET (mm) | Δ Dice WT vs supervised | wall time (s) | "
        "peak RSS (MB) | RSS / supervised |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for lab in labels:
        rs = ok[lab]
        if not rs:
            continue
        dice = {r: [x["test"]["mean"][r]["dice"] for x in rs] for r in REGIONS}
        hd = {r: [x["test"]["mean"][r]["hd95"] for x in rs] for r in REGIONS}
        wt = _mean(dice["WT"])
        if lab == "supervised" or sup_wt is None or wt is None:
            delta = "–"
        else:
            delta = f"{wt - sup_wt:+.3f}"
        rss = _mean([x["train"]["peak_rss_mb"] for x in rs])
        ratio = "–" if not sup_rss or rss is None else f"{rss / sup_rss:.2f}"
        steps = sorted({x.get("steps_done") for x in rs}, key=str)
        lines.append(
            f"| `{lab}` | {'workspace' if lab in ON_WORKSPACE else 'folders'} | "
            f"{','.join(str(x['seed']) for x in sorted(rs, key=lambda x: x['seed']))} | "
            f"{'/'.join(str(x) for x in steps)} | {_ms(dice['WT'])} | {_ms(dice['TC'])} | "
            f"{_ms(dice['ET'])} | {_ms(hd['WT'], 1)} | {_ms(hd['TC'], 1)} | {_ms(hd['ET'], 1)} | "
            f"{delta} | "
            f"{_ms([x['train']['wall_seconds'] for x in rs], 0)} | "
            f"{_ms([x['train']['peak_rss_mb'] for x in rs], 0)} | {ratio} |"
        )
    lines += [
        "",
        "HD95 as the median over the test cases (mean ± std over seeds), less sensitive to "
        "the diagonal penalty of a missed or spurious region than the mean above:",
        "",
        "| strategy | median HD95 WT (mm) | median HD95 TC (mm) | median HD95 ET (mm) |",
        "| --- | --- | --- | --- |",
    ]
    for lab in labels:
        if ok[lab]:
            lines.append(
                f"| `{lab}` | "
                + " | ".join(_ms(_per_seed(ok[lab], r, "hd95_median"), 1) for r in REGIONS)
                + " |"
            )
    lines.append("")
    if "cps" in ok and ok["cps"] and sup_rss:
        cps_rss = _mean([x["train"]["peak_rss_mb"] for x in ok["cps"]])
        lines += [
            f"CPS memory: peak RSS {cps_rss:.0f} MB vs {sup_rss:.0f} MB for `supervised` "
            f"(× {cps_rss / sup_rss:.2f}). The RSS includes the Python process, torch and "
            "the data, which do not double."
        ]
        ev = _mean([x["eval"]["peak_rss_mb"] for x in sup if "eval" in x])
        if ev and sup_rss > ev and cps_rss > ev:
            lines[-1] += (
                f" The evaluation child of the same runs (Python, torch, one network, one test "
                f"case; no optimiser, no training batch) peaks at {ev:.0f} MB; above that "
                f"floor `cps` uses {cps_rss - ev:.0f} MB and `supervised` {sup_rss - ev:.0f} "
                f"MB (× {(cps_rss - ev) / (sup_rss - ev):.1f}, a rough estimate of the "
                "training-specific memory)."
            )
        lines.append("")
    return lines


def _check_section(sub: Path, main_meta: dict[str, Any]) -> list[str]:
    """A smaller matrix in a sub-folder of the results (e.g. a longer-training check)."""
    meta = json.loads((sub / "meta.json").read_text())
    runs = load_results(sub)
    order = [*STRATEGIES, SCRIBBLE_BASELINE]
    labels = [lab for lab in order if any(r["label"] == lab for r in runs)]
    ok = {lab: [r for r in runs if r["label"] == lab and "test" in r] for lab in labels}
    s, s0 = meta.get("settings", {}), main_meta.get("settings", {})
    changed = {k: v for k, v in s.items() if s0.get(k) != v and k not in ("jobs", "threads")}
    same_data = meta.get("data", {}).get("settings") == main_meta.get("data", {}).get("settings")
    lines = [
        f"## Check: `{sub.name}` (results in `benchmarks/ssl_results/{sub.name}/`)",
        "",
        f"Command: `{meta.get('command', '?')}`. Settings changed from the main matrix: "
        + (", ".join(f"{k} = {json.dumps(v)}" for k, v in changed.items()) or "none")
        + ("; same data." if same_data else "; **different data**."),
        "",
        *_main_table(ok, labels),
    ]
    failed = [r for r in runs if "test" not in r]
    for r in failed:
        lines.append(f"- `{r['label']}` seed {r['seed']}: did not complete ({r.get('status')}).")
    ds = meta.get("data", {}).get("settings", {})
    vox = float(ds.get("spacing_mm", 1.0)) if ds else 1.0
    lines += ["", *findings(ok, vox, explain=False)]
    return lines


def build_report(results: Path) -> str:
    meta_path = results / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    runs = load_results(results)
    order = [*STRATEGIES, SCRIBBLE_BASELINE]
    labels = [lab for lab in order if any(r["label"] == lab for r in runs)]
    ok = {lab: [r for r in runs if r["label"] == lab and "test" in r] for lab in labels}
    failed = [r for r in runs if "test" not in r]
    s = meta.get("settings", {})
    d = meta.get("data", {})
    lines = [
        "# Semi-supervised training benchmark (issue 6)",
        "",
        "Generated by `python benchmarks/ssl.py --report` from the JSON files in "
        "`benchmarks/ssl_results/` (one per run). Do not edit by hand.",
        "",
        "## Set-up",
        "",
        f"- Command: `{meta.get('command', '?')}`",
        f"- Machine: {meta.get('cpu', '?')}, {meta.get('cores', '?')} cores (shared with "
        f"other jobs), Python {meta.get('python', '?')}, torch {meta.get('torch', '?')}; "
        f"`--jobs {s.get('jobs', '?')}` runs in parallel, each with "
        f"`OMP_NUM_THREADS={s.get('threads', '?')}`.",
    ]
    ds = d.get("settings", {})
    if ds:
        sc = d.get("scribbles", {})
        lines += [
            f"- Data: phantoms {tuple(ds['shape'])} voxels of {ds['spacing_mm']} mm "
            f"(`make_phantom`, random style per seed): {ds['n_labelled']} labelled training "
            f"cases (seeds {ds['labelled_seeds'][0]}–{ds['labelled_seeds'][-1]}), "
            f"{ds['n_unlabelled']} unlabelled training cases (seeds "
            f"{ds['unlabelled_seeds'][0]}–{ds['unlabelled_seeds'][-1]}, written without "
            f"labels), {ds['n_test']} held-out test cases (seeds {ds['test_seeds'][0]}–"
            f"{ds['test_seeds'][-1]}). The data are the same for every run; the training "
            "seed changes the initialisation, crops and augmentation.",
            f"- Scribbles (`sp3` and `{SCRIBBLE_BASELINE}`): a workspace with the labelled "
            "cases (imported label version) and the unlabelled cases with strokes only, "
            f"simulated by `simulate_scribbles(n_slices={ds['scribbles']['n_slices']}, "
            f"ring={ds['scribbles']['ring']})`: on average "
            f"{sc.get('mean_scribbled_voxels', float('nan')):.0f} scribbled voxels per case, "
            f"{100 * sc.get('mean_share_of_tumour_annotated', float('nan')):.1f} % of the "
            "tumour voxels carry a class stroke. "
            f"`{SCRIBBLE_BASELINE}` is `--strategy supervised` on that workspace (labels + "
            "raw strokes as partial labels), the fair baseline for `sp3`.",
        ]
    if s:
        lines += [
            f"- Training: network `{json.dumps(s.get('network'))}`, batch "
            f"{s.get('batch_size')} crops of {s.get('patch_size')}³ at "
            f"{ds.get('spacing_mm', '?')} mm, AdamW (engine default lr), "
            f"**{s.get('steps')} optimiser steps for every strategy** "
            f"({s.get('iterations_per_epoch')} per epoch), `--val-fraction "
            f"{s.get('val_fraction')}` (all labelled cases train; the final model is "
            f"evaluated), `--budget-minutes {s.get('budget_minutes')}` as a safety cap only, "
            "strategy parameters at their defaults (schedules scale with the step count).",
            "- Evaluation: `best.pt` (with `--val-fraction 0`: the last epoch's model) "
            "predicts each test case with `napari_ssseg.ml.inference.predict_case` (sliding "
            "window, back on the case grid); `napari_ssseg.core.metrics.region_metrics` gives "
            "Dice and HD95 (mm) per region, averaged over the test cases. When exactly one of "
            "prediction and truth is empty HD95 is the image diagonal (Dice 0); when both are "
            "empty Dice is 1 and HD95 0. "
            "Mean ± std is over training seeds (std only with ≥ 2 seeds).",
            "- Wall time: the training child process, from launch to exit (data preparation "
            "of the run included, evaluation excluded). Peak RSS: `ru_maxrss` of that child "
            "from `os.wait4` on its pid.",
        ]
    lines += [""]

    # ---- main table
    lines += ["## Results", ""]
    lines += _main_table(ok, labels)

    # ---- per-seed table
    lines += [
        "### Per run",
        "",
        "| strategy | seed | steps | train s | s/step | wall s | peak RSS MB | Dice WT | "
        "Dice TC | Dice ET | HD95 WT | HD95 TC | HD95 ET |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for lab in labels:
        for x in sorted(ok[lab], key=lambda r: r["seed"]):
            m = x["test"]["mean"]
            ts = x.get("train_seconds", float("nan"))
            lines.append(
                f"| `{lab}` | {x['seed']} | {x.get('steps_done')} | {ts:.0f} | "
                f"{ts / max(x.get('steps_done') or 1, 1):.2f} | {x['train']['wall_seconds']:.0f} | "
                f"{x['train']['peak_rss_mb']:.0f} | {m['WT']['dice']:.3f} | "
                f"{m['TC']['dice']:.3f} | {m['ET']['dice']:.3f} | {m['WT']['hd95']:.1f} | "
                f"{m['TC']['hd95']:.1f} | {m['ET']['hd95']:.1f} |"
            )
    lines.append("")

    # ---- failures and skips
    skipped = meta.get("skipped", {})
    if failed or skipped:
        lines += ["## Runs that did not complete", ""]
        for name, why in skipped.items():
            lines.append(f"- `{name}`: skipped, `get_strategy` refused it: {why}")
        for r in failed:
            err = r.get("error", {})
            tail = (err.get("log_tail") or "").strip().splitlines()[-12:]
            lines += [
                f"- `{r['label']}` seed {r['seed']}: status `{r.get('status')}`, return code "
                f"{err.get('returncode')}; command `{r.get('command')}`; log tail:",
                "",
                "```",
                *tail,
                "```",
                "",
            ]
        lines.append("")

    # ---- findings
    lines += ["## Findings", ""]
    lines += findings(ok, float(ds.get("spacing_mm", 1.0)) if ds else 1.0)
    for sub in sorted(p for p in results.iterdir() if (p / "meta.json").is_file()):
        lines += ["", *_check_section(sub, meta)]
    notes = results / "notes.md"
    if notes.exists():  # hand-written context (provenance, interpretation), kept with the data
        lines += ["", notes.read_text(encoding="utf-8").strip(), ""]
    return "\n".join(lines).rstrip() + "\n"


def _per_seed(rs: list[dict[str, Any]], region: str, metric: str) -> list[float]:
    """Test-set mean of ``metric`` (or the median, for ``"hd95_median"``) per seed."""
    if metric == "hd95_median":
        return [
            statistics.median(c[region]["hd95"] for c in x["test"]["cases"].values()) for x in rs
        ]
    return [x["test"]["mean"][region][metric] for x in rs]


def _compare(
    rs: list[dict[str, Any]], base: list[dict[str, Any]], metric: str, threshold: float
) -> tuple[list[tuple[str, float]], list[str], list[str]]:
    """Differences per region vs ``base`` and the regions clearly better / worse.

    A difference is clear when it exceeds ``threshold`` and the larger of the two seed
    standard deviations. Higher is better for Dice, lower for HD95.
    """
    sign = 1.0 if metric == "dice" else -1.0
    deltas, better, worse = [], [], []
    for r in REGIONS:
        a, b = _per_seed(rs, r, metric), _per_seed(base, r, metric)
        d = statistics.mean(a) - statistics.mean(b)
        noise = max(
            [statistics.stdev(v) for v in (a, b) if len(v) > 1] or [0.0],
        )
        deltas.append((r, d))
        if sign * d > threshold and abs(d) > noise:
            better.append(r)
        elif sign * d < -threshold and abs(d) > noise:
            worse.append(r)
    return deltas, better, worse


def findings(
    ok: dict[str, list[dict[str, Any]]], voxel_mm: float = 1.0, explain: bool = True
) -> list[str]:
    """Plain statements computed from the numbers (no claim beyond them)."""
    sup = ok.get("supervised", [])
    if not sup:
        return ["No `supervised` run finished, so no strategy can be compared with it."]
    n_sup = len(sup)
    n_lab = sup[0].get("n_train")
    base = {r: statistics.mean(_per_seed(sup, r, "dice")) for r in REGIONS}
    out = [
        f"`supervised` ({n_lab} labelled training cases, {n_sup} seed"
        f"{'s' if n_sup > 1 else ''}): Dice "
        + ", ".join(f"{r} {base[r]:.3f}" for r in REGIONS)
        + ".",
        "",
    ]
    if not explain:
        out += ["Same criteria as in the findings of the main matrix.", ""]
    else:
        out += [
            "Computed from the table (not hand-picked): a difference is called clear only "
            f"when it exceeds 0.01 Dice (or one voxel, {voxel_mm:g} mm, of HD95) **and** the "
            "larger of the two seed standard deviations; with a single seed only the fixed "
            "threshold applies, which says nothing about seed noise. HD95 is compared on the "
            "per-seed median over the test cases (the mean is dominated by the image-diagonal "
            "penalty of a missed or spurious region). Runs with the same seed start from the "
            "same initial weights and draw crops with the same seeds, so seeds are also "
            "compared pairwise: with >= 3 paired seeds, a Dice difference > 0.01 whose sign is "
            "the same in every seed is reported as 'higher/lower in every seed' (a sign test "
            "over 5 seeds gives p = 1/32 one-sided, per region; not corrected for the many "
            "comparisons).",
            "",
        ]

    def line(lab: str, rs: list[dict[str, Any]], ref: list[dict[str, Any]], name: str) -> str:
        n = len(rs)
        dd, dw, dl = _compare(rs, ref, "dice", 0.01)
        hd, hw, hl = _compare(rs, ref, "hd95_median", voxel_mm)
        txt = (
            f"- `{lab}` ({n} seed{'s' if n > 1 else ''}) vs `{name}`: Δ Dice "
            + ", ".join(f"{r} {d:+.3f}" for r, d in dd)
            + "; Δ median HD95 "
            + ", ".join(f"{r} {d:+.1f} mm" for r, d in hd)
            + ". "
        )
        common = sorted({x["seed"] for x in rs} & {x["seed"] for x in ref})
        always_up: list[str] = []
        always_down: list[str] = []
        if len(common) > 1:
            a = {x["seed"]: x["test"]["mean"] for x in rs}
            b = {x["seed"]: x["test"]["mean"] for x in ref}
            wins = [sum(a[k][r]["dice"] > b[k][r]["dice"] for k in common) for r in REGIONS]
            txt += (
                "Dice higher in "
                + ", ".join(f"{r} {w}/{len(common)}" for r, w in zip(REGIONS, wins))
                + " paired seeds. "
            )
            if len(common) >= 3:
                dmap = dict(dd)
                always_up = [
                    r
                    for r, w in zip(REGIONS, wins)
                    if w == len(common) and dmap[r] > 0.01 and r not in dw
                ]
                always_down = [
                    r for r, w in zip(REGIONS, wins) if w == 0 and dmap[r] < -0.01 and r not in dl
                ]
        verdict = []
        if dw:
            verdict.append(f"Dice clearly higher on {', '.join(dw)}")
        if dl:
            verdict.append(f"Dice clearly lower on {', '.join(dl)}")
        if always_up:
            verdict.append(f"Dice higher in every seed on {', '.join(always_up)}")
        if always_down:
            verdict.append(f"Dice lower in every seed on {', '.join(always_down)}")
        if hw:
            verdict.append(f"HD95 clearly lower (better) on {', '.join(hw)}")
        if hl:
            verdict.append(f"HD95 clearly higher (worse) on {', '.join(hl)}")
        return txt + ("; ".join(verdict) if verdict else "No clear difference") + "."

    items = [
        line(lab, rs, sup, "supervised")
        for lab, rs in ok.items()
        if lab not in ("supervised", SCRIBBLE_BASELINE) and rs
    ]
    out += items + [""]
    sb, sp = ok.get(SCRIBBLE_BASELINE, []), ok.get("sp3", [])
    if sb and sp:
        out += [
            f"`sp3` against its fair baseline `{SCRIBBLE_BASELINE}` (the same workspace: the "
            "labelled cases plus the scribbled cases, strokes used as partial labels):",
            "",
            line("sp3", sp, sb, SCRIBBLE_BASELINE),
            line(SCRIBBLE_BASELINE, sb, sup, "supervised"),
            "",
        ]
    return out


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--strategies",
        default=",".join([*STRATEGIES, SCRIBBLE_BASELINE]),
        help="comma-separated runs (default: all eight strategies and "
        f"{SCRIBBLE_BASELINE!r}, the sp3 baseline)",
    )
    p.add_argument("--seeds", default="0", help="training seeds, e.g. 0,1,2 or 0:3 (default 0)")
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel (default 2)")
    p.add_argument("--threads", type=int, default=0, help="threads per run (0: cores / jobs)")
    p.add_argument("--steps", type=int, default=300, help="optimiser steps of every run")
    p.add_argument("--iterations-per-epoch", type=int, default=25)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--patch-size", type=int, default=32)
    p.add_argument("--val-fraction", type=float, default=0.0)
    p.add_argument(
        "--budget-minutes", type=float, default=20.0, help="safety cap per run (0: none)"
    )
    p.add_argument("--network", default=json.dumps(DEFAULT_NETWORK), help="network JSON")
    p.add_argument("--shape", default="48,64,64", help="phantom grid Z,Y,X")
    p.add_argument("--phantom-spacing", type=float, default=3.0, help="phantom voxel size mm")
    p.add_argument("--n-labelled", type=int, default=5)
    p.add_argument("--n-unlabelled", type=int, default=20)
    p.add_argument("--n-test", type=int, default=10)
    p.add_argument("--scribble-slices", type=int, default=3)
    p.add_argument("--work", type=Path, default=Path("/tmp/ssseg-bench-ssl"))
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "ssl_results")
    p.add_argument("--force", action="store_true", help="re-run runs that have a result")
    p.add_argument(
        "--tiny",
        action="store_true",
        help="smoke test: 2 labelled, 2 unlabelled, 2 test phantoms (32, 40, 40), 6 steps",
    )
    p.add_argument("--report", action="store_true", help="only rebuild --out from --results")
    p.add_argument("--out", type=Path, default=None, help="Markdown report to (re)write")
    p.add_argument("--evaluate-run", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--test-dir", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--eval-out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.network = json.loads(args.network)
    args.shape = tuple(int(v) for v in args.shape.split(","))
    if args.tiny:
        args.shape = (32, 40, 40)
        args.phantom_spacing = 4.0
        args.n_labelled, args.n_unlabelled, args.n_test = 2, 2, 2
        args.steps, args.iterations_per_epoch = 6, 3
        args.patch_size = 16
    args.jobs = max(1, args.jobs)
    if args.threads <= 0:
        args.threads = max(1, (os.cpu_count() or 1) // args.jobs)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.evaluate_run is not None:
        evaluate_run(args.evaluate_run, args.test_dir, args.eval_out)
        return 0
    results: Path = args.results
    if args.report:
        out = args.out or ROOT / "docs" / "benchmarks" / "ssl.md"
        from napari_ssseg.io.atomic import atomic_write_text

        atomic_write_text(out, build_report(results))
        _log(f"wrote {out}")
        return 0

    import torch

    labels = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [lab for lab in labels if lab not in (*STRATEGIES, SCRIBBLE_BASELINE)]
    skipped: dict[str, str] = {}
    runnable = []
    for lab in labels:
        name = "supervised" if lab == SCRIBBLE_BASELINE else lab
        why = check_strategy(name)
        if why is not None:
            _log(f"SKIP {lab}: get_strategy({name!r}) failed: {why}")
            skipped[lab] = why
        else:
            runnable.append(lab)
    if unknown:
        _log(f"note: {unknown} are not among the issue's strategies; run anyway if known")
    seeds = _seeds(args.seeds)
    args.code = _code_version()

    t0 = time.perf_counter()
    settings = data_settings(args)
    _log("preparing data ...")
    info = prepare_data(Path(args.work), settings)
    _log(f"data ready ({info['seconds']} s when built)")

    meta_path = results / "meta.json"
    old_meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    run_settings = {
        "steps": args.steps,
        "iterations_per_epoch": args.iterations_per_epoch,
        "batch_size": args.batch_size,
        "patch_size": args.patch_size,
        "val_fraction": args.val_fraction,
        "budget_minutes": args.budget_minutes,
        "network": args.network,
        "jobs": args.jobs,
        "threads": args.threads,
    }
    if old_meta and (
        old_meta.get("data", {}).get("settings") != settings
        or {k: v for k, v in old_meta.get("settings", {}).items() if k not in ("jobs", "threads")}
        != {k: v for k, v in run_settings.items() if k not in ("jobs", "threads")}
    ):
        if not args.force:
            raise SystemExit(
                f"{results} holds results made with other settings; use another --results "
                "folder or --force (which deletes them)."
            )
        for p in results.glob("*.json"):
            p.unlink()
        old_meta = {}
    cmd = "python benchmarks/ssl.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)
    )
    if os.environ.get("PYTHONPATH"):
        cmd = f"PYTHONPATH={shlex.quote(os.environ['PYTHONPATH'])} {cmd}"
    commands = [c for c in old_meta.get("commands", []) if c != cmd] + [cmd]
    meta = {
        "command": " ; ".join(commands),
        "commands": commands,
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "code": args.code,
        "settings": run_settings,
        "data": info,
        "skipped": {**old_meta.get("skipped", {}), **skipped},
        "updated": _now(),
    }
    for lab in runnable:  # a strategy that now runs is no longer "skipped"
        meta["skipped"].pop(lab, None)
    _write_json(meta_path, meta)

    todo = []
    for seed in seeds:  # seed-major: a complete seed first; the slowest strategies first
        for lab in sorted(runnable, key=lambda x: -EXPECTED_COST.get(x, 5)):
            path = results / f"{run_key(lab, seed)}.json"
            if path.exists() and not args.force:
                prev = json.loads(path.read_text())
                if "test" in prev:
                    _log(f"have {lab} seed {seed}; skipping (use --force to redo)")
                    continue
            todo.append((lab, seed, path))
    _log(f"{len(todo)} runs to do with {args.jobs} jobs x {args.threads} threads")
    lock = threading.Lock()

    def one(item: tuple[str, int, Path]) -> None:
        lab, seed, path = item
        if stop_file.exists():
            _log(f"stop file {stop_file} present: not starting {lab} seed {seed}")
            return
        try:
            res = train_and_evaluate(lab, seed, args, info)
        except Exception as exc:  # keep the others going; record the failure
            res = {"label": lab, "seed": seed, "status": "error", "error": {"log_tail": repr(exc)}}
        with lock:
            _write_json(path, res)

    stop_file = Path(args.work) / "STOP"
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(one, todo))
    _log(f"matrix done in {time.perf_counter() - t0:.0f} s")
    if args.out is not None:
        from napari_ssseg.io.atomic import atomic_write_text

        atomic_write_text(args.out, build_report(results))
        _log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
