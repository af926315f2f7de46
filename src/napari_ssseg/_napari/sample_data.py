"""napari sample data: synthetic multimodal brain-tumour phantoms with ground truth.

Both samples come from :func:`napari_ssseg.core.phantom.make_phantom` (seed 0, so they are
the same on every machine): four co-registered sequences (T1, T1Gd, T2, FLAIR) as image layers
and the ground-truth labels (NCR, ED, ET) as a labels layer, all linked to the phantom's
:class:`~napari_ssseg.core.case.Case` so that the writer and the panels work on them exactly
as on a case read from disk. The phantom's grid is identity LPS, centred on (0, 0, 0) mm.

* ``phantom_small``: 96 x 120 x 120 voxels (Z, Y, X) at 2 mm (about 1.6 s).
* ``phantom_brats``: the BraTS grid, 155 x 240 x 240 (Z, Y, X) at 1 mm, i.e. 240 x 240 x 155
  in the (x, y, z) order BraTS uses (about 7 s on 2 cores).
"""

from __future__ import annotations

from typing import Any

__all__ = ["SMALL_SHAPE", "BRATS_SHAPE", "phantom_layer_data", "phantom_small", "phantom_brats"]

#: Grid ``(Z, Y, X)`` and spacing (mm) of the small sample.
SMALL_SHAPE: tuple[tuple[int, int, int], tuple[float, float, float]] = ((96, 120, 120), (2.0,) * 3)
#: Grid ``(Z, Y, X)`` and spacing (mm) of the BraTS-grid sample.
BRATS_SHAPE: tuple[tuple[int, int, int], tuple[float, float, float]] = ((155, 240, 240), (1.0,) * 3)


def phantom_layer_data(
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    seed: int = 0,
    name: str | None = None,
) -> list[tuple[Any, dict[str, Any], str]]:
    """Layer-data tuples of a phantom case (4 image layers + its ground-truth labels).

    Parameters
    ----------
    shape : tuple of 3 int
        Grid ``(Z, Y, X)``.
    spacing : tuple of 3 float
        Voxel size ``(z, y, x)`` in mm.
    seed : int
        Phantom seed.
    name : str, optional
        Case name (default ``"phantom"``).
    """
    from napari_ssseg._napari.layers import case_to_layer_data
    from napari_ssseg.core.phantom import make_phantom

    phantom = make_phantom(shape=shape, spacing=spacing, seed=seed)
    case = phantom.to_case(name=name or "phantom")
    return case_to_layer_data(case)


def phantom_small() -> list[tuple[Any, dict[str, Any], str]]:
    """Sample: small phantom, 96 x 120 x 120 (Z, Y, X) at 2 mm."""
    shape, spacing = SMALL_SHAPE
    return phantom_layer_data(shape, spacing, seed=0, name="phantom")


def phantom_brats() -> list[tuple[Any, dict[str, Any], str]]:
    """Sample: phantom on the BraTS grid, 240 x 240 x 155 (x, y, z) at 1 mm."""
    shape, spacing = BRATS_SHAPE
    return phantom_layer_data(shape, spacing, seed=0, name="phantom_brats")
