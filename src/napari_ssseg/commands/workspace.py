"""Annotation workspace: create, inspect, rank, evaluate, export and import.

A workspace is a folder with a human-readable manifest (workspace.json) that references the
case images (in place, or copied with --copy) and keeps every saved label version, the
scribbles, per-voxel provenance, registered models and training runs (see
docs/workspace.md). Subcommands:

  init      create a workspace from a folder of cases (or an nnU-Net / MSD dataset)
  add-labels  import a label file as a new version of a case (or every case's ground truth)
  set-status  set the status of cases (e.g. verified, so that they export)
  status    list the cases with their status, versions and scores (read-only)
  suggest   rank unlabelled / proposed cases to label next (uncertainty, random)
  evaluate  metrics of the latest labels against ground truth -> CSV, JSON, PNG box plot
  export    write nnU-Net v2, MSD or BraTS folders (never overwrites files)
  import    create a workspace from an nnU-Net v2 or MSD dataset
  snapshot  frozen copy of the current labels (what a training run reads)
  runs      list the training runs: state, strategy, validation Dice, model (read-only)
  add-run   record a training run folder (ssseg train --out RUN_DIR) in the workspace
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the workspace subcommands to ``parser``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    sub = parser.add_subparsers(dest="ws_command", metavar="SUBCOMMAND")

    p = sub.add_parser("init", help="create a workspace from a folder of cases")
    p.add_argument("workspace", metavar="WS", help="new workspace folder")
    p.add_argument(
        "--from",
        dest="source",
        metavar="DIR",
        help="folder of case folders (BraTS/MSD naming) or an nnU-Net/MSD dataset",
    )
    p.add_argument("--copy", action="store_true", help="copy the images into the workspace")
    p.add_argument(
        "--labels-as",
        metavar="HOW",
        help="what the cases' label files are: ground-truth (evaluation references; the "
        "default for case folders), verified (imported as version 1, cases verified; the "
        "default for nnU-Net/MSD datasets) or proposed (imported, cases to review)",
    )

    p = sub.add_parser(
        "add-labels",
        help="import a label file as a new version of a case",
        description=(
            "Add the label file FILE (written on the grid of case CASE) as a new label version "
            "of CASE, or with --from-ground-truth the ground-truth file of every case (or of "
            "--cases) as a version. The ground truth stays the evaluation reference."
        ),
    )
    p.add_argument("workspace", metavar="WS")
    p.add_argument("case", metavar="CASE", nargs="?", help="case id")
    p.add_argument("file", metavar="FILE", nargs="?", help="label file on the case's grid")
    p.add_argument(
        "--from-ground-truth",
        action="store_true",
        help="import the cases' ground-truth files instead of FILE",
    )
    p.add_argument("--cases", nargs="+", metavar="CASE", help="with --from-ground-truth")
    p.add_argument(
        "--source",
        default="import",
        help="provenance of the version: import (default), human or model",
    )
    p.add_argument(
        "--status",
        metavar="STATUS",
        help="status to set afterwards (default: verified with --from-ground-truth, else "
        "what the source implies: corrected, or proposed for model)",
    )
    p.add_argument("--convention", help="label convention of FILE (default: detected)")

    p = sub.add_parser(
        "set-status",
        help="set the status of cases (new, proposed, refined, corrected, verified)",
    )
    p.add_argument("workspace", metavar="WS")
    p.add_argument("status", metavar="STATUS", help="new, proposed, refined, corrected, verified")
    p.add_argument("cases", metavar="CASE", nargs="*", help="case ids")
    p.add_argument("--all", action="store_true", help="every case that has a label version")
    p.add_argument("--note", default="", help="note stored in the status history")

    p = sub.add_parser("status", help="show the cases, their status and scores")
    p.add_argument("workspace", metavar="WS")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--verify", action="store_true", help="check every version file's checksum")

    p = sub.add_parser("suggest", help="rank cases to label next")
    p.add_argument("workspace", metavar="WS")
    p.add_argument("--n", type=int, default=5, metavar="K", help="cases to suggest (default 5)")
    p.add_argument(
        "--model",
        metavar="CKPT",
        help="checkpoint: predict each candidate and score its uncertainty (needs torch); "
        "without it, scores stored in the workspace are used",
    )
    p.add_argument(
        "--strategy",
        default="entropy",
        help="entropy (default), disagreement (stored CPS scores) or random",
    )
    p.add_argument(
        "--diversity",
        nargs="?",
        const=0.5,
        type=float,
        default=0.0,
        metavar="W",
        help="favour cases unlike those already chosen (weight W in [0, 1], default 0.5)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random baseline")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = sub.add_parser("evaluate", help="metrics against ground truth -> CSV/JSON/PNG")
    p.add_argument("workspace", metavar="WS")
    p.add_argument("--out", metavar="DIR", help="folder for metrics.csv/json, dice_boxplot.png")
    p.add_argument("--tolerance", type=float, default=1.0, metavar="MM", help="NSD tolerance")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--lesion-wise", action="store_true", help="add BraTS 2023+ lesion-wise Dice and HD95"
    )
    p.add_argument(
        "--challenge",
        default="glioma",
        help="lesion-wise rules: glioma (default), ssa, meningioma, paediatric, metastasis, "
        "post-treatment",
    )
    p.add_argument(
        "--hd95",
        dest="hd95_definition",
        default="pooled",
        help="HD95 definition: pooled (BraTS, default), directed-max (MONAI), surface-distance",
    )

    p = sub.add_parser("export", help="write nnU-Net / MSD / BraTS folders")
    p.add_argument("workspace", metavar="WS")
    p.add_argument("out", metavar="OUT", help="target folder (existing files are never replaced)")
    p.add_argument("--format", required=True, help="nnunet, msd or brats")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--cases", nargs="+", metavar="CASE", help="case ids to export")
    group.add_argument(
        "--verified", action="store_true", help="export the verified cases (the default)"
    )
    group.add_argument("--all", action="store_true", help="export every case with labels")
    p.add_argument(
        "--region-based",
        action="store_true",
        help="nnU-Net: region labels WT/TC/ET with regions_class_order",
    )
    p.add_argument(
        "--brats-year",
        metavar="YEAR",
        help="BraTS: write the official layout of this year (2021: _t1ce/_seg with ET = 4; "
        "2023, 2024, 2025: -t1c/-seg with ET = 3); default: each case's own naming",
    )
    p.add_argument("--reference", help="nnU-Net/MSD dataset.json 'reference'")
    p.add_argument("--licence", help="nnU-Net/MSD dataset.json 'licence'")

    p = sub.add_parser("import", help="create a workspace from an nnU-Net or MSD dataset")
    p.add_argument("source", metavar="DIR", help="dataset folder with dataset.json")
    p.add_argument("workspace", metavar="WS", help="new workspace folder")
    p.add_argument("--copy", action="store_true", help="copy the images into the workspace")
    p.add_argument(
        "--labels-as",
        default="version",
        help="verified (labels become version 1, cases verified; default), proposed "
        "(version 1, cases to review) or ground-truth (evaluation references)",
    )
    p.add_argument("--convention", help="label convention of the files (brats2023, msd, ...)")

    p = sub.add_parser("snapshot", help="frozen copy of the current labels for training")
    p.add_argument("workspace", metavar="WS")
    p.add_argument("dest", metavar="DEST", help="new or empty folder")
    p.add_argument("--status", nargs="+", metavar="STATUS", help="only cases with these statuses")

    p = sub.add_parser(
        "clinical",
        help="mark cases as raw clinical studies (brain extraction, registration, working grid)",
        description=(
            "Mark CASE(s) as raw clinical studies: whoever opens them (the Workspace panel) "
            "prepares them first, as `ssseg predict --brain-extraction ... --register ... "
            "--resample ...` does, caching the brain mask, transforms and working grid in "
            "WS/cases/<id>/clinical. Label versions stay on the reference (FLAIR) series' "
            "native grid. Cases added from a PACS/TCIA series folder are marked with auto "
            "options already. --off unmarks them."
        ),
    )
    p.add_argument("workspace", metavar="WS")
    p.add_argument("cases", metavar="CASE", nargs="*", help="case ids")
    p.add_argument("--all", action="store_true", help="every case of the workspace")
    p.add_argument("--brain-extraction", default="auto", choices=("auto", "on", "off"))
    p.add_argument("--register", default="auto", choices=("auto", "on", "off"))
    p.add_argument(
        "--resample",
        type=float,
        metavar="MM",
        help="working grid in mm (default: 1 mm for a raw study, else the reference grid)",
    )
    p.add_argument("--off", action="store_true", help="use the cases as their files are")

    p = sub.add_parser("runs", help="list the training runs and their models")
    p.add_argument("workspace", metavar="WS")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = sub.add_parser(
        "add-run",
        help="record a training run folder (state, metrics, best.pt as a model)",
        description=(
            "Record (or update) the training run in RUN_DIR from its events.jsonl: state "
            "(done, cancelled, failed, or running when it has not ended), strategy, options, "
            "final validation metrics; best.pt of a done or cancelled run is registered as a "
            "model. Use it when `ssseg train WS` could not record the run because another "
            "program had the workspace open. Recording the same run again updates it."
        ),
    )
    p.add_argument("workspace", metavar="WS")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the folder given to ssseg train --out")
    p.add_argument("--name", metavar="ID", help="run id for a new record (default run-NNN)")


def run(args: argparse.Namespace) -> int:
    """Dispatch to the chosen subcommand."""
    from napari_ssseg.errors import InputError

    cmd = getattr(args, "ws_command", None)
    if cmd is None:
        raise InputError(
            "ssseg workspace needs a subcommand: init, add-labels, set-status, status, suggest, "
            "evaluate, export, import, snapshot, clinical, runs or add-run (see `ssseg "
            "workspace --help`)."
        )
    return {
        "init": _init,
        "add-labels": _add_labels,
        "set-status": _set_status,
        "status": _status,
        "suggest": _suggest,
        "evaluate": _evaluate,
        "export": _export,
        "import": _import,
        "snapshot": _snapshot,
        "clinical": _clinical,
        "runs": _runs,
        "add-run": _add_run,
    }[cmd](args)


# ----------------------------------------------------------------------------- subcommands
def _init(args: argparse.Namespace) -> int:
    from pathlib import Path

    from napari_ssseg.io.dataset_import import create_workspace

    ws, imported, status = create_workspace(
        args.workspace, args.source, copy_images=args.copy, labels_as=args.labels_as
    )
    is_dataset = args.source is not None and (Path(args.source) / "dataset.json").is_file()
    with ws:
        s = ws.summary()
        print(f"created workspace {ws.root} with {s['n_cases']} case(s)")
        if imported:
            print(
                f"imported the label files of {len(imported)} case(s) as version 1 "
                f"(status {status})"
            )
        n_gt = sum(1 for r in ws.cases if r.ground_truth is not None)
        if n_gt and not is_dataset and args.labels_as is None:
            print(
                f"note: the label files of {n_gt} case(s) are kept as ground truth for "
                "`ssseg workspace evaluate`; to export or train on them, import them as "
                "versions: `ssseg workspace add-labels WS --from-ground-truth` (or create the "
                "workspace with --labels-as verified)"
            )
    return 0


def _add_labels(args: argparse.Namespace) -> int:
    from napari_ssseg.errors import InputError, check_choice
    from napari_ssseg.io.dataset_import import import_ground_truth, import_label_file
    from napari_ssseg.io.workspace import SOURCES, STATUSES, Workspace

    source = check_choice("--source", args.source, SOURCES[:-1])
    status = check_choice("--status", args.status, STATUSES) if args.status else None
    with Workspace.open(args.workspace) as ws:
        if args.from_ground_truth:
            if args.file is not None:
                raise InputError("Give either --from-ground-truth or a CASE and FILE, not both.")
            cases = list(args.cases or []) + ([args.case] if args.case else [])
            for cid in cases:
                ws.case(cid)  # unknown ids raise
            done = import_ground_truth(ws, cases or None, status=status or "verified")
            if not done:
                raise InputError(
                    f"No case of {args.workspace!r} (among those chosen) has a ground-truth "
                    "file to import. Import a label file with `ssseg workspace add-labels WS "
                    "CASE FILE`."
                )
            print(
                f"imported the ground truth of {len(done)} case(s) as a label version "
                f"(status {status or 'verified'})"
            )
            return 0
        if args.case is None or args.file is None:
            raise InputError(
                "add-labels needs CASE and FILE (a label file on the case's grid), or "
                "--from-ground-truth. See `ssseg workspace add-labels --help`."
            )
        v = import_label_file(
            ws, args.case, args.file, convention=args.convention, source=source, status=status
        )
        rec = ws.case(args.case)
    print(f"case {args.case}: version {v.version} ({v.source}) saved; status {rec.status}")
    return 0


def _clinical(args: argparse.Namespace) -> int:
    from napari_ssseg.errors import InputError
    from napari_ssseg.io.workspace import Workspace

    with Workspace.open(args.workspace) as ws:
        cases = ws.case_ids if args.all else list(args.cases)
        if not cases:
            raise InputError("Name the case(s) to mark (CASE ...) or give --all.")
        for cid in cases:
            ws.case(cid)  # unknown ids raise before anything changes
        options = (
            None
            if args.off
            else {
                "brain_extraction": args.brain_extraction,
                "register": args.register,
                "resample": args.resample,
            }
        )
        for cid in cases:
            ws.set_clinical(cid, options)
        for cid in cases:
            opts = ws.case(cid).clinical
            what = (
                "used as its files are"
                if opts is None
                else "clinical: brain extraction {brain_extraction}, register {register}, "
                "working grid {grid}".format(
                    grid=f"{opts['resample']:g} mm" if opts["resample"] else "auto", **opts
                )
            )
            print(f"{cid}: {what}")
    return 0


def _set_status(args: argparse.Namespace) -> int:
    from napari_ssseg.errors import InputError, check_choice
    from napari_ssseg.io.workspace import STATUSES, Workspace

    status = check_choice("STATUS", args.status, STATUSES)
    if bool(args.cases) == bool(args.all):
        raise InputError(
            "set-status needs case ids or --all (every case with a label version), not both "
            "and not neither: e.g. `ssseg workspace set-status WS verified CASE1 CASE2`."
        )
    with Workspace.open(args.workspace) as ws:
        ids = list(args.cases) if args.cases else [r.case_id for r in ws.cases if r.n_versions]
        if not ids:
            raise InputError(
                f"No case of {args.workspace!r} has a label version. Import labels first "
                "(`ssseg workspace add-labels WS CASE FILE`, or --from-ground-truth)."
            )
        if status == "verified":
            bad = [c for c in ids if ws.case(c).n_versions == 0]
            if bad:
                raise InputError(
                    f"Case(s) {', '.join(bad[:5])} have no label version, so they cannot be "
                    "verified. Import labels first with `ssseg workspace add-labels WS CASE "
                    "FILE` (or --from-ground-truth)."
                )
        for cid in ids:
            ws.set_status(cid, status, note=args.note)
    print(f"{len(ids)} case(s) set to {status}")
    return 0


def _status(args: argparse.Namespace) -> int:
    import json

    from napari_ssseg.io.workspace import Workspace

    with Workspace.open(args.workspace, readonly=True) as ws:
        s = ws.summary()
        rows = []
        for rec in ws.cases:
            versions = ws.versions(rec.case_id)
            last = versions[-1] if versions else None
            rows.append(
                {
                    "case": rec.case_id,
                    "status": rec.status,
                    "versions": rec.n_versions,
                    "last_source": last.source if last else None,
                    "last_time": last.time if last else None,
                    "ground_truth": rec.ground_truth is not None,
                    "missing": list(rec.missing),
                    "scores": rec.scores,
                }
            )
        problems = ws.verify() if args.verify else None
    if args.json:
        out = {**s, "cases": rows}
        if problems is not None:
            out["problems"] = problems
        print(json.dumps(out, indent=1))
        return 0 if not problems else 1
    counts = ", ".join(f"{k} {v}" for k, v in s["status_counts"].items())
    print(f"workspace {s['workspace']}: {s['n_cases']} case(s) ({counts})")
    print(
        f"{s['n_versions']} label version(s), {s['n_models']} model(s), "
        f"{s['n_runs']} training run(s)"
    )
    print()
    print(f"{'case':<28}{'status':<11}{'vers':>5}  {'last save':<32}{'entropy':>8}  notes")
    for r in rows:
        last = f"{r['last_source']} {r['last_time'][:19]}" if r["versions"] else "-"
        ent = r["scores"].get("entropy")
        ent_s = f"{ent:.4f}" if ent is not None else "-"
        notes = "MISSING IMAGES" if r["missing"] else ("gt" if r["ground_truth"] else "")
        print(f"{r['case']:<28}{r['status']:<11}{r['versions']:>5}  {last:<32}{ent_s:>8}  {notes}")
    if problems is not None:
        print()
        print(
            "integrity: OK" if not problems else "integrity problems:\n  " + "\n  ".join(problems)
        )
        return 0 if not problems else 1
    return 0


def _suggest(args: argparse.Namespace) -> int:
    import json
    import sys

    from napari_ssseg.core.suggest import STRATEGIES
    from napari_ssseg.errors import InputError, check_choice
    from napari_ssseg.io.workspace import Workspace
    from napari_ssseg.io.workspace.suggest import CANDIDATE_STATUSES, suggest_next

    strategy = check_choice("--strategy", args.strategy, STRATEGIES)
    if args.n < 1:
        raise InputError(f"--n {args.n} must be at least 1.")
    if not 0.0 <= args.diversity <= 1.0:
        raise InputError(f"--diversity {args.diversity} must be within [0, 1].")
    readonly = args.model is None
    notes: list[str] = []
    with Workspace.open(args.workspace, readonly=readonly) as ws:
        if strategy != "random":
            ids = [r.case_id for r in ws.cases if r.status in CANDIDATE_STATUSES and not r.missing]
            if args.model is not None:
                if strategy != "entropy":
                    raise InputError(
                        "--model computes entropy scores; --strategy disagreement uses the CPS "
                        "disagreement scores stored in the workspace (omit --model)."
                    )
                if ids:
                    _score_with_model(ws, ids, args.model, notes)
            else:
                notes.append(
                    f"no --model given: using the {strategy} scores stored in the workspace "
                    "(saved when proposals were made)"
                )
        result = suggest_next(
            ws, args.n, strategy=strategy, diversity=args.diversity, seed=args.seed
        )
        if not ws.readonly:
            for cid, f in result.new_features.items():
                ws.set_features(cid, f)
        notes = result.notes + notes
        ranked, status = result.ranked, result.status
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if args.json:
        print(
            json.dumps(
                {
                    "strategy": strategy,
                    "diversity": args.diversity,
                    "notes": notes,
                    "suggestions": [
                        {
                            "rank": s.rank,
                            "case": s.case_id,
                            "status": status[s.case_id],
                            "score": s.score,
                            "reason": s.reason,
                        }
                        for s in ranked
                    ],
                },
                indent=1,
            )
        )
        return 0
    print(f"{'rank':>4}  {'case':<28}{'status':<10}{'score':>8}  reason")
    for s in ranked:
        sc = f"{s.score:.4f}" if s.score is not None else "-"
        print(f"{s.rank:>4}  {s.case_id:<28}{status[s.case_id]:<10}{sc:>8}  {s.reason}")
    return 0


def _score_with_model(ws, ids: list[str], model: str, notes: list[str]) -> None:
    """Predict each candidate with ``model`` and store its entropy map and score."""
    import sys

    try:
        from napari_ssseg.ml.inference import predict_case
    except ImportError as exc:
        notes.append(
            f"--model ignored: the ML stack could not be imported ({exc}); using the scores "
            "stored in the workspace (saved when proposals were made). Install "
            "napari-ssseg[ml] to score with a model."
        )
        return
    for i, cid in enumerate(ids):
        print(f"[{i + 1}/{len(ids)}] predicting {cid}", file=sys.stderr)
        case = ws.load_case(cid, labels="none")
        # the entropy map whatever the checkpoint (a CPS pair or an ensemble would otherwise
        # return its disagreement map, stored here under the wrong name)
        res = predict_case(case, model, uncertainty="entropy")
        ws.save_uncertainty(cid, res["uncertainty"], labels=res["labels"], kind="entropy")
    notes.append(f"entropy computed with {model} for {len(ids)} case(s) and stored")


def _evaluate(args: argparse.Namespace) -> int:
    import json
    import math

    from napari_ssseg.errors import InputError
    from napari_ssseg.io.workspace import Workspace
    from napari_ssseg.io.workspace_export import evaluate_workspace

    if not math.isfinite(args.tolerance) or args.tolerance < 0:
        raise InputError(f"--tolerance {args.tolerance!r} must be a distance >= 0 in mm.")
    from napari_ssseg.core.metrics import HD95_DEFINITIONS
    from napari_ssseg.errors import check_choice

    definition = check_choice("--hd95", args.hd95_definition, HD95_DEFINITIONS)
    if args.lesion_wise:
        from napari_ssseg.core.lesionwise import get_rules

        get_rules(args.challenge)  # check the name before reading any case
    with Workspace.open(args.workspace, readonly=True) as ws:
        rep = evaluate_workspace(
            ws,
            args.out,
            tolerance_mm=args.tolerance,
            lesion_wise=args.lesion_wise,
            challenge=args.challenge,
            definition=definition,
        )
    if args.json:
        print(json.dumps(rep, indent=1, allow_nan=False))
        return 0
    if not rep["cases"]:
        print("no case has both a label version and ground truth; nothing to evaluate")
    else:
        print(f"{len(rep['cases'])} case(s) evaluated (latest label version vs ground truth)")
        print(f"{'region':<8}{'Dice mean':>10}{'sd':>8}{'median':>8}{'HD95 mean':>11}")
        for region, m in rep["summary"].items():
            d, h = m["dice"], m["hd95"]
            print(
                f"{region:<8}{_f(d['mean'], 4):>10}{_f(d['std'], 4):>8}{_f(d['median'], 4):>8}"
                f"{_f(h['mean'], 2):>11}"
            )
        if "lesion_wise" in rep:
            lw_info = rep["lesion_wise"]
            print(
                f"lesion-wise ({lw_info['source']} rules: dilation {lw_info['dilation']}, "
                f"lesions above {lw_info['min_volume_mm3']:g} mm3)"
            )
            print(f"{'region':<8}{'Dice mean':>10}{'HD95 mean':>11}")
            for region, m in rep["summary"].items():
                lw = m.get("lesion_wise")
                if lw:
                    print(
                        f"{region:<8}{_f(lw['dice']['mean'], 4):>10}{_f(lw['hd95']['mean'], 2):>11}"
                    )
    for cid, why in rep["skipped"].items():
        print(f"skipped {cid}: {why}")
    for f in rep["files"]:
        print(f"wrote {f}")
    return 0


def _f(v, digits: int) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _export(args: argparse.Namespace) -> int:
    from napari_ssseg.io.workspace import Workspace
    from napari_ssseg.io.workspace_export import export_workspace

    with Workspace.open(args.workspace, readonly=True) as ws:
        written = export_workspace(
            ws,
            args.out,
            args.format,
            cases=args.cases,
            verified=not args.all,
            region_based=args.region_based,
            brats_year=args.brats_year,
            reference=args.reference,
            licence=args.licence,
        )
    print(f"exported {len(written)} file(s) to {args.out}")
    return 0


def _import(args: argparse.Namespace) -> int:
    from napari_ssseg.io.workspace_export import import_dataset

    ws = import_dataset(
        args.source,
        args.workspace,
        copy_images=args.copy,
        labels_as=args.labels_as,
        convention=args.convention,
    )
    with ws:
        print(f"imported {len(ws.case_ids)} case(s) into workspace {ws.root}")
    return 0


def _snapshot(args: argparse.Namespace) -> int:
    from napari_ssseg.io.workspace import Workspace

    # read-only: works while another program annotates (the manifest is read once; version
    # files are immutable), and is not recorded in the manifest.
    with Workspace.open(args.workspace, readonly=True) as ws:
        dest = ws.snapshot(args.dest, statuses=args.status)
    print(f"snapshot written to {dest}")
    return 0


def _runs(args: argparse.Namespace) -> int:
    import json

    from napari_ssseg.io.workspace import Workspace

    with Workspace.open(args.workspace, readonly=True) as ws:
        runs = ws.runs
        models = {m["id"]: m["path"] for m in ws.models}
        for r in runs:
            r["dir"] = str(ws.resolve_path(r.get("dir")))
            r["model_path"] = models.get(r.get("model"))
    if args.json:
        print(json.dumps(runs, indent=1))
        return 0
    if not runs:
        print(
            f"workspace {args.workspace}: no training run recorded (ssseg train WS records its "
            "runs; ssseg workspace add-run WS RUN_DIR records one afterwards)"
        )
        return 0
    print(
        f"{'run':<10}{'state':<10}{'strategy':<25}{'step':>6}  {'WT':>6}{'TC':>6}{'ET':>6}"
        f"{'mean':>6}  {'model':<10}{'ended (UTC)':<20}folder"
    )
    for r in runs:
        m = r.get("metrics") or {}
        dice = "".join(
            f"{m[k]:>6.3f}" if isinstance(m.get(k), (int, float)) else f"{'-':>6}"
            for k in ("WT", "TC", "ET", "mean")
        )
        ended = (r.get("finished") or "")[:19] or "-"
        step = r.get("step")
        print(
            f"{r['id']:<10}{r.get('state', '?'):<10}{(r.get('strategy') or '-'):<25}"
            f"{(str(step) if step is not None else '-'):>6}  {dice}  "
            f"{(r.get('model') or '-'):<10}{ended:<20}{r['dir']}"
        )
        if r.get("message"):
            print(f"{'':<10}message: {' '.join(str(r['message']).split())[:200]}")
    return 0


def _add_run(args: argparse.Namespace) -> int:
    from napari_ssseg.io.workspace import Workspace

    with Workspace.open(args.workspace) as ws:
        entry = ws.record_run_from_dir(args.run_dir, name=args.name)
    model = f", model {entry['model']}" if entry.get("model") else ""
    print(f"run {entry['id']} recorded: {entry['state']}{model} ({args.run_dir})")
    if entry["state"] == "running":
        print(
            "note: the run has no end event yet (still training, or killed): record it again "
            "once it has ended (or resume it with ssseg train ... --resume)"
        )
    return 0
