#!/usr/bin/env python
"""Time ``ssseg predict`` on the raw clinical study and look at its proposal (issues 12, 13).

Runs ``ssseg predict STUDY --out labels.nii.gz`` in a child process (default options:
series detection, co-registration to the FLAIR and brain extraction on, the shipped default
model, CPU), end to end from the raw folder to a label image on the FLAIR's native grid,
``--repeats`` times with a fresh, empty preparation cache (``$NAPARI_SSSEG_CACHE`` in a
temporary folder): the first run is cold (registration and brain extraction computed), the
later ones reuse the cached preparation. Reports the wall time of each run and the
children's peak resident memory. The study has no manual label, so nothing is scored: it
prints the volume per class and, with ``--png``, writes a figure of the native FLAIR slices
``--slices`` with the proposal blended in (red NCR, green ED, yellow ET; radiological view:
anterior up, the patient's right on the left, as the series is stored).

Usage::

    python benchmarks/clinical_proposal.py [--study DIR] [--png OUT] [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / ".." / "shared" / "data" / "real" / "TCGA-FG-6692-raw"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from metastasis_proposal import COLOURS, display_norm  # noqa: E402  (the same figure colours)


def _blend(grey: np.ndarray, labels: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """RGB uint8 of a [0, 1] slice with the label classes blended in."""
    rgb = np.stack([grey * 255.0] * 3, -1)
    for v, colour in COLOURS.items():
        m = labels == v
        rgb[m] = (1 - alpha) * rgb[m] + alpha * np.asarray(colour, float)
    return rgb.astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--study", type=Path, default=STUDY)
    p.add_argument("--png", type=Path, default=None, help="figure (default: none)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--slices", type=int, nargs="+", default=[12, 15, 18, 21])
    args = p.parse_args(argv)
    if not args.study.is_dir():
        p.error(f"{args.study} is not a folder: pass --study with the raw study's folder")
    import SimpleITK as sitk

    from napari_ssseg.io.naming import match_series

    ssseg = Path(sys.executable).with_name("ssseg")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "labels.nii.gz"
        env = dict(os.environ, NAPARI_SSSEG_CACHE=str(Path(tmp) / "cache"))
        seconds = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            run = subprocess.run(
                [str(ssseg), "predict", str(args.study), "--out", str(out)],
                capture_output=True,
                text=True,
                env=env,
            )
            seconds.append(time.perf_counter() - t0)
            if run.returncode:
                sys.stderr.write(run.stderr)
                raise SystemExit(f"ssseg predict failed (exit {run.returncode})")
        peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6
        lab_img = sitk.ReadImage(str(out))
        labels = sitk.GetArrayFromImage(lab_img)
        flair_path = next(
            f for f in sorted(args.study.iterdir()) if set(match_series(f.name)[0]) == {"flair"}
        )
        flair_img = sitk.ReadImage(str(flair_path))
        flair = sitk.GetArrayFromImage(flair_img).astype(float)
    if labels.shape != flair.shape:
        raise SystemExit(f"labels {labels.shape} are not on the FLAIR's grid {flair.shape}")
    ml = float(np.prod(lab_img.GetSpacing())) / 1000.0
    values = sorted(int(v) for v in np.unique(labels) if v)
    summary = {
        "study": args.study.name,
        "seconds": [round(s, 1) for s in seconds],
        "cold_seconds": round(seconds[0], 1),
        "cached_median_seconds": (
            round(statistics.median(seconds[1:]), 1) if len(seconds) > 1 else None
        ),
        "peak_rss_gb_child": round(peak_gb, 2),
        "native_shape_zyx": list(labels.shape),
        "ml_per_label_value": {v: round(float((labels == v).sum() * ml), 2) for v in values},
        "stderr_tail": run.stderr.strip().splitlines()[-6:],
    }
    print(json.dumps(summary, indent=1))
    if args.png:
        from PIL import Image

        from napari_ssseg.core.case import get_convention

        internal = get_convention("brats2021").decode(labels, source=out.name)
        grey = display_norm(flair)
        tiles = [_blend(grey[z], internal[z]) for z in args.slices if 0 <= z < len(grey)]
        Image.fromarray(np.concatenate(tiles, 1)).quantize(colors=96).save(args.png, optimize=True)
        print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
