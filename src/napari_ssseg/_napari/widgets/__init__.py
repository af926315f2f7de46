"""The plugin's panels: one module per panel; each widget takes the viewer as its argument.

:data:`PANELS` lists ``(title, factory)`` pairs in docking order; factories import their
module lazily so that listing panels imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["PANELS"]


def _loader(viewer: Any) -> Any:
    from napari_ssseg._napari.widgets.loader import LoaderWidget

    return LoaderWidget(viewer)


def _propose(viewer: Any) -> Any:
    from napari_ssseg._napari.widgets.propose import ProposeWidget

    return ProposeWidget(viewer)


def _refine(viewer: Any) -> Any:
    from napari_ssseg._napari.widgets.refine import RefineWidget

    return RefineWidget(viewer)


def _retrain(viewer: Any) -> Any:
    from napari_ssseg._napari.widgets.retrain import RetrainWidget

    return RetrainWidget(viewer)


def _scribble(viewer: Any) -> Any:
    from napari_ssseg._napari.widgets.scribble import ScribbleWidget

    return ScribbleWidget(viewer)


def _workspace(viewer: Any) -> Any:
    from napari_ssseg._napari.widgets.workspace import WorkspaceWidget

    return WorkspaceWidget(viewer)


#: ``(dock title, factory(viewer) -> widget)`` of every panel, in docking order.
PANELS: list[tuple[str, Callable[[Any], Any]]] = [
    ("Loader", _loader),
    ("Propose", _propose),
    ("Refine", _refine),
    ("Scribble", _scribble),
    ("Workspace", _workspace),
    ("Retrain", _retrain),
]
