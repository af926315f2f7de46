"""The final refine step (fit + component pre-step + growth + assembly) as the grid grows.

Issue 13, item 7: the last stage of a cold ``ssseg refine`` took 21x the 1 mm time on the
same real case at 0.5 mm (8x the voxels). This script builds the two refinement sessions
(superpixels, features) once per grid and times only ``refine_labels`` with those sessions
-- the step the sliders of the Refine panel run too -- ``--repeats`` times, interleaved with
the same step as it was at an older commit (``--against REV``: its ``refine_labels`` and the
session's ``component_similarity`` / ``_assemble``, loaded from git), and checks that both
give the same labels::

    python benchmarks/refine_step.py ../shared/data/real/BraTS-GLI-00000-000 \\
        --against e56e1d0~1 --json benchmarks/ssl_results/refine_step.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _load_old(rev: str, module: str):
    """Module ``napari_ssseg.core.<module>`` as it was at git revision ``rev``."""
    root = Path(__file__).resolve().parents[1]
    text = subprocess.run(
        ["git", "show", f"{rev}:src/napari_ssseg/core/{module}.py"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as fh:
        fh.write(text)
    spec = importlib.util.spec_from_file_location(f"old_{module}", fh.name)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def _variant_of(rev: str) -> dict:
    """The final step's code at ``rev``: refine_labels and the session's two box methods."""
    old_session = _load_old(rev, "refine_session").RefinementSession
    return {
        "refine_labels": _load_old(rev, "refine").refine_labels,
        "component_similarity": old_session.component_similarity,
        "_assemble": old_session._assemble,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the timing; print (and with ``--json`` write) medians per grid."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("case", type=Path)
    ap.add_argument("--spacing", type=float, default=0.5, help="fine isotropic grid (mm)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--against", help="git revision whose component_similarity to compare")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from grid_scaling import resample_case

    from napari_ssseg.core import refine_session
    from napari_ssseg.core.degrade import degrade_labels
    from napari_ssseg.core.preprocess import brain_mask
    from napari_ssseg.core.refine import RefinementSession, refine_labels
    from napari_ssseg.core.superpixels import region_superpixels
    from napari_ssseg.io.readers import load_case

    cls = refine_session.RefinementSession
    variants = {
        "current": {
            "refine_labels": refine_labels,
            "component_similarity": cls.component_similarity,
            "_assemble": cls._assemble,
        }
    }
    if args.against:
        variants[args.against] = _variant_of(args.against)
    res: dict = {"case": args.case.name, "grids": {}}
    with tempfile.TemporaryDirectory() as tmp:
        fine = resample_case(args.case, Path(tmp) / "fine", args.spacing)
        for name, folder in (("native", args.case), (f"{args.spacing:g} mm", fine)):
            case = load_case(folder)
            pseudo = degrade_labels(case.labels, kind="under_oedema", spacing=case.scale, seed=0)
            brain = brain_mask(case.images)
            sp = tuple(float(s) for s in case.scale)
            sessions = {}
            for r in ("wt", "tc"):
                sup = region_superpixels(
                    case.images, case.modalities, r.upper(), mask=brain, spacing=sp
                )
                sessions[r] = RefinementSession(
                    case.images, case.modalities, sup, brain, sp, region=r
                )
            times: dict[str, list[float]] = {k: [] for k in variants}
            outs = {}
            try:
                for _ in range(args.repeats):
                    for key, code in variants.items():
                        cls.component_similarity = code["component_similarity"]
                        cls._assemble = code["_assemble"]
                        t = time.perf_counter()
                        out = code["refine_labels"](
                            case.images,
                            case.modalities,
                            pseudo,
                            None,
                            None,
                            brain,
                            spacing=sp,
                            sessions=sessions,
                            warn=False,
                        )
                        times[key].append(time.perf_counter() - t)
                        outs[key] = out.labels
            finally:
                cls.component_similarity = variants["current"]["component_similarity"]
                cls._assemble = variants["current"]["_assemble"]
            same = all(np.array_equal(outs["current"], o) for o in outs.values())
            res["grids"][name] = {
                "voxels": int(np.prod(case.shape)),
                "seconds": times,
                "median_s": {k: round(statistics.median(v), 3) for k, v in times.items()},
                "identical_labels": same,
            }
            print(name, json.dumps(res["grids"][name]["median_s"]), "identical:", same)
            if not same:
                raise SystemExit("the variants disagree: not a pure speed change")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
