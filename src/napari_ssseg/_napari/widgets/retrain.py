"""Retrain panel: one-click background retraining with live curves, cancel and resume.

The panel runs ``ssseg train`` as a child process
(:class:`~napari_ssseg._napari.training_client.TrainingProcess`), so training never shares
the GUI's Python interpreter: napari stays fully usable, and a crash of the training process
cannot take the viewer down. A ``QTimer`` (every :data:`POLL_MS` ms) reads the new lines of
``RUN_DIR/events.jsonl`` (non-blocking, by byte offset) and updates the progress bar, the ETA
and two small curves: the mean training loss per epoch and the validation Dice per region
(WT/TC/ET).

**Retrain** looks at what the data holds
(:func:`~napari_ssseg._napari.training_client.summarize_data`) and picks the strategy
(:func:`~napari_ssseg._napari.training_client.choose_strategy`): cases with scribbles ->
``sp3``; otherwise ``supervised``, also with unlabelled cases (on real scans semi-supervised
strategies did not beat it at a one-click budget; docs/training.md) (when a preferred
strategy is not registered, the next best one is used and the
panel says so). The **Advanced** section exposes the strategy, epochs, iterations per epoch,
time budget, device, initial checkpoint (default: the shipped default model), seed, patch and
batch size, mixed precision, gradient checkpointing and run folder; **Start** uses those
values as they are.

**Cancel** sends SIGTERM: the child saves ``last.pt``, writes ``cancelled`` and exits.
**Resume** starts the same command again with ``--resume`` in the same run folder; **Resume
run folder** continues a run of an earlier session (the options come from its
``events.jsonl``, see :func:`~napari_ssseg._napari.training_client.resume_args`). Closing the
panel or the viewer stops a running child with SIGTERM (it saves ``last.pt`` and writes
``cancelled``).

When a run ends with ``done``, its ``best.pt`` becomes the panel's :attr:`active_model`; the
Propose panel (the docked one, or a hidden one the panel creates) is switched to that
checkpoint and re-proposes the current case in its worker thread. **Back to previous model**
gives the Propose panel its earlier model again and re-proposes (with 1-2 labelled cases the
panel warns that retraining may make proposals worse:
:meth:`~napari_ssseg._napari.training_client.DataSummary.caution`). An ``error`` event or a
crash shows a notification with the message (and, for out-of-memory, the options that use
less memory); ``cancelled`` shows in the status line.

**Workspace record.** When the data is a workspace, the run is recorded in it
(:meth:`~napari_ssseg.io.workspace.Workspace.record_run`). If the docked Workspace panel has
that workspace open (it holds the write lock), the Retrain panel records the run through the
panel's open :class:`~napari_ssseg.io.workspace.Workspace` object: ``running`` at the start,
the end state, metrics and ``best.pt`` (as a model) when the child exits. Otherwise the child
(``ssseg train WS``) records the run itself, and the panel, once the child has exited, records
it again if it can take the lock for a moment (records are idempotent, keyed by run folder).

Torch is never imported on the GUI thread.
"""

from __future__ import annotations

import functools
import json
import math
import re
import time
from pathlib import Path
from typing import Any

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    SpinBox,
)
from qtpy.QtCore import QEvent, QObject, QPointF, QTimer
from qtpy.QtGui import QColor, QPainter, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

from napari_ssseg._napari.layers import cases_in_viewer, handle_of_layer
from napari_ssseg._napari.training_client import (
    TrainingProcess,
    choose_strategy,
    failure_advice,
    resume_args,
    summarize_data,
)
from napari_ssseg._napari.widgets._common import button_row, notify_error, notify_info
from napari_ssseg.errors import InputError

__all__ = [
    "POLL_MS",
    "CurvePlot",
    "RetrainWidget",
    "available_strategies",
    "default_model_path",
]

#: Interval of the event-file poll timer (ms).
POLL_MS = 500
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
_AUTO = "(one-click choice)"
_REGION_COLORS = {"WT": "#2ca02c", "TC": "#ffd92f", "ET": "#d62728", "mean": "#bbbbbb"}


def available_strategies() -> list[str]:
    """Names of the training strategies the engine registers, without importing torch.

    Reads the ``name = "..."`` class attributes in the source of the strategy modules
    (``napari_ssseg/ml/strategies/*.py``); a test checks the result against
    :data:`napari_ssseg.ml.strategies.base.STRATEGIES`.
    """
    import napari_ssseg

    folder = Path(napari_ssseg.__file__).resolve().parent / "ml" / "strategies"
    names: set[str] = set()
    for f in sorted(folder.glob("*.py")):
        text = f.read_text(encoding="utf-8", errors="replace")
        names.update(re.findall(r'^    name\s*=\s*"([a-z0-9-]+)"', text, flags=re.M))
    return sorted(names) or ["supervised"]


def default_model_path() -> Path:
    """The default model shipped in the package (``ml/weights/default.pt``)."""
    import napari_ssseg

    return Path(napari_ssseg.__file__).resolve().parent / "ml" / "weights" / "default.pt"


class CurvePlot(QWidget):
    """A tiny line plot drawn with ``QPainter`` (no matplotlib, no vispy).

    Parameters
    ----------
    title : str
    y_range : (float, float), optional
        Fixed y limits (e.g. ``(0, 1)`` for Dice); otherwise the data range.

    Attributes
    ----------
    series : dict of str to list of (float, float)
        Points per curve name.
    """

    def __init__(self, title: str, y_range: tuple[float, float] | None = None) -> None:
        super().__init__()
        self.title = title
        self.y_range = y_range
        self.series: dict[str, list[tuple[float, float]]] = {}
        self.colors: dict[str, str] = {}
        self.setMinimumHeight(110)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)

    def add_point(self, name: str, x: float, y: float | None, color: str | None = None) -> None:
        """Append a point to curve ``name`` (``None``/NaN values are skipped) and repaint."""
        if y is None or not math.isfinite(float(y)):
            return
        self.series.setdefault(name, []).append((float(x), float(y)))
        if color:
            self.colors[name] = color
        self.update()

    def clear(self) -> None:
        """Remove every point."""
        self.series.clear()
        self.update()

    @property
    def n_points(self) -> int:
        """Total number of points."""
        return sum(len(v) for v in self.series.values())

    def paintEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        p = QPainter(self)
        try:
            p.setRenderHint(QPainter.Antialiasing)
            w, h = self.width(), self.height()
            left, right, top, bottom = 36, 8, 18, 18
            pw, ph = max(w - left - right, 10), max(h - top - bottom, 10)
            p.setPen(QColor("#cccccc"))
            p.drawText(left, 12, self.title)
            p.drawRect(left, top, pw, ph)
            pts = [pt for v in self.series.values() for pt in v]
            if not pts:
                return
            xs = [x for x, _ in pts]
            x0, x1 = min(xs), max(xs)
            if self.y_range is not None:
                y0, y1 = self.y_range
            else:
                ys = [y for _, y in pts]
                y0, y1 = min(ys), max(ys)
                pad = 0.05 * (y1 - y0) or 0.5 * abs(y1) or 1.0
                y0, y1 = y0 - pad, y1 + pad
            if x1 <= x0:
                x0, x1 = x0 - 1, x1 + 1

            def map_pt(x: float, y: float) -> QPointF:
                return QPointF(
                    left + (x - x0) / (x1 - x0) * pw,
                    top + ph - (min(max(y, y0), y1) - y0) / (y1 - y0) * ph,
                )

            p.setPen(QColor("#999999"))
            p.drawText(2, top + 10, f"{y1:.2g}")
            p.drawText(2, top + ph, f"{y0:.2g}")
            legend_x = left + 4
            for name, points in self.series.items():
                color = QColor(self.colors.get(name, "#1f77b4"))
                p.setPen(QPen(color, 2))
                prev = None
                for x, y in points:
                    q = map_pt(x, y)
                    if prev is not None:
                        p.drawLine(prev, q)
                    p.drawEllipse(q, 2, 2)
                    prev = q
                p.drawText(legend_x, top + ph + 13, name)
                legend_x += p.fontMetrics().horizontalAdvance(name) + 10
        finally:
            p.end()


class RetrainWidget(Container):
    """Dock widget: retrain the model on the annotated data in a background process.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
    propose_widget : ProposeWidget, optional
        The Propose panel to switch to the new model (default: the docked one, if any, else
        a hidden one created when needed).

    Attributes
    ----------
    data : LineEdit
        Training data: a folder of case folders or a workspace folder.
    run_folder : LineEdit
        Run folder (empty: ``<data's parent>/ssseg_runs/run-<date-time>``).
    retrain_button, start_button, cancel_button, resume_button : PushButton
    advanced : CheckBox
        Shows the advanced options (strategy, epochs, ...).
    strategy, epochs, iterations, budget, device, init, seed, patch : widgets
    progress : ProgressBar
    status : Label
    loss_plot, dice_plot : CurvePlot
    process : TrainingProcess or None
    active_model : Path or None
        The ``best.pt`` of the last finished run.
    """

    def __init__(self, napari_viewer: Any, propose_widget: Any = None) -> None:
        self.viewer = napari_viewer
        self.propose_widget = propose_widget
        self._auto_data = self._default_data()  # the value we filled in (not the user's)
        self.data = LineEdit(label="Data", value=self._auto_data)
        self.data.tooltip = "A folder of case folders (a _seg file = labelled) or a workspace."
        self.summary = Label(value="")
        self.summary.native.setWordWrap(True)
        self.retrain_button = PushButton(text="Retrain")
        self.advanced = CheckBox(text="Advanced", value=False)
        strategies = available_strategies()
        self.strategy = ComboBox(label="Strategy", choices=[_AUTO, *strategies], value=_AUTO)
        self.epochs = SpinBox(label="Epochs", value=10, min=1, max=10000)
        self.iterations = SpinBox(label="Iterations / epoch", value=20, min=1, max=100000)
        self.budget = FloatSpinBox(
            label="Budget (min, 0 = none)", value=0.0, min=0.0, max=100000.0, step=5.0
        )
        self.device = ComboBox(label="Device", choices=DEVICE_CHOICES, value="auto")
        self.init = FileEdit(
            mode="r",
            label="Init checkpoint",
            value=str(default_model_path()),
            nullable=True,
            filter="Checkpoints (*.pt *.pth)",
        )
        self.seed = SpinBox(label="Seed", value=0, min=0, max=2**31 - 1)
        self.patch = SpinBox(label="Patch size", value=64, min=16, max=256, step=16)
        self.batch = SpinBox(label="Batch size", value=2, min=1, max=64)
        self.amp = CheckBox(text="Mixed precision (AMP, CUDA only)", value=False)
        self.grad_ckpt = CheckBox(text="Gradient checkpointing (less memory)", value=False)
        self.run_folder = LineEdit(label="Run folder", value="")
        self.start_button = PushButton(text="Start")
        self.advanced_box = Container(
            widgets=[
                self.strategy,
                self.epochs,
                self.iterations,
                self.budget,
                self.device,
                self.init,
                self.seed,
                self.patch,
                self.batch,
                self.amp,
                self.grad_ckpt,
                self.run_folder,
                self.start_button,
            ]
        )
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.resume_button = PushButton(text="Resume", enabled=False)
        self.previous_run = FileEdit(mode="d", label="Earlier run", nullable=True)
        self.previous_run.tooltip = (
            "The folder of a run from an earlier session (with last.pt) to continue."
        )
        self.resume_previous_button = PushButton(text="Resume run folder")
        self.revert_button = PushButton(text="Back to previous model", enabled=False)
        self.revert_button.tooltip = (
            "Give the Propose panel back the model it used before the last retraining and "
            "re-propose the current case."
        )
        self.progress = ProgressBar(value=0, min=0, max=1, label="Progress")
        self.status = Label(label="Status", value="")
        self.status.native.setWordWrap(True)
        self.loss_plot = CurvePlot("training loss / epoch")
        self.dice_plot = CurvePlot("validation Dice", y_range=(0.0, 1.0))
        plots = Container(labels=False)
        plots.native.layout().addWidget(self.loss_plot)
        plots.native.layout().addWidget(self.dice_plot)
        super().__init__(
            widgets=[
                self.data,
                self.summary,
                self.retrain_button,
                self.advanced,
                self.advanced_box,
                button_row(self.cancel_button, self.resume_button),
                self.previous_run,
                self.resume_previous_button,
                self.revert_button,
                self.progress,
                self.status,
                plots,
            ]
        )
        self.max_width = 440
        self.process: TrainingProcess | None = None
        self.active_model: Path | None = None
        #: The Propose panel's (model source, checkpoint) before the last new model, or None.
        self.previous_model: tuple[Any, Any] | None = None
        #: The workspace record of the current run (manifest entry), or None.
        self.workspace_run: dict | None = None
        self.workspace_note = ""
        self.args: list[str] = []
        self.run_dir: Path | None = None
        self.outcome = ""
        self._t_start = 0.0
        self._step0 = 0
        self._total = 0
        self._epochs = 0
        self.timer = QTimer(self.native)  # dies with the panel
        self.timer.setInterval(POLL_MS)
        self.timer.timeout.connect(self.poll)
        #: (Propose panel, case) waiting for the Propose panel to be free (see _repropose).
        self._pending_repropose: tuple[Any, Any] | None = None
        self._status_base = ""
        self._repropose_timer = QTimer(self.native)
        self._repropose_timer.setInterval(POLL_MS)
        self._repropose_timer.timeout.connect(self._retry_repropose)
        self.advanced_box.visible = False
        self.advanced.changed.connect(self._on_advanced)
        self.retrain_button.changed.connect(self.retrain)
        self.start_button.changed.connect(self.start)
        self.cancel_button.changed.connect(self.cancel)
        self.resume_button.changed.connect(self.resume)
        self.resume_previous_button.changed.connect(self.resume_previous)
        self.revert_button.changed.connect(self.revert_model)
        self.previous_run.changed.connect(self._on_previous_run)
        # stop a running child when the panel (or the viewer holding it) is destroyed; the
        # slot must not be a method of the dying widget, so it gets a holder of the process
        self._child: list[TrainingProcess | None] = [None]
        self.native.destroyed.connect(functools.partial(_stop_child, self._child))
        # napari's dock close button (remove_dock_widget) only un-parents the panel
        self._undock_watch = _UndockWatcher(functools.partial(_stop_child, self._child))
        self.native.installEventFilter(self._undock_watch)
        self.data.changed.connect(self._on_data_changed)
        self._on_data_changed()
        self.viewer.layers.events.inserted.connect(self._on_layer_inserted)

    # ------------------------------------------------------------------ inputs
    def _on_advanced(self, *_: Any) -> None:
        self.advanced_box.visible = bool(self.advanced.value)

    def _current_case(self, propose_widget: Any = None) -> Any:
        """The case of the selected layer, else the Propose panel's case, else the first."""
        layer = self.viewer.layers.selection.active
        handle = handle_of_layer(layer) if layer is not None else None
        if handle is not None:
            return handle.case
        cases = list(cases_in_viewer(self.viewer).values())
        chosen = getattr(getattr(propose_widget, "case", None), "value", None)
        if chosen is not None and any(c is chosen for c in cases):
            return chosen
        return cases[0] if cases else None

    def _default_data(self) -> str:
        """Where the training data most likely is.

        In order: the workspace open in a docked Workspace panel; the workspace that holds
        the current case's images (``workspace.json`` in a folder above them); the parent
        folder of the current case's folder (a folder of case folders). ``""`` when there is
        no case.
        """
        from napari_ssseg.io.workspace import MANIFEST_NAME

        for ws in self._docked_workspaces():
            return str(ws.root)
        case = self._current_case()
        for src in (getattr(case, "sources", None) or {}).values():
            try:
                path = Path(src).resolve()
            except (OSError, TypeError):
                continue
            for folder in list(path.parents)[:4]:
                if (folder / MANIFEST_NAME).is_file():
                    return str(folder)
            return str(path.parent.parent)
        return ""

    def _on_layer_inserted(self, *_: Any) -> None:
        """Fill in the data folder once a case is loaded, unless the user typed one."""
        self._update_default_data()

    def _update_default_data(self) -> None:
        text = str(self.data.value).strip()
        if self.running or (text and text != self._auto_data):
            return  # the user's own choice is kept
        default = self._default_data()
        if default and default != text:
            self._auto_data = default
            self.data.value = default

    def _on_data_changed(self, *_: Any) -> None:
        text = str(self.data.value).strip()
        if not text:
            self.summary.value = "Choose the training data (folder of cases or workspace)."
            return
        try:
            summary = summarize_data(text)
            caution = summary.caution()
            self.summary.value = summary.describe() + (f". {caution}" if caution else "")
        except (InputError, OSError, ValueError) as exc:
            self.summary.value = " ".join(str(exc).split())[:160]

    def _on_previous_run(self, *_: Any) -> None:
        """Describe the picked earlier run folder (reads its ``events.jsonl`` only)."""
        from napari_ssseg.io.workspace import read_run

        value = self.previous_run.value
        text = "" if value in (None, Path("."), Path("")) else str(value).strip()
        if not text or self.running:
            return
        try:
            info = read_run(text)
        except (InputError, OSError) as exc:
            self.status.value = " ".join(str(exc).split())[:160]
            return
        step = f" at step {info['step']}" if info["step"] is not None else ""
        resumable = "Resume run folder continues it" if info["last"] else "no last.pt to resume"
        self.status.value = (
            f"earlier run: {info['strategy'] or 'strategy in last.pt'}, {info['state']}{step}; "
            + resumable
        )

    def _run_dir(self, data: str) -> Path:
        text = str(self.run_folder.value).strip()
        if text:
            return Path(text).expanduser()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return Path(data).expanduser().resolve().parent / "ssseg_runs" / f"run-{stamp}"

    def build_args(self, strategy: str, data: str) -> list[str]:
        """``ssseg train`` arguments for the advanced options and ``strategy``."""
        args = [
            data,
            "--strategy",
            strategy,
            "--epochs",
            str(int(self.epochs.value)),
            "--iterations-per-epoch",
            str(int(self.iterations.value)),
            "--device",
            str(self.device.value),
            "--seed",
            str(int(self.seed.value)),
            "--patch-size",
            str(int(self.patch.value)),
            "--batch-size",
            str(int(self.batch.value)),
        ]
        if self.amp.value:
            args.append("--amp")
        if self.grad_ckpt.value:
            args.append("--gradient-checkpointing")
        if float(self.budget.value) > 0:
            args += ["--budget-minutes", str(float(self.budget.value))]
        init = self.init.value
        if init not in (None, Path("."), Path("")) and str(init).strip():
            if not Path(init).is_file():
                raise InputError(
                    f"Init checkpoint {str(init)!r} does not exist. Pick a napari-ssseg "
                    "checkpoint (.pt) or clear the field to start from random weights."
                )
            args += ["--init", str(init)]
        return args

    # ------------------------------------------------------------------ actions
    @property
    def running(self) -> bool:
        """True while a training process runs (or its last events are not read yet)."""
        return self.process is not None and self.timer.isActive()

    def retrain(self, *_: Any) -> TrainingProcess | None:
        """One click: pick the strategy from the data and start training."""
        try:
            data = self._data()
            summary = summarize_data(data)
            name, why = choose_strategy(summary, available_strategies())
        except InputError as exc:
            _notify_error(exc)
            self.status.value = "not started: " + " ".join(str(exc).split())[:120]
            return None
        caution = summary.caution()
        self.summary.value = f"{summary.describe()}. Strategy {name!r}: {why}" + (
            f" {caution}" if caution else ""
        )
        if caution:
            notify_info(caution)
        return self._launch(name, resume=False)

    def start(self, *_: Any) -> TrainingProcess | None:
        """Start with the advanced options (the strategy as chosen, or the one-click one)."""
        if self.strategy.value == _AUTO:
            return self.retrain()
        try:
            self._data()
        except InputError as exc:
            _notify_error(exc)
            return None
        return self._launch(str(self.strategy.value), resume=False)

    def _data(self) -> str:
        data = str(self.data.value).strip()
        if not data:
            raise InputError(
                "No training data: type the folder of case folders (or a workspace folder) "
                "in 'Data'."
            )
        return data

    def _launch(
        self, strategy: str, resume: bool, args: list[str] | None = None
    ) -> TrainingProcess | None:
        if self.running:
            return self.process
        try:
            if args is not None:  # a run folder of an earlier session (resume_previous)
                run_dir = self.run_dir
                assert run_dir is not None
            elif resume:
                if not self.args or self.run_dir is None:
                    raise InputError("Nothing to resume: start a training run first.")
                args = [*self.args, "--resume"]
                run_dir = self.run_dir
            else:
                data = self._data()
                args = self.build_args(strategy, data)
                run_dir = self._run_dir(data)
                self.args, self.run_dir = list(args), run_dir
                self.loss_plot.clear()
                self.dice_plot.clear()
            self.process = TrainingProcess(args, run_dir)
        except (InputError, OSError) as exc:
            _notify_error(exc)
            self.status.value = "not started: " + " ".join(str(exc).split())[:120]
            return None
        self._child[0] = self.process
        self.outcome = ""
        self._t_start = time.monotonic()
        self._step0, self._total = 0, 0
        self.progress.max, self.progress.value = 1, 0
        self.status.value = ("resuming " if resume else "starting ") + f"{strategy} in {run_dir}"
        self.workspace_run, self.workspace_note = None, ""
        self._record_in_workspace(self.process, start=True)
        self._set_running(True)
        self.timer.start()
        return self.process

    def cancel(self, *_: Any) -> None:
        """Stop the run (SIGTERM): the child saves ``last.pt`` and writes ``cancelled``."""
        if self.process is not None and self.process.running:
            self.process.cancel()
            self.status.value = "cancelling (saving last.pt)..."

    def resume(self, *_: Any) -> TrainingProcess | None:
        """Continue the last run from its ``last.pt`` (same run folder, ``--resume``)."""
        strategy = self.args[self.args.index("--strategy") + 1] if self.args else ""
        return self._launch(strategy, resume=True)

    def resume_previous(self, *_: Any, run_dir: str | Path | None = None) -> TrainingProcess | None:
        """Continue a run folder of an earlier session (default: the *Earlier run* field).

        The data, strategy and options come from the folder's ``events.jsonl`` (its last
        ``start`` event; without one, the strategy is read from ``last.pt`` by the child and
        the data is the *Data* field). The curves are redrawn from the folder's events.
        """
        if self.running:
            return self.process
        folder = run_dir if run_dir is not None else self.previous_run.value
        text = "" if folder in (None, Path("."), Path("")) else str(folder).strip()
        try:
            if not text:
                raise InputError(
                    "No run folder to resume: pick the folder of an earlier run (the one given "
                    "to `ssseg train --out`, holding last.pt) in 'Earlier run'."
                )
            args, strategy, info = resume_args(text, data=str(self.data.value).strip() or None)
        except InputError as exc:
            _notify_error(exc)
            self.status.value = "not resumed: " + " ".join(str(exc).split())[:160]
            return None
        self.run_dir = Path(text).expanduser()
        self.args = [a for a in args if a != "--resume"]
        if info.get("data") and not self.running:
            with self.data.changed.blocked():
                self.data.value = str(info["data"])
            self._on_data_changed()
        self.loss_plot.clear()
        self.dice_plot.clear()
        self._replay(self.run_dir / "events.jsonl")
        return self._launch(strategy or "(strategy of last.pt)", resume=True, args=args)

    def _replay(self, events_path: Path) -> None:
        """Draw the curves of the events already in a run's ``events.jsonl``."""
        try:
            lines = events_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return
        for line in lines:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if isinstance(ev, dict) and ev.get("event") in ("epoch", "validation"):
                self._on_event(ev)

    def _set_running(self, running: bool) -> None:
        for w in (
            self.retrain_button,
            self.start_button,
            self.data,
            self.resume_previous_button,
            self.previous_run,
        ):
            w.enabled = not running
        self.cancel_button.enabled = running
        self.resume_button.enabled = (
            (not running) and self.run_dir is not None and ((self.run_dir / "last.pt").exists())
        )

    # ------------------------------------------------------------------ workspace record
    def _workspace_root(self) -> Path | None:
        """The training data's folder when it is a workspace (``workspace.json``)."""
        from napari_ssseg.io.workspace import MANIFEST_NAME

        text = str(self.data.value).strip()
        if not text:
            return None
        root = Path(text).expanduser()
        return root if (root / MANIFEST_NAME).is_file() else None

    def _docked_workspaces(self) -> list[Any]:
        """Workspaces held open by docked Workspace panels (writable ones first)."""
        from napari_ssseg._napari.widgets.workspace import WorkspaceWidget

        window = getattr(self.viewer, "window", None)
        try:
            docked = list(window.dock_widgets.values()) if window is not None else []
        except Exception:  # noqa: BLE001 - older napari without dock_widgets
            docked = []
        found = []
        for w in docked:
            w = getattr(w, "_magic_widget", w)
            ws = getattr(w, "ws", None) if isinstance(w, WorkspaceWidget) else None
            if ws is not None and not ws.closed:
                found.append(ws)
        return sorted(found, key=lambda ws: bool(ws.readonly))

    def open_workspace_of(self, root: Path) -> Any:
        """The writable workspace at ``root`` held open by a docked Workspace panel, or None."""
        try:
            key = root.resolve()
        except OSError:
            return None
        for ws in self._docked_workspaces():
            if ws.readonly:
                continue
            try:
                if Path(ws.root).resolve() == key:
                    return ws
            except OSError:
                continue
        return None

    def _record_in_workspace(self, proc: TrainingProcess, start: bool) -> None:
        """Record the run in the data's workspace (never raises; notes go to the status).

        At the start only through a Workspace panel that holds the workspace open (otherwise
        the child records itself); at the end through that panel, else by opening the
        workspace for a moment (the child has exited: it cannot race with us).
        """
        from napari_ssseg.io.workspace import add_run_command, read_run, record_run_in

        root = self._workspace_root()
        if root is None:
            return
        ws = self.open_workspace_of(root)
        try:
            if start:
                if ws is None:
                    return
                strategy = (
                    proc.args[proc.args.index("--strategy") + 1]
                    if ("--strategy" in proc.args)
                    else None
                )
                self.workspace_run = ws.record_run(
                    proc.run_dir,
                    state="running",
                    strategy=strategy,
                    config={"command": ["ssseg", "train", *proc.args]},
                    pid=proc.pid,
                )
                return
            fields: dict[str, Any] = {}
            info = read_run(proc.run_dir) if (proc.run_dir / "events.jsonl").exists() else None
            if info is None or info["state"] == "running":  # died without an end event
                message = proc.error_text() or "the training process ended without a message"
                fields = {"state": "failed", "message": message}
            if ws is not None:
                entry = (
                    ws.record_run(proc.run_dir, **fields)
                    if fields
                    else ws.record_run_from_dir(proc.run_dir)
                )
            else:
                entry = record_run_in(root, proc.run_dir, attempts=1, **fields)
            self.workspace_run = entry
            model = f", model {entry['model']}" if entry.get("model") else ""
            self.workspace_note = f"recorded in the workspace as {entry['id']}{model}"
        except Exception as exc:  # noqa: BLE001 - recording must never break the panel
            self.workspace_note = (
                "not recorded in the workspace ("
                + " ".join(str(exc).split())[:160]
                + f"); record it later with: {add_run_command(root, proc.run_dir)}"
            )

    # ------------------------------------------------------------------ polling (GUI thread)
    def poll(self) -> None:
        """Timer slot: read the new events (non-blocking) and update the panel."""
        proc = self.process
        if proc is None:
            self.timer.stop()
            return
        alive = proc.running  # read before the events: no event is lost after the exit
        for ev in proc.poll_events():
            self._on_event(ev)
        if not alive:
            for ev in proc.poll_events():
                self._on_event(ev)
            self.timer.stop()
            self._finish(proc)

    def _on_event(self, ev: dict[str, Any]) -> None:
        kind = ev.get("event")
        if kind == "start":
            self._total = int(ev.get("total_steps") or 0)
            self._step0 = int(ev.get("resumed_from_step") or 0)
            self._epochs = int((ev.get("config") or {}).get("epochs") or 0)
            self._t_start = time.monotonic()
            self.progress.max = max(self._total, 1)
            self.progress.value = min(self._step0, self.progress.max)
            self.status.value = (
                f"{ev.get('strategy')} on {ev.get('device')}: {ev.get('n_train', 0)} labelled, "
                f"{ev.get('n_unlabelled', 0)} unlabelled, {ev.get('n_val', 0)} validation"
            )
        elif kind == "epoch":
            step = int(ev.get("step", 0))
            epoch = ev.get("epoch")
            loss = (ev.get("losses") or {}).get("loss")
            self.loss_plot.add_point("loss", float(epoch or step), loss, "#1f77b4")
            if self._total:
                self.progress.value = min(step, self._total)
            self.status.value = (
                f"epoch {epoch}/{ev.get('epochs', self._epochs)}"
                + (f", loss {loss:.4f}" if isinstance(loss, (int, float)) else "")
                + self._eta(ev, step)
            )
        elif kind == "validation":
            epoch = float(ev.get("epoch") or 0)
            for region, value in (ev.get("metrics") or {}).items():
                if region in ("WT", "TC", "ET"):
                    self.dice_plot.add_point(region, epoch, value, _REGION_COLORS[region])
        elif kind == "skipped":
            notify_info(f"Training skips case {ev.get('case')}: {ev.get('reason')}")

    def _eta(self, ev: dict[str, Any], step: int) -> str:
        if ev.get("eta") is not None:
            return f", ETA {_fmt_seconds(float(ev['eta']))}"
        done = step - self._step0
        if not self._total or done <= 0:
            return ""
        elapsed = time.monotonic() - self._t_start
        return f", ETA {_fmt_seconds(elapsed / done * (self._total - step))}"

    def _finish(self, proc: TrainingProcess) -> None:
        end = proc.end_event
        kind = end.get("event") if end else None
        self._record_in_workspace(proc, start=False)
        note = f" ({self.workspace_note})" if self.workspace_note else ""
        if kind == "done":
            best = end.get("best") or str(proc.run_dir / "best.pt")
            self.active_model = Path(best)
            if self._total:
                self.progress.value = self._total
            metrics = end.get("metrics") or {}
            dice = " ".join(
                f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, (int, float))
            )
            self.outcome = "done"
            self.status.value = f"done: new model {best}" + (f" ({dice})" if dice else "") + note
            notify_info(f"Retraining finished; the new model is active: {best}")
            self._repropose()
        elif kind == "cancelled":
            self.outcome = "cancelled"
            self.status.value = (
                f"cancelled at step {end.get('step')}: last.pt saved; Resume continues the run."
                + note
            )
        else:
            self.outcome = "error"
            message = proc.error_text() or "the training process ended without a message"
            advice = failure_advice(message)
            self.status.value = (
                "failed: " + " ".join(message.split())[:200] + (f" {advice}" if advice else "")
            ) + note
            _notify_error(
                InputError(f"Retraining failed: {message}" + (f"\n\n{advice}" if advice else ""))
            )
        self._set_running(False)

    def stop(self) -> None:
        """Stop the poll timer and send SIGTERM to a running child (the panel is closing)."""
        self.timer.stop()
        self._repropose_timer.stop()
        self._pending_repropose = None
        _stop_child([self.process])

    # ------------------------------------------------------------------ new model
    def find_propose_widget(self) -> Any:
        """The Propose panel to use: the given one, a docked one, or ``None``."""
        from napari_ssseg._napari.widgets.propose import ProposeWidget

        if self.propose_widget is not None:
            return self.propose_widget
        window = getattr(self.viewer, "window", None)
        try:
            docked = list(window.dock_widgets.values()) if window is not None else []
        except Exception:  # noqa: BLE001 - older napari without dock_widgets
            docked = []
        for w in docked:
            w = getattr(w, "_magic_widget", w)  # a QWidget wrapping a magicgui container
            if isinstance(w, ProposeWidget):
                return w
        return None

    def _repropose(self) -> str:
        """Make :attr:`active_model` the Propose panel's model and propose the current case.

        The current case is the one of the selected layer, else the Propose panel's case,
        else the first case shown. When the Propose panel is busy (e.g. proposing another
        case), the re-proposal waits for it (checked every :data:`POLL_MS` ms) instead of
        being dropped. What happens is written to the status line and returned.
        """
        from napari_ssseg._napari.widgets.propose import ProposeWidget

        if self.active_model is None:
            return ""
        pw = self.find_propose_widget()
        if pw is None:
            # no docked Propose panel: a hidden one runs the prediction in its worker
            pw = self.propose_widget = ProposeWidget(self.viewer)
        before = (pw.model_source.value, pw.checkpoint_file.value)
        if before[1] in (None, "") or str(before[1]) != str(self.active_model):
            self.previous_model = before
            self.revert_button.enabled = True
        pw.model_source.value = "checkpoint file (.pt)"
        pw.checkpoint_file.value = str(self.active_model)
        case = self._current_case(pw)
        if case is None:
            note = "no case is open, nothing re-proposed"
        elif pw.running:
            self._pending_repropose = (pw, case)
            self._repropose_timer.start()
            note = f"{case.name} is re-proposed once the current prediction ends"
        else:
            note = self._propose_now(pw, case)
        self._status_base = str(self.status.value)
        self.status.value = f"{self._status_base}; {note}" if self._status_base else note
        return note

    def revert_model(self, *_: Any) -> str:
        """Give the Propose panel back its model from before the last retraining.

        The current case is re-proposed with it (or once the Propose panel is free). The
        retrained checkpoint stays on disk (in the run folder) and in the workspace record.

        Returns
        -------
        str
            What happened (also written to the status line).
        """
        if self.previous_model is None:
            return ""
        pw = self.find_propose_widget()
        if pw is None:
            return ""
        source, checkpoint = self.previous_model
        self.previous_model = None
        self.revert_button.enabled = False
        self._pending_repropose = None
        self._repropose_timer.stop()
        pw.model_source.value = source
        pw.checkpoint_file.value = checkpoint
        self.active_model = None
        label = str(checkpoint) if checkpoint not in (None, "") else str(source)
        case = self._current_case(pw)
        if case is None:
            note = f"back to the previous model ({label}); no case is open"
        elif pw.running:
            self._pending_repropose = (pw, case)
            self._repropose_timer.start()
            note = f"back to the previous model; {case.name} is re-proposed once free"
        else:
            note = self._propose_now(pw, case, "the previous model")
        self._status_base = ""
        self.status.value = note
        return note

    def _propose_now(self, pw: Any, case: Any, model: str = "the new model") -> str:
        pw.case.reset_choices()
        try:
            pw.case.value = case
        except ValueError:
            note = f"case {case.name} is no longer open, nothing re-proposed"
            notify_info(f"{model[0].upper()}{model[1:]} is active; {note}.")
            return note
        pw.propose()
        return f"re-proposing {case.name} with {model}"

    def _retry_repropose(self) -> None:
        """Timer slot: propose the pending case once the Propose panel is free."""
        pending = self._pending_repropose
        if pending is None:
            self._repropose_timer.stop()
            return
        pw, case = pending
        if pw.running:
            return
        self._repropose_timer.stop()
        self._pending_repropose = None
        model = "the new model" if self.active_model is not None else "the previous model"
        note = self._propose_now(pw, case, model)
        self.status.value = f"{self._status_base}; {note}" if self._status_base else note


def _fmt_seconds(s: float) -> str:
    s = max(0, int(round(s)))
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


class _UndockWatcher(QObject):
    """Calls ``callback`` when the watched widget loses its parent after having had one (the
    panel was removed from the viewer's dock)."""

    def __init__(self, callback: Any) -> None:
        super().__init__()
        self.callback = callback
        self.was_docked = False

    def eventFilter(self, obj: Any, event: Any) -> bool:  # noqa: N802 - Qt API
        if event.type() == QEvent.ParentChange:
            if obj.parent() is not None:
                self.was_docked = True
            elif self.was_docked:
                self.was_docked = False
                self.callback()
        return False


def _stop_child(holder: list, *_: Any) -> None:
    """SIGTERM the running child in ``holder[0]`` (the panel or viewer is being destroyed)."""
    proc = holder[0] if holder else None
    if proc is not None and proc.returncode is None:
        proc.cancel()


def _notify_error(exc: BaseException) -> None:
    """Indirection so tests can capture the notifications."""
    notify_error(exc)
