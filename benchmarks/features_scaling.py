"""Cost of refinement's features + graph step as the grid grows (issue 13, item 7).

Loads a real case, optionally resamples it to a finer isotropic grid (linear interpolation,
labels not needed), computes the brain mask and the WT/TC superpixels (not timed), then times
the cold features + graph set-up (:class:`RefinementSession`, with and without the feature
cache) and reports per-stage seconds and the process's peak resident memory. Run one grid per
process so that peak memory is the grid's own::

    python benchmarks/features_scaling.py ../shared/data/real/BraTS-GLI-00000-000 --spacing 1
    python benchmarks/features_scaling.py ../shared/data/real/BraTS-GLI-00000-000 --spacing 0.5

Prints one JSON line per region.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("case")
    p.add_argument("--spacing", type=float, default=1.0, help="isotropic grid in mm (1)")
    p.add_argument("--regions", nargs="+", default=["wt", "tc"])
    p.add_argument("--cache", action="store_true", help="time with the feature cache on (cold)")
    p.add_argument("--profile", action="store_true", help="print the top cProfile entries")
    args = p.parse_args(argv)

    import numpy as np
    from scipy import ndimage as ndi

    from napari_ssseg.core.preprocess import brain_mask
    from napari_ssseg.core.refine import RefinementSession
    from napari_ssseg.core.superpixels import region_superpixels
    from napari_ssseg.io.readers import load_case

    case = load_case(args.case)
    images = np.asarray(case.images)
    spacing = tuple(float(s) for s in case.scale)
    zoom = [s / args.spacing for s in spacing]
    if any(abs(z - 1) > 1e-6 for z in zoom):
        images = np.stack([ndi.zoom(c, zoom, order=1) for c in images]).astype(np.float32)
        spacing = (args.spacing,) * 3
    brain = brain_mask(images)
    for region in args.regions:
        sp = region_superpixels(
            images, case.modalities, region.upper(), mask=brain, spacing=spacing, cache=None
        )
        cache = None
        tmp = None
        if args.cache:
            from napari_ssseg.core.cache import Cache

            tmp = tempfile.TemporaryDirectory()
            cache = Cache(tmp.name, namespace="features")
        prof = None
        if args.profile:
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
        t0 = time.perf_counter()
        sess = RefinementSession(
            images, case.modalities, sp, brain, spacing, region=region, cache=cache
        )
        wall = time.perf_counter() - t0
        if prof is not None:
            import pstats

            prof.disable()
            pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(12)
        print(
            json.dumps(
                {
                    "case": case.name,
                    "region": region,
                    "spacing_mm": args.spacing,
                    "shape": list(images.shape[1:]),
                    "voxels": int(np.prod(images.shape[1:])),
                    "brain_voxels": int(brain.sum()),
                    "superpixels": int(sess.n_superpixels),
                    "cache": bool(args.cache),
                    "seconds": round(wall, 3),
                    "timings": {k: round(v, 3) for k, v in sess.timings.items()},
                    "peak_rss_gb": round(
                        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2
                    ),
                }
            ),
            flush=True,
        )
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
