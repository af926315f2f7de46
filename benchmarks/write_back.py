"""Cost of writing working-grid labels back onto a fine native grid (issue 13, item 7).

``core.working_grid.labels_to_native`` maps labels from the working grid (1 mm) onto the
reference's native grid by a majority vote over each native voxel's footprint. It used to vote
over the whole native volume (one float32 indicator per label resampled onto every native
voxel: 15.8 s of a 41 s ``ssseg refine --resample 1`` on a 0.5 mm scan); it now votes only in
the box around the labels (or, with ``base=``, around the edits). This script times both on a
real case's labels, as the write-back of a 0.5 mm scan worked on at 1 mm sees them:

* the working grid is the case's own 1 mm grid (its label file is the "labels" drawn there);
* the native grid is the same field of view at ``--spacing`` mm (8x the voxels at 0.5 mm);
* "full volume" is the old computation (the oracle of ``tests/core/test_clinical_grid.py``),
  "box" is ``labels_to_native``; both, with and without ``base`` (an edit of a 10 mm cube),
  interleaved, ``--repeats`` times each, medians; the results are checked equal.

    python benchmarks/write_back.py ../shared/data/real/BraTS-GLI-00000-000 --spacing 0.5
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def full_volume(lab, wg, base=None):
    """The old, whole-volume write-back (as in tests/core/test_clinical_grid.py)."""
    import numpy as np
    from scipy import ndimage as ndi

    from napari_ssseg.core.working_grid import (
        _TOUCH,
        _majority_to_native,
        labels_from_native,
        resample_to,
    )

    ratio = np.asarray(wg.reference_geometry.spacing) / np.asarray(wg.geometry.spacing)
    size = [max(1, int(round(r))) for r in ratio[::-1]]
    out = _majority_to_native(
        lab, np.unique(lab), wg.geometry, wg.reference_geometry, wg.reference_shape, size
    )
    if base is None:
        return out
    edited = lab != labels_from_native(base, wg)
    near = ndi.maximum_filter(edited.astype(np.float32), size=[s + 2 for s in size])
    touched = resample_to(near, wg.geometry, wg.reference_geometry, wg.reference_shape) > _TOUCH
    return np.where(touched, out, base).astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    """Time the write-back; print (and with ``--json`` write) the medians."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("case", type=Path)
    ap.add_argument("--spacing", type=float, default=0.5, help="native grid (mm)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    import numpy as np
    import SimpleITK as sitk

    from napari_ssseg.core.case import Geometry
    from napari_ssseg.core.working_grid import (
        WorkingGrid,
        labels_from_native,
        labels_to_native,
    )
    from napari_ssseg.io.case_files import find_case_files

    files = find_case_files(args.case)
    img = sitk.ReadImage(str(files.seg))
    lab = sitk.GetArrayFromImage(img).astype(np.uint8)
    lab[lab == 4] = 3
    work_geom = Geometry(img.GetSpacing(), img.GetOrigin(), img.GetDirection())
    shape = lab.shape
    f = np.asarray(work_geom.spacing) / args.spacing
    nat_shape = tuple(int(round(n * s)) for n, s in zip(shape, f[::-1], strict=True))
    # native voxel centres cover the same field of view (first edge on the working one's)
    d = work_geom.direction_matrix
    off = (args.spacing - np.asarray(work_geom.spacing)) / 2.0
    nat_geom = Geometry(
        (args.spacing,) * 3, tuple(np.asarray(work_geom.origin) + d @ off), work_geom.direction
    )
    wg = WorkingGrid(work_geom, shape, nat_geom, nat_shape)  # type: ignore[arg-type]
    base = labels_to_native(lab, wg)
    edited = lab.copy()
    z, y, x = (int(v) for v in np.argwhere(lab > 0).mean(axis=0))
    edited[z - 5 : z + 5, y - 5 : y + 5, x - 5 : x + 5] = 1  # a 10 mm cube painted
    assert not np.array_equal(edited, labels_from_native(base, wg))
    runs: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for name, fn in (
            ("full volume", lambda: full_volume(lab, wg)),
            ("box", lambda: labels_to_native(lab, wg)),
            ("full volume, base", lambda: full_volume(edited, wg, base)),
            ("box, base", lambda: labels_to_native(edited, wg, base=base)),
        ):
            t = time.perf_counter()
            out = fn()
            runs.setdefault(name, []).append(time.perf_counter() - t)
            runs.setdefault(name + " result", []).append(out)  # type: ignore[arg-type]
    for a, b in (("full volume", "box"), ("full volume, base", "box, base")):
        assert np.array_equal(runs[a + " result"][0], runs[b + " result"][0]), (a, b)
    res = {
        "case": args.case.name,
        "working_shape_zyx": list(shape),
        "native_shape_zyx": list(nat_shape),
        "tumour_voxels_working": int((lab > 0).sum()),
        "seconds": {k: v for k, v in runs.items() if not k.endswith("result")},
        "median_s": {
            k: round(statistics.median(v), 3) for k, v in runs.items() if not k.endswith("result")
        },
        "identical": True,
    }
    m = res["median_s"]
    res["speedup"] = {
        "no base": round(m["full volume"] / m["box"], 1),
        "base": round(m["full volume, base"] / m["box, base"], 1),
    }
    print(json.dumps({k: v for k, v in res.items() if k != "seconds"}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
