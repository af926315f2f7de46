"""Default values shared by core, the command line, the training strategies and the panels.

One source of truth for numbers that used to be written in several places (issue 15): core
functions use them as parameter defaults, ``ssseg`` help texts print them, the napari panels
start their widgets at them. Standard library only, so that importing it costs nothing (the
CLI builds its parsers without numpy).

The reasons behind each value (paper values, tuning) are documented in
``docs/refinement.md``, ``docs/superpixels.md`` and ``docs/scribbles.md``.
"""

from __future__ import annotations

__all__ = [
    "N_SEGMENTS",
    "COMPACTNESS",
    "SIGMA",
    "SIM0",
    "NC",
    "FILL",
    "FILL_EDGE",
    "SCRIBBLE_N_SEGMENTS",
    "SCRIBBLE_BACKGROUND_LABEL",
    "SCRIBBLE_TUMOUR_LABEL",
]

#: Approximate SLIC superpixel count of the whole volume for refinement (the paper's 350):
#: about 230 superpixels inside a real 1 mm brain, ~6 ml (~23 mm across) each. 1000 (~2 ml)
#: fitted the tuning real cases better but not the held-out ones (docs/refinement.md, "Tuned
#: on real scans").
N_SEGMENTS: int = 350
#: SLIC compactness (intensity vs. distance trade-off) on channels normalised to [0, 1].
COMPACTNESS: float = 0.01
#: Gaussian smoothing before SLIC, in mm.
SIGMA: float = 1.0
#: Stopping similarity of superpixel growth, tuned on phantoms for the paper's strict
#: mutual-best rule (docs/refinement.md).
SIM0: float = 0.1
#: Candidates checked per merge minus one (the paper's value).
NC: int = 30
#: With ``output="union"``: seed superpixels covered by at least this fraction of the
#: pseudo-label are filled completely **[ours]**, tuned.
FILL: float = 0.5
#: With ``output="union"``: a seed superpixel is filled only where the pseudo-label's
#: boundary inside it is weak (border <= ``FILL_EDGE`` x the median border) **[ours]**, tuned.
FILL_EDGE: float = 2.0
#: Superpixel count of the whole brain for scribble propagation **[ours]**: finer than
#: refinement's because the strokes are thin (a superpixel is the unit a stroke expands to).
SCRIBBLE_N_SEGMENTS: int = 2000
#: Value of a healthy-tissue stroke in scribble files (``--background-label``).
SCRIBBLE_BACKGROUND_LABEL: int = 255
#: Value of a region-mode tumour stroke in scribble files (``--tumour-label``).
SCRIBBLE_TUMOUR_LABEL: int = 254
