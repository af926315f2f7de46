"""Benchmark of superpixel refinement (Algorithm 1): speed, memory and accuracy, in one run.

Speed (full-size (155, 240, 240) 1 mm phantom, seed 2000):
  * feature extraction (RefinementSession set-up: per-voxel preparation, additive statistics
    incl. 3D GLCM, adjacency, similarity model) for WT (FLAIR) and TC (T2 + T1Gd);
  * refinement time with cached superpixels and features, at n_segments 350 and 2000, per
    slider move (from a fitted seed) and from a pseudo-label mask (fit included);
  * speed ratio vs the literal implementation, on a crop around the tumour (the literal one
    recomputes voxel statistics and faces over the whole volume for every candidate and is
    too slow on the full volume);
  * peak memory (tracemalloc peak of numpy allocations during set-up + refinement; process
    max RSS).

Accuracy (phantoms seeds 2000-2009, the four degradations of core/degrade.py): WT and TC
Dice before vs after ``refine_labels`` with the code defaults, per case and mean, at half
resolution (78, 120, 120) with 2 mm voxels (same physical brain and superpixel size as the
full grid) to keep the run short.

Usage::

    python benchmarks/refine.py [--seeds 2000-2009] [--out docs/benchmarks/refine.md]
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tune_sim0 import (  # noqa: E402
    HALF_SHAPE,
    HALF_SPACING,
    MODALITIES,
    degraded_cases,
    dice,
    load_phantom_case,
    parse_seeds,
)

FULL_SHAPE = (155, 240, 240)


def _median_time(fn, repeats: int = 5) -> float:
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def speed(lines: list[str], seed: int = 2000) -> None:
    from napari_ssseg.core.refine import (
        DEFAULT_NC,
        DEFAULT_OUTPUT,
        DEFAULT_SIM0,
        RefinementSession,
    )

    t = time.perf_counter()
    case = load_phantom_case(seed, FULL_SHAPE, (1.0, 1.0, 1.0), 350)
    t_case = time.perf_counter() - t
    lines.append(
        f"Full-size phantom seed {seed}, shape {FULL_SHAPE}, 1 mm "
        f"(phantom + superpixels generated or loaded from the benchmark cache in "
        f"{t_case:.1f} s).\n"
    )
    degr = dict(degraded_cases(case))
    p0 = degr["missed_lobe"] > 0
    lines.append(
        "| n_segments | region | superpixels | feature extraction (s) | "
        "refine per slider move, median (ms) | refine from mask incl. fit (ms) | "
        "merges | tracemalloc peak (MB) |"
    )
    lines.append("|---|---|---|---|---|---|---|---|")
    sessions = {}
    for n_seg in (350, 2000):
        c = case if n_seg == 350 else load_phantom_case(seed, FULL_SHAPE, (1.0, 1.0, 1.0), n_seg)
        for region in ("wt", "tc"):
            spx = c["sp_wt"] if region == "wt" else c["sp_tc"]
            pr = p0 if region == "wt" else np.isin(degr["missed_lobe"], (1, 3))
            tracemalloc.start()
            t = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sess = RefinementSession(
                    c["images"], MODALITIES, spx, c["brain"], c["spacing"], region=region
                )
            t_feat = time.perf_counter() - t
            fit = sess.fit(pr)
            res = sess.refine(fit, DEFAULT_SIM0, DEFAULT_NC)
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            t_move = _median_time(lambda s=sess, f=fit: s.refine(f, DEFAULT_SIM0, DEFAULT_NC))
            t_mask = _median_time(lambda s=sess, p=pr: s.refine(p, DEFAULT_SIM0, DEFAULT_NC))
            sessions[(n_seg, region)] = (sess, pr)
            lines.append(
                f"| {n_seg} | {region.upper()} | {sess.n_superpixels} | {t_feat:.2f} "
                f"({', '.join(f'{k} {v:.2f}' for k, v in sess.timings.items() if k != 'total')})"
                f" | {1000 * t_move:.1f} | {1000 * t_mask:.1f} | {len(res.merged)} | "
                f"{peak / 2**20:.0f} |"
            )
            print(lines[-1], file=sys.stderr)
    # sweep: worst slider move over a sim0 grid (n_segments 2000, WT)
    sess, pr = sessions[(2000, "wt")]
    fit = sess.fit(pr)
    worst = max(
        _median_time(lambda s0=s0: sess.refine(fit, s0, DEFAULT_NC), 3)
        for s0 in (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)
    )
    lines.append(
        f"\nWorst median slider move over sim0 in {{0, 0.05, 0.1, 0.2, 0.3, 0.5}} "
        f"(n_segments 2000, WT): {1000 * worst:.1f} ms. Defaults: sim0={DEFAULT_SIM0}, "
        f"n_c={DEFAULT_NC}, output={DEFAULT_OUTPUT}.\n"
    )

    # literal vs fast on a crop around the tumour
    wt = case["labels"] > 0
    idx = np.argwhere(wt)
    lo = np.maximum(idx.min(0) - 20, 0)
    hi = np.minimum(idx.max(0) + 21, wt.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    lines.append(
        "Literal vs fast implementation (same input, same result required): crop "
        f"{tuple(int(b - a) for a, b in zip(lo, hi))} around the tumour of the full-size "
        "phantom, superpixels of the full volume cut to the crop.\n"
    )
    lines.append(
        "| n_segments | region | sim0 | merges | fast (ms) | literal (s) | ratio | identical |"
    )
    lines.append("|---|---|---|---|---|---|---|---|")
    for n_seg in (350, 2000):
        c = case if n_seg == 350 else load_phantom_case(seed, FULL_SHAPE, (1.0, 1.0, 1.0), n_seg)
        for region in ("wt", "tc"):
            spx = (c["sp_wt"] if region == "wt" else c["sp_tc"])[box]
            img = c["images"][(slice(None),) + box]
            brain = c["brain"][box]
            pr = (
                degr["missed_lobe"] > 0 if region == "wt" else np.isin(degr["missed_lobe"], (1, 3))
            )[box]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sess = RefinementSession(img, MODALITIES, spx, brain, c["spacing"], region=region)
            fit = sess.fit(pr)
            for s0 in (0.0, DEFAULT_SIM0):
                t_fast = _median_time(lambda s=sess, f=fit, s0=s0: s.refine(f, s0, DEFAULT_NC))
                a = sess.refine(fit, s0, DEFAULT_NC)
                t = time.perf_counter()
                b = sess.refine(fit, s0, DEFAULT_NC, literal=True)
                t_lit = time.perf_counter() - t
                same = a.merged == b.merged and bool(np.array_equal(a.mask, b.mask))
                lines.append(
                    f"| {n_seg} | {region.upper()} | {s0:g} | {len(a.merged)} | "
                    f"{1000 * t_fast:.1f} | {t_lit:.2f} | {t_lit / t_fast:.0f}x | "
                    f"{same} |"
                )
                print(lines[-1], file=sys.stderr)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines.append(
        f"\nProcess peak RSS for the whole speed part: {rss:.0f} MB (includes the "
        "phantoms, 4 x float32 images and both superpixel maps at two n_segments).\n"
    )


def accuracy(lines: list[str], seeds: list[int]) -> None:
    from napari_ssseg.core.refine import (
        DEFAULT_COMPONENT_SIM,
        DEFAULT_COMPONENTS,
        DEFAULT_MUTUAL,
        DEFAULT_MUTUAL_TOLERANCE,
        DEFAULT_NC,
        DEFAULT_OUTPUT,
        DEFAULT_SIM0,
        RefinementSession,
        refine_labels,
    )

    variants = [
        ("default", {}),
        (
            "paper's Algorithm 1 (sim0 0.1, no component pre-step, strict mutual-best)",
            {"sim0": 0.1, "components": False, "mutual_tolerance": 0.0},
        ),
        ("default without component pre-step", {"components": False}),
        ("default with component_sim=1 (surroundings rule alone)", {"component_sim": 1.0}),
        (
            "default + WT mutual tolerance 0.2, sim0 0.45 (tuned on 1000-1009; leaks)",
            {"mutual_tolerance": {"wt": 0.2, "tc": 0.0}, "sim0": 0.45},
        ),
        ("default with mutual=member", {"mutual": "member"}),
        ("shrink", {"shrink": True}),
        ("output=superpixels", {"output": "superpixels"}),
        ("output=added", {"output": "added"}),
        ("fill_edge=inf (fill every seed superpixel)", {"fill_edge": float("inf")}),
    ]
    rows = []
    summary: dict[str, list] = {v: [] for v, _ in variants}
    per_kind: dict[tuple, list] = {}
    for seed in seeds:
        case = load_phantom_case(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sessions = {
                r: RefinementSession(
                    case["images"],
                    MODALITIES,
                    case[f"sp_{r}"],
                    case["brain"],
                    case["spacing"],
                    region=r,
                )
                for r in ("wt", "tc")
            }
        g_wt = case["labels"] > 0
        g_tc = np.isin(case["labels"], (1, 3))
        for kind, lab in degraded_cases(case):
            b_wt = dice(lab > 0, g_wt)
            b_tc = dice(np.isin(lab, (1, 3)), g_tc)
            for vname, kw in variants:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    out = refine_labels(
                        case["images"],
                        MODALITIES,
                        lab,
                        None,
                        None,
                        case["brain"],
                        spacing=case["spacing"],
                        sessions=sessions,
                        **kw,
                    ).labels
                a_wt = dice(out > 0, g_wt)
                a_tc = dice(np.isin(out, (1, 3)), g_tc)
                summary[vname].append((b_wt, a_wt, b_tc, a_tc))
                per_kind.setdefault((vname, kind), []).append((b_wt, a_wt, b_tc, a_tc))
                if vname == "default":
                    rows.append((seed, kind, b_wt, a_wt, b_tc, a_tc))
        print(f"accuracy seed {seed} done", file=sys.stderr)
    lines.append(
        f"Phantoms seeds {seeds[0]}-{seeds[-1]} at shape {HALF_SHAPE}, "
        f"{HALF_SPACING[0]:g} mm (half resolution, same physical size), n_segments 350, "
        f"defaults sim0={DEFAULT_SIM0}, n_c={DEFAULT_NC}, output={DEFAULT_OUTPUT}, "
        f"component pre-step {DEFAULT_COMPONENTS} (component_sim {DEFAULT_COMPONENT_SIM}), "
        f"mutual-best rule {DEFAULT_MUTUAL} with tolerance {DEFAULT_MUTUAL_TOLERANCE}, "
        "no shrink.\n"
    )
    lines.append(
        "| seed | degradation | WT before | WT after | WT change | TC before | TC after "
        "| TC change |"
    )
    lines.append("|---|---|---|---|---|---|---|---|")
    for seed, kind, bw, aw, bt, at in rows:
        flag = " **worse**" if aw < bw - 0.01 else ""
        flag_t = " **worse**" if at < bt - 0.01 else ""
        lines.append(
            f"| {seed} | {kind} | {bw:.4f} | {aw:.4f} | {aw - bw:+.4f}{flag} | "
            f"{bt:.4f} | {at:.4f} | {at - bt:+.4f}{flag_t} |"
        )
    lines.append("\nSummary over all cases (mean Dice; cases worse by more than 0.01):\n")
    lines.append(
        "| variant | WT before | WT after | WT gain | WT worse | TC before | TC after | "
        "TC gain | TC worse |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for vname, vals in summary.items():
        v = np.array(vals)
        lines.append(
            f"| {vname} | {v[:, 0].mean():.4f} | {v[:, 1].mean():.4f} | "
            f"{v[:, 1].mean() - v[:, 0].mean():+.4f} | {int((v[:, 1] < v[:, 0] - 0.01).sum())}"
            f"/{len(v)} | {v[:, 2].mean():.4f} | {v[:, 3].mean():.4f} | "
            f"{v[:, 3].mean() - v[:, 2].mean():+.4f} | "
            f"{int((v[:, 3] < v[:, 2] - 0.01).sum())}/{len(v)} |"
        )
    # per degradation, default variant and the paper's Algorithm 1
    lines.append("\nPer degradation (mean WT / TC change):\n")
    lines.append("| variant | degradation | WT change | TC change | WT worse | TC worse |")
    lines.append("|---|---|---|---|---|---|")
    for (vname, kind), vals in per_kind.items():
        if vname not in (variants[0][0], variants[1][0]):
            continue
        sel = np.array(vals)
        lines.append(
            f"| {vname} | {kind} | {(sel[:, 1] - sel[:, 0]).mean():+.4f} | "
            f"{(sel[:, 3] - sel[:, 2]).mean():+.4f} | "
            f"{int((sel[:, 1] < sel[:, 0] - 0.01).sum())}/{len(sel)} | "
            f"{int((sel[:, 3] < sel[:, 2] - 0.01).sum())}/{len(sel)} |"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="2000-2009")
    ap.add_argument("--out", default=None)
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-accuracy", action="store_true")
    args = ap.parse_args(argv)
    seeds = parse_seeds(args.seeds)
    if any(1000 <= s <= 1999 for s in seeds):
        print("seeds 1000-1999 are reserved for tuning", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    lines = [
        "# Benchmark: superpixel refinement (Algorithm 1)\n",
        f"Command: `python benchmarks/refine.py --seeds {args.seeds}"
        + (f" --out {args.out}" if args.out else "")
        + "`  ",
        f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}, "
        f"python {platform.python_version()}, numpy {np.__version__}; 2 cores shared "
        "with other jobs during the run (timings are noisy upwards).\n",
    ]
    if not args.skip_speed:
        lines.append("## Speed and memory\n")
        speed(lines)
    if not args.skip_accuracy:
        lines.append("\n## Accuracy on degraded pseudo-labels\n")
        accuracy(lines, seeds)
    lines.append(f"\nTotal benchmark time: {time.perf_counter() - t0:.0f} s.")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        from napari_ssseg.io.atomic import atomic_write_text

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
