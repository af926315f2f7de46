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

Clinical scans (issue 13; docs/clinical-scans.md): the "Brain extraction", "Register" and
"Resample (mm)" options are the CLI's ``--brain-extraction``, ``--register`` and
``--resample`` (defaults ``auto``). With them the worker runs
:func:`napari_ssseg.ml.clinical.prepare_clinical` (series read on their native grids,
registered to the FLAIR, resampled to a 1 mm working grid, deepbet brain extraction) when the
case needs it: a study that does not look skull-stripped or whose series lie on different
grids. A skull-stripped case on one grid (BraTS) is loaded exactly as before (``auto`` changes
nothing; only the file headers are read in addition). The case shown is then the
**working-grid** case (the model and superpixels run on it), plus a ``"<case> brain mask"``
Labels layer (correctable; "Apply brain mask" zeroes the images outside the corrected mask);
"Save labels on native grid" writes the case's labels layer on the FLAIR's exact grid.
Where the reference (native FLAIR) grid is: the status line and a notification name both
grids, and every layer of the case carries ``metadata["ssseg_working_grid"]``
(:meth:`~napari_ssseg.core.working_grid.WorkingGrid.to_dict`, reference grid included). A case
that does not look skull-stripped always gets a notification: which offers brain extraction
when it did not run.
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
    notify_info,
    notify_warning,
)
from napari_ssseg._napari.workers import (
    TaskHandle,
    below_total,
    callback_generator,
    gui_steps,
    start_task,
)
from napari_ssseg.errors import SsegError

__all__ = ["LoaderWidget", "PREPROCESSING", "load_and_show_job", "load_job", "clinical_job"]

#: Preprocessing choices: label -> (run preprocess_case, n4).
PREPROCESSING: dict[str, tuple[bool, bool]] = {
    "none (raw intensities)": (False, False),
    "brain mask + clip + z-score": (True, False),
    "brain mask + clip + z-score + N4 bias correction": (True, True),
}
CONVENTION_CHOICES = ("auto", "brats2021", "brats2023", "msd")
#: Choices of the brain-extraction and register options (as the CLI's).
CLINICAL_CHOICES = ("auto", "on", "off")
#: Working-grid choices (mm); "auto": 1 mm for a clinical case, else the case's own grid.
RESAMPLE_CHOICES = ("auto", "0.5", "1", "1.5", "2")
#: Role (``metadata["ssseg_role"]``) of the brain-mask layer.
ROLE_BRAIN_MASK = "brain_mask"
_FILE_FIELDS = (("t1", "T1"), ("t1ce", "T1Gd"), ("t2", "T2"), ("flair", "FLAIR"), ("seg", "labels"))
_NAMING_TEXT = {
    "brats2021": "BraTS 2019-2021 naming",
    "brats2023": "BraTS 2023+ naming",
    "msd": "MSD Task01 (4D image)",
    "explicit": "explicit files",
}


def _headers_same_grid(path: str | None, files: dict[str, str]) -> bool:
    """True if the case's image series share one grid (headers only; nothing else is read)."""
    from napari_ssseg.io.readers import find_case_files, geometry_of, read_header

    try:
        cf = find_case_files(path, **{k: v for k, v in files.items() if k != "seg"})
        grids = []
        for m in cf.modalities:
            h = read_header(cf.files[m])
            size = tuple(int(s) for s in h.GetSize()[:3])
            grids.append((size, geometry_of(h)))
    except SsegError:  # e.g. a DICOM series folder: load_case reads it and says what is wrong
        return True
    return all(s == grids[0][0] and g.allclose(grids[0][1]) for s, g in grids)


def clinical_job(
    path: str | None,
    files: dict[str, str],
    brain_extraction: str,
    register: str,
    resample: float | None,
):
    """Worker generator: :func:`~napari_ssseg.ml.clinical.prepare_clinical` with progress.

    Returns
    -------
    ClinicalCase
    """
    from napari_ssseg.ml.clinical import prepare_clinical

    clin = yield from below_total(
        callback_generator(
            prepare_clinical,
            path,
            {k: v for k, v in files.items() if k != "seg"},
            brain_extraction=brain_extraction,
            register=register,
            resample=resample,
            keep_unmasked=True,
            progress_kwarg="progress",
        )
    )
    return clin


def _grid_text(grid: Any, reference: str) -> str:
    def mm(sp: Any) -> str:
        return "×".join(f"{float(s):.3g}" for s in sp)

    return (
        f"working grid {mm(grid.geometry.spacing)} mm, "
        f"{'×'.join(str(s) for s in grid.shape[::-1])} voxels; reference {reference} native "
        f"grid {mm(grid.reference_geometry.spacing)} mm, "
        f"{'×'.join(str(s) for s in grid.reference_shape[::-1])} voxels (labels go back there)"
    )


def load_job(
    path: str | None,
    files: dict[str, str],
    convention: str | None,
    preprocessing: str,
    clinical: dict[str, Any] | None = None,
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
    clinical : dict, optional
        ``{"brain_extraction", "register", "resample"}`` (see the module docstring); None or
        all ``"off"`` / None: the case is loaded as it is.

    Yields
    ------
    dict
        Progress reports (see :mod:`napari_ssseg._napari.workers`); ``step`` stays below
        ``total`` (:func:`~napari_ssseg._napari.workers.below_total`).

    Returns
    -------
    (Case, list of layer-data tuples, dict)
        The dict holds ``"notes"`` (notification texts), ``"clinical"`` (the
        :class:`~napari_ssseg.ml.clinical.ClinicalCase` or None), ``"skull_stripped"`` (bool
        or None when not checked) and ``"grid_text"``.
    """
    from napari_ssseg._napari.layers import case_to_layer_data
    from napari_ssseg.io.readers import load_case

    run_pre, n4 = PREPROCESSING[preprocessing]
    opts = dict(clinical or {})
    bet = opts.get("brain_extraction", "off")
    reg = opts.get("register", "off")
    resample = opts.get("resample")
    extra: dict[str, Any] = {"notes": [], "clinical": None, "skull_stripped": None}
    use_clinical = bet == "on" or reg == "on" or resample is not None
    if not use_clinical and "auto" in (bet, reg):
        yield {"message": "reading the series' headers"}
        use_clinical = not _headers_same_grid(path, files)
    if bet == "auto":
        from napari_ssseg.ml.brain_extraction import deepbet_available

        if not deepbet_available():
            bet = "off"  # a note below offers it when the case is not skull-stripped
    case = None
    if not use_clinical:
        # load_case ends with fraction 1.0; napari's bar reaching 100 % costs ~0.2 s of GUI time
        case = yield from below_total(
            callback_generator(
                load_case, path, convention=convention, progress_kwarg="progress", **files
            )
        )
        if case.images.size:  # cheap (well under a second on a BraTS case)
            from napari_ssseg.core.skullstrip import skull_strip_check

            yield {"message": "checking for skull stripping"}
            check = skull_strip_check(case.images, case.scale, case.modalities)
            extra["skull_stripped"] = check.stripped
            if not check.stripped:
                if bet == "auto":
                    use_clinical = True  # read again natively: registration, grid, deepbet
                else:
                    extra["notes"].append(_offer_extraction(check.message(case.name)))
    if use_clinical:
        clin = yield from clinical_job(path, files, bet, reg, resample)
        case = clin.case
        extra["clinical"] = clin
        extra["skull_stripped"] = clin.stripped
        extra["grid_text"] = _grid_text(clin.grid, clin.report["reference"])
        note = clin.extraction_note()
        if note is not None:
            if clin.brain is None:
                extra["notes"].append(_offer_extraction(note))
            else:
                extra["notes"].append(
                    f"{note} Correct the '{case.name} brain mask' layer and press 'Apply "
                    "brain mask' if needed."
                )
        seg = files.get("seg") or clin.report.get("labels_file")
        if seg:
            yield {"message": f"reading the labels {Path(seg).name}"}
            try:
                case.labels = clin.read_labels(seg, convention)
            except SsegError as exc:
                extra["notes"].append(
                    f"The labels file {Path(seg).name} was not loaded: {exc} The case is "
                    "shown without labels."
                )
    pre = None
    if run_pre:
        from napari_ssseg.core.preprocess import preprocess_case

        yield {"message": "preprocessing" + (" (N4 bias correction)" if n4 else "")}
        pre = yield from callback_generator(preprocess_case, case, n4=n4, progress_kwarg="")
    yield {"message": "building layers"}
    layer_data = case_to_layer_data(case, preprocessed=pre, clinical=extra["clinical"])
    if extra["clinical"] is not None:
        grid_meta = extra["clinical"].grid.to_dict()
        for _, kwargs, _ in layer_data:
            kwargs["metadata"]["ssseg_working_grid"] = grid_meta
    return case, layer_data, extra


def _offer_extraction(message: str) -> str:
    from napari_ssseg.ml.brain_extraction import deepbet_available

    how = (
        "set 'Brain extraction' to on (or auto) and press Load again"
        if deepbet_available()
        else 'install deepbet (pip install "napari-ssseg[clinical]", see '
        "docs/clinical-scans.md), then set 'Brain extraction' to auto and press Load again"
    )
    return message.replace(
        "run brain extraction (--brain-extraction on, or auto, the default).",
        "to extract the brain, " + how + ".",
    )


def load_and_show_job(
    path: str | None,
    files: dict[str, str],
    convention: str | None,
    preprocessing: str,
    clinical: dict[str, Any] | None = None,
):
    """Worker generator: :func:`load_job`, then hand the layers to the GUI one at a time.

    After the case is read it hands the GUI thread a ``"ssseg_show"`` request
    (``{"case", "layer_data", "extra", "ack", "done", "report"}``) through
    :func:`~napari_ssseg._napari.workers.gui_steps`: one report per layer, each after the GUI
    thread has added the previous one and set ``ack``, until it sets ``done``. Each layer is
    thus added in its own event-loop turn.

    Returns
    -------
    (Case, ShowReport or None)
    """
    case, layer_data, extra = yield from load_job(path, files, convention, preprocessing, clinical)
    request: dict[str, Any] = {
        "case": case,
        "layer_data": layer_data,
        "extra": extra,
        "ack": threading.Event(),
        "done": False,
        "report": None,
        "total": len(layer_data),
    }
    yield from gui_steps(
        request,
        "ssseg_show",
        lambda step: f"adding layers ({step}/{request['total']})" if step else "adding layers",
    )
    return case, request["report"]


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
    brain_extraction, registration : ComboBox
        ``auto`` / ``on`` / ``off``, as the CLI's ``--brain-extraction`` and ``--register``.
    resample : ComboBox
        Working grid in mm (``auto``: 1 mm for a clinical case), as ``--resample``.
    load_button, cancel_button : PushButton
    apply_mask_button : PushButton
        Zero the images of the last clinical case outside its (corrected) brain-mask layer.
    native_file : FileEdit
    save_native_button : PushButton
        Write the last clinical case's labels layer to ``native_file`` on the reference
        (FLAIR) series' exact native grid.
    status : Label
    task : TaskHandle or None
        The running (or last) load task.
    last_case : Case or None
        The case of the last successful load.
    last_clinical : ClinicalCase or None
        The clinical preparation of the last load (None when the case was loaded as it is).
    last_report : ShowReport or None
        What the last load did to the viewer (layers added, reused, labels kept).
    add_gaps : list of float
        Seconds the GUI thread spent on each layer of the last load (one event-loop turn
        each), for measurements.
    """

    def __init__(self, napari_viewer: Any) -> None:
        self.viewer = napari_viewer
        from napari_ssseg._napari.warmup import warm_up_layers

        warm_up_layers()  # napari's first-layer costs, off the GUI thread
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
        self.brain_extraction = ComboBox(
            label="Brain extraction",
            choices=CLINICAL_CHOICES,
            value="auto",
            tooltip="deepbet on T1 (then T1Gd); auto: when the case does not look skull-stripped",
        )
        self.registration = ComboBox(
            label="Register",
            choices=CLINICAL_CHOICES,
            value="auto",
            tooltip="rigid registration of each series to the FLAIR (checked); auto: when "
            "the series lie on different grids and are found misaligned",
        )
        self.resample = ComboBox(
            label="Resample (mm)",
            choices=RESAMPLE_CHOICES,
            value="auto",
            tooltip="isotropic working grid for the model and superpixels; auto: 1 mm for a "
            "clinical case, else the case's own grid",
        )
        self.apply_mask_button = PushButton(text="Apply brain mask", enabled=False)
        self.apply_mask_button.tooltip = (
            "zero the images outside the (corrected) brain-mask layer of the last clinical case"
        )
        self.native_file = FileEdit(
            mode="w",
            label="Native labels file",
            nullable=True,
            filter="Images (*.nii.gz *.nii *.nrrd *.mha)",
        )
        self.save_native_button = PushButton(text="Save labels on native grid", enabled=False)
        self.save_native_button.tooltip = (
            "write the labels layer of the last clinical case on the reference (FLAIR) "
            "series' exact native grid"
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
                self.brain_extraction,
                self.registration,
                self.resample,
                button_row(self.load_button, self.cancel_button),
                self.apply_mask_button,
                self.native_file,
                self.save_native_button,
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
                self.brain_extraction,
                self.registration,
                self.resample,
                self.load_button,
            ],
            self.status,
        )
        self.folder.changed.connect(self._update_detected)
        for edit in self.file_edits.values():
            edit.changed.connect(self._update_detected)
        self.load_button.changed.connect(self.load)
        self.cancel_button.changed.connect(self.cancel)
        self.apply_mask_button.changed.connect(self.apply_brain_mask)
        self.save_native_button.changed.connect(lambda *_: self.save_labels_native())
        self.last_clinical = None
        self.last_report = None
        self.add_gaps: list[float] = []
        # closing the panel or the viewer mid-load stops the worker at once (it would
        # otherwise wait for a GUI that is gone to take the next layer)
        # (holder[1] False once the Qt widgets are gone: late callbacks then do nothing)
        self._task_holder: list[Any] = [None, True]
        self.native.destroyed.connect(functools.partial(_cancel_task, self._task_holder))
        # a corrected brain mask survives the viewer closing or its layer being deleted
        watch_brain_masks(napari_viewer)
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
        keep_unapplied_brain_masks(self.viewer.layers)  # the next load reads the correction
        self._busy.start("loading...")
        self.cancel_button.enabled = True
        self.add_gaps = []
        self.task = start_task(
            load_and_show_job,
            path,
            files,
            convention,
            self.preprocessing.value,
            self.clinical_options(),
            desc="Loading case",
            on_yielded=self._on_progress,
            on_returned=self._on_loaded,
            on_error=self._on_error,
            on_aborted=self._on_aborted,
            on_finished=self._on_finished,
        )
        self._task_holder[0] = self.task
        return self.task

    def clinical_options(self) -> dict[str, Any]:
        """The clinical options as :func:`load_job` takes them."""
        res = self.resample.value
        return {
            "brain_extraction": self.brain_extraction.value,
            "register": self.registration.value,
            "resample": None if res == "auto" else float(res),
        }

    def brain_mask_layer(self) -> Any | None:
        """The brain-mask layer of the last clinical case, or None."""
        return brain_mask_layer_of(self.viewer, self.last_clinical)

    def apply_brain_mask(self, *_: Any) -> None:
        """Zero the last clinical case's images outside its brain-mask layer (as corrected).

        See :func:`apply_brain_mask`; a reason it cannot is notified.
        """
        try:
            self.status.value = apply_brain_mask(self.viewer, self.last_clinical)
        except SsegError as exc:
            notify_error(exc)

    def save_labels_native(self, path: str | Path | None = None) -> Path | None:
        """Write the last clinical case's labels layer on the reference's native grid.

        Parameters
        ----------
        path : path-like, optional
            Output file; default the "Native labels file" field.

        Returns
        -------
        Path or None
            The file written (None if nothing was written; the reason is notified).
        """
        from napari_ssseg._napari.layers import labels_layer_of_case

        clin = self.last_clinical
        target = path if path is not None else self.native_file.value
        if target in (None, Path("."), Path("")):
            notify_error(SsegError("Choose the 'Native labels file' to write, e.g. labels.nii.gz."))
            return None
        layer = labels_layer_of_case(self.viewer, clin.case) if clin is not None else None
        if layer is None:
            notify_error(
                SsegError(
                    "No labels of a clinical case to save: load a case whose series needed "
                    "the working grid (Resample, Register or Brain extraction applied), and "
                    "keep its labels layer."
                )
            )
            return None
        try:
            written = clin.save_labels_native(layer.data, target)
        except SsegError as exc:
            notify_error(exc)
            return None
        ref = clin.report["reference"]
        self.status.value = f"labels written on the {ref} native grid: {written}"
        return written

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
            request = report["ssseg_show"]
            if "gen" not in request:  # the first step: notifications, then the first layer
                self._start_showing(request)
            else:
                self._show_step(request)

    def _start_showing(self, request: dict[str, Any]) -> None:
        from napari_ssseg._napari.layers import iter_show_case, missing_modalities_note

        case = request["case"]
        note = missing_modalities_note(case)
        if note is not None:
            notify_warning(note)
        extra = request.get("extra") or {}
        for text in extra.get("notes", []):
            notify_warning(text)
        if extra.get("grid_text"):
            notify_info(f"{case.name}: {extra['grid_text']}.")
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
            self._add_brain_mask(request)
        except Exception as exc:  # noqa: BLE001 - shown to the user, the worker ends
            request["done"] = True
            notify_error(exc)
        finally:
            self.add_gaps.append(time.perf_counter() - t0)
            request["ack"].set()

    def _add_brain_mask(self, request: dict[str, Any]) -> None:
        """Add (or keep) the brain-mask layer of a clinical load (GUI thread)."""
        import numpy as np

        clin = (request.get("extra") or {}).get("clinical")
        self.last_clinical = clin
        self.apply_mask_button.enabled = clin is not None and clin.brain is not None
        self.save_native_button.enabled = clin is not None
        if clin is None:
            return
        report = request.get("report")
        case = report.case if report is not None else clin.case
        if case is not clin.case:  # an open case was reused: keep its images masked alike
            clin.case = case
        if clin.brain is None:
            return
        layer = self.brain_mask_layer()
        if layer is not None and layer.data.shape == clin.brain.shape:
            if not np.array_equal(np.asarray(layer.data) > 0, clin.brain):
                layer.data = clin.brain.astype(np.uint8)
            return
        add_brain_mask_layer(self.viewer, clin, case)

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
        clin = self.last_clinical
        if clin is not None:
            self._done_message += f"; {_grid_text(clin.grid, clin.report['reference'])}"
            if clin.brain is not None:
                self._done_message += "; brain extracted"
            if clin.report.get("cache", {}).get("hit"):
                self._done_message += " (registration and brain mask from the cache)"

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


def brain_mask_layer_of(viewer: Any, clin: Any) -> Any | None:
    """The brain-mask layer of clinical case ``clin`` in ``viewer`` (None: none, or no case)."""
    if clin is None:
        return None
    return next(
        (
            x
            for x in viewer.layers
            if x.metadata.get("ssseg_role") == ROLE_BRAIN_MASK
            and x.metadata.get("ssseg_case_name") == clin.case.name
        ),
        None,
    )


def apply_brain_mask(viewer: Any, clin: Any) -> str:
    """Zero a clinical case's images outside its brain-mask layer, as the user corrected it.

    The case's image arrays are changed in place (panels holding the case see the new
    images), its image layers are refreshed, and the mask is kept in the study's cache (the
    next load uses it). Shared by the Loader and the Workspace panels.

    Parameters
    ----------
    viewer : napari.Viewer
    clin : ClinicalCase or None
        The case (:class:`~napari_ssseg.ml.clinical.ClinicalCase`).

    Returns
    -------
    str
        What was done, for the panel's status line.

    Raises
    ------
    SsegError
        No brain-extracted clinical case, no brain-mask layer, or a layer of another shape.
    """
    import numpy as np

    from napari_ssseg._napari.layers import case_of_layer

    layer = brain_mask_layer_of(viewer, clin)
    if clin is None or clin.unmasked is None or layer is None:
        raise SsegError(
            "No brain mask to apply: open a case with brain extraction (Brain extraction: "
            "auto or on) first, and keep its brain-mask layer."
        )
    mask = np.asarray(layer.data) > 0
    if mask.shape != clin.case.shape:
        raise SsegError(
            f"The brain-mask layer's shape {mask.shape} is not the case's {clin.case.shape}; "
            "load the case again."
        )
    if not mask.any():
        raise SsegError(
            "The brain-mask layer is empty: applying it would zero the whole scan. Paint the "
            "brain into it (or load the case again for the extracted mask)."
        )
    kept = clin.keep_brain_mask(mask)  # also the study's cached mask for the next load
    np.copyto(clin.case.images, np.where(mask[None], clin.unmasked, 0).astype(np.float32))
    for x in viewer.layers:
        if x.metadata.get("ssseg_role") == "image" and case_of_layer(x) is clin.case:
            x.refresh()
    voxel_ml = float(np.prod(clin.case.scale)) / 1000.0
    return f"brain mask applied: {mask.sum() * voxel_ml:.0f} ml; images zeroed outside it" + (
        "; kept for the next load of this study" if kept is not None else ""
    )


def add_brain_mask_layer(viewer: Any, clin: Any, case: Any) -> Any:
    """Add the brain-mask layer of a clinical case (a cyan outline the user can paint).

    Parameters
    ----------
    viewer : napari.Viewer
    clin : ClinicalCase
        With a brain mask (:attr:`~napari_ssseg.ml.clinical.ClinicalCase.brain`).
    case : Case
        The case shown (its layers' :class:`~napari_ssseg._napari.layers.CaseHandle` gets
        ``clinical = clin``: the way back to the native grid, and the mask's owner).

    Returns
    -------
    napari.layers.Labels
        The new layer; the case's labels layer becomes the active one again.
    """
    import numpy as np
    from napari.utils.colormaps import DirectLabelColormap

    from napari_ssseg._napari.layers import CASE_KEY, handle_of_layer

    handle = next(
        (
            handle_of_layer(x)
            for x in viewer.layers
            if handle_of_layer(x) is not None and handle_of_layer(x).case is case
        ),
        None,
    )
    meta = {
        "ssseg_role": ROLE_BRAIN_MASK,
        "ssseg_case_name": case.name,
        "ssseg_working_grid": clin.grid.to_dict(),
        "ssseg_brain_extraction": clin.report.get("brain_extraction", {}),
    }
    if handle is not None:
        handle.clinical = clin
        meta[CASE_KEY] = handle
    layer = viewer.add_labels(
        clin.brain.astype(np.uint8),
        name=f"{case.name} brain mask",
        scale=tuple(float(s) for s in case.scale),
        translate=tuple(float(t) for t in case.translate),
        opacity=0.7,
        metadata=meta,
    )
    layer.colormap = DirectLabelColormap(color_dict={None: "transparent", 1: "cyan"})
    layer.contour = 2  # an outline: the image stays visible; painting still fills
    labels = next(
        (
            x
            for x in viewer.layers
            if x.metadata.get("ssseg_role") == "labels" and handle_of_layer(x) is handle
        ),
        None,
    )
    if labels is not None:  # ready to paint the tumour, as before
        viewer.layers.selection.active = labels
    return layer


def keep_unapplied_brain_masks(layers: Any) -> list[str]:
    """Keep every brain-mask layer the user corrected but did not apply.

    For each brain-mask layer of a clinical case whose data differs from the case's brain
    mask, the layer becomes the study's brain mask
    (:meth:`~napari_ssseg.ml.clinical.ClinicalCase.keep_brain_mask`: stored in the clinical
    cache, so the next Load of the study shows and applies it). Called before a Load and
    when such a layer is removed (the viewer closing removes every layer first), so a
    correction is never lost. The images shown now are not changed (that is "Apply").

    Parameters
    ----------
    layers : iterable of napari layers

    Returns
    -------
    list of str
        Names of the cases whose corrected mask was kept.
    """
    import numpy as np

    from napari_ssseg._napari.layers import handle_of_layer

    kept = []
    for layer in list(layers):
        if layer.metadata.get("ssseg_role") != ROLE_BRAIN_MASK:
            continue
        handle = handle_of_layer(layer)
        clin = getattr(handle, "clinical", None)
        if clin is None or clin.brain is None:
            continue
        mask = np.asarray(layer.data) > 0
        if mask.shape != clin.brain.shape or np.array_equal(mask, clin.brain):
            continue
        try:
            entry = clin.keep_brain_mask(mask)
        except SsegError as exc:
            notify_error(exc)
            continue
        kept.append(clin.case.name)
        where = (
            "kept in the clinical cache for the next load of the study"
            if entry is not None
            else "kept for this session only (the clinical cache is off)"
        )
        notify_info(f"The corrected brain mask of {clin.case.name} (not applied) is {where}.")
    return kept


def _keep_removed_brain_mask(event: Any) -> None:
    """``layers.events.removed`` slot: keep a removed, corrected, unapplied brain mask."""
    layer = getattr(event, "value", None)
    if layer is not None:
        keep_unapplied_brain_masks([layer])


def watch_brain_masks(viewer: Any) -> None:
    """Keep a corrected brain mask whose layer is removed from ``viewer`` (idempotent).

    Closing the viewer removes every layer first, so this also covers the viewer closing.
    A module-level slot: it keeps working after the panel that installed it is gone.
    """
    removed = viewer.layers.events.removed
    if _keep_removed_brain_mask not in removed.callbacks:
        removed.connect(_keep_removed_brain_mask)


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
