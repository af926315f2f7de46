"""Keyboard shortcuts of the annotation loop (Propose, Take, Accept, Save, Next/Previous case).

Every shortcut is ``Ctrl+Shift+<letter>``: napari 0.9 binds none of these (its layer tools use
plain letters and digits, its menus ``Ctrl+<key>``, ``Alt+<key>`` and a few ``Ctrl+Shift``
keys, see :func:`napari_default_keys`), and ``Alt+<letter>`` would compete with the menu bar's
mnemonics (``&File``, ``&View``, ``&Layers``, ``&Plugins``, ``&Window``, ``&Help``).

A panel binds its shortcuts on its viewer with ``viewer.bind_key(key, ..., overwrite=False)``
(napari's viewer keymap: the key acts while the canvas has keyboard focus, whichever layer is
selected, as napari's own viewer keys do). The binding acts only while its panel is open: a
panel that is hidden does nothing, and closing (deleting) the panel removes its bindings. A
key already bound on the viewer (another plugin, a second panel of the same kind) is left to
its owner and reported once in the returned list. The key is also shown in its button's
tooltip.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable
from typing import Any

__all__ = [
    "SHORTCUTS",
    "install_shortcuts",
    "napari_default_keys",
    "panel_is_open",
    "tooltip_with_key",
]

#: action id -> (key, what it does). docs/panels.md lists the same table.
SHORTCUTS: dict[str, tuple[str, str]] = {
    "propose": ("Ctrl+Shift+R", "Propose: run the model on the Case box's case"),
    "take_proposal": ("Ctrl+Shift+L", "Take proposal into labels"),
    "refine_accept": ("Ctrl+Shift+F", "Refine: Accept the refined labels"),
    "scribble_accept": ("Ctrl+Shift+A", "Scribble: Accept into labels"),
    "workspace_save": ("Ctrl+Shift+S", "Workspace: Save now (a new version)"),
    "next_case": ("Ctrl+Shift+N", "Workspace: Next case"),
    "previous_case": ("Ctrl+Shift+B", "Workspace: Previous case (back)"),
}


def napari_default_keys() -> set[str]:
    """Keys napari itself binds: its layer/viewer shortcuts and its menu actions.

    Layer-class and viewer-class bindings (e.g. Labels' ``Ctrl+Z``) are included.

    Returns
    -------
    set of str
        Key names as napari writes them (``"Ctrl+Shift+P"``).
    """
    from napari.utils.shortcuts import default_shortcuts

    keys = {str(k) for ks in default_shortcuts.values() for k in ks}
    # keys bound on the layer classes and the viewer class directly (e.g. Labels' Ctrl+Z)
    import napari.layers
    from napari.components import ViewerModel

    owners = [ViewerModel] + [
        cls
        for cls in vars(napari.layers).values()
        if isinstance(cls, type) and issubclass(cls, napari.layers.Layer)
    ]
    for owner in owners:
        keys |= {str(k) for k in getattr(owner, "class_keymap", {})}
    with contextlib.suppress(Exception):  # app-model keybindings (menus), napari >= 0.5
        from napari._app_model import get_app_model

        keys |= {str(kb.keybinding) for kb in get_app_model().keybindings}
    return keys


def tooltip_with_key(text: str, action: str) -> str:
    """``text`` followed by the action's shortcut, e.g. ``"Propose (Ctrl+Shift+R)"``."""
    return f"{text} (shortcut: {SHORTCUTS[action][0]})"


def panel_is_open(panel: Any) -> bool:
    """True while the panel exists and is open.

    A docked panel is open while its dock widget is open (also when it is a tab behind
    another panel's tab); an undocked panel while it is shown. A closed (deleted) or hidden
    panel is not.
    """
    from qtpy.QtWidgets import QDockWidget

    native = getattr(panel, "native", panel)
    try:
        parent = native.parentWidget()
        while parent is not None and not isinstance(parent, QDockWidget):
            parent = parent.parentWidget()
        if parent is not None:
            return bool(parent.toggleViewAction().isChecked()) and parent.window().isVisible()
        return bool(native.isVisible())
    except RuntimeError:  # wrapped C/C++ object deleted
        return False


def install_shortcuts(panel: Any, viewer: Any, actions: dict[str, Callable[[], Any]]) -> list[str]:
    """Bind ``actions`` (action id -> callable) to their :data:`SHORTCUTS` keys on ``viewer``.

    Parameters
    ----------
    panel : magicgui widget or QWidget
        The panel: the keys act only while it is shown and are unbound when it is deleted.
    viewer : napari.Viewer
    actions : dict
        Action id (a key of :data:`SHORTCUTS`) -> a callable taking no argument.

    Returns
    -------
    list of str
        The keys bound (a key already bound on the viewer is skipped).
    """
    native = getattr(panel, "native", panel)
    ref = weakref.ref(panel)
    bound: list[tuple[str, Callable[..., Any]]] = []
    for action, func in actions.items():
        key = SHORTCUTS[action][0]

        def handler(_viewer: Any = None, _func: Callable[[], Any] = func) -> None:
            owner = ref()
            if owner is None or not panel_is_open(owner):
                return
            _func()

        handler.__name__ = f"ssseg_{action}"
        handler.__doc__ = SHORTCUTS[action][1]
        try:
            viewer.bind_key(key, handler, overwrite=False)
        except ValueError:  # already bound on this viewer: leave it to its owner
            continue
        bound.append((key, handler))

    def unbind(*_: Any) -> None:
        for key, handler in bound:
            with contextlib.suppress(Exception):
                current = viewer.keymap.get(_key_of(viewer, key))
                if current is handler:
                    viewer.bind_key(key, None, overwrite=True)

    with contextlib.suppress(Exception):
        native.destroyed.connect(unbind)
    return [key for key, _ in bound]


def _key_of(viewer: Any, key: str) -> Any:
    """The keymap entry napari stores for ``key`` (a KeyBinding in napari >= 0.4.19)."""
    for k in viewer.keymap:
        if str(k) == key:
            return k
    return key
