"""Tune the refinement defaults (sim0, similarity options, output mode) on phantoms.

Phantoms with seeds 1000-1009 are reserved for tuning (tests and the accuracy benchmark use
seeds 0-9 and 2000+). Each phantom gets the four degradations of
:mod:`napari_ssseg.core.degrade`; WT is refined on FLAIR superpixels, TC on T2 + T1Gd
superpixels, and the Dice of each region against the ground truth is compared before and
after refinement for every configuration of a small grid.

To keep the run short the phantoms are generated at half resolution — shape (78, 120, 120)
with 2 mm voxels, i.e. the same physical brain as the (155, 240, 240) 1 mm grid, so the
superpixels (n_segments=350) have the same physical size.

Usage::

    python benchmarks/tune_sim0.py [--seeds 1000-1009] [--out docs/refinement.md]

The table is printed and, with ``--out``, written between the markers
``<!-- tuning:start -->`` / ``<!-- tuning:end -->`` of that file.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HALF_SHAPE = (78, 120, 120)
HALF_SPACING = (2.0, 2.0, 2.0)
CACHE = Path(os.environ.get("SSSEG_BENCH_CACHE", "/tmp/ssseg_bench_cache"))


def parse_seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-")
            out += list(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    return out


def load_phantom_case(seed: int, shape=HALF_SHAPE, spacing=HALF_SPACING, n_segments: int = 350):
    """Phantom + WT/TC superpixels (cached on disk under $SSSEG_BENCH_CACHE)."""
    from napari_ssseg.core.phantom import make_phantom
    from napari_ssseg.core.superpixels import region_superpixels

    CACHE.mkdir(parents=True, exist_ok=True)
    key = f"ph{seed}_{'x'.join(map(str, shape))}_{spacing[0]:g}_{n_segments}.npz"
    path = CACHE / key
    if path.exists():
        d = np.load(path)
        return {k: d[k] for k in d.files} | {"spacing": tuple(spacing), "seed": seed}
    ph = make_phantom(shape, spacing, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kw = dict(mask=ph.brain, spacing=ph.spacing, n_segments=n_segments)
        sp_wt = region_superpixels(ph.images, ph.modalities, "WT", **kw)
        sp_tc = region_superpixels(ph.images, ph.modalities, "TC", **kw)
    out = {
        "images": ph.images,
        "labels": ph.labels,
        "brain": ph.brain,
        "sp_wt": sp_wt,
        "sp_tc": sp_tc,
    }
    np.savez(path, **out)
    return out | {"spacing": tuple(spacing), "seed": seed}


def degraded_cases(case: dict):
    from napari_ssseg.core.degrade import DEGRADATIONS, degrade

    for i, kind in enumerate(DEGRADATIONS):
        yield (
            kind,
            degrade(
                case["labels"],
                kind,
                brain=case["brain"],
                spacing=case["spacing"],
                seed=case["seed"] * 10 + i,
            ),
        )


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, bool)
    b = np.asarray(b, bool)
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int((a & b).sum()) / s


MODALITIES = ("t1", "t1ce", "t2", "flair")


def main(argv: list[str] | None = None) -> int:
    from napari_ssseg.core.refine import (
        DEFAULT_OUTPUT,
        DEFAULT_SIM0,
        DEFAULT_WEIGHTS,
        RefinementSession,
        SimilarityWeights,
    )

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="1000-1009")
    ap.add_argument("--out", default=None, help="Markdown file to update (tuning section)")
    ap.add_argument("--quick", action="store_true", help="smaller grid")
    args = ap.parse_args(argv)
    seeds = parse_seeds(args.seeds)
    bad = [s for s in seeds if s < 1000 or s > 1999]
    if bad:
        print(f"refusing seeds {bad}: tuning uses seeds 1000-1999 only", file=sys.stderr)
        return 2

    sim0s = [0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5]
    outputs = ["added", "union", "superpixels"]
    if args.quick:
        weight_grid = [SimilarityWeights(), SimilarityWeights(region_features="union")]
    else:
        weight_grid = [
            SimilarityWeights(content=c, border=b, ward=w, region_features=rf, clip=cl)
            for (c, b), w, rf, cl in itertools.product(
                [(0.5, 0.5), (0.75, 0.25), (0.25, 0.75)],
                [False],
                ["centroid", "union"],
                [3.0, 0.0],
            )
        ]
    t0 = time.perf_counter()
    # results[(region, weights_idx, output, sim0)] -> list of (before, after)
    results: dict[tuple, list[tuple[float, float]]] = {}
    for seed in seeds:
        case = load_phantom_case(seed)
        gt = {"wt": case["labels"] > 0, "tc": np.isin(case["labels"], (1, 3))}
        degr = list(degraded_cases(case))
        for region in ("wt", "tc"):
            spx = case["sp_wt"] if region == "wt" else case["sp_tc"]
            for wi, w in enumerate(weight_grid):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    sess = RefinementSession(
                        case["images"],
                        MODALITIES,
                        spx,
                        case["brain"],
                        case["spacing"],
                        region=region,
                        weights=w,
                    )
                for kind, lab in degr:
                    p0 = lab > 0 if region == "wt" else np.isin(lab, (1, 3))
                    before = dice(p0, gt[region])
                    if not p0.any():
                        continue
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        fit = sess.fit(p0)
                    for out, s0 in itertools.product(outputs, sim0s):
                        r = sess.refine(fit, s0, 30, output=out)
                        results.setdefault((region, wi, out, s0), []).append(
                            (before, dice(r.mask, gt[region]), kind)
                        )
        print(f"seed {seed} done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)

    def score(pairs):
        g = np.array([a - b for b, a, _ in pairs])
        return g.mean() - 2.0 * np.maximum(-g - 0.01, 0).mean(), g.mean(), g.min()

    lines = []
    best = {}
    for region in ("wt", "tc"):
        rows = []
        for (r, wi, out, s0), pairs in results.items():
            if r != region:
                continue
            sc, mean, worst = score(pairs)
            rows.append((sc, mean, worst, wi, out, s0, len(pairs)))
        rows.sort(key=lambda t: -t[0])
        best[region] = rows[0]
        lines.append(
            f"\n**{region.upper()}** — top 8 of {len(rows)} configurations "
            f"(score = mean gain - 2 x mean excess loss beyond 0.01):\n"
        )
        lines.append(
            "| rank | sim0 | output | content/border | Ward | region features | clip "
            "| mean Dice gain | worst case | score |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|---|")
        for k, (sc, mean, worst, wi, out, s0, _n) in enumerate(rows[:8]):
            w = weight_grid[wi]
            lines.append(
                f"| {k + 1} | {s0:g} | {out} | {w.content:g}/{w.border:g} | {w.ward} | "
                f"{w.region_features} | {w.clip:g} | {mean:+.4f} | {worst:+.4f} | {sc:+.4f} |"
            )
        # per-case table of the best configuration
        sc, mean, worst, wi, out, s0, _n = rows[0]
        pairs = results[(region, wi, out, s0)]
        bef = np.array([p[0] for p in pairs])
        aft = np.array([p[1] for p in pairs])
        lines.append(
            f"\nBest {region.upper()} configuration on the tuning phantoms: mean Dice "
            f"{bef.mean():.4f} -> {aft.mean():.4f} ({aft.mean() - bef.mean():+.4f}), "
            f"{int((aft < bef - 0.01).sum())} of {len(pairs)} cases worse by more than 0.01.\n"
        )
        lines.append(f"Best {region.upper()} configuration per output mode:\n")
        lines.append(
            "| output | sim0 | content/border | region features | clip | mean gain | worse > 0.01 |"
        )
        lines.append("|---|---|---|---|---|---|---|")
        for out in outputs:
            sc, mean, worst, wi, o, s0, _n = next(r for r in rows if r[4] == out)
            w = weight_grid[wi]
            g = np.array([a - b for b, a, _ in results[(region, wi, o, s0)]])
            lines.append(
                f"| {out} | {s0:g} | {w.content:g}/{w.border:g} | "
                f"{w.region_features} | {w.clip:g} | {mean:+.4f} | "
                f"{int((g < -0.01).sum())}/{len(g)} |"
            )
        # the configuration set as the code default, per degradation
        dw, do = DEFAULT_WEIGHTS[region], DEFAULT_OUTPUT[region]
        wi_d = next((i for i, w in enumerate(weight_grid) if w == dw), None)
        if wi_d is not None and (region, wi_d, do, DEFAULT_SIM0) in results:
            pairs = results[(region, wi_d, do, DEFAULT_SIM0)]
            lines.append(
                f"\nCode default for {region.upper()} (sim0={DEFAULT_SIM0}, output={do}, "
                f"content/border {dw.content:g}/{dw.border:g}, {dw.region_features}, "
                f"clip {dw.clip:g}) per degradation:\n"
            )
            lines.append("| degradation | Dice before | Dice after | gain | worse > 0.01 |")
            lines.append("|---|---|---|---|---|")
            for kind in dict.fromkeys(p[2] for p in pairs):
                v = np.array([(b, a) for b, a, k in pairs if k == kind])
                g = v[:, 1] - v[:, 0]
                lines.append(
                    f"| {kind} | {v[:, 0].mean():.4f} | {v[:, 1].mean():.4f} | "
                    f"{g.mean():+.4f} | {int((g < -0.01).sum())}/{len(g)} |"
                )
            v = np.array([(b, a) for b, a, _ in pairs])
            g = v[:, 1] - v[:, 0]
            lines.append(
                f"| **all** | {v[:, 0].mean():.4f} | {v[:, 1].mean():.4f} | "
                f"{g.mean():+.4f} | {int((g < -0.01).sum())}/{len(g)} |"
            )
    # fill threshold of output="union" (WT, code defaults otherwise)
    fills = [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    fill_res: dict[float, list[float]] = {f: [] for f in fills}
    for seed in seeds:
        case = load_phantom_case(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sess = RefinementSession(
                case["images"],
                MODALITIES,
                case["sp_wt"],
                case["brain"],
                case["spacing"],
                region="wt",
            )
            for _kind, lab in degraded_cases(case):
                p0 = lab > 0
                fit = sess.fit(p0)
                before = dice(p0, case["labels"] > 0)
                for f in fills:
                    r = sess.refine(fit, DEFAULT_SIM0, 30, output="union", fill=f)
                    fill_res[f].append(dice(r.mask, case["labels"] > 0) - before)
    lines.append(
        '\n**WT, `output="union"`: fill threshold** (seed superpixels covered by at '
        "least `fill` are filled; 1.0 = only grown superpixels are added):\n"
    )
    lines.append("| fill | mean Dice gain | worst case | cases worse > 0.01 |")
    lines.append("|---|---|---|---|")
    for f in fills:
        g = np.array(fill_res[f])
        lines.append(
            f"| {f:g} | {g.mean():+.4f} | {g.min():+.4f} | {int((g < -0.01).sum())}/{len(g)} |"
        )
    lines.append(
        f"\nRun: `python benchmarks/tune_sim0.py --seeds {args.seeds}` on phantoms of shape "
        f"{HALF_SHAPE} at {HALF_SPACING[0]:g} mm, n_segments=350, n_c=30, "
        f"{len(weight_grid)} similarity variants x {len(outputs)} output modes x "
        f"{len(sim0s)} sim0 values, {time.perf_counter() - t0:.0f} s. "
        f"Code default at the time of the run: sim0={DEFAULT_SIM0}."
    )
    text = "\n".join(lines)
    print(text)
    if args.out:
        path = Path(args.out)
        doc = path.read_text() if path.exists() else ""
        start, end = "<!-- tuning:start -->", "<!-- tuning:end -->"
        block = f"{start}\n{text}\n{end}"
        if start in doc and end in doc:
            doc = doc.split(start)[0] + block + doc.split(end, 1)[1]
        else:
            doc = doc + "\n" + block + "\n"
        from napari_ssseg.io.atomic import atomic_write_text

        atomic_write_text(path, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
