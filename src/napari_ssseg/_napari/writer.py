"""npe2 writer: save a labels layer as NIfTI/NRRD/MHA with the source image's geometry.

A labels layer made by this plugin (reader, Loader panel, sample data) refers to its
:class:`~napari_ssseg.core.case.Case` (see :mod:`napari_ssseg._napari.layers`). Saving it
maps the canonical array back to the source file's axis order and writes the source
spacing, origin and direction exactly, in the case's label convention (e.g. ET = 4 for
BraTS 2019-2021), via :func:`napari_ssseg.io.writers.save_labels`. The written file
therefore overlays the original images voxel for voxel in any other tool.

A labels layer of a **clinical study** shown on its working grid (Loader panel with brain
extraction, registration or resampling) is written on the reference (FLAIR) series' exact
native grid (:meth:`~napari_ssseg.ml.clinical.ClinicalCase.save_labels_native`; native
voxels away from the user's changes keep the values of the labels file the study came with),
and an info notification says so.

A labels layer **without** a case (drawn on some other image) is written on its own grid:
spacing = layer ``scale``, origin = layer ``translate`` (both read as LPS millimetres in
``(z, y, x)`` order), identity direction, internal label values (0 bg, 1 NCR, 2 ED, 3 ET,
i.e. the BraTS 2023 convention). A warning notification says so.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from napari_ssseg.core.case import Case, Geometry
from napari_ssseg.errors import GeometryError, InputError, SsegError

__all__ = ["LabelsNotWrittenError", "write_labels", "case_for_layer_geometry"]


class LabelsNotWrittenError(SsegError, RuntimeError):
    """The layer could not be saved; the message says why and how to fix it.

    Deliberately *not* a ``ValueError``: npe2 treats a ``ValueError`` from a writer as "this
    writer does not apply" and napari then reports only "not a valid writer", hiding the
    explanation.
    """


def case_for_layer_geometry(
    shape: tuple[int, int, int], scale: Any, translate: Any, name: str = "labels"
) -> Case:
    """A data-less :class:`Case` whose canonical grid is a layer's ``scale``/``translate``.

    The images are a zero-stride broadcast (no memory); only the geometry is meaningful.
    """
    scale = np.asarray(scale, float)[-3:]
    translate = np.asarray(translate, float)[-3:]
    geometry = Geometry(spacing=tuple(scale[::-1]), origin=tuple(translate[::-1]))
    images = np.broadcast_to(np.zeros((), np.float32), (1, *shape))
    return Case(
        images=images,
        modalities=("t1",),
        geometry=geometry,
        name=name,
        convention=_internal_convention(),
    )


def _internal_convention() -> Any:
    from napari_ssseg.core.case import CONVENTIONS

    return CONVENTIONS["brats2023"]  # identical to the internal values 0, 1, 2, 3


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one labels layer (npe2 single-layer writer); see :func:`_write_labels`.

    Raises
    ------
    LabelsNotWrittenError
        With the plugin's explanation (invalid label values, wrong shape, ...), also shown
        as a napari error notification.
    """
    try:
        return _write_labels(path, data, meta)
    except SsegError as exc:
        from napari.utils.notifications import show_error

        message = f"{meta.get('name', 'labels')!r} was not saved to {path}: {exc}"
        show_error(message)
        raise LabelsNotWrittenError(message) from exc


def _write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one labels layer (npe2 single-layer writer).

    Parameters
    ----------
    path : str
        Output file (``.nii.gz``, ``.nii``, ``.nrrd`` or ``.mha``).
    data : (Z, Y, X) array-like of int
        The layer's data (internal labels, canonical orientation).
    meta : dict
        The layer's state (``metadata``, ``scale``, ``translate``, ``name``, ...).

    Returns
    -------
    list of str
        The written path.
    """
    from napari_ssseg._napari.layers import CASE_KEY, CaseHandle
    from napari_ssseg.io.writers import save_labels

    labels = np.asarray(data)
    if labels.ndim != 3:
        raise InputError(
            f"Layer {meta.get('name', '')!r} has {labels.ndim} dimensions; napari-ssseg saves "
            "3D label volumes (Z, Y, X). Use napari's built-in writer for other data."
        )
    handle = (meta.get("metadata") or {}).get(CASE_KEY)
    case = handle.case if isinstance(handle, CaseHandle) else None
    if case is not None and tuple(labels.shape) != tuple(case.shape):
        raise GeometryError(
            f"Layer {meta.get('name', '')!r} has shape {labels.shape} but its case "
            f"{case.name!r} has {case.shape}; cannot save it with the case's geometry."
        )
    if case is None:
        from napari.utils.notifications import show_warning

        case = case_for_layer_geometry(
            tuple(labels.shape),
            meta.get("scale", (1, 1, 1)),
            meta.get("translate", (0, 0, 0)),
            name=str(meta.get("name", "labels")),
        )
        message = (
            f"Layer {meta.get('name', '')!r} is not linked to a case opened by napari-ssseg: "
            f"{path} is written with the layer's scale as spacing and its translate as origin "
            "(LPS mm), identity direction, and the internal label values 0-3."
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            show_warning(message)
    clinical = handle.clinical if isinstance(handle, CaseHandle) else None
    if clinical is not None and clinical.changed:
        from napari.utils.notifications import show_info

        written = clinical.save_labels_native(labels, path)
        ref = clinical.report.get("reference", "reference")
        shape = "×".join(str(n) for n in clinical.grid.reference_shape[::-1])
        mm = "×".join(f"{v:g}" for v in clinical.grid.geometry.spacing[::-1])
        show_info(
            f"{written.name} is written on the {ref} series' native grid ({shape} voxels), "
            f"not on the {mm} mm working grid it was drawn on."
        )
        return [str(written)]
    save_labels(labels, case, path)
    return [str(path)]
