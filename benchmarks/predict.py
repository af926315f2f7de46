#!/usr/bin/env python
"""Benchmark ``ssseg predict`` with the default model on a BraTS-sized phantom, on the CPU.

Measures, in one run:

* end-to-end time and peak memory of the ``ssseg predict`` command (fresh Python process:
  import, load case, model, preprocess, inference, write NIfTI), plain, ``--tta`` and
  ``--mc-samples 4``;
* the inference step of :func:`napari_ssseg.ml.inference.predict_case_iter` (sliding-window
  passes in its helper thread, with progress events and cancellation checks) against a bare
  ``monai.inferers.sliding_window_inference`` call on the same network and the same input
  tensor, alternated ``--repeats`` times (median);
* WT/TC/ET Dice of the default model on held-out phantoms (seeds and style strength outside
  the training range).

Usage::

    python benchmarks/predict.py --out docs/benchmarks/predict.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

_WRAPPER = (
    "import json, resource, sys, time\n"
    "t0 = time.perf_counter()\n"
    "from napari_ssseg.cli import main\n"
    "rc = main(sys.argv[2:])\n"
    "json.dump({'rc': rc, 'seconds': time.perf_counter() - t0,\n"
    "           'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024},\n"
    "          open(sys.argv[1], 'w'))\n"
)


def run_cli(args: list[str], threads: int) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        stats = fh.name
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _WRAPPER, stats, *args], capture_output=True, text=True, env=env
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"ssseg {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    out = json.loads(Path(stats).read_text())
    os.unlink(stats)
    out["wall_seconds"] = wall
    out["stdout"] = proc.stdout
    return out


def region_dice(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Dice of WT, TC, ET (:func:`napari_ssseg.core.metrics.region_dice`)."""
    from napari_ssseg.core.metrics import region_dice as _region_dice

    return _region_dice(pred, gt)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks/predict.md"))
    p.add_argument("--model", default="default")
    p.add_argument("--seed", type=int, default=50001)
    p.add_argument("--strength", type=float, default=1.5)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dice-seeds", default="50010:50013")
    p.add_argument("--skip-cli", action="store_true")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from monai.inferers import sliding_window_inference

    from napari_ssseg.core.phantom import PhantomStyle, make_phantom
    from napari_ssseg.io.readers import load_case
    from napari_ssseg.io.writers import write_case
    from napari_ssseg.ml.checkpoint import load_model
    from napari_ssseg.ml.inference import predict_case, prepare_input

    ckpt = load_model(None if args.model == "default" else args.model)
    lines: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="ssseg-bench-predict-"))
    style = PhantomStyle.sample(np.random.default_rng(args.seed), strength=args.strength)
    ph = make_phantom(shape=(155, 240, 240), seed=args.seed, style=style)
    case_dir = write_case(ph.to_case(name="bench"), tmp, naming="brats2021")
    print(f"case written to {case_dir}", file=sys.stderr)

    # ---- end-to-end CLI
    cli = {}
    if not args.skip_cli:
        base = ["predict", str(case_dir), "--model", args.model, "--device", "cpu"]
        for name, extra in (
            ("plain", []),
            (
                "plain + uncertainty + probabilities",
                ["--uncertainty", str(tmp / "u.nii.gz"), "--probabilities", str(tmp / "p.nii.gz")],
            ),
            ("--tta", ["--tta"]),
            ("--mc-samples 4", ["--mc-samples", "4"]),
        ):
            r = run_cli(base + ["--out", str(tmp / "pred.nii.gz"), *extra], args.threads)
            cli[name] = r
            print(
                f"cli {name}: {r['wall_seconds']:.1f} s, {r['peak_rss_mb']:.0f} MB", file=sys.stderr
            )

    # ---- inference step vs bare sliding_window_inference (same network, same input)
    case = load_case(case_dir)
    prep = prepare_input(case, ckpt)
    (net,) = ckpt.build("cpu")[:1]
    roi = ckpt.patch_size
    ours, bare, bare_thread, totals = [], [], [], []

    def bare_call() -> float:
        with torch.inference_mode():
            t0 = time.perf_counter()
            sliding_window_inference(prep.x, roi, 2, net, overlap=0.25)
            return time.perf_counter() - t0

    def bare_call_in_thread() -> float:
        # predict_case_iter runs the network in a helper thread: same conditions
        box: dict[str, float] = {}
        th = threading.Thread(target=lambda: box.setdefault("t", bare_call()))
        th.start()
        th.join()
        return box["t"]

    bare_call()  # warm-up (first-call allocations, oneDNN kernels)
    bare_call_in_thread()
    predict_case(case, ckpt, device="cpu", sw_batch_size=2, overlap=0.25)
    for _ in range(args.repeats):
        bare.append(bare_call())
        bare_thread.append(bare_call_in_thread())
        t0 = time.perf_counter()
        res = predict_case(case, ckpt, device="cpu", sw_batch_size=2, overlap=0.25)
        totals.append(time.perf_counter() - t0)
        ours.append(res["info"]["timings"]["inference"])
    med_ours, med_bare = statistics.median(ours), statistics.median(bare)
    med_bare_thread = statistics.median(bare_thread)
    overhead = med_ours / med_bare - 1
    overhead_thread = med_ours / med_bare_thread - 1
    timings = res["info"]["timings"]

    # ---- held-out Dice
    a, b = (int(v) for v in args.dice_seeds.split(":"))
    dice_rows = []
    for seed in [args.seed, *range(a, b)]:
        if seed == args.seed:
            gt, pred = ph.labels, res["labels"]
        else:
            st = PhantomStyle.sample(np.random.default_rng(seed), strength=args.strength)
            q = make_phantom(shape=(155, 240, 240), seed=seed, style=st)
            gt, pred = q.labels, predict_case(q.to_case(), ckpt, device="cpu")["labels"]
        d = region_dice(pred, gt)
        dice_rows.append((seed, d))
        print(f"seed {seed}: {d}", file=sys.stderr)

    # ---- report
    cmd = "python benchmarks/predict.py " + " ".join(sys.argv[1:] if argv is None else argv)
    lines += [
        "# Benchmark: `ssseg predict` (default model, CPU)",
        "",
        f"Command: `{cmd}`  ",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; machine: "
        f"{platform.machine()}, {os.cpu_count()} CPU cores shared with other jobs, torch "
        f"{torch.__version__}, {args.threads} threads.  ",
        f"Model: {ckpt.describe()}.  ",
        f"Case: phantom seed {args.seed}, `PhantomStyle.sample(strength={args.strength})`, "
        f"(155, 240, 240) at 1 mm, written as BraTS 2021 NIfTI. Network input after brain crop "
        f"and resampling to {prep.model_spacing_zyx} mm: {list(prep.x.shape[1:])}; "
        f"{res['info']['n_windows']} window(s) of {list(roi)}.",
        "",
        "## End to end (`ssseg predict`, fresh process)",
        "",
        "| options | wall time (s) | peak RSS (MB) |",
        "|---|---:|---:|",
    ]
    for name, r in cli.items():
        lines.append(f"| {name} | {r['wall_seconds']:.1f} | {r['peak_rss_mb']:.0f} |")
    if not cli:
        lines.append("| (skipped) | | |")
    lines += [
        "",
        "## Inference step vs bare `sliding_window_inference`",
        "",
        f"Same network object, same input tensor, sw_batch_size 2, overlap 0.25, median of "
        f"{args.repeats} alternating runs after one warm-up run of each.",
        "",
        "| | seconds |",
        "|---|---:|",
        f"| bare `sliding_window_inference` (main thread) | {med_bare:.3f} |",
        f"| bare `sliding_window_inference` (in a helper thread) | {med_bare_thread:.3f} |",
        f"| `predict_case_iter` inference step (helper thread) | {med_ours:.3f} |",
        f"| overhead vs bare, main thread | {100 * overhead:+.1f} % (target <= 10 %) |",
        f"| overhead vs bare, helper thread | {100 * overhead_thread:+.1f} % |",
        "",
        "All samples (s): bare "
        + ", ".join(f"{v:.3f}" for v in bare)
        + "; bare in thread "
        + ", ".join(f"{v:.3f}" for v in bare_thread)
        + "; ours "
        + ", ".join(f"{v:.3f}" for v in ours)
        + ".",
        "",
        "Breakdown of one in-process `predict_case` call (s): "
        + ", ".join(f"{k} {v:.2f}" for k, v in timings.items())
        + f"; whole call median {statistics.median(totals):.2f} s.",
        "",
        "Note: on this shared, oversubscribed 2-core machine a 2-thread bare call in the main "
        "thread was erratic (0.8-4.5 s in an earlier run with `--threads 2`, against 0.17-0.55 s "
        "for the same call in a helper thread), so the default is `--threads 1`, where all "
        "three agree. The network step is small because the default model runs at 2 mm on "
        "the brain crop; end to end, the time goes to Python/torch start-up, reading and "
        "writing NIfTI, and preprocessing at 1 mm.",
        "",
        "## Dice on held-out phantoms",
        "",
        f"Seeds outside training (10000-10099) and validation (20000-20003); style strength "
        f"{args.strength} (training used 0-1).",
        "",
        "| seed | WT | TC | ET |",
        "|---:|---:|---:|---:|",
    ]
    for seed, d in dice_rows:
        lines.append(f"| {seed} | {d['WT']:.3f} | {d['TC']:.3f} | {d['ET']:.3f} |")
    mean = {r: float(np.mean([d[r] for _, d in dice_rows])) for r in ("WT", "TC", "ET")}
    lines.append(f"| mean | {mean['WT']:.3f} | {mean['TC']:.3f} | {mean['ET']:.3f} |")
    lines.append("")
    from napari_ssseg.io.atomic import atomic_write_text

    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, "\n".join(lines))
    shutil.rmtree(tmp, ignore_errors=True)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
