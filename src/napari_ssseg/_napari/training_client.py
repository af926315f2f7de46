"""Run ``ssseg train`` as a child process and follow its ``events.jsonl`` (no Qt, no torch).

:class:`TrainingProcess` starts ``python -m napari_ssseg train ...`` in its own process group
(so that a Ctrl-C in the terminal running napari does not reach it, and cancelling it never
touches napari), with its stdout and stderr written to ``RUN_DIR/train.stdout.log`` and
``RUN_DIR/train.stderr.log``. :meth:`TrainingProcess.poll_events` returns the events appended
since the previous call by reading ``RUN_DIR/events.jsonl`` from the byte offset where it
stopped; a partial last line (the child is writing it) is kept for the next call. Every call
is non-blocking, so a GUI can call it from a timer.

The child gets the environment variable ``SSSEG_PARENT_PID`` (this process): if this process
dies without stopping it (a crash, ``kill -9``), the child notices within a second and stops
as on SIGTERM (``last.pt``, ``cancelled``).

The module also holds the data inspection behind the Retrain panel's one-click strategy
choice: :func:`summarize_data` (counts of labelled, scribbled and unlabelled cases of a case
folder or workspace) and :func:`choose_strategy`; :func:`resume_args` (the command that
continues an earlier run folder) and :func:`failure_advice` (what to change after an
out-of-memory error).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_ssseg.errors import InputError

__all__ = [
    "END_EVENTS",
    "SEMI_SUPERVISED_PREFERENCE",
    "DataSummary",
    "TrainingProcess",
    "choose_strategy",
    "failure_advice",
    "resume_args",
    "summarize_data",
]

#: Events that end a run.
END_EVENTS = ("done", "cancelled", "error")
#: Semi-supervised strategies for "labels + unlabelled", best first (the first one the engine
#: registers is used). ``pseudo-label-superpixel`` is the design's choice (issue 6).
SEMI_SUPERVISED_PREFERENCE = (
    "pseudo-label-superpixel",
    "pseudo-label",
    "uamt",
    "mean-teacher",
)
#: Whether the one-click choice uses the unlabelled cases (a semi-supervised strategy) when
#: there are labelled and unlabelled cases. Off: on real scans (``../shared/data/real``, the
#: one measurement so far, one seed, 12 min on CPU from the default model) supervised
#: training on the labelled cases gave held-out WT/TC/ET Dice 0.85 / 0.78 / 0.65 and
#: ``pseudo-label-superpixel`` with 3 more unlabelled cases 0.84 / 0.73 / 0.57: at a
#: one-click budget semi-supervised learning has not earned its place yet (docs/training.md).
SEMI_SUPERVISED_BY_DEFAULT = False
#: Strategies for scribbles, best first (``sp3`` is the design's choice).
SCRIBBLE_PREFERENCE = ("sp3", "supervised")
_LABEL_MARKERS = ("_seg", "-seg", "_label", "-label")


class TrainingProcess:
    """An ``ssseg train`` child process and the events it writes.

    Parameters
    ----------
    args : list of str
        Arguments after ``ssseg train`` (``DATA --strategy NAME --out RUN_DIR ...``). When
        ``--out`` is missing, ``--out run_dir`` is appended.
    run_dir : str or Path
        The run folder (created if needed); ``events.jsonl`` is read from it.
    env : dict, optional
        Extra environment variables for the child.

    Attributes
    ----------
    run_dir : Path
    events : list of dict
        Every event read so far.
    proc : subprocess.Popen
    """

    def __init__(
        self,
        args: list[str],
        run_dir: str | os.PathLike,
        env: dict[str, str] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir).expanduser()
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(
                f"Cannot create the run folder {str(self.run_dir)!r} ({exc}). Choose a "
                "writable folder."
            ) from None
        args = [str(a) for a in args]
        if "--out" not in args:
            args += ["--out", str(self.run_dir)]
        self.args = args
        self.events_path = self.run_dir / "events.jsonl"
        # events already in the file (a resumed run) are not new
        self._offset = self.events_path.stat().st_size if self.events_path.exists() else 0
        self._partial = b""
        self.events: list[dict[str, Any]] = []
        self.stdout_path = self.run_dir / "train.stdout.log"
        self.stderr_path = self.run_dir / "train.stderr.log"
        cmd = [sys.executable, "-m", "napari_ssseg", "train", *args]
        child_env = dict(os.environ)
        child_env.setdefault("PYTHONUNBUFFERED", "1")
        child_env["SSSEG_PARENT_PID"] = str(os.getpid())  # the child stops if we die
        if env:
            child_env.update(env)
        kwargs: dict[str, Any] = {}
        if os.name == "posix":
            kwargs["start_new_session"] = True
        else:  # pragma: no cover - Windows
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
        self._out = open(self.stdout_path, "wb")  # noqa: SIM115 - closed in _close_logs
        self._err = open(self.stderr_path, "wb")  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=self._out,
                stderr=self._err,
                env=child_env,
                **kwargs,
            )
        except OSError:
            self._close_logs()
            raise
        self.cancel_requested = False

    # ------------------------------------------------------------------ state
    @property
    def pid(self) -> int:
        """Process id of the child."""
        return self.proc.pid

    @property
    def running(self) -> bool:
        """True while the child process is alive (non-blocking)."""
        alive = self.proc.poll() is None
        if not alive:
            self._close_logs()
        return alive

    @property
    def returncode(self) -> int | None:
        """Exit code of the child, or ``None`` while it runs."""
        return self.proc.poll()

    @property
    def last_event(self) -> dict[str, Any] | None:
        """The newest event read, or ``None``."""
        return self.events[-1] if self.events else None

    @property
    def end_event(self) -> dict[str, Any] | None:
        """The ``done``/``cancelled``/``error`` event, once read."""
        for ev in reversed(self.events):
            if ev.get("event") in END_EVENTS:
                return ev
        return None

    # ------------------------------------------------------------------ events
    def poll_events(self) -> list[dict[str, Any]]:
        """New events since the last call (never blocks; a partial last line waits).

        Returns
        -------
        list of dict
            The events appended to ``events.jsonl`` since the previous call, in order.
            Lines that are not valid JSON objects are skipped.
        """
        try:
            with open(self.events_path, "rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        if not chunk:
            return []
        self._offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()  # b"" when the chunk ended with a newline
        new: list[dict[str, Any]] = []
        for line in lines:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line.decode("utf-8"))
            except (ValueError, UnicodeDecodeError):
                continue
            if isinstance(rec, dict) and "event" in rec:
                new.append(rec)
        if self._partial and not self.running:
            # the child is gone: a last line without newline is complete (or torn for good)
            try:
                rec = json.loads(self._partial.decode("utf-8"))
                if isinstance(rec, dict) and "event" in rec:
                    new.append(rec)
                    self._partial = b""
            except (ValueError, UnicodeDecodeError):
                pass
        self.events.extend(new)
        return new

    # ------------------------------------------------------------------ control
    def cancel(self) -> None:
        """Ask the child to stop (SIGTERM): it saves ``last.pt``, writes ``cancelled``, exits 0."""
        if self.proc.poll() is not None:
            return
        self.cancel_requested = True
        try:
            if os.name == "posix":
                self.proc.send_signal(signal.SIGTERM)
            else:  # pragma: no cover - Windows
                self.proc.send_signal(signal.CTRL_BREAK_EVENT)
        except ProcessLookupError:  # pragma: no cover - died in between
            pass

    def kill(self) -> None:
        """Kill the child at once (SIGKILL; ``last.pt`` from before stays intact)."""
        if self.proc.poll() is None:
            self.proc.kill()

    def wait(self, timeout: float | None = None) -> int:
        """Block until the child exits (for scripts and tests, not for the GUI thread)."""
        code = self.proc.wait(timeout)
        self._close_logs()
        return code

    def error_text(self, max_chars: int = 2000) -> str:
        """Why the run failed: the ``error`` event's message, else the tail of stderr.

        Returns an empty string while the child runs or when it ended normally.
        """
        end = self.end_event
        if end is not None and end.get("event") == "error":
            return str(end.get("message", "training failed"))
        code = self.returncode
        if code is None or (end is not None and end.get("event") in ("done", "cancelled")):
            return ""
        try:
            text = self.stderr_path.read_bytes()[-max_chars * 4 :].decode("utf-8", "replace")
        except OSError:
            text = ""
        lines = [ln for ln in text.strip().splitlines() if ln.strip()]
        # the CLI prints "error: <message>" for bad input: prefer that line
        for ln in reversed(lines):
            if ln.startswith("error:"):
                return ln[len("error:") :].strip()
        tail = "\n".join(lines)[-max_chars:]
        return tail or f"ssseg train exited with code {code} without a message."

    def _close_logs(self) -> None:
        for f in (getattr(self, "_out", None), getattr(self, "_err", None)):
            if f is not None and not f.closed:
                f.close()

    def __repr__(self) -> str:
        state = "running" if self.proc.poll() is None else f"exit {self.proc.poll()}"
        return f"TrainingProcess(pid={self.pid}, {state}, run_dir={str(self.run_dir)!r})"


# ----------------------------------------------------------------------------- data
#: Below this many labelled cases the Retrain panel warns that fine-tuning may make the
#: proposals worse (:meth:`DataSummary.caution`; measured with k = 1, 2, 4 real cases).
FEW_LABELLED_CASES = 3


@dataclass(frozen=True)
class DataSummary:
    """What a training data source holds.

    Attributes
    ----------
    kind : {"folder", "workspace", "snapshot"}
    n_labelled, n_scribbled, n_unlabelled : int
        Cases with a label (file or version), with scribbles only, with neither.
    """

    kind: str
    n_labelled: int
    n_scribbled: int
    n_unlabelled: int

    @property
    def n_cases(self) -> int:
        """Number of cases."""
        return self.n_labelled + self.n_scribbled + self.n_unlabelled

    def caution(self) -> str:
        """A warning when so few cases are labelled that retraining may make things worse.

        Measured on real scans (docs/benchmarks.md, "Retraining on k corrected real
        cases"): fine-tuning on 1 or 2 corrected cases lowered the tumour-core and
        enhancing-tumour Dice on held-out cases, 4 raised every region.

        Returns
        -------
        str
            The warning, or ``""`` with :data:`FEW_LABELLED_CASES` or more labelled cases
            (or none: then there is nothing to train on, which is an error elsewhere).
        """
        n = self.n_labelled
        if n == 0 or n >= FEW_LABELLED_CASES:
            return ""
        return (
            f"Only {n} labelled case{'s' if n > 1 else ''}: retraining on so few can make the "
            "proposals of other cases worse (on real scans 1-2 corrected cases lowered the "
            "TC/ET Dice; 4 raised every region). If the re-proposal looks worse, 'Back to "
            "previous model' restores the model used before."
        )

    def describe(self) -> str:
        """One line: ``"4 cases: 2 labelled, 0 with scribbles, 2 unlabelled"``."""
        return (
            f"{self.n_cases} cases ({self.kind}): {self.n_labelled} labelled, "
            f"{self.n_scribbled} with scribbles only, {self.n_unlabelled} unlabelled"
        )


def summarize_data(data: str | os.PathLike) -> DataSummary:
    """Count the labelled, scribbled and unlabelled cases of a training data source.

    Cheap: reads file names (folder) or the manifest (workspace), never an image.

    Parameters
    ----------
    data : str or Path
        A folder of case folders, a workspace folder (``workspace.json``) or a snapshot.

    Raises
    ------
    InputError
        ``data`` is not a folder or holds no case.
    """
    from napari_ssseg.io.workspace import MANIFEST_NAME, SNAPSHOT_MANIFEST

    root = Path(data).expanduser()
    if not str(data).strip() or not root.is_dir():
        raise InputError(
            f"Training data {str(data)!r} is not a folder. Give a folder of case folders "
            "(each with its modality files and an optional _seg label file) or a workspace."
        )
    if (root / SNAPSHOT_MANIFEST).exists():
        snap = json.loads((root / SNAPSHOT_MANIFEST).read_text(encoding="utf-8"))
        return DataSummary("snapshot", len(snap.get("cases", [])), 0, 0)
    if (root / MANIFEST_NAME).exists():
        from napari_ssseg.io.workspace import Workspace

        ws = Workspace.open(root, readonly=True)
        try:
            cases = ws.manifest.get("cases", {})
            entries = cases.values() if isinstance(cases, dict) else cases
            lab = scr = unl = 0
            for c in entries:
                if c.get("versions"):
                    lab += 1
                elif c.get("scribbles"):
                    scr += 1
                else:
                    unl += 1
        finally:
            ws.close()
        return DataSummary("workspace", lab, scr, unl)
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise InputError(
            f"Training data {str(root)!r} has no case folders. Put each case (its modality "
            "files and optional _seg label file) in its own sub-folder."
        )
    lab = 0
    for f in folders:
        names = [p.name.lower() for p in f.iterdir()]
        if any(m in n for n in names for m in _LABEL_MARKERS):
            lab += 1
    return DataSummary("folder", lab, 0, len(folders) - lab)


def choose_strategy(
    summary: DataSummary,
    available: list[str] | tuple[str, ...],
    semi_supervised: bool | None = None,
) -> tuple[str, str]:
    """The one-click strategy for what the data holds, and why.

    Parameters
    ----------
    summary : DataSummary
    available : sequence of str
        Strategy names the engine registers.
    semi_supervised : bool or None
        Use a semi-supervised strategy when there are unlabelled cases (None: the default,
        :data:`SEMI_SUPERVISED_BY_DEFAULT`).

    Returns
    -------
    (str, str)
        Strategy name and a one-sentence reason (says when a preferred strategy is missing).

    Raises
    ------
    InputError
        No labelled case and no scribbles: nothing to train on.
    """
    avail = set(available)
    if summary.n_scribbled:
        for name in SCRIBBLE_PREFERENCE:
            if name in avail:
                why = f"{summary.n_scribbled} case(s) with scribbles"
                if name == "sp3":
                    why += ": sp3 propagates the scribbles and adds pseudo-labels"
                else:
                    why += (
                        ": 'sp3' is not available in this installation, so 'supervised' trains "
                        "on the scribbles (loss on scribbled voxels only) and the labelled cases"
                    )
                return name, why + "."
    if summary.n_labelled == 0:
        raise InputError(
            f"The training data has no labelled case ({summary.describe()}). Label or scribble "
            "at least one case first (supervised and semi-supervised strategies need labels; "
            "sp3 needs scribbles)."
        )
    if semi_supervised is None:
        semi_supervised = SEMI_SUPERVISED_BY_DEFAULT
    if summary.n_unlabelled and not semi_supervised:
        return "supervised", (
            f"labelled + {summary.n_unlabelled} unlabelled case(s): supervised training on "
            "the labelled ones (on real scans, semi-supervised strategies did not beat it at "
            "this budget; choose one under Advanced to use the unlabelled cases)."
        )
    if summary.n_unlabelled:
        for name in SEMI_SUPERVISED_PREFERENCE:
            if name in avail:
                why = f"labelled + {summary.n_unlabelled} unlabelled case(s): semi-supervised"
                if name != SEMI_SUPERVISED_PREFERENCE[0]:
                    why += (
                        f" ({SEMI_SUPERVISED_PREFERENCE[0]!r} is not available in this "
                        "installation)"
                    )
                return name, why + "."
    return "supervised", "every case is labelled: supervised training."


# ----------------------------------------------------------------------------- resume, faults
#: ``TrainConfig`` fields that ``--resume`` needs on the command line (the network, the
#: normalisation, the patch size and the strategy parameters are restored from ``last.pt``).
_RESUME_OPTIONS = (
    ("epochs", "--epochs"),
    ("iterations_per_epoch", "--iterations-per-epoch"),
    ("budget_minutes", "--budget-minutes"),
    ("device", "--device"),
    ("seed", "--seed"),
    ("batch_size", "--batch-size"),
    ("lr", "--lr"),
    ("val_fraction", "--val-fraction"),
)


def resume_args(
    run_dir: str | os.PathLike, data: str | None = None
) -> tuple[list[str], str | None, dict[str, Any]]:
    """The ``ssseg train`` arguments that continue the run in ``run_dir`` (``--resume``).

    The options come from the run's last ``start`` event (its ``config``), so the resumed run
    uses the same data, schedule, seed and device. Without a ``start`` event the strategy is
    left out (``ssseg train --resume`` then reads it from ``last.pt``) and ``data`` is used.

    Parameters
    ----------
    run_dir : str or Path
        A folder written by ``ssseg train --out`` that holds ``last.pt``.
    data : str, optional
        Training data when the run folder does not name it.

    Returns
    -------
    (list of str, str or None, dict)
        Arguments (with ``--out`` and ``--resume``), the strategy (None: read from
        ``last.pt`` by the child) and :func:`napari_ssseg.io.workspace.read_run`'s summary.

    Raises
    ------
    InputError
        No ``last.pt`` (nothing to resume), no data, or the run looks still active.
    """
    import time

    from napari_ssseg.io.workspace import read_run

    root = Path(run_dir).expanduser()
    if not str(run_dir).strip() or not root.is_dir():
        raise InputError(
            f"Run folder {str(run_dir)!r} is not a folder. Pick the folder of an earlier run "
            "(the one given to `ssseg train --out`, holding last.pt)."
        )
    if not (root / "last.pt").is_file():
        raise InputError(
            f"Run folder {str(root)!r} has no last.pt, so there is nothing to resume (the run "
            "never finished an epoch, or this is not a run folder). Start a new run instead."
        )
    info = read_run(root)
    events = root / "events.jsonl"
    if info["state"] == "running" and events.is_file():
        age = time.time() - events.stat().st_mtime
        if age < 120:
            raise InputError(
                f"The run in {str(root)!r} seems to be still training (no end event, and "
                f"events.jsonl changed {age:.0f} s ago). Cancel it first, or wait for it to end; "
                "two processes must not train in the same run folder."
            )
    cfg = info["config"] or {}
    data_arg = cfg.get("data") or data
    if not data_arg or not str(data_arg).strip():
        raise InputError(
            f"The run in {str(root)!r} does not name its training data (no start event): type "
            "the data folder in 'Data' and resume again."
        )
    args = [str(data_arg)]
    strategy = info["strategy"]
    if strategy:
        args += ["--strategy", str(strategy)]
    for key, flag in _RESUME_OPTIONS:
        value = cfg.get(key)
        if value is not None:
            args += [flag, str(value)]
    for key, flag in (("amp", "--amp"), ("gradient_checkpointing", "--gradient-checkpointing")):
        if cfg.get(key):
            args.append(flag)
    args += ["--out", str(root), "--resume"]
    return args, strategy, info


_OOM = re.compile(r"out of memory", re.IGNORECASE)


def failure_advice(message: str) -> str:
    """What to change after a failed run: memory-reducing options for an out-of-memory error.

    Parameters
    ----------
    message : str
        The ``error`` event's message (or the tail of the child's stderr).

    Returns
    -------
    str
        Advice, or ``""`` when there is none for this message.
    """
    if not _OOM.search(message or ""):
        return ""
    return (
        "To use less memory: a smaller patch size (Advanced > Patch size, --patch-size) or "
        "batch size (--batch-size), mixed precision on CUDA (Advanced > Mixed precision, --amp), "
        "gradient checkpointing (Advanced > Gradient checkpointing, --gradient-checkpointing; "
        "about 30% slower), or a smaller network."
    )
