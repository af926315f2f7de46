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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_ssseg.core.case import CLASS_COLORS, INTERNAL_CLASSES, Case

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
    """

    case: Case
    preprocessed: Any = None

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

    Returns
    -------
    list of (data, kwargs, layer_type)
        ``len(case.modalities)`` image tuples followed by one labels tuple. Image data are
        ``(Z, Y, X)`` float32 arrays (views of the case's arrays when not preprocessed); the
        labels data is a new ``(Z, Y, X)`` uint8 array (zeros if the case has no labels).
    """
    if not isinstance(case, Case):
        raise TypeError(f"case_to_layer_data needs a Case; got {type(case).__name__}.")
    handle = CaseHandle(case, preprocessed)
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
