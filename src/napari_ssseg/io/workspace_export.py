"""Compatibility module: workspace export, dataset import and evaluation.

The code lives in :mod:`napari_ssseg.io.dataset_export` (nnU-Net v2 / MSD / BraTS
exports), :mod:`napari_ssseg.io.dataset_import` (datasets and label files into a workspace),
:mod:`napari_ssseg.io.evaluation` (metrics of a workspace) and :mod:`napari_ssseg.io.plots`
(the PNG box plot). The names below stay importable from here.
"""

from __future__ import annotations

from napari_ssseg.io.dataset_export import (
    BRATS_YEARS,
    FORMATS,
    NNUNET_CHANNELS,
    export_workspace,
)
from napari_ssseg.io.dataset_import import (
    import_dataset,
    import_ground_truth,
    import_label_file,
)
from napari_ssseg.io.evaluation import METRICS, evaluate_workspace, summarise
from napari_ssseg.io.plots import write_boxplot_png

#: Former private name of :data:`napari_ssseg.io.evaluation.METRICS` (used by the panel).
_METRICS = METRICS

__all__ = [
    "FORMATS",
    "NNUNET_CHANNELS",
    "BRATS_YEARS",
    "export_workspace",
    "import_dataset",
    "import_label_file",
    "import_ground_truth",
    "evaluate_workspace",
    "summarise",
    "write_boxplot_png",
]
