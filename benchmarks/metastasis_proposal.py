#!/usr/bin/env python
"""Look at the default model's proposal on the unlabelled metastasis case (issue 12).

Runs the shipped model (``predict_case``, CPU) on ``../shared/data/real/BraTS-MET-00110-000``
(BraTS 2023 metastasis, no labels) without post-processing, prints the volume per class and
the whole-tumour connected components (ml, centre), says which ones the default
post-processing removes, and writes a figure: for the four largest components, the axial
slice through its centre (radiological view: anterior up, the right on the left), FLAIR and
T1c, each plain and with the proposal's outline (red NCR,
green ED, yellow ET).

Usage::

    python benchmarks/metastasis_proposal.py [--case DIR] [--png OUT]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CASE = ROOT / ".." / "shared" / "data" / "real" / "BraTS-MET-00110-000"
COLOURS = {1: (255, 0, 0), 2: (0, 255, 0), 3: (255, 255, 0)}


def display_norm(x: np.ndarray) -> np.ndarray:
    """Map the 1st-99.5th percentile of the non-zero voxels to [0, 1] (for figures)."""
    lo, hi = np.percentile(x[x > 0], [1, 99.5])
    return np.clip((x - lo) / (hi - lo), 0, 1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--case", type=Path, default=CASE)
    p.add_argument("--png", type=Path, default=None, help="figure (default: none)")
    args = p.parse_args(argv)
    import torch
    from PIL import Image
    from scipy import ndimage

    from napari_ssseg.io.readers import load_case
    from napari_ssseg.ml.checkpoint import load_model
    from napari_ssseg.ml.inference import predict_case

    torch.set_num_threads(2)
    case = load_case(args.case)
    ckpt = load_model(None)
    frac = float(ckpt.normalization.get("postprocess", {}).get("min_component_fraction", 0.0))
    labels = predict_case(case, ckpt, device="cpu", min_component_fraction=0)["labels"]
    ml = float(np.prod(case.canonical_geometry.spacing_zyx)) / 1000.0
    comp, n = ndimage.label(labels > 0)
    sizes = np.bincount(comp.ravel())[1:] * ml
    order = np.argsort(sizes)[::-1] + 1
    largest = float(sizes.max()) if n else 0.0
    rows = []
    for c in order:
        centre = [int(v) for v in ndimage.center_of_mass(comp == c)]
        size = float(sizes[c - 1])
        rows.append(
            {
                "ml": round(size, 3),
                "centre_zyx": centre,
                "removed_by_postprocess": bool(size < frac * largest),
            }
        )
    out = {
        "case": case.name,
        "ml_per_class": {int(v): round(float((labels == v).sum() * ml), 2) for v in (1, 2, 3)},
        "postprocess_min_component_fraction": frac,
        "components": rows,
    }
    print(json.dumps(out, indent=1))
    if args.png:
        mods = list(case.modalities)
        flair = display_norm(case.images[mods.index("flair")].astype(float))
        t1c = display_norm(case.images[mods.index("t1ce")].astype(float))
        tiles = []
        for c in order[:4]:
            z = int(ndimage.center_of_mass(comp == c)[0])
            for img in (flair, t1c):
                g = (img[z] * 255).astype(np.uint8)
                rgb = np.stack([g] * 3, -1)
                mix = rgb.copy()
                edge = (labels[z] > 0) & ~ndimage.binary_erosion(labels[z] > 0)
                for v, colour in COLOURS.items():
                    mix[edge & (labels[z] == v)] = colour
                tiles.append(np.concatenate([rgb, mix], 1))  # anterior up, right on the left
        rows_img = [np.concatenate(tiles[i : i + 2], 1) for i in range(0, len(tiles), 2)]
        image = Image.fromarray(np.concatenate(rows_img, 0)).quantize(colors=64)
        image.save(args.png, optimize=True)
        print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
