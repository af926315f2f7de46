"""The tiny phantoms the test suites share, each defined once (issue 15).

=============  ===============  =======  =====  ==========================================
name           grid (Z, Y, X)   spacing  seed   fixtures
=============  ===============  =======  =====  ==========================================
``tiny``       32 x 40 x 40     1 mm     0      core: ``tiny_phantom``, ``tiny_case``
``small``      48 x 64 x 64     1 mm     1      core: ``small_phantom``
``tiny_2mm``   32 x 40 x 40     2 mm     0      napari: ``tiny_phantom`` (a 64 x 80 x 80 mm
                                                field of view, fast to render)
``tiny_ml``    32 x 40 x 40     1 mm     3      ml and commands: ``tiny_phantom``
=============  ===============  =======  =====  ==========================================

They differ on purpose (each suite's assertions were written against its phantom: a GUI test
needs a field of view that looks like a head in the viewer, an ml test a seed whose tumour
the tiny network's crops find); they are built once per process (:func:`master`) and handed
out as copies (:func:`phantom`) where a test may modify them.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

SPECS: dict[str, dict[str, Any]] = {
    "tiny": {"shape": (32, 40, 40), "spacing": (1.0, 1.0, 1.0), "seed": 0},
    "small": {"shape": (48, 64, 64), "spacing": (1.0, 1.0, 1.0), "seed": 1},
    "tiny_2mm": {"shape": (32, 40, 40), "spacing": (2.0, 2.0, 2.0), "seed": 0},
    "tiny_ml": {"shape": (32, 40, 40), "spacing": (1.0, 1.0, 1.0), "seed": 3},
}


@cache
def master(name: str) -> Any:
    """The shared phantom ``name`` (do not modify it: use :func:`phantom`)."""
    from napari_ssseg.core.phantom import make_phantom

    return make_phantom(**SPECS[name])


def phantom(name: str) -> Any:
    """A fresh copy of the phantom ``name``, free to modify."""
    return copy.deepcopy(master(name))
