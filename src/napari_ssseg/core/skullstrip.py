"""Is this case skull-stripped? And is a brain mask plausible?

BraTS-style images are skull-stripped: everything outside the brain holds one constant value
(0, or the z-scored zero of older BraTS releases), and the non-constant part is about the size
of a brain (1.0-1.8 l for adults). A scan as it comes from the scanner has signal (head, scalp,
fat, and noise in the air) nearly everywhere in its field of view. :func:`skull_strip_check`
measures both and decides; :func:`check_brain_mask` says whether a brain mask from a brain
extraction model is believable (volume, inside the head, one piece).

numpy / scipy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from napari_ssseg.errors import InputError

__all__ = [
    "SkullStripReport",
    "skull_strip_check",
    "MaskCheck",
    "check_brain_mask",
    "head_mask",
    "MAX_BRAIN_ML",
    "BRAIN_ML_RANGE",
]

#: Largest non-background volume (ml) still taken for a skull-stripped brain.
MAX_BRAIN_ML = 2100.0
#: Largest fraction of the field-of-view border that may hold signal in a stripped image.
MAX_BORDER_FRACTION = 0.2
#: Plausible adult brain-mask volume (ml) after brain extraction.
BRAIN_ML_RANGE = (900.0, 2100.0)


@dataclass
class SkullStripReport:
    """Per-modality measurements and the decision of :func:`skull_strip_check`.

    Attributes
    ----------
    stripped : bool
        True if every modality looks skull-stripped.
    foreground_ml : dict of str to float
        Volume (ml) of voxels that differ from the background value, per modality.
    border_fraction : dict of str to float
        Fraction of the field-of-view border voxels that differ from the background value.
    reasons : list of str
        Why a modality was judged not skull-stripped (empty when ``stripped``).
    """

    stripped: bool
    foreground_ml: dict[str, float] = field(default_factory=dict)
    border_fraction: dict[str, float] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    def message(self, name: str = "the case") -> str:
        """One-line warning text for a case that is not skull-stripped."""
        if self.stripped:
            return f"{name} looks skull-stripped."
        return (
            f"{name} does not look skull-stripped: "
            + "; ".join(self.reasons)
            + ". The model has only seen skull-stripped brains and would label scalp and fat; "
            "run brain extraction (--brain-extraction on, or auto, the default)."
        )

    def to_dict(self) -> dict:
        """JSON-friendly summary."""
        return {
            "stripped": self.stripped,
            "foreground_ml": {k: round(v, 1) for k, v in self.foreground_ml.items()},
            "border_fraction": {k: round(v, 4) for k, v in self.border_fraction.items()},
            "reasons": list(self.reasons),
        }


def _border_values(img: np.ndarray) -> np.ndarray:
    return np.concatenate(
        [img[0].ravel(), img[-1].ravel(), img[:, 0].ravel(), img[:, -1].ravel(),
         img[:, :, 0].ravel(), img[:, :, -1].ravel()]
    )  # fmt: skip


def _background_value(border: np.ndarray) -> float:
    vals, counts = np.unique(border, return_counts=True)
    return float(vals[int(np.argmax(counts))])


def skull_strip_check(
    images: np.ndarray,
    spacing_zyx: Sequence[float],
    modalities: Sequence[str] | None = None,
    *,
    max_brain_ml: float = MAX_BRAIN_ML,
    max_border_fraction: float = MAX_BORDER_FRACTION,
) -> SkullStripReport:
    """Decide whether the images are skull-stripped.

    Parameters
    ----------
    images : (C, Z, Y, X) or (Z, Y, X) ndarray
        The modalities on one grid.
    spacing_zyx : 3 floats
        Voxel size in mm.
    modalities : sequence of str, optional
        Channel names for the report.
    max_brain_ml : float
        A modality whose non-background part is larger than this (ml) is not stripped.
    max_border_fraction : float
        A modality with signal on more than this fraction of its field-of-view border is not
        stripped (noise in the air, or a head cut by the field of view).

    Returns
    -------
    SkullStripReport

    Notes
    -----
    The background value is the most common value on the field-of-view border (0 for BraTS,
    the constant z-scored background of BraTS 2013). An all-background channel is ignored.
    """
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4:
        raise InputError(f"images must be (C, Z, Y, X) or (Z, Y, X); got shape {arr.shape}.")
    sp = tuple(float(s) for s in spacing_zyx)
    if len(sp) != 3 or min(sp) <= 0:
        raise InputError(f"spacing_zyx must be 3 positive numbers; got {spacing_zyx!r}.")
    names = list(modalities) if modalities is not None else [f"c{i}" for i in range(len(arr))]
    voxel_ml = float(np.prod(sp)) / 1000.0
    report = SkullStripReport(stripped=True)
    for name, img in zip(names, arr):
        border = _border_values(img)
        bg = _background_value(border)
        fg_ml = float(np.count_nonzero(img != bg)) * voxel_ml
        bfrac = float(np.count_nonzero(border != bg)) / max(1, border.size)
        report.foreground_ml[name] = fg_ml
        report.border_fraction[name] = bfrac
        if fg_ml == 0:
            continue
        why = []
        if fg_ml > max_brain_ml:
            why.append(f"{fg_ml:.0f} ml of signal (a brain is under {max_brain_ml:.0f} ml)")
        if bfrac > max_border_fraction:
            why.append(f"signal on {100 * bfrac:.0f}% of the field-of-view border")
        if why:
            report.stripped = False
            report.reasons.append(f"{name}: " + " and ".join(why))
    return report


def head_mask(image: np.ndarray) -> np.ndarray:
    """The head (everything above the air's noise) of a raw image, holes filled.

    Otsu threshold on the log-intensities (robust to the bright fat), largest component,
    closed and filled per slice and in 3D.
    """
    from skimage.filters import threshold_otsu

    img = np.asarray(image, np.float32)
    pos = img[img > 0]
    if pos.size < 100:
        return img > 0
    lo = float(np.percentile(pos, 99.5))
    t = threshold_otsu(np.log1p(np.clip(pos, 0, lo)))
    m = np.log1p(np.clip(img, 0, lo)) > t
    lab, n = ndi.label(m)
    if n > 1:
        counts = np.bincount(lab.ravel())
        counts[0] = 0
        m = lab == int(np.argmax(counts))
    m = ndi.binary_closing(m, iterations=2)
    st2 = np.zeros((3, 3, 3), bool)
    st2[1] = ndi.generate_binary_structure(2, 1)
    m = ndi.binary_fill_holes(np.pad(m, ((1, 1), (0, 0), (0, 0))), structure=st2)[1:-1]
    return ndi.binary_fill_holes(m)


@dataclass
class MaskCheck:
    """Plausibility of a brain mask (:func:`check_brain_mask`)."""

    volume_ml: float
    inside_head: float
    components: int
    problems: list[str]

    @property
    def passed(self) -> bool:
        """True if no problem was found."""
        return not self.problems

    def to_dict(self) -> dict:
        """JSON-friendly summary."""
        return {
            "volume_ml": round(self.volume_ml, 1),
            "inside_head": round(self.inside_head, 4),
            "components": int(self.components),
            "passed": self.passed,
            "problems": list(self.problems),
        }


def check_brain_mask(
    mask: np.ndarray,
    spacing_zyx: Sequence[float],
    head: np.ndarray | None = None,
    *,
    volume_ml: tuple[float, float] = BRAIN_ML_RANGE,
    min_inside_head: float = 0.97,
) -> MaskCheck:
    """Is ``mask`` a believable brain?

    Parameters
    ----------
    mask : (Z, Y, X) ndarray of bool
    spacing_zyx : 3 floats
    head : (Z, Y, X) ndarray of bool, optional
        The head (:func:`head_mask`); the brain must lie inside it.
    volume_ml : (float, float)
        Plausible volume range.
    min_inside_head : float
        Smallest fraction of the mask inside ``head``.

    Returns
    -------
    MaskCheck
    """
    m = np.asarray(mask, bool)
    vox_ml = float(np.prod([float(s) for s in spacing_zyx])) / 1000.0
    vol = float(m.sum()) * vox_ml
    problems = []
    if not volume_ml[0] <= vol <= volume_ml[1]:
        problems.append(
            f"brain volume {vol:.0f} ml is outside the plausible {volume_ml[0]:.0f}-"
            f"{volume_ml[1]:.0f} ml"
        )
    inside = 1.0
    if head is not None and m.any():
        inside = float((m & np.asarray(head, bool)).sum() / m.sum())
        if inside < min_inside_head:
            problems.append(f"only {100 * inside:.1f}% of the brain mask lies inside the head")
    n = 0
    if m.any():
        _, n = ndi.label(m)
        if n > 1:
            problems.append(f"the mask has {n} separate pieces")
    return MaskCheck(volume_ml=vol, inside_head=inside, components=int(n), problems=problems)
