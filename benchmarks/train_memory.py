"""Peak memory of ``ssseg train`` per strategy and memory option, at the default settings.

Each configuration runs as its own child process (``python -m napari_ssseg train``) for a few
steps on phantoms; its peak resident memory (``ru_maxrss`` from ``os.wait4``) is recorded.
On CPU the activations live in RAM, so the differences between configurations are what a
GPU user would see in device memory (up to allocator overheads); the absolute numbers include
the Python / torch / MONAI runtime (the ``baseline`` row: the same command with 1 step of
the smallest crop, i.e. almost only the runtime).

Run: ``python benchmarks/train_memory.py [--out docs/benchmarks/train_memory.json]``; the table
goes to ``docs/benchmarks/training.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS: list[tuple[str, list[str]]] = [
    ("supervised", ["--strategy", "supervised"]),
    (
        "supervised + gradient checkpointing",
        ["--strategy", "supervised", "--gradient-checkpointing"],
    ),
    ("cps", ["--strategy", "cps", "--param", "warmup_fraction=0"]),
    (
        "cps + gradient checkpointing",
        ["--strategy", "cps", "--param", "warmup_fraction=0", "--gradient-checkpointing"],
    ),
    ("mean-teacher", ["--strategy", "mean-teacher"]),
]


def _run(cmd: list[str], env: dict[str, str]) -> tuple[int, float, float]:
    """Run ``cmd``; return (exit code, peak RSS in MiB, seconds)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {err[-1500:]}")
    return proc.returncode, usage.ru_maxrss / 1024.0, time.perf_counter() - t0


def main() -> None:
    """Run every configuration and print a markdown table."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=3, help="optimiser steps per run (3)")
    ap.add_argument("--patch", type=int, default=64, help="crop size (64, the default)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()

    from napari_ssseg.core.phantom import make_phantom
    from napari_ssseg.io.atomic import atomic_write_text
    from napari_ssseg.io.writers import write_case

    env = dict(os.environ, OMP_NUM_THREADS="2")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        for i in range(4):
            case = make_phantom((96, 120, 120), (2.0, 2.0, 2.0), seed=900 + i).to_case(name=f"m{i}")
            if i == 3:
                import dataclasses

                case = dataclasses.replace(case, labels=None)
            write_case(case, data)
        base = [sys.executable, "-m", "napari_ssseg", "train", str(data), "--device", "cpu"]
        base += ["--epochs", "1", "--val-fraction", "0", "--quiet", "--seed", "0"]
        # warm the preprocessing cache path once (not measured) and measure the runtime floor
        _, floor, _ = _run(
            base + ["--out", f"{tmp}/floor", "--iterations-per-epoch", "1", "--patch-size", "16"],
            env,
        )
        rows.append({"config": "baseline (1 step, 16³ crop)", "peak_mib": floor, "seconds": None})
        for name, extra in CONFIGS:
            out = f"{tmp}/{name.replace(' ', '_').replace('+', '')}"
            cmd = base + ["--out", out, "--iterations-per-epoch", str(args.steps)]
            cmd += ["--patch-size", str(args.patch), *extra]
            _, peak, secs = _run(cmd, env)
            rows.append({"config": name, "peak_mib": peak, "seconds": secs})
            print(f"{name}: {peak:.0f} MiB, {secs:.1f} s", file=sys.stderr, flush=True)
    sup = next(r for r in rows if r["config"] == "supervised")
    print(
        f"| configuration ({args.patch}³ crops, batch 2, default UNet) | peak RSS (MiB) | "
        "above baseline (MiB) | vs supervised (above baseline) | wall time (s) |"
    )
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        above = r["peak_mib"] - floor
        ratio = above / max(sup["peak_mib"] - floor, 1e-9)
        secs = "" if r["seconds"] is None else f"{r['seconds']:.1f}"
        print(f"| {r['config']} | {r['peak_mib']:.0f} | {above:.0f} | {ratio:.2f}× | {secs} |")
    if args.out:
        atomic_write_text(
            args.out, json.dumps({"patch": args.patch, "steps": args.steps, "rows": rows}, indent=1)
        )


if __name__ == "__main__":
    main()
