"""Models, snapshots and training runs of a workspace (:class:`_RunsMixin` of
:class:`~napari_ssseg.io.workspace.Workspace`), and what a run folder says about its run
(:func:`read_run`; no torch)."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import socket
from collections.abc import Sequence
from pathlib import Path

from napari_ssseg.errors import InputError, check_choice
from napari_ssseg.io.atomic import atomic_write_text
from napari_ssseg.io.workspace._base import (
    _LABEL_CONVENTION,
    SCHEMA_VERSION,
    SNAPSHOT_MANIFEST,
    STATUSES,
    _check_id,
    _check_relative,
    _copy_file,
    _now,
    _WorkspaceBase,
    log,
)
from napari_ssseg.io.workspace.lock import _pid_alive
from napari_ssseg.io.workspace.records import TrainingRun


class _RunsMixin(_WorkspaceBase):
    """Registered models, label snapshots and training-run records."""

    # -- models, runs, snapshots
    def register_model(
        self, path: str | os.PathLike, info: dict | None = None, *, copy_file: bool = False
    ) -> str:
        """Record a model checkpoint made from (or used with) this workspace; returns its id."""
        p = Path(path).expanduser()
        if not p.exists():
            raise InputError(f"Model file {str(p)!r} does not exist.")
        info = json.loads(json.dumps(info or {}, default=str))
        with self._lock:
            mid = f"model-{len(self._m['models']) + 1:03d}"
            if copy_file:
                dest = self.root / "models" / f"{mid}{''.join(p.suffixes)}"
                _copy_file(p, dest)
                p = dest
            with self._transaction() as m:
                m["models"].append({"id": mid, "path": self._ref(p), "info": info, "time": _now()})
        return mid

    @property
    def models(self) -> list[dict]:
        """Registered models (copies of the manifest entries, paths made absolute)."""
        return [{**mm, "path": str(self._abs(mm["path"]))} for mm in self._m["models"]]

    def snapshot(
        self,
        dest: str | os.PathLike,
        *,
        cases: Sequence[str] | None = None,
        statuses: Sequence[str] | None = None,
    ) -> Path:
        """Write a consistent, frozen copy of the current labels for a training run.

        Every selected case with at least one version gets its latest label file (and
        provenance) hard-linked (or copied, across file systems) into ``dest/labels`` and
        ``dest/provenance``; ``dest/snapshot.json`` (written last) lists the cases with their
        absolute image paths, geometry, version and status. Version files are immutable, so
        later saves never change the snapshot.

        Parameters
        ----------
        dest : path-like
            New or empty folder.
        cases : sequence of str, optional
            Case ids (default: every case with a label version).
        statuses : sequence of str, optional
            Keep only cases with these statuses.

        Returns
        -------
        Path
            ``dest``. Read it with :func:`read_snapshot`.
        """
        dest = Path(dest).expanduser()
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise InputError(
                f"Snapshot folder {str(dest)!r} already exists and is not empty; snapshots "
                "never overwrite files. Choose a new folder."
            )
        if statuses is not None:
            statuses = [check_choice("status", s, STATUSES) for s in statuses]
        with self._lock:
            frozen = copy.deepcopy(self._m)
        ids = list(cases) if cases is not None else [c["id"] for c in frozen["cases"]]
        out = []
        for cid in ids:
            e = self._entry(cid, frozen)
            if not e["versions"] or (statuses is not None and e["status"] not in statuses):
                continue
            v = e["versions"][-1]
            lab = f"labels/{cid}.nii.gz"
            _copy_file(self.root / v["file"], dest / lab, link=True)
            prov = None
            if v.get("provenance"):
                prov = f"provenance/{cid}.nii.gz"
                _copy_file(self.root / v["provenance"], dest / prov, link=True)
            rec = self._record(e)
            out.append(
                {
                    "id": cid,
                    "status": e["status"],
                    "version": v["version"],
                    "source": v["source"],
                    "labels": lab,
                    "provenance": prov,
                    "label_convention": _LABEL_CONVENTION,
                    "convention": e.get("convention"),
                    "images": {k: str(p) for k, p in rec.images.items()},
                    "msd_image": str(rec.msd_image) if rec.msd_image else None,
                    "ground_truth": str(rec.ground_truth) if rec.ground_truth else None,
                    "geometry": e["geometry"],
                    "sha256": v.get("sha256", ""),
                    # a raw clinical study: trained on its prepared (working-grid,
                    # brain-extracted) images, as it is proposed on (ml.data)
                    **(
                        {
                            "clinical": dict(e["clinical"]),
                            "clinical_cache": str(self.clinical_cache_dir(cid).absolute()),
                        }
                        if e.get("clinical")
                        else {}
                    ),
                }
            )
        if cases is not None and not out:
            raise InputError(f"None of the cases {list(cases)} has a label version to snapshot.")
        dest.mkdir(parents=True, exist_ok=True)
        snap = {
            "schema_version": SCHEMA_VERSION,
            "kind": "napari-ssseg snapshot",
            "workspace": str(self.root.absolute()),
            "time": _now(),
            "cases": out,
        }
        atomic_write_text(dest / SNAPSHOT_MANIFEST, json.dumps(snap, indent=1) + "\n")
        if not self.readonly and not self._closed:
            with self._transaction() as m:
                m["snapshots"].append(
                    {"path": self._ref(dest), "time": snap["time"], "n": len(out)}
                )
        return dest

    def begin_run(
        self,
        name: str | None = None,
        config: dict | None = None,
        *,
        snapshot: bool = True,
        run_dir: str | os.PathLike | None = None,
        strategy: str | None = None,
    ) -> TrainingRun:
        """Start recording a training run (state ``running``).

        Parameters
        ----------
        name : str, optional
            Run id (default ``run-NNN``).
        config : dict, optional
            The run's options (recorded as they are, JSON-able).
        snapshot : bool
            Freeze the current labels into ``RUN_DIR/snapshot`` (:meth:`snapshot`). False
            when the trainer makes its own snapshot (``ssseg train WS`` does).
        run_dir : path-like, optional
            Run folder (default ``WS/runs/<id>``); may be outside the workspace.
        strategy : str, optional
            Training strategy name.

        Returns
        -------
        TrainingRun
            Train on ``run.snapshot`` (:func:`read_snapshot`), then call :meth:`finish_run`
            (or :meth:`record_run` with the end state).
        """
        self._check_writable()
        if name:
            _check_id(name, "run name")
            if any(r["id"] == name for r in self._m["runs"]):
                raise InputError(
                    f"Workspace already has a training run {name!r}; choose a new name."
                )
        rid = name or _next_id("run", [r["id"] for r in self._m["runs"]])
        rdir = Path(run_dir).expanduser().absolute() if run_dir else self.root / "runs" / rid
        snap = rdir / "snapshot"
        if snapshot:
            self.snapshot(snap)
        self.record_run(rdir, state="running", strategy=strategy, config=config, name=rid)
        return TrainingRun(rid, rdir, snap)

    def find_run(self, run: str | os.PathLike) -> dict | None:
        """The manifest entry (a copy) of a run, by run id or run folder; None if unknown."""
        ref = None
        with contextlib.suppress(OSError, ValueError, TypeError):
            ref = self._ref(Path(run).expanduser())
        for r in self._m["runs"]:
            if r.get("id") == str(run) or (ref is not None and r.get("dir") == ref):
                return copy.deepcopy(r)
        return None

    def record_run(
        self,
        run_dir: str | os.PathLike,
        *,
        state: str,
        strategy: str | None = None,
        config: dict | None = None,
        metrics: dict | None = None,
        checkpoint: str | os.PathLike | None = None,
        step: int | None = None,
        reason: str | None = None,
        message: str | None = None,
        name: str | None = None,
        pid: int | None = None,
    ) -> dict:
        """Create or update the record of the training run in ``run_dir`` (one manifest write).

        Runs are identified by their folder, so recording the same run twice (e.g. by the
        training process and by the Retrain panel) updates one entry; recording an end state
        that is already recorded (same state and step) changes nothing. ``state="running"``
        on a finished run (``--resume``) marks it running again and adds the time to
        ``resumed``.

        Parameters
        ----------
        run_dir : path-like
            The run folder (``ssseg train --out``); inside or outside the workspace.
        state : {"running", "done", "cancelled", "failed"}
        strategy : str, optional
        config : dict, optional
            Run options (replace the recorded ones when given).
        metrics : dict, optional
            Final validation metrics (end states).
        checkpoint : path-like, optional
            The run's best checkpoint: registered as a model (:attr:`models`); the same file
            recorded again updates its model entry instead of adding one.
        step : int, optional
            Optimiser steps done.
        reason, message : str, optional
            Why the run ended (``finished``/``budget``/``SIGTERM``...); error message.
        name : str, optional
            Run id for a new entry (default ``run-NNN``).
        pid : int, optional
            With ``state="running"``: the training process (recorded with this host's name),
            so that :meth:`reconcile_runs` can tell a run whose process is gone.

        Returns
        -------
        dict
            The run's manifest entry (a copy).
        """
        self._check_writable()
        state = check_choice("state", state, RUN_STATES)
        rdir = Path(run_dir).expanduser().absolute()
        ref = self._ref(rdir)
        ckpt = None
        if checkpoint is not None:
            ckpt = Path(checkpoint).expanduser()
            if not ckpt.exists():
                raise InputError(f"Model file {str(ckpt)!r} does not exist.")
        with self._lock:
            old = next((r for r in self._m["runs"] if r.get("dir") == ref), None)
            if (
                old is not None
                and state != "running"
                and old.get("state") == state
                and old.get("step") == step
                and (ckpt is None or old.get("model"))
            ):
                return copy.deepcopy(old)
            with self._transaction() as m:
                now = _now()
                entry = next((r for r in m["runs"] if r.get("dir") == ref), None)
                if entry is None:
                    if name:
                        _check_id(name, "run name")
                        if any(r["id"] == name for r in m["runs"]):
                            raise InputError(
                                f"Workspace already has a training run {name!r}; choose a new name."
                            )
                    rid = name or _next_id("run", [r["id"] for r in m["runs"]])
                    entry = {"id": rid, "dir": ref, "config": {}, "started": now}
                    m["runs"].append(entry)
                elif state == "running" and entry.get("state") != "running":
                    entry.setdefault("resumed", []).append(now)
                if (rdir / "snapshot" / SNAPSHOT_MANIFEST).exists() or "snapshot" not in entry:
                    entry["snapshot"] = self._ref(rdir / "snapshot")
                if strategy:
                    entry["strategy"] = str(strategy)
                if config is not None:
                    entry["config"] = json.loads(json.dumps(config, default=str))
                entry["state"] = state
                if step is not None:
                    entry["step"] = int(step)
                if state == "running":
                    for key in ("finished", "reason", "message"):
                        entry.pop(key, None)
                    if pid is not None:
                        entry["pid"] = int(pid)
                        entry["host"] = socket.gethostname()
                else:
                    entry.pop("pid", None)
                    entry.pop("host", None)
                    entry["finished"] = now
                    entry["reason"] = reason
                    entry["metrics"] = json.loads(json.dumps(metrics or {}, default=str))
                    if message:
                        entry["message"] = str(message)
                    else:
                        entry.pop("message", None)
                    if ckpt is not None:
                        entry["model"] = self._upsert_model(
                            m, ckpt, {"run": entry["id"], "state": state, "metrics": metrics or {}}
                        )
                    else:
                        entry.setdefault("model", None)
                result = copy.deepcopy(entry)
        return result

    def _upsert_model(self, m: dict, path: Path, info: dict) -> str:
        """Add (or update, same file) a model entry in manifest ``m``; return its id."""
        ref = self._ref(path)
        info = json.loads(json.dumps(info, default=str))
        for mm in m["models"]:
            if mm.get("path") == ref:
                mm.update(info=info, time=_now())
                return mm["id"]
        mid = _next_id("model", [mm["id"] for mm in m["models"]])
        m["models"].append({"id": mid, "path": ref, "info": info, "time": _now()})
        return mid

    def record_run_from_dir(self, run_dir: str | os.PathLike, *, name: str | None = None) -> dict:
        """Record a run from what its folder holds (``events.jsonl``, ``best.pt``).

        The state is the run's end event (``done``, ``cancelled``; ``error`` -> ``failed``),
        or ``running`` when it has none yet (still training, or killed); the metrics are the
        end event's (else the last validation); ``best.pt`` of a ``done`` or ``cancelled`` run
        is registered as a model. See :func:`read_run`.
        """
        info = read_run(run_dir)
        return self.record_run(
            run_dir,
            state=info["state"],
            strategy=info["strategy"],
            config=info["config"] or None,
            metrics=info["metrics"],
            checkpoint=info["best"] if info["state"] in ("done", "cancelled") else None,
            step=info["step"],
            reason=info["reason"],
            message=info["message"],
            name=name,
        )

    def finish_run(
        self,
        run_id: str,
        *,
        checkpoint: str | os.PathLike | None = None,
        metrics: dict | None = None,
        state: str = "done",
    ) -> None:
        """Record the end of a run (its checkpoint is registered as a model)."""
        state = check_choice("state", state, ("done", "failed", "cancelled"))
        run = next((r for r in self._m["runs"] if r["id"] == run_id), None)
        if run is None:
            raise InputError(f"Workspace has no training run {run_id!r}.")
        run_dir = self._abs(run["dir"])
        if run_dir is None:
            raise InputError(f"Training run {run_id!r} has no folder in the workspace manifest.")
        self.record_run(run_dir, state=state, metrics=metrics, checkpoint=checkpoint)

    def reconcile_runs(self) -> list[dict]:
        """Settle runs recorded as ``running`` whose training process has ended.

        A run stays ``running`` in the manifest when the program that recorded it could not
        record its end: napari (holding the workspace) crashed or was killed, or the training
        process was killed (``SIGKILL``, out of memory). For each such run:

        * its folder's ``events.jsonl`` has an end event: that end is recorded
          (:meth:`record_run_from_dir`: ``done`` / ``cancelled`` with ``best.pt`` registered
          as a model, or ``failed``);
        * else, when the recorded process (``pid`` on this host) is no longer alive, or the
          run folder is gone: the run is recorded ``failed`` with a message that says so and
          how to resume it.

        A run without a recorded process (older manifests) or started on another host is
        left as it is unless its folder says it ended. Called by :meth:`open` (writable);
        never raises for one run (a run that cannot be settled is logged and kept).

        Returns
        -------
        list of dict
            The updated manifest entries (copies), one per settled run.
        """
        self._check_writable()
        settled: list[dict] = []
        for entry in [r for r in self._m["runs"] if r.get("state") == "running"]:
            rdir = self._abs(entry.get("dir"))
            if rdir is None:
                continue
            try:
                info = read_run(rdir) if rdir.is_dir() else None
            except InputError:
                info = None
            try:
                if info is not None and info["state"] != "running":
                    settled.append(self.record_run_from_dir(rdir))
                    continue
                pid, host = entry.get("pid"), entry.get("host")
                gone = not rdir.is_dir()
                if not gone and isinstance(pid, int) and host == socket.gethostname():
                    gone = not _pid_alive(pid)
                if not gone:
                    continue
                why = (
                    f"its run folder {str(rdir)!r} is missing"
                    if not rdir.is_dir()
                    else f"its training process (pid {pid}) ended without recording an end"
                )
                resume = (
                    f" last.pt is kept: resume with `ssseg train --resume --out {rdir}` (or "
                    "the Retrain panel's Resume)."
                    if info is not None and info.get("last")
                    else ""
                )
                settled.append(
                    self.record_run(
                        rdir,
                        state="failed",
                        step=info["step"] if info is not None else None,
                        reason="interrupted",
                        message=(
                            f"Run interrupted: {why} (the program that started it crashed or "
                            f"was closed, or the process was killed).{resume}"
                        ),
                    )
                )
            except Exception as exc:  # noqa: BLE001 - one bad run must not block opening
                log.warning("could not settle run %s: %s", entry.get("id"), exc)
        return settled

    @property
    def runs(self) -> list[dict]:
        """Training runs (copies of the manifest entries)."""
        return copy.deepcopy(self._m["runs"])


def read_snapshot(path: str | os.PathLike) -> dict:
    """Read a snapshot written by :meth:`Workspace.snapshot` (absolute label paths).

    Returns
    -------
    dict
        ``{"workspace", "time", "cases": [{"id", "labels" (Path), "provenance", "images",
        "geometry", "version", "status", ...}]}``. Label files hold internal values.
    """
    root = Path(path).expanduser()
    mpath = root / SNAPSHOT_MANIFEST
    try:
        snap = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(
            f"{str(root)!r} is not a complete snapshot ({SNAPSHOT_MANIFEST}: {exc}). Make a new "
            "one with Workspace.snapshot()."
        ) from None
    if not isinstance(snap, dict) or snap.get("schema_version", 0) > SCHEMA_VERSION:
        raise InputError(f"Snapshot {str(mpath)!r} is from a newer napari-ssseg; upgrade.")
    for c in snap.get("cases", []):
        for key in ("labels", "provenance"):
            if c.get(key):
                c[key] = root / _check_relative(c[key], mpath, "a snapshot file")
    return snap


# ----------------------------------------------------------------------------- training runs
#: States of a recorded training run.
RUN_STATES: tuple[str, ...] = ("running", "done", "cancelled", "failed")
_END_STATE = {"done": "done", "cancelled": "cancelled", "error": "failed"}


def _next_id(prefix: str, taken: Sequence[str]) -> str:
    """``prefix-NNN`` one above the highest number in ``taken``."""
    nums = [0]
    for t in taken:
        mt = re.fullmatch(rf"{re.escape(prefix)}-(\d+)", str(t))
        if mt:
            nums.append(int(mt.group(1)))
    return f"{prefix}-{max(nums) + 1:03d}"


def read_run(run_dir: str | os.PathLike) -> dict:
    """What a training run folder says about the run (``events.jsonl``; no torch).

    Parameters
    ----------
    run_dir : path-like
        A folder written by ``ssseg train --out RUN_DIR``.

    Returns
    -------
    dict
        ``run_dir`` (Path), ``strategy``, ``config`` (the last ``start`` event's), ``data``,
        ``state`` (of the first end event after the last ``start``, so a refused
        ``--resume`` does not count; ``running`` when there is none: still training, or
        killed), ``reason``, ``step``, ``metrics`` (the end event's, else the last
        validation's; ``{}`` without one), ``best`` (path of ``best.pt`` or None), ``last``,
        ``message`` (of an ``error`` event).

    Raises
    ------
    InputError
        The folder has neither ``events.jsonl`` nor ``last.pt``.
    """
    root = Path(run_dir).expanduser().absolute()
    events_path = root / "events.jsonl"
    if not events_path.is_file() and not (root / "last.pt").is_file():
        raise InputError(
            f"{str(root)!r} is not a training run folder: it has no events.jsonl and no "
            "last.pt. Give the folder passed to `ssseg train --out`."
        )
    events: list[dict] = []
    if events_path.is_file():
        for line in events_path.read_text(encoding="utf-8", errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                rec = json.loads(line)
                if isinstance(rec, dict) and "event" in rec:
                    events.append(rec)
    starts = [i for i, e in enumerate(events) if e["event"] == "start"]
    first = starts[-1] if starts else 0
    start = events[first] if starts else {}
    tail = events[first:]
    # each start has one end: a later error without a new start is a refused --resume
    end = next((e for e in tail if e["event"] in _END_STATE), None)
    if not starts:  # refused before any start event (bad options, data)
        end = next((e for e in reversed(events) if e["event"] in _END_STATE), None)
    metrics: dict = {}
    if end is not None and isinstance(end.get("metrics"), dict):
        metrics = end["metrics"]
    else:
        vals = [e for e in tail if e["event"] == "validation"]
        if vals and isinstance(vals[-1].get("metrics"), dict):
            metrics = vals[-1]["metrics"]
    steps = [e.get("step") for e in tail if isinstance(e.get("step"), int)]
    best = root / "best.pt"
    start_config = start.get("config")
    config: dict = start_config if isinstance(start_config, dict) else {}
    return {
        "run_dir": root,
        "strategy": start.get("strategy") or config.get("strategy"),
        "config": config,
        "data": config.get("data"),
        "state": _END_STATE[end["event"]] if end is not None else "running",
        "reason": None if end is None else end.get("reason"),
        "step": steps[-1] if steps else None,
        "metrics": metrics,
        "best": str(best) if best.is_file() else None,
        "last": str(root / "last.pt") if (root / "last.pt").is_file() else None,
        "message": None if end is None else end.get("message"),
    }


def add_run_command(workspace: str | os.PathLike, run_dir: str | os.PathLike) -> str:
    """The shell command that records ``run_dir`` in ``workspace`` later."""
    import shlex

    return (
        f"ssseg workspace add-run {shlex.quote(str(workspace))} "
        f"{shlex.quote(str(Path(run_dir).expanduser().absolute()))}"
    )
