"""Where the Refine panel's sim0 and n_c sliders act on a real scan (issues 11 / 12).

Runs the panel's own engine (:func:`napari_ssseg.core.refine_preview.compute_setup` with the
panel's default superpixel parameters, ``session.fit``, then
:func:`~napari_ssseg.core.refine_preview.preview_box` per slider value, both regions) on a
real case read from ``../shared/data/real`` (never copied into the repository), seeded with
the four degradations of :mod:`napari_ssseg.core.degrade` of its ground truth (seed
``100 + degradation index``, as the tuning benchmark's case 1). Prints, per pseudo-label,
the refined WT and TC voxel counts at every sim0 of a sweep (``n_c`` at its default) and at
every ``n_c`` of a sweep (at two sim0 values).

Usage::

    python benchmarks/refine_slider_range.py [--case BraTS-GLI-00000-000]
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real"
SIM0S = (0.0, 0.05, 0.1, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.8, 0.9, 1.0)
NCS = (1, 3, 5, 10, 30, 100, 200)


def main(argv: list[str] | None = None) -> None:
    """Run the sweep and print the tables (Markdown)."""
    from napari_ssseg.core.degrade import DEGRADATIONS, degrade
    from napari_ssseg.core.refine import DEFAULT_N_SEGMENTS, DEFAULT_NC
    from napari_ssseg.core.refine_preview import (
        case_brain_mask,
        compute_setup,
        preview_box,
        region_seeds,
    )
    from napari_ssseg.io.readers import load_case

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", default="BraTS-GLI-00000-000")
    ap.add_argument("--kinds", default=",".join(DEGRADATIONS))
    args = ap.parse_args(argv)
    folder = REAL / args.case
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        case = load_case(folder)
    brain = case_brain_mask(case)
    params = {"n_segments": DEFAULT_N_SEGMENTS, "compactness": 0.01, "sigma": 1.0}
    gt = np.asarray(case.labels)
    n_tc = int(np.isin(gt, (1, 3)).sum())
    print(f"case {args.case}: GT WT {int((gt > 0).sum())} voxels, TC {n_tc}")
    reuse = None
    for i, kind in enumerate(args.kinds.split(",")):
        pseudo = degrade(gt, kind, brain=brain, spacing=case.scale, seed=100 + i).astype(np.uint8)
        seeds = region_seeds(pseudo)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            setup = compute_setup(case, None, ("wt", "tc"), params, seeds, reuse, brain)
            fitted = {r: setup.sessions[r].fit(seeds[r], warn=False) for r in setup.regions}
        reuse = {r: (setup.superpixels[r], setup.sessions[r]) for r in setup.regions}
        print(
            f"\n## {kind} (pseudo WT {int(seeds['wt'].sum())}, TC {int(seeds['tc'].sum())}; "
            f"set-up {time.perf_counter() - t0:.1f} s)"
        )

        def counts(sim0: float, n_c: int) -> tuple[int, int]:
            _, prev, _, _ = preview_box(setup, fitted, pseudo, sim0, n_c)  # noqa: B023
            return int(np.count_nonzero(prev)), int(np.count_nonzero(prev == 2))

        print("| sim0 | " + " | ".join(f"{s:g}" for s in SIM0S) + " |")
        print("|---" * (len(SIM0S) + 1) + "|")
        rows = [counts(s, DEFAULT_NC) for s in SIM0S]
        print("| WT | " + " | ".join(str(r[0]) for r in rows) + " |")
        print("| TC | " + " | ".join(str(r[1]) for r in rows) + " |")
        for s0 in (0.1, 0.4):
            rows = [counts(s0, n) for n in NCS]
            print(
                f"n_c sweep at sim0 {s0}: "
                + ", ".join(f"n_c {n}: WT {r[0]} TC {r[1]}" for n, r in zip(NCS, rows))
            )


if __name__ == "__main__":
    main()
