"""Loader panel: open a multimodal case (folder or per-modality files) as napari layers.

The panel is thin: it collects paths and options, runs
:func:`napari_ssseg.io.readers.load_case` (and optionally
:func:`napari_ssseg.core.preprocess.preprocess_case`) and
:func:`napari_ssseg._napari.layers.case_to_layer_data` (contrast limits included) in a napari
worker thread with a progress bar, then shows the layers with
:func:`napari_ssseg._napari.layers.iter_show_case`. Errors become napari notifications; layers
of other cases are never removed or changed.

Responsiveness: napari must create each layer (its vispy visual, its Qt controls) on the GUI
thread, about 0.2-0.5 s per layer of a 240 x 240 x 155 case on a busy 2-core machine. The
worker therefore hands the layers over **one per event-loop turn** (it waits for the GUI to
add one before it sends the next), so the viewer repaints and handles input between layers
instead of freezing for the whole set; the task counts as running until the last layer is in.
The visible layers (FLAIR, labels) come first and the hidden modalities are inserted below
them, so the user sees the case after two layers.

Loading a case already open reuses its layers (see :mod:`napari_ssseg._napari.layers`):
nothing is stacked, and an edited labels layer is kept as it is. A case without one of T1,
T1Gd, T2 and FLAIR shows a warning naming the missing modalities and the proposal regions
that will be weaker. The panel also installs radiological 2D views and orientation letters
(:mod:`napari_ssseg._napari.orientation`) on its viewer. No modal dialog is opened except by
the file pickers' "Choose" buttons.
"""

from __future__ import annotations

import functools
import threading
import time
from pathlib import Path
from typing import Any

from magicgui.widgets import ComboBox, Container, FileEdit, Label, PushButton

from napari_ssseg._napari.widgets._common import (
    BusyState,
    button_row,
    notify_error,
    notify_warning,
)
from napari_ssseg._napari.workers import (
    TaskHandle,
    below_total,
    callback_generator,
    current_stop_event,
    start_task,
)
from napari_ssseg.errors import SsegError

__all__ = ["LoaderWidget", "PREPROCESSING", "load_and_show_job", "load_job"]

#: Preprocessing choices: label -> (run preprocess_case, n4).
PREPROCESSING: dict[str, tuple[bool, bool]] = {
    "none (raw intensities)": (False, False),
    "brain mask + clip + z-score": (True, False),
    "brain mask + clip + z-score + N4 bias correction": (True, True),
}
CONVENTION_CHOICES = ("auto", "brats2021", "brats2023", "msd")
_FILE_FIELDS = (("t1", "T1"), ("t1ce", "T1Gd"), ("t2", "T2"), ("flair", "FLAIR"), ("seg", "labels"))
_NAMING_TEXT = {
    "brats2021": "BraTS 2019-2021 naming",
    "brats2023": "BraTS 2023+ naming",
    "msd": "MSD Task01 (4D image)",
    "explicit": "explicit files",
}


def load_job(
    path: str | None,
    files: dict[str, str],
    convention: str | None,
    preprocessing: str,
):
    """Generator run in the worker: load (and preprocess) a case, build its layer data.

    Parameters
    ----------
    path : str or None
        Case folder or file.
    files : dict of str to str
        Explicit files by key (``t1``, ``t1ce``, ``t2``, ``flair``, ``seg``).
    convention : str or None
        Label convention override.
    preprocessing : str
        A key of :data:`PREPROCESSING`.

    Yields
    ------
    dict
        Progress reports (see :mod:`napari_ssseg._napari.workers`); ``step`` stays below
        ``total`` (:func:`~napari_ssseg._napari.workers.below_total`).

    Returns
    -------
    (Case, list of layer-data tuples)
    """
    from napari_ssseg._napari.layers import case_to_layer_data
    from napari_ssseg.io.readers import load_case

    run_pre, n4 = PREPROCESSING[preprocessing]
    # load_case ends with fraction 1.0; napari's bar reaching 100 % costs ~0.2 s of GUI time
    case = yield from below_total(
        callback_generator(
            load_case, path, convention=convention, progress_kwarg="progress", **files
        )
    )
    pre = None
    if run_pre:
        from napari_ssseg.core.preprocess import preprocess_case

        yield {"message": "preprocessing" + (" (N4 bias correction)" if n4 else "")}
        pre = yield from callback_generator(preprocess_case, case, n4=n4, progress_kwarg="")
    yield {"message": "building layers"}
    return case, case_to_layer_data(case, preprocessed=pre)


#: Seconds the worker waits for the GUI thread to take one layer before giving up.
_HANDOVER_TIMEOUT = 120.0
#: Seconds the GUI thread is left idle between two layers (timers, input, repaint).
_TURN_PAUSE = 0.02


def load_and_show_job(
    path: str | None,
    files: dict[str, str],
    convention: str | None,
    preprocessing: str,
):
    """Worker generator: :func:`load_job`, then hand the layers to the GUI one at a time.

    After the case is read it yields one report holding a ``"ssseg_show"`` request
    (``{"case", "layer_data", "ack", "done", "report"}``), then one ``"ssseg_step"`` report
    each time the GUI thread has added a layer and set ``ack``, until the GUI sets
    ``done``. Each layer is thus added in its own event-loop turn.

    Returns
    -------
    (Case, ShowReport or None)
    """
    case, layer_data = yield from load_job(path, files, convention, preprocessing)
    request: dict[str, Any] = {
        "case": case,
        "layer_data": layer_data,
        "ack": threading.Event(),
        "done": False,
        "report": None,
        "total": len(layer_data),
    }
    yield {"message": "adding layers", "ssseg_show": request}
    stop = current_stop_event()
    step = 0
    while True:
        waited = 0.0
        while not request["ack"].wait(0.05):
            waited += 0.05
            if (stop is not None and stop.is_set()) or waited > _HANDOVER_TIMEOUT:
                return case, request["report"]
        request["ack"].clear()
        if request["done"]:
            return case, request["report"]
        # let the GUI thread go idle before the next layer: a request posted at once would
        # be handled before Qt's timers and pending input (posted events come first)
        time.sleep(_TURN_PAUSE)
        step += 1
        yield {"message": f"adding layers ({step}/{request['total']})", "ssseg_step": request}


class LoaderWidget(Container):
    """Dock widget: choose a case folder or files, preprocessing, and load as layers.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer the layers are added to.

    Attributes
    ----------
    folder : FileEdit
        Case folder (BraTS 2021/2023 or MSD layout, or a DICOM series folder).
    file_edits : dict of str to FileEdit
        Per-modality files (``t1``, ``t1ce``, ``t2``, ``flair``) and ``seg``; they override
        files found in the folder.
    detected : Label
        The naming scheme and files found in the folder (updated as the folder changes).
    convention, preprocessing : ComboBox
    load_button, cancel_button : PushButton
    status : Label
    task : TaskHandle or None
        The running (or last) load task.
    last_case : Case or None
        The case of the last successful load.
    last_report : ShowReport or None
        What the last load did to the viewer (layers added, reused, labels kept).
    add_gaps : list of float
        Seconds the GUI thread spent on each layer of the last load (one event-loop turn
        each), for measurements.
    """

    def __init__(self, napari_viewer: Any) -> None:
        self.viewer = napari_viewer
        self.folder = FileEdit(mode="d", label="Case folder", nullable=True)
        self.detected = Label(label="Detected", value="(choose a case folder or files)")
        self.file_edits: dict[str, FileEdit] = {
            key: FileEdit(
                mode="r",
                label=text,
                nullable=True,
                filter="Images (*.nii *.nii.gz *.nrrd *.nhdr *.mha *.mhd)",
            )
            for key, text in _FILE_FIELDS
        }
        self.convention = ComboBox(
            label="Label convention", choices=CONVENTION_CHOICES, value="auto"
        )
        self.preprocessing = ComboBox(
            label="Preprocessing", choices=list(PREPROCESSING), value=next(iter(PREPROCESSING))
        )
        self.load_button = PushButton(text="Load")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(label="Status", value="")
        super().__init__(
            widgets=[
                self.folder,
                self.detected,
                *self.file_edits.values(),
                self.convention,
                self.preprocessing,
                button_row(self.load_button, self.cancel_button),
                self.status,
            ],
        )
        for label in (self.detected, self.status):  # long texts wrap instead of widening
            label.native.setWordWrap(True)
        self.max_width = 420
        self.task: TaskHandle | None = None
        self.last_case = None
        self._busy = BusyState(
            [
                self.folder,
                *self.file_edits.values(),
                self.convention,
                self.preprocessing,
                self.load_button,
            ],
            self.status,
        )
        self.folder.changed.connect(self._update_detected)
        for edit in self.file_edits.values():
            edit.changed.connect(self._update_detected)
        self.load_button.changed.connect(self.load)
        self.cancel_button.changed.connect(self.cancel)
        self.last_report = None
        self.add_gaps: list[float] = []
        # closing the panel or the viewer mid-load stops the worker at once (it would
        # otherwise wait for a GUI that is gone to take the next layer)
        # (holder[1] False once the Qt widgets are gone: late callbacks then do nothing)
        self._task_holder: list[Any] = [None, True]
        self.native.destroyed.connect(functools.partial(_cancel_task, self._task_holder))
        from napari_ssseg._napari.orientation import install_orientation

        install_orientation(napari_viewer)

    # ------------------------------------------------------------------ inputs
    def _paths(self) -> tuple[str | None, dict[str, str]]:
        folder = self.folder.value
        path = str(folder) if folder not in (None, Path("."), Path("")) else None
        files = {
            key: str(edit.value)
            for key, edit in self.file_edits.items()
            if edit.value not in (None, Path("."), Path(""))
        }
        return path, files

    def _update_detected(self, *_: Any) -> None:
        """Show the naming scheme and files found (names only; nothing is read)."""
        from napari_ssseg.io.readers import find_case_files

        path, files = self._paths()
        if path is None and not files:
            self.detected.value = "(choose a case folder or files)"
            return
        try:
            cf = find_case_files(path, **files)
        except SsegError as exc:
            self.detected.value = _short(str(exc))
            self.detected.tooltip = str(exc)
            return
        parts = [f"{m} ({Path(p).name})" for m, p in cf.files.items()]
        if cf.seg is not None:
            parts.append(f"labels ({cf.seg.name})")
        text = f"{_NAMING_TEXT.get(cf.naming, cf.naming)}: case {cf.name!r}"
        self.detected.value = text
        self.detected.tooltip = text + "\n" + "\n".join(parts)
        self.detected_files = cf

    # ------------------------------------------------------------------ actions
    def load(self, *_: Any) -> TaskHandle | None:
        """Start loading the chosen case in a worker thread (returns the task)."""
        if self.task is not None and self.task.running:
            return self.task
        path, files = self._paths()
        if path is None and not files:
            notify_error(_no_input_error())
            return None
        convention = None if self.convention.value == "auto" else self.convention.value
        self._busy.start("loading...")
        self.cancel_button.enabled = True
        self.add_gaps = []
        self.task = start_task(
            load_and_show_job,
            path,
            files,
            convention,
            self.preprocessing.value,
            desc="Loading case",
            on_yielded=self._on_progress,
            on_returned=self._on_loaded,
            on_error=self._on_error,
            on_aborted=self._on_aborted,
            on_finished=self._on_finished,
        )
        self._task_holder[0] = self.task
        return self.task

    def cancel(self, *_: Any) -> None:
        """Cancel a running load (takes effect at its next progress report)."""
        if self.task is not None and self.task.running:
            self.task.cancel()

    # ------------------------------------------------------------------ callbacks (GUI thread)
    def _on_progress(self, report: dict[str, Any]) -> None:
        if not self._task_holder[1]:  # the panel was closed
            return
        if report.get("message"):
            self.status.value = str(report["message"])
        if "ssseg_show" in report:
            self._start_showing(report["ssseg_show"])
        elif "ssseg_step" in report:
            self._show_step(report["ssseg_step"])

    def _start_showing(self, request: dict[str, Any]) -> None:
        from napari_ssseg._napari.layers import iter_show_case, missing_modalities_note

        case = request["case"]
        note = missing_modalities_note(case)
        if note is not None:
            notify_warning(note)
        request["gen"] = iter_show_case(self.viewer, case, request["layer_data"])
        self._show_step(request)

    def _show_step(self, request: dict[str, Any]) -> None:
        """Add (or update) one layer, then let the worker send the next request."""
        t0 = time.perf_counter()
        try:
            if self.task is not None and self.task.stop_event.is_set():
                request["gen"].close()
                request["done"] = True
            else:
                next(request["gen"])
        except StopIteration as stop:
            request["report"] = stop.value
            request["done"] = True
        except Exception as exc:  # noqa: BLE001 - shown to the user, the worker ends
            request["done"] = True
            notify_error(exc)
        finally:
            self.add_gaps.append(time.perf_counter() - t0)
            request["ack"].set()

    def _on_loaded(self, result: tuple[Any, Any]) -> None:
        if not self._task_holder[1]:  # the panel was closed
            return
        case, report = result
        self.last_report = report
        if report is None:
            self._done_message = "stopped before all layers were added"
            return
        self.last_case = report.case
        case = report.case
        self._done_message = (
            f"loaded {case.name}: {', '.join(case.modalities)}"
            + (" + labels" if case.labels is not None else "")
            + f", shape {case.shape}, spacing {tuple(round(s, 3) for s in case.scale)} mm"
            + (f" ({report.summary()})" if report.reused else "")
        )

    def _on_error(self, exc: BaseException) -> None:
        if not self._task_holder[1]:  # the panel was closed
            return
        self._done_message = "failed: " + _short(str(exc), 80)
        notify_error(exc)

    def _on_aborted(self) -> None:
        if not self._task_holder[1]:  # the panel was closed
            return
        self._done_message = "cancelled"

    def _on_finished(self) -> None:
        if not self._task_holder[1]:  # the panel was closed
            return
        self.cancel_button.enabled = False
        self._busy.stop(getattr(self, "_done_message", ""))
        self._done_message = ""


def _cancel_task(holder: list[Any], *_: Any) -> None:
    """Cancel the task in ``holder[0]`` if it runs (the panel is being destroyed)."""
    holder[1] = False
    task = holder[0]
    if task is not None and task.running:
        task.cancel()


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _no_input_error() -> SsegError:
    from napari_ssseg.errors import InputError

    return InputError(
        "Nothing to load: choose a case folder, or at least one of the T1, T1Gd, T2 and FLAIR "
        "files, then press Load."
    )
