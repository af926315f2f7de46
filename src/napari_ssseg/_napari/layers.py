"""Turn a :class:`~napari_ssseg.core.case.Case` into napari layer-data tuples and back.

Layers of a case
----------------
:func:`case_to_layer_data` makes one image layer per modality (``"<case> T1"``,
``"<case> T1Gd"``, ``"<case> T2"``, ``"<case> FLAIR"``; gray, additive blending, contrast
limits from the 1st-99.5th percentile of brain voxels; FLAIR, else the first modality, visible
and the others hidden) and one labels layer ``"<case> labels"`` (internal classes 0 bg,
1 NCR, 2 ED, 3 ET with fixed BraTS colours and the class name in the status bar). Every layer
has ``scale = case.scale`` and ``translate = case.translate``: the canonical grid in world LPS
millimetres, so world coordinates under the cursor are the scanner's (LPS) coordinates.

How a layer knows its case
--------------------------
Each layer's ``metadata`` holds a :class:`CaseHandle` under the key ``"ssseg_case"`` (plus
``"ssseg_role"``: ``"image"`` or ``"labels"``, and ``"ssseg_modality"`` for images). The
handle is a tiny object holding a *reference* to the :class:`Case` (and to its
:class:`Preprocessed` result, if any); copying or deep-copying it returns the same handle,
so duplicating a layer, or napari building a layer-data tuple for a writer, never copies the
volumes. There is no module-level registry: a case lives exactly as long as a layer that
refers to it, and two viewers never share state through this module. Widgets find the case
of a layer with :func:`case_of_layer` and the cases shown in a viewer with
:func:`cases_in_viewer`.

Loading a case that is already open
-----------------------------------
:func:`iter_show_case` (used by the Loader panel and the reader) adds a case's layers to a
viewer *unless the case is already shown there* (same name, shape and canonical grid: see
:func:`find_open_case`). Then the open layers are reused, never stacked:

* each open image layer of the case keeps its layer (visibility, colormap and user contrast
  are kept); its data and contrast limits are replaced only if the new load shows other
  intensities (another preprocessing choice); an image layer the user deleted is added again;
* the labels layer is **never** overwritten when it differs from the labels the case was
  loaded with (hand edits, an accepted proposal: the layer, its data and its undo history
  stay as they are); an unedited labels layer gets the labels read now (if the new load
  has a label file: re-opening one image file never clears it); a deleted one is added
  again;
* all layers keep sharing the open case's :class:`CaseHandle` (its ``preprocessed`` follows
  the new load). Its ``case`` stays the same object when the new load reads the same files
  for the same or fewer modalities (re-opening one modality file of an open case just reuses
  that layer, and a subset never changes the open case's preprocessing), so panels holding
  that case keep working; a load with more modalities or other files for them replaces
  ``handle.case`` by the new case and those layers' data. A load that lacks some open
  modalities *and* brings other files is not taken for the open
  case: its layers are added beside it (napari suffixes the names with ``[1]``).

:func:`missing_modalities_note` is the sentence shown at load when a case lacks some of
T1, T1Gd, T2 and FLAIR.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_ssseg.core.case import CLASS_COLORS, INTERNAL_CLASSES, MODALITIES, Case

if TYPE_CHECKING:  # pragma: no cover
    import napari

__all__ = [
    "CASE_KEY",
    "MODALITY_DISPLAY",
    "CaseHandle",
    "case_of_layer",
    "case_to_layer_data",
    "handle_of_layer",
    "cases_in_viewer",
    "find_open_case",
    "iter_show_case",
    "missing_modalities_note",
    "ShowReport",
    "label_colormap",
    "labels_features",
    "labels_layer_of_case",
    "robust_contrast_limits",
]

#: Metadata key of the :class:`CaseHandle`.
CASE_KEY = "ssseg_case"
#: Display names of the modalities.
MODALITY_DISPLAY: dict[str, str] = {"t1": "T1", "t1ce": "T1Gd", "t2": "T2", "flair": "FLAIR"}


@dataclass(eq=False)
class CaseHandle:
    """Reference from layers to the :class:`Case` they show (never copied).

    Attributes
    ----------
    case : Case
        The case (canonical arrays, source geometry, label convention).
    preprocessed : object or None
        The :class:`~napari_ssseg.core.preprocess.Preprocessed` result the image layers show,
        or ``None`` if they show the raw intensities.
    clinical : ClinicalCase or None
        For a clinical study shown on its working grid
        (:class:`~napari_ssseg.ml.clinical.ClinicalCase`): the way back to the reference
        series' native grid, which saved labels get (File > Save, the workspace).
    """

    case: Case
    preprocessed: Any = None
    clinical: Any = None

    def __copy__(self) -> CaseHandle:
        return self

    def __deepcopy__(self, memo: dict) -> CaseHandle:
        return self

    def __repr__(self) -> str:
        pre = ", preprocessed" if self.preprocessed is not None else ""
        return f"CaseHandle({self.case.name!r}, shape={self.case.shape}{pre})"


# --------------------------------------------------------------------------- helpers
def label_colormap() -> Any:
    """napari ``DirectLabelColormap`` with the fixed BraTS class colours.

    Values other than 0-3 (which the writer refuses) show in magenta so they stand out.
    """
    from napari.utils.colormaps import DirectLabelColormap

    color_dict: dict[int | None, Any] = {k: np.asarray(v, float) for k, v in CLASS_COLORS.items()}
    color_dict[None] = np.array([1.0, 0.0, 1.0, 1.0])
    return DirectLabelColormap(color_dict=color_dict, background_value=0)


def labels_features() -> dict[str, list]:
    """Features table of the labels layer: the class name of each internal label value."""
    values = sorted(INTERNAL_CLASSES)
    return {"index": values, "class": [INTERNAL_CLASSES[v] for v in values]}


def robust_contrast_limits(
    image: np.ndarray,
    mask: np.ndarray | None = None,
    percentiles: tuple[float, float] = (1.0, 99.5),
    max_samples: int = 1_000_000,
) -> tuple[float, float]:
    """Contrast limits from percentiles of the brain voxels of ``image``.

    Parameters
    ----------
    image : (Z, Y, X) ndarray
    mask : (Z, Y, X) ndarray of bool, optional
        Brain voxels. Default: voxels where ``image`` is non-zero. All voxels if empty.
    percentiles : (float, float)
        Lower and upper percentile.
    max_samples : int
        Use an evenly strided subset of at most this many voxels (deterministic).

    Returns
    -------
    (float, float)
        ``(low, high)`` with ``high > low``.
    """
    image = np.asarray(image)
    values = image[mask] if mask is not None else image[image != 0]
    if values.size == 0:
        values = image.ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return (0.0, 1.0)
    if values.size > max_samples:
        values = values[:: int(np.ceil(values.size / max_samples))]
    low, high = (float(v) for v in np.percentile(values, percentiles))
    if not high > low:
        high = low + 1.0
    return (low, high)


def _display_images(case: Case, preprocessed: Any) -> tuple[np.ndarray, np.ndarray]:
    """Images to show on the full case grid, and the brain mask used for contrast."""
    if preprocessed is None:
        images = case.images
        mask = np.any(images != 0, axis=0)
        return images, mask
    pre = np.asarray(preprocessed.images)
    images = np.stack([np.asarray(preprocessed.uncrop(ch), dtype=np.float32) for ch in pre])
    brain = getattr(preprocessed, "mask", None)
    if brain is not None:
        brain = np.asarray(brain, bool)
        mask = (
            np.asarray(preprocessed.uncrop(brain), bool)
            if brain.shape != images.shape[1:]
            else brain
        )
    else:
        mask = np.any(images != 0, axis=0)
    return images, mask


# --------------------------------------------------------------------------- main API
def case_to_layer_data(
    case: Case,
    *,
    preprocessed: Any = None,
    labels: np.ndarray | None = None,
    visible_modality: str | None = None,
    clinical: Any = None,
) -> list[tuple[Any, dict[str, Any], str]]:
    """Layer-data tuples (image layers + one labels layer) for ``case``.

    Parameters
    ----------
    case : Case
        The case to show.
    preprocessed : Preprocessed, optional
        Result of :func:`napari_ssseg.core.preprocess.preprocess_case` on ``case``; its
        (cropped, normalised) images are shown uncropped on the full case grid, so every layer
        shares ``case.scale`` / ``case.translate`` and labels keep the case's shape.
    labels : (Z, Y, X) ndarray of int, optional
        Internal labels to show instead of ``case.labels`` (canonical orientation).
    visible_modality : str, optional
        Modality shown at first (default FLAIR, else the first one).
    clinical : ClinicalCase, optional
        The clinical preparation ``case`` comes from (kept in the layers' :class:`CaseHandle`,
        so saved labels go back to the reference's native grid).

    Returns
    -------
    list of (data, kwargs, layer_type)
        ``len(case.modalities)`` image tuples followed by one labels tuple. Image data are
        ``(Z, Y, X)`` float32 arrays (views of the case's arrays when not preprocessed); the
        labels data is a new ``(Z, Y, X)`` uint8 array (zeros if the case has no labels).
    """
    if not isinstance(case, Case):
        raise TypeError(f"case_to_layer_data needs a Case; got {type(case).__name__}.")
    handle = CaseHandle(case, preprocessed, clinical)
    scale = tuple(float(s) for s in case.scale)
    translate = tuple(float(t) for t in case.translate)
    images, mask = _display_images(case, preprocessed)
    if visible_modality is None:
        visible_modality = "flair" if "flair" in case.modalities else case.modalities[0]
    out: list[tuple[Any, dict[str, Any], str]] = []
    for index, modality in enumerate(case.modalities):
        image = images[index]
        out.append(
            (
                image,
                {
                    "name": f"{case.name} {MODALITY_DISPLAY.get(modality, modality)}",
                    "scale": scale,
                    "translate": translate,
                    "colormap": "gray",
                    "blending": "additive",
                    "contrast_limits": robust_contrast_limits(image, mask),
                    "visible": modality == visible_modality,
                    "metadata": {
                        CASE_KEY: handle,
                        "ssseg_role": "image",
                        "ssseg_modality": modality,
                    },
                },
                "image",
            )
        )
    if labels is None:
        labels = case.labels
    if labels is None:
        label_data = np.zeros(case.shape, dtype=np.uint8)
    else:
        label_data = case.check_labels(labels, what=f"labels of {case.name}").copy()
    out.append(
        (
            label_data,
            {
                "name": f"{case.name} labels",
                "scale": scale,
                "translate": translate,
                "colormap": label_colormap(),
                "features": labels_features(),
                "opacity": 0.6,
                "metadata": {CASE_KEY: handle, "ssseg_role": "labels"},
            },
            "labels",
        )
    )
    return out


def case_of_layer(layer: Any) -> Case | None:
    """The :class:`Case` a layer shows, or ``None`` if it was not made by this plugin."""
    handle = getattr(layer, "metadata", {}).get(CASE_KEY)
    return handle.case if isinstance(handle, CaseHandle) else None


def handle_of_layer(layer: Any) -> CaseHandle | None:
    """The :class:`CaseHandle` of a layer, or ``None``."""
    handle = getattr(layer, "metadata", {}).get(CASE_KEY)
    return handle if isinstance(handle, CaseHandle) else None


def cases_in_viewer(viewer: napari.Viewer) -> dict[str, Case]:
    """Cases shown in ``viewer``, by case name, in layer order (first layer wins a name)."""
    found: dict[str, Case] = {}
    for layer in viewer.layers:
        case = case_of_layer(layer)
        if case is not None and case.name not in found:
            found[case.name] = case
    return found


def labels_layer_of_case(viewer: napari.Viewer, case: Case) -> Any | None:
    """The (first) labels layer of ``viewer`` that refers to ``case``, or ``None``."""
    for layer in viewer.layers:
        if layer.metadata.get("ssseg_role") == "labels" and case_of_layer(layer) is case:
            return layer
    return None


# --------------------------------------------------------------------------- missing inputs
# Regions that lean most on each input: the same wording as napari_ssseg.ml.inference
# (not imported here: that module imports torch).
_WEAKER_WITHOUT: dict[str, str] = {
    "flair": "whole tumour (oedema)",
    "t2": "whole tumour (oedema)",
    "t1ce": "tumour core and enhancing tumour",
    "t1": "tumour core (slightly)",
}


def missing_modalities_note(case: Case) -> str | None:
    """Sentence naming the modalities ``case`` lacks and what follows, or ``None``.

    Parameters
    ----------
    case : Case

    Returns
    -------
    str or None
        ``None`` if the case has all of T1, T1Gd, T2 and FLAIR.
    """
    missing = [m for m in MODALITIES if m not in case.modalities]
    if not missing:
        return None
    names = ", ".join(MODALITY_DISPLAY[m] for m in missing)
    have = ", ".join(MODALITY_DISPLAY.get(m, m) for m in case.modalities)
    weaker = []
    for m in missing:
        region = _WEAKER_WITHOUT[m]
        if region not in weaker:
            weaker.append(region)
    return (
        f"Case {case.name!r} has no {names} (it has {have}). Propose still runs: the default "
        f"model feeds zeros for missing inputs, so expect a weaker {' and '.join(weaker)} "
        "in the proposal. Add the missing files in the Loader panel if you have them."
    )


# --------------------------------------------------------------------------- showing a case
@dataclass
class ShowReport:
    """What :func:`iter_show_case` did.

    Attributes
    ----------
    case : Case
        The case the layers show (the open one when it was reused).
    reused : bool
        The case was already open in the viewer.
    added : list of str
        Names of the layers added.
    updated : list of str
        Names of open layers whose data were replaced.
    kept_labels : str or None
        Name of an edited labels layer that was kept as it was.
    """

    case: Case
    reused: bool = False
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    kept_labels: str | None = None

    def summary(self) -> str:
        """One line for a status label."""
        if not self.reused:
            return f"added {len(self.added)} layers"
        parts = ["already open: layers reused"]
        if self.updated:
            parts.append(f"{len(self.updated)} updated")
        if self.added:
            parts.append(f"{len(self.added)} re-added")
        if self.kept_labels:
            parts.append("your edited labels kept")
        return ", ".join(parts)


def _same_grid(a: Case, b: Case) -> bool:
    return (
        a.name == b.name
        and a.shape == b.shape
        and a.canonical_geometry.allclose(b.canonical_geometry)
    )


def _changed_files(old: Case, new: Case) -> set[str] | None:
    """Modalities of ``new`` read from another file than in ``old``, or ``None`` if ``new``
    cannot take the place of ``old`` (it lacks some of ``old``'s modalities *and* brings
    other files)."""
    from pathlib import Path

    def norm(path: str | None) -> str | None:
        return None if path is None else str(Path(path).resolve())

    shared = set(new.modalities) & set(old.modalities)
    changed = {m for m in shared if norm(old.sources.get(m)) != norm(new.sources.get(m))}
    changed |= set(new.modalities) - set(old.modalities)
    if changed and not set(new.modalities) >= set(old.modalities):
        return None
    return changed


def find_open_case(viewer: napari.Viewer, case: Case) -> CaseHandle | None:
    """The handle of the layers of ``viewer`` that already show ``case``, or ``None``.

    A case counts as open when a layer of this plugin shows a case with the same name,
    shape and canonical grid (spacing, origin, direction).
    """
    for layer in viewer.layers:
        handle = handle_of_layer(layer)
        if handle is not None and _same_grid(handle.case, case):
            return handle
    return None


def _labels_edited(layer: Any, case: Case) -> bool:
    """True if the labels layer differs from the labels ``case`` was loaded with."""
    data = np.asarray(layer.data)
    if case.labels is None:
        return bool(data.any())
    return data.shape != case.labels.shape or not np.array_equal(data, case.labels)


def iter_show_case(
    viewer: napari.Viewer, case: Case, layer_data: list[tuple[Any, dict[str, Any], str]]
) -> Iterator[None]:
    """Add (or reuse) the layers of ``case`` in ``viewer``, one layer per step.

    A generator, so the caller can return to the event loop between layers (the Loader
    panel runs one step per event-loop turn); ``list(iter_show_case(...))`` does it all at
    once. See the module docstring for what happens when the case is already open.

    Parameters
    ----------
    viewer : napari.Viewer
    case : Case
        The case just read.
    layer_data : list of layer-data tuples
        :func:`case_to_layer_data` of ``case``.

    Yields
    ------
    None
        After each layer added or updated.

    Returns
    -------
    ShowReport
    """
    from napari.layers import Layer

    handle = find_open_case(viewer, case)
    changed = None if handle is None else _changed_files(handle.case, case)
    if handle is None or changed is None:
        report = ShowReport(case)
        # visible layers first (the user sees the image and the labels after two steps),
        # hidden ones then inserted at their place: the final order is layer_data's order
        hidden = [not kwargs.get("visible", True) for _, kwargs, _ in layer_data]
        order = sorted(range(len(layer_data)), key=lambda i: hidden[i])
        created: dict[int, Any] = {}
        for i in order:
            data, kwargs, layer_type = layer_data[i]
            layer = Layer.create(data, kwargs, layer_type)
            after = [created[j] for j in created if j > i]
            if after:
                viewer.layers.insert(min(viewer.layers.index(x) for x in after), layer)
            else:
                viewer.add_layer(layer)
            created[i] = layer
            report.added.append(layer.name)
            yield
        labels = [x for x in created.values() if x.metadata.get("ssseg_role") == "labels"]
        if labels:  # ready to paint, as when the labels layer was added last
            viewer.layers.selection.active = labels[0]
        return report

    new_handle = next(
        (kw["metadata"][CASE_KEY] for _, kw, _ in layer_data if CASE_KEY in kw.get("metadata", {})),
        None,
    )
    open_layers = [layer for layer in viewer.layers if handle_of_layer(layer) is handle]
    # decide "edited" against the labels the open layer was loaded with, before any change
    edited = {
        id(x): _labels_edited(x, handle.case)
        for x in open_layers
        if x.metadata.get("ssseg_role") == "labels"
    }
    if changed:  # other files or more modalities: the new case takes the open one's place
        handle.case = case
    old_pre = handle.preprocessed
    new_pre = new_handle.preprocessed if new_handle is not None else None
    intensities_changed = old_pre is not new_pre and not (old_pre is None and new_pre is None)
    if set(case.modalities) < set(handle.case.modalities):
        intensities_changed = False  # a subset never changes how the open case is shown
    else:
        handle.preprocessed = new_pre
    report = ShowReport(handle.case, reused=True)
    for data, kwargs, layer_type in layer_data:
        kwargs = dict(kwargs, metadata=dict(kwargs["metadata"], **{CASE_KEY: handle}))
        role = kwargs["metadata"].get("ssseg_role")
        if role == "image":
            modality = kwargs["metadata"].get("ssseg_modality")
            layer = next(
                (
                    x
                    for x in open_layers
                    if x.metadata.get("ssseg_role") == "image"
                    and x.metadata.get("ssseg_modality") == modality
                ),
                None,
            )
            if layer is not None:
                if intensities_changed or modality in changed:
                    layer.data = data
                    layer.contrast_limits_range = kwargs["contrast_limits"]
                    layer.contrast_limits = kwargs["contrast_limits"]
                    report.updated.append(layer.name)
                    yield
                continue
        elif role == "labels":
            layer = next((x for x in open_layers if x.metadata.get("ssseg_role") == "labels"), None)
            if layer is not None:
                if edited[id(layer)]:
                    report.kept_labels = layer.name
                elif case.labels is not None and not np.array_equal(layer.data, data):
                    layer.data = data
                    report.updated.append(layer.name)
                    yield
                continue
        layer = viewer.add_layer(Layer.create(data, kwargs, layer_type))
        report.added.append(layer.name)
        yield
    return report
