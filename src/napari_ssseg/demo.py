"""The demo: every stage of the pipeline on the embedded sample data, end to end.

Stages (each writes its outputs into the output folder and a line of the summary):

1. **sample** - generate a deterministic phantom case (BraTS grid by default) and write it as a
   BraTS-2021-named case folder, as a user's data would be. With ``DemoConfig.case_dir`` (CLI:
   ``ssseg demo --case PATH``) the stage is called **case** instead: a real case folder is read
   where it is (never copied or written to) and every later stage runs on it; metrics are
   computed only when the case has a usable label file, and the scripted scribbles are then
   drawn from the model's proposal instead of the ground truth.
2. **load** - read the folder back through the io layer (naming, geometry, convention) and
   preprocess it (brain mask, crop, clip, z-score).
3. **propose** - run the shipped default model (MONAI sliding-window inference, CPU here) and
   write labels, probabilities-derived uncertainty and the proposal's metrics. Skipped with a
   message when torch/MONAI are not installed.
4. **refine** - refine the proposal (or, without a model, a degraded copy of the ground truth)
   by superpixel region growing (Thompson et al. Algorithm 1) and report Dice before/after.
   **scribble** - draw scripted strokes (skeletons of each class and a background ring on
   three axial slices) and spread them through superpixels into a dense label (cold start).
5. **evaluate** - Dice, HD95, IoU, NSD, ASD, RAVD per region for every label map produced.
6. **screenshot** - render the case and its label layers in napari under a virtual X display
   (Xvfb) and save real screenshots.

The summary is written as ``summary.json`` and ``summary.md``. Nothing here imports napari or
torch at module level.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DemoConfig", "run_demo"]


@dataclass
class DemoConfig:
    """Settings of a demo run.

    Parameters
    ----------
    out_dir : Path
        Output folder (created).
    shape : tuple of 3 int
        Phantom grid ``(Z, Y, X)``; the default is the BraTS grid 155 x 240 x 240.
    spacing : tuple of 3 float
        Voxel size ``(z, y, x)`` in mm (default 1 mm). The phantom's brain is scaled to the
        grid, so a small grid at 1 mm gives an unrealistically small brain.
    seed : int
        Phantom seed.
    screenshot : bool
        Render napari screenshots (needs napari and Xvfb or a display).
    propose : bool
        Run the default model.
    workspace_cases : int
        Number of extra small phantom cases (64 x 80 x 80 at 2 mm) put with the sample case
        into a sample annotation workspace; 0 skips the workspace stage.
    retrain : bool
        Fine-tune the default model for a few iterations on the sample workspace's latest
        label versions (in a child process, as the Retrain panel does) and propose again.
    scribble : bool
        Run the scripted-scribble stage (the slowest stage on a full-size case).
    case_dir : Path, optional
        A real case (folder, or anything :func:`~napari_ssseg.io.readers.load_case` reads) to
        run the demo on instead of the phantom; ``shape``, ``spacing`` and ``name`` are then
        taken from the case. Its files are only read.
    """

    out_dir: Path
    shape: tuple[int, int, int] = (155, 240, 240)
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    seed: int = 0
    screenshot: bool = True
    propose: bool = True
    name: str = "SSSEG_Phantom_00000"
    workspace_cases: int = 3
    retrain: bool = True
    scribble: bool = True
    case_dir: Path | None = None
    stages: dict[str, Any] = field(default_factory=dict)


def _log(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


class _Skip(Exception):
    """Raised inside a stage that cannot run on this case; recorded as skipped, not failed."""


class _Stage:
    """Times a stage and records its outcome in the summary."""

    def __init__(
        self, summary: dict, name: str, log: Callable[[str], None], critical: bool = False
    ):
        self.summary, self.name, self.log, self.critical = summary, name, log, critical

    def __enter__(self) -> dict:
        self.t0 = time.perf_counter()
        self.record: dict[str, Any] = {"status": "ok"}
        self.log(f"{self.name}: started")
        return self.record

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.record["seconds"] = round(time.perf_counter() - self.t0, 2)
        if isinstance(exc, _Skip):
            self.record.update(status="skipped", reason=str(exc))
            exc = None
        if exc is not None:
            self.record["status"] = "failed"
            self.record["error"] = f"{type(exc).__name__}: {exc}"
            self.log(f"{self.name}: FAILED - {exc}")
            self.summary["stages"][self.name] = self.record
            # a failed optional stage is recorded and the demo goes on; a failed critical
            # stage (the later ones need its output) stops the demo
            return not self.critical
        if self.record.get("status") == "skipped":
            self.log(f"{self.name}: skipped - {self.record.get('reason', '')}")
        else:
            self.log(f"{self.name}: done in {self.record['seconds']:.1f} s")
        self.summary["stages"][self.name] = self.record
        return exc_type is _Skip


def run_demo(config: DemoConfig, log: Callable[[str], None] = _log) -> dict:
    """Run every stage on the sample case and write outputs and a summary.

    Parameters
    ----------
    config : DemoConfig
        What to run and where to write.
    log : callable
        Receives one progress line per event.

    Returns
    -------
    dict
        The summary also written to ``summary.json``.
    """
    from napari_ssseg.core.metrics import region_metrics
    from napari_ssseg.core.phantom import make_phantom
    from napari_ssseg.io.atomic import atomic_write_text, check_writable_dir
    from napari_ssseg.io.readers import load_case
    from napari_ssseg.io.writers import save_image, save_labels, write_case

    real = config.case_dir is not None
    out = check_writable_dir(config.out_dir)
    summary: dict[str, Any] = {
        "case": config.name,
        "source": "case folder" if real else "phantom",
        "shape": list(config.shape),
        "spacing": list(config.spacing),
        "seed": config.seed,
        "stages": {},
        "metrics": {},
    }
    label_maps: dict[str, np.ndarray] = {}

    if real:
        with _Stage(summary, "case", log, critical=True) as rec:
            case_dir = Path(config.case_dir).expanduser()
            rec.update(case_dir=str(case_dir), source="real case folder (read in place)")
    else:
        with _Stage(summary, "sample", log, critical=True) as rec:
            phantom = make_phantom(shape=config.shape, spacing=config.spacing, seed=config.seed)
            case_dir = write_case(phantom.to_case(name=config.name), out / "cases", "brats2021")
            rec["case_dir"] = str(case_dir)

    with _Stage(summary, "load", log, critical=True) as rec:
        import warnings

        from napari_ssseg.core.preprocess import preprocess_case

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # a real case's label file may be unusable: the demo then goes on without metrics
            case = load_case(case_dir, label_errors="warn" if real else "raise")
        for w in caught:
            log(f"load: warning - {w.message}")
        pre = preprocess_case(case)
        rec.update(
            naming=case.naming,
            modalities=list(case.modalities),
            shape=list(case.shape),
            spacing_zyx=list(case.scale),
            orientation=case.geometry.orientation_code(),
            convention=case.convention.name,
            labels="yes" if case.labels is not None else "none",
            brain_bbox=[[s.start, s.stop] for s in pre.bbox],
        )
        if caught:
            rec["warnings"] = [str(w.message) for w in caught]
        if real:
            summary.update(
                case=case.name, shape=list(case.shape), spacing=[float(v) for v in case.scale]
            )
        gt = case.labels
        save_image(pre.uncrop(pre.mask.astype(np.uint8)), case, out / "brain_mask.nii.gz")

    uncertainty = None
    refined_provenance = None
    if config.propose:
        with _Stage(summary, "propose", log) as rec:
            try:
                import torch  # noqa: F401

                from napari_ssseg.ml.checkpoint import default_checkpoint_path
                from napari_ssseg.ml.inference import predict_case
            except ImportError as exc:
                rec.update(status="skipped", reason=f"ML stack not available ({exc})")
            else:
                from napari_ssseg.errors import InputError

                ckpt = default_checkpoint_path()
                try:
                    result = predict_case(case, ckpt, device="cpu")
                except InputError as exc:
                    if not real:
                        raise
                    # a real case the model cannot take (e.g. missing modalities and a model
                    # trained without modality dropout): the demo goes on without a proposal
                    raise _Skip(f"the default model cannot propose on this case: {exc}") from exc
                label_maps["proposal"] = result["labels"]
                uncertainty = result["uncertainty"]
                save_labels(result["labels"], case, out / "proposal.nii.gz")
                save_image(uncertainty, case, out / "uncertainty.nii.gz")
                info = result.get("info", {})
                rec.update(
                    model=info.get("model", str(ckpt)),
                    device=str(info.get("device", "cpu")),
                    uncertainty_kind=info.get("uncertainty"),
                    inference_seconds=info.get("timings", {}).get("inference"),
                )
                if info.get("missing_modalities"):  # e.g. a FLAIR + T1c only case
                    missing = ", ".join(info["missing_modalities"])
                    rec["missing_modalities"] = info["missing_modalities"]
                    rec["source"] = f"missing inputs fed as zeros: {missing}"
                    log(f"propose: the case lacks {missing}; " + " ".join(info.get("notes", [])))

    with _Stage(summary, "refine", log) as rec:
        from napari_ssseg.core.refine import refine_case

        if "proposal" in label_maps:
            pseudo, source = label_maps["proposal"], "model proposal"
        elif gt is None:
            raise _Skip("nothing to refine: no proposal (--no-propose) and the case has no labels")
        else:
            from napari_ssseg.core.degrade import degrade_labels

            pseudo = degrade_labels(gt, kind="undersegmented_oedema", seed=config.seed)
            source = "degraded ground truth (under-segmented oedema)"
            label_maps["degraded"] = pseudo
            save_labels(pseudo, case, out / "degraded.nii.gz")
        refined = refine_case(case, pseudo, preprocessed=pre)
        refined_provenance = refined.provenance
        label_maps["refined"] = refined.labels
        save_labels(refined.labels, case, out / "refined.nii.gz")
        rec.update(source=source, **refined.info)

    if config.scribble:
        with _Stage(summary, "scribble", log) as rec:
            from napari_ssseg.core.scribbles import (
                encode_scribbles,
                propagate_scribbles,
                simulate_scribbles,
            )

            # scripted strokes: skeletons of each class and a background ring on 3 axial slices,
            # as an annotator would draw them (drawn from the ground truth; on a case without
            # labels, from the model's proposal, standing in for what an annotator would see)
            if gt is not None:
                truth, stroke_source = gt, "the case's labels" if real else "the phantom's labels"
            elif "proposal" in label_maps:
                truth, stroke_source = label_maps["proposal"], "the model proposal (no labels)"
            else:
                raise _Skip("no labels and no proposal to draw the scripted strokes from")
            if not np.any(truth):
                raise _Skip(f"{stroke_source} hold no tumour to draw strokes on")
            brain = pre.uncrop(pre.mask.astype(np.uint8)).astype(bool)
            strokes = simulate_scribbles(truth, brain, n_slices=3, keep=0.5)
            save_image(encode_scribbles(strokes, case.convention), case, out / "scribbles.nii.gz")
            propagated = propagate_scribbles(
                case.images, case.modalities, strokes, brain=brain, spacing=case.scale
            )
            label_maps["scribble-propagated"] = propagated.labels
            save_labels(propagated.labels, case, out / "scribble-propagated.nii.gz")
            rec.update(
                scribbled_voxels=int(np.count_nonzero(strokes)),
                annotated_fraction=round(float(propagated.annotated_fraction), 4),
                source=f"scripted strokes on 3 axial slices from {stroke_source} "
                "(cold start, no model)",
            )

    with _Stage(summary, "evaluate", log) as rec:
        if gt is None:
            raise _Skip(
                "the case has no labels (or an unusable label file, see the load warnings): "
                "nothing to compare with"
            )
        for key, labels in label_maps.items():
            summary["metrics"][key] = region_metrics(labels, gt, spacing=case.scale)
        rec["maps"] = list(label_maps)

    if config.workspace_cases > 0:
        with _Stage(summary, "workspace", log) as rec:
            rec.update(
                _workspace_stage(
                    config, out, case_dir, case.name, label_maps, uncertainty, refined_provenance
                )
            )

    if config.retrain and summary["stages"].get("workspace", {}).get("status") == "ok":
        with _Stage(summary, "retrain", log) as rec:
            rec.update(_retrain_stage(config, out, case, gt))
            if rec.get("metrics"):
                summary["metrics"]["retrained proposal"] = rec.pop("metrics")

    if config.screenshot:
        with _Stage(summary, "screenshot", log) as rec:
            import importlib.util

            if importlib.util.find_spec("napari") is None:
                rec.update(status="skipped", reason="napari is not installed")
            else:
                from napari_ssseg._napari.screenshot import render_screenshots_in_subprocess

                shots = render_screenshots_in_subprocess(
                    case_dir,
                    {key: out / f"{key}.nii.gz" for key in label_maps},
                    out / "uncertainty.nii.gz" if uncertainty is not None else None,
                    out,
                )
                rec["files"] = [str(p) for p in shots]

    atomic_write_text(out / "summary.json", json.dumps(_jsonable(summary), indent=2))
    atomic_write_text(out / "summary.md", _markdown(summary))
    log(f"summary written to {out / 'summary.md'}")
    return summary


def _workspace_stage(
    config: DemoConfig,
    out: Path,
    case_dir: Path,
    case_name: str,
    label_maps: dict[str, np.ndarray],
    uncertainty: np.ndarray | None,
    refined_provenance: np.ndarray | None,
) -> dict[str, Any]:
    """A sample annotation workspace: the sample case plus a few small phantom cases.

    The small phantoms are written to ``out/cases``; a real case (``config.case_dir``) is
    added by reference (its files are not copied or modified).

    Every case gets the model's proposal as label version 1 (with its uncertainty score) when
    the ML stack is there; the sample case also gets the refined labels as version 2 (source
    "superpixel", with provenance). Then the next case is suggested by uncertainty, the
    workspace is evaluated against the phantoms' ground truth and exported in nnU-Net layout.
    """
    from napari_ssseg.core.phantom import make_phantom
    from napari_ssseg.core.provenance import MODEL, SUPERPIXEL
    from napari_ssseg.core.suggest import rank_cases
    from napari_ssseg.io.workspace import Workspace
    from napari_ssseg.io.workspace_export import evaluate_workspace, export_workspace
    from napari_ssseg.io.writers import write_case

    cases_dir = out / "cases"
    for i in range(config.workspace_cases):
        seed = config.seed + 100 + i
        small = make_phantom(shape=(64, 80, 80), spacing=(2.0, 2.0, 2.0), seed=seed)
        write_case(small.to_case(name=f"SSSEG_Small_{seed:05d}"), cases_dir, "brats2021")
    ws_dir = out / "workspace"
    if ws_dir.exists():
        import shutil

        shutil.rmtree(ws_dir)
    record: dict[str, Any] = {}
    with Workspace.create(ws_dir, from_dir=cases_dir) as ws:
        if config.case_dir is not None:
            main_id = ws.add_case(case_dir).case_id
        else:
            main_id = next(r.case_id for r in ws.cases if case_name in r.case_id)
        try:
            from napari_ssseg.ml.inference import predict_case
        except ImportError:
            predict_case = None
        for rec in ws.cases:
            if rec.case_id == main_id and "proposal" in label_maps:
                labels, unc = label_maps["proposal"], uncertainty
            elif predict_case is not None:
                from napari_ssseg.errors import InputError

                try:
                    result = predict_case(
                        ws.load_case(rec.case_id, labels="none"),
                        None,
                        device="cpu",
                        uncertainty="entropy",  # stored as the entropy map the ranking reads
                    )
                except InputError as exc:  # e.g. missing modalities (see the propose stage)
                    record.setdefault("not_proposed", {})[rec.case_id] = str(exc)
                    continue
                labels, unc = result["labels"], result["uncertainty"]
            else:
                continue
            prov = np.where(labels > 0, MODEL, 0).astype(np.uint8)
            ws.save_labels(
                rec.case_id, labels, source="model", note="demo proposal", provenance=prov
            )
            ws.save_uncertainty(rec.case_id, unc, labels=labels)
            ws.set_status(rec.case_id, "proposed")
        if "refined" in label_maps:
            refined = label_maps["refined"]
            prov = np.where(refined > 0, MODEL, 0).astype(np.uint8)
            if refined_provenance is not None:
                prov[np.asarray(refined_provenance, bool)] = SUPERPIXEL
            ws.save_labels(
                main_id,
                refined,
                source="superpixel",
                note="demo: superpixel refinement of the proposal",
                provenance=prov,
            )
            ws.set_status(main_id, "refined")
        scores = {r.case_id: r.scores.get("entropy") for r in ws.cases}
        ranking = rank_cases(scores, strategy="entropy")
        record["suggested_order"] = [f"{s.case_id} ({s.reason})" for s in ranking]
        evaluation = evaluate_workspace(ws, out / "workspace-evaluation")
        record["evaluation_files"] = [str(p) for p in evaluation.get("files", [])]
        record["mean_dice"] = {
            region: stats.get("dice", {}).get("mean")
            for region, stats in evaluation.get("summary", {}).items()
        }
        export_dir = out / "export-nnunet"
        if export_dir.exists():
            import shutil

            shutil.rmtree(export_dir)
        from napari_ssseg.errors import InputError

        try:
            files = export_workspace(ws, export_dir, "nnunet", verified=False)
            record["export_format"] = "nnU-Net v2"
        except InputError as exc:  # nnU-Net needs all four modalities in every case
            if export_dir.exists():
                import shutil

                shutil.rmtree(export_dir)
            files = export_workspace(ws, export_dir, "brats", verified=False)
            record["export_format"] = "BraTS"
            record["export_note"] = f"not in nnU-Net layout: {exc}"
        record["exported_files"] = len(files)
        record["cases"] = {r.case_id: r.status for r in ws.cases}
    record["workspace"] = str(ws_dir)
    return record


def _retrain_stage(config: DemoConfig, out: Path, case: Any, gt: np.ndarray) -> dict[str, Any]:
    """A short retraining run on the sample workspace, as one click on "Retrain" starts it.

    ``ssseg train`` runs in a child process (as in the napari panel), fine-tuning the shipped
    default model with the ``supervised`` strategy for one epoch of a few iterations on the
    workspace's latest label versions. The new best checkpoint then proposes again on the
    sample case. This shows the loop; a few iterations on CPU are not expected to improve the
    model.
    """
    import json
    import shutil
    import subprocess
    import sys

    from napari_ssseg.core.metrics import region_metrics
    from napari_ssseg.ml.checkpoint import default_checkpoint_path
    from napari_ssseg.ml.inference import predict_case

    run_dir = out / "retrain-run"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    cmd = [
        sys.executable, "-m", "napari_ssseg", "train", str(out / "workspace"),
        "--strategy", "supervised", "--out", str(run_dir), "--epochs", "1",
        "--iterations-per-epoch", "4", "--init", str(default_checkpoint_path()),
        "--device", "cpu", "--seed", str(config.seed),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    events = []
    log_file = run_dir / "events.jsonl"
    if log_file.exists():
        events = [json.loads(line) for line in log_file.read_text().splitlines() if line.strip()]
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"ssseg train failed (exit {proc.returncode}): {tail}")
    best = run_dir / "best.pt"
    result = predict_case(case, best if best.exists() else run_dir / "last.pt", device="cpu")
    record: dict[str, Any] = {
        "run_dir": str(run_dir),
        "events": [e.get("event") for e in events],
        "final_event": events[-1] if events else None,
    }
    if gt is not None:  # a real case without labels: the new proposal is not scored
        record["metrics"] = region_metrics(result["labels"], gt, spacing=case.scale)
    return record


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return None if not np.isfinite(f) else round(f, 4)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _markdown(summary: dict) -> str:
    if summary.get("source") == "case folder":
        where = summary["stages"].get("case", {}).get("case_dir", "")
        intro = (
            f"Real case `{where}`: grid {tuple(summary['shape'])} at "
            f"{tuple(summary['spacing'])} mm."
        )
        truth = "the case's labels"
    else:
        intro = (
            f"Phantom grid {tuple(summary['shape'])} at {tuple(summary['spacing'])} mm, "
            f"seed {summary['seed']}."
        )
        truth = "the phantom's ground truth"
    lines = [
        f"# napari-ssseg demo: {summary['case']}",
        "",
        intro,
        "",
        "| stage | status | seconds | notes |",
        "|---|---|---|---|",
    ]
    for name, rec in summary["stages"].items():
        notes = rec.get("error") or rec.get("reason") or rec.get("source") or ""
        lines.append(f"| {name} | {rec['status']} | {rec.get('seconds', '')} | {notes} |")
    if summary["metrics"]:
        lines += ["", f"## Metrics against {truth}", ""]
        lines += ["| labels | region | Dice | HD95 (mm) | IoU | NSD |", "|---|---|---|---|---|---|"]
        for key, per_region in summary["metrics"].items():
            for region, m in per_region.items():
                vals = [m.get(k) for k in ("dice", "hd95", "iou", "nsd")]
                cells = ["n/a" if v is None or not np.isfinite(v) else f"{v:.3f}" for v in vals]
                lines.append(f"| {key} | {region} | " + " | ".join(cells) + " |")
    ws = summary["stages"].get("workspace", {})
    if ws.get("status") == "ok":
        lines += ["", "## Sample workspace", "", f"Folder: `{ws['workspace']}`", ""]
        lines += [f"- {case}: {status}" for case, status in ws["cases"].items()]
        lines += ["", "Suggested labelling order (model uncertainty inside the predicted tumour):"]
        lines += [f"{i}. {item}" for i, item in enumerate(ws["suggested_order"], 1)]
        dice = ", ".join(f"{k} {v:.3f}" for k, v in ws["mean_dice"].items() if v is not None)
        lines += ["", f"Mean Dice of the latest label versions: {dice}."]
        layout = ws.get("export_format", "nnU-Net v2")
        lines += [f"Exported {ws['exported_files']} files in {layout} layout."]
    shots = summary["stages"].get("screenshot", {}).get("files", [])
    if shots:
        lines += ["", "## Screenshots", ""]
        lines += [f"![{Path(p).stem}]({Path(p).name})" for p in shots]
    return "\n".join(lines) + "\n"
