"""Benchmark: fast 3D SLIC vs scikit-image's ``slic`` on full-size phantoms.

Both backends get exactly the same input (the same normalised channels and brain mask) in
the same process. For each configuration (WT from FLAIR, TC from T2 + T1Gd; n_segments /
compactness 350 / 0.01 and 2000 / 0.1) the script reports:

* wall time of each backend (median of ``--repeats`` interleaved runs) and the ratio of the
  medians; CPU time (all threads); the fast backend with one thread as well;
* boundary recall (tolerance 1 voxel) and under-segmentation error against the ground-truth
  tumour classes (0 / NCR / ED / ET) and against the region's own mask (WT or TC);
* peak traced memory of one call (``tracemalloc``, numpy allocations included) and the
  process's peak RSS.

Quality is also measured on extra phantom seeds (``--quality-seeds``, one run each).

Usage::

    python benchmarks/superpixels.py --out docs/benchmarks/superpixels.md
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time
import tracemalloc

import numpy as np

CONFIGS = [
    ("WT", ("flair",), 350, 0.01),
    ("WT", ("flair",), 2000, 0.1),
    ("TC", ("t2", "t1ce"), 350, 0.01),
    ("TC", ("t2", "t1ce"), 2000, 0.1),
]


def _timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def _peak_mb(fn) -> float:
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 2**20


def _quality(sp, labels, region_mask):
    from napari_ssseg.core.superpixels import boundary_recall, undersegmentation_error

    return {
        "br": boundary_recall(sp, labels, tolerance=1),
        "ue": undersegmentation_error(sp, labels),
        "br_region": boundary_recall(sp, region_mask.astype(np.uint8), tolerance=1),
        "ue_region": undersegmentation_error(sp, region_mask.astype(np.uint8)),
        "n": int(sp.max()),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0, help="phantom seed for timing (default 0)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per backend")
    ap.add_argument("--quality-seeds", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--shape", type=int, nargs=3, default=[155, 240, 240])
    ap.add_argument("--out", default=None, help="write a Markdown report here")
    args = ap.parse_args(argv)

    from napari_ssseg.core.case import region_masks
    from napari_ssseg.core.phantom import make_phantom
    from napari_ssseg.core.superpixels import slic_superpixels

    load0 = os.getloadavg()
    t0 = time.time()
    ph = make_phantom(shape=tuple(args.shape), seed=args.seed)
    print(f"phantom seed {args.seed} {ph.shape} in {time.time() - t0:.1f} s", flush=True)
    regions = region_masks(ph.labels)
    rows = []
    for region, mods, n_seg, comp in CONFIGS:
        ch = [ph.modalities.index(m) for m in mods]
        img = ph.images[ch]
        kw = dict(n_segments=n_seg, compactness=comp, sigma=1.0, spacing=ph.spacing, mask=ph.brain)
        walls = {"fast": [], "skimage": [], "fast1": []}
        cpus = {"fast": [], "skimage": [], "fast1": []}
        results = {}
        for r in range(args.repeats):
            for name, extra in (
                ("fast", {"backend": "fast"}),
                ("skimage", {"backend": "skimage"}),
                ("fast1", {"backend": "fast", "n_threads": 1}),
            ):
                sp, wall, cpu = _timed(
                    lambda extra=extra, img=img, kw=kw: slic_superpixels(img, **kw, **extra)
                )
                walls[name].append(wall)
                cpus[name].append(cpu)
                results[name] = sp
                print(
                    f"{region} {n_seg}/{comp} {name:8s} run {r + 1}: wall {wall:6.2f} s "
                    f"cpu {cpu:6.2f} s, {int(sp.max())} superpixels",
                    flush=True,
                )
        assert np.array_equal(results["fast"], results["fast1"])  # threads do not change output
        q = {b: _quality(results[b], ph.labels, regions[region]) for b in ("fast", "skimage")}
        mem = {
            b: _peak_mb(lambda b=b, img=img, kw=kw: slic_superpixels(img, **kw, backend=b))
            for b in ("fast", "skimage")
        }
        med = {k: statistics.median(v) for k, v in walls.items()}
        rows.append(
            {
                "region": region,
                "channels": "+".join(mods),
                "n_segments": n_seg,
                "compactness": comp,
                "wall": med,
                "cpu": {k: statistics.median(v) for k, v in cpus.items()},
                "all_walls": walls,
                "ratio": med["skimage"] / med["fast"],
                "ratio1": med["skimage"] / med["fast1"],
                "quality": q,
                "mem": mem,
            }
        )
        print(
            f"==> {region} {n_seg}/{comp}: fast {med['fast']:.2f} s, skimage "
            f"{med['skimage']:.2f} s, ratio {rows[-1]['ratio']:.1f}x; BR fast "
            f"{q['fast']['br']:.4f} skimage {q['skimage']['br']:.4f}; UE fast "
            f"{q['fast']['ue']:.4f} skimage {q['skimage']['ue']:.4f}",
            flush=True,
        )

    extra_q = []
    for seed in args.quality_seeds:
        p2 = make_phantom(shape=tuple(args.shape), seed=seed)
        reg2 = region_masks(p2.labels)
        for region, mods, n_seg, comp in CONFIGS:
            ch = [p2.modalities.index(m) for m in mods]
            kw = dict(n_segments=n_seg, compactness=comp, spacing=p2.spacing, mask=p2.brain)
            q = {}
            for b in ("fast", "skimage"):
                sp = slic_superpixels(p2.images[ch], **kw, backend=b)
                q[b] = _quality(sp, p2.labels, reg2[region])
            extra_q.append((seed, region, n_seg, comp, q))
            print(
                f"quality seed {seed} {region} {n_seg}/{comp}: BR {q['fast']['br']:.4f} vs "
                f"{q['skimage']['br']:.4f}, UE {q['fast']['ue']:.4f} vs {q['skimage']['ue']:.4f}",
                flush=True,
            )
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    load1 = os.getloadavg()
    report = _markdown(args, ph, rows, extra_q, peak_rss, load0, load1)
    print(report)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:  # benchmark output, not package I/O
            fh.write(report)
    return 0


def _markdown(args, ph, rows, extra_q, peak_rss, load0, load1) -> str:
    import scipy
    import skimage

    cmd = "python benchmarks/superpixels.py " + " ".join(sys.argv[1:])
    lines = [
        "# Superpixels: fast backend vs scikit-image `slic`",
        "",
        f"Command: `{cmd.strip()}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared with other jobs: load "
        f"average {load0[0]:.1f} at start, {load1[0]:.1f} at end), Python "
        f"{platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}, "
        f"scikit-image {skimage.__version__}.",
        "",
        f"Input: phantom seed {args.seed}, grid {ph.shape} (Z, Y, X), spacing {ph.spacing} mm, "
        f"brain {int(ph.brain.sum())} voxels ({100 * ph.brain.mean():.0f} % of the grid). Both "
        "backends get the same normalised channels and brain mask, sigma = 1, "
        "max_num_iter = 10. Times are medians of "
        f"{args.repeats} interleaved runs in one process; 'fast 1 thread' is the fast backend "
        "with `n_threads=1`. CPU = process CPU time (all threads).",
        "",
        "## Speed",
        "",
        "| region (channels) | n_segments / compactness | skimage wall (s) | fast wall (s) "
        "| ratio | fast 1 thread (s) | ratio 1 thread | skimage CPU (s) | fast CPU (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        w, c = r["wall"], r["cpu"]
        lines.append(
            f"| {r['region']} ({r['channels']}) | {r['n_segments']} / {r['compactness']} | "
            f"{w['skimage']:.2f} | {w['fast']:.2f} | **{r['ratio']:.1f}x** | {w['fast1']:.2f} | "
            f"{r['ratio1']:.1f}x | {c['skimage']:.2f} | {c['fast']:.2f} |"
        )
    lines += [
        "",
        "All wall times (s): "
        + "; ".join(
            f"{r['region']} {r['n_segments']}: "
            + ", ".join(f"{k} {[round(v, 2) for v in vs]}" for k, vs in r["all_walls"].items())
            for r in rows
        ),
        "",
        "## Boundary quality (same phantom)",
        "",
        "BR = boundary recall, tolerance 1 voxel (higher is better); UE = under-segmentation "
        "error, Neubert & Protzel (lower is better). 'classes' = against the ground-truth "
        "classes 0/NCR/ED/ET; 'region' = against the region's own mask (WT or TC).",
        "",
        "| region | n_segments / compactness | superpixels skimage / fast | BR classes skimage "
        "| BR classes fast | UE classes skimage | UE classes fast | BR region skimage "
        "| BR region fast | UE region skimage | UE region fast |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        qs, qf = r["quality"]["skimage"], r["quality"]["fast"]
        lines.append(
            f"| {r['region']} | {r['n_segments']} / {r['compactness']} | {qs['n']} / {qf['n']} | "
            f"{qs['br']:.4f} | {qf['br']:.4f} | {qs['ue']:.4f} | {qf['ue']:.4f} | "
            f"{qs['br_region']:.4f} | {qf['br_region']:.4f} | {qs['ue_region']:.4f} | "
            f"{qf['ue_region']:.4f} |"
        )
    if extra_q:
        lines += [
            "",
            "## Boundary quality on other phantoms (one run each)",
            "",
            "| seed | region | n_segments / compactness | BR skimage | BR fast | UE skimage "
            "| UE fast |",
            "|---|---|---|---|---|---|---|",
        ]
        for seed, region, n_seg, comp, q in extra_q:
            lines.append(
                f"| {seed} | {region} | {n_seg} / {comp} | {q['skimage']['br']:.4f} | "
                f"{q['fast']['br']:.4f} | {q['skimage']['ue']:.4f} | {q['fast']['ue']:.4f} |"
            )
        all_q = [(r["quality"]["fast"], r["quality"]["skimage"]) for r in rows] + [
            (q["fast"], q["skimage"]) for *_, q in extra_q
        ]
        n_br = sum(f["br"] >= s["br"] for f, s in all_q)
        n_ue = sum(f["ue"] <= s["ue"] for f, s in all_q)
        lines += [
            "",
            f"Over all {len(all_q)} (phantom, configuration) pairs the fast backend's boundary "
            f"recall is >= skimage's in {n_br} and its UE is <= skimage's in {n_ue}; mean BR "
            f"fast {np.mean([f['br'] for f, _ in all_q]):.4f} vs skimage "
            f"{np.mean([s['br'] for _, s in all_q]):.4f}, mean UE fast "
            f"{np.mean([f['ue'] for f, _ in all_q]):.4f} vs skimage "
            f"{np.mean([s['ue'] for _, s in all_q]):.4f}.",
        ]
    lines += [
        "",
        "## Memory",
        "",
        "| region | n_segments | skimage peak traced (MB) | fast peak traced (MB) |",
        "|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['region']} | {r['n_segments']} | {r['mem']['skimage']:.0f} | "
            f"{r['mem']['fast']:.0f} |"
        )
    lines += [
        "",
        f"Process peak RSS over the whole benchmark: {peak_rss:.0f} MB (includes the phantoms).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
