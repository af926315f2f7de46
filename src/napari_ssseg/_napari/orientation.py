"""Radiological 2D views and orientation letters (L/R, A/P, S/I) at the canvas edges.

Why the views need help
-----------------------
A :class:`~napari_ssseg.core.case.Case` holds its arrays in canonical order: axis 0 runs
inferior to superior, axis 1 anterior to posterior, axis 2 right to left (LPS). napari draws
the first displayed axis downwards and the second to the right, so the axial view
(axes 1, 2) is already radiological (anterior up, patient's right on the screen's left), but
the sagittal (axes 0, 1) and coronal (axes 0, 2) views show the head upside down.

What :func:`install_orientation` does
-------------------------------------
For the first case shown in the viewer it derives, from the direction cosines of the case's
canonical grid (:attr:`Case.canonical_geometry`), which anatomical direction each array axis
points to (never assumed: an axis whose direction column points to world ``-x`` is "R", to
``+x`` "L", ``-y`` "A", ``+y`` "P", ``-z`` "I", ``+z`` "S"). In 2D it then sets the
camera's ``orientation2d`` (``viewer.scene.camera``) so that the superior side is at the top
(or anterior, when S/I is not displayed) and the patient's right on the left (or anterior,
on a sagittal view): the radiological convention. Four text overlays (``viewer.canvas.overlays``,
keys ``ssseg_orientation_top`` / ``_bottom`` / ``_left`` / ``_right``) show the letter of the
direction at each edge. Everything is recomputed when the displayed axes change
(``viewer.dims.events.order`` / ``ndisplay``), when case layers are added or removed, and the
letters follow a camera orientation the user sets by hand (the camera is only re-oriented
when the displayed axes change). In 3D the letters are hidden (the camera rotates freely)
and the camera is left alone. Viewers without a case of this plugin are not touched.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np

__all__ = [
    "EDGES",
    "LETTER_COLOR",
    "OVERLAY_KEYS",
    "axis_letters",
    "install_orientation",
    "radiological_orientation2d",
    "update_orientation",
    "view_letters",
]

#: Letter of the negative and positive direction of each LPS world axis (x, y, z).
_WORLD_LETTERS: tuple[tuple[str, str], ...] = (("R", "L"), ("A", "P"), ("I", "S"))
#: Directions drawn at the top (vertical axis) or on the left (horizontal axis).
_TOP_OR_LEFT = frozenset({"S", "A", "R"})
#: Canvas edges and the overlay position of their letter.
EDGES: dict[str, str] = {
    "top": "top_center",
    "bottom": "bottom_center",
    "left": "middle_left",
    "right": "middle_right",
}
#: Colour of the letters: light blue, unlike any label class colour or gray level.
LETTER_COLOR = "#66ccff"
#: Keys of the letter overlays in ``viewer.canvas.overlays``.
OVERLAY_KEYS: dict[str, str] = {edge: f"ssseg_orientation_{edge}" for edge in EDGES}
#: Viewers with the hooks installed, by ``id`` (entries vanish with their viewer).
_INSTALLED: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()


def axis_letters(case: Any) -> list[tuple[str, str]]:
    """Anatomical letters of each canonical array axis ``(z, y, x)`` of ``case``.

    Parameters
    ----------
    case : Case
        The case; its canonical grid's direction cosines decide the letters.

    Returns
    -------
    list of (str, str)
        For each array axis, ``(letter at index 0, letter at the last index)``, i.e. the
        direction the axis points away from and towards (``("I", "S")`` for axis 0 of an
        LPS-canonical case).
    """
    direction = case.canonical_geometry.direction_matrix  # columns: index axes i, j, k
    out = []
    for axis in range(3):
        column = direction[:, 2 - axis]  # array axis a is index axis 2 - a
        world = int(np.argmax(np.abs(column)))
        minus, plus = _WORLD_LETTERS[world]
        out.append((minus, plus) if column[world] > 0 else (plus, minus))
    return out


def radiological_orientation2d(letters: list[tuple[str, str]], displayed: tuple[int, int]):
    """Camera ``orientation2d`` showing ``displayed`` axes in the radiological convention.

    Parameters
    ----------
    letters : list of (str, str)
        :func:`axis_letters` of the case.
    displayed : (int, int)
        The displayed array axes ``(vertical, horizontal)`` (``viewer.dims.displayed``).

    Returns
    -------
    (str, str)
        ``(vertical, horizontal)``: ``"up"``/``"down"`` and ``"left"``/``"right"``, the way
        the axis' index increases on screen.
    """
    vertical, horizontal = displayed
    up = letters[vertical][1] in _TOP_OR_LEFT
    left = letters[horizontal][1] in _TOP_OR_LEFT
    return ("up" if up else "down", "left" if left else "right")


def view_letters(
    letters: list[tuple[str, str]], displayed: tuple[int, int], orientation2d: tuple[str, str]
) -> dict[str, str]:
    """Letter at each canvas edge for a 2D view.

    Parameters
    ----------
    letters : list of (str, str)
        :func:`axis_letters` of the case.
    displayed : (int, int)
        Displayed array axes ``(vertical, horizontal)``.
    orientation2d : (str, str)
        The camera's ``orientation2d``.

    Returns
    -------
    dict of str to str
        ``{"top", "bottom", "left", "right"}`` -> letter.
    """
    vertical, horizontal = displayed
    v_minus, v_plus = letters[vertical]
    h_minus, h_plus = letters[horizontal]
    up = str(orientation2d[0]) == "up"
    left = str(orientation2d[1]) == "left"
    return {
        "top": v_plus if up else v_minus,
        "bottom": v_minus if up else v_plus,
        "left": h_plus if left else h_minus,
        "right": h_minus if left else h_plus,
    }


def _camera(viewer: Any) -> Any:
    """The viewer's camera (``viewer.scene.camera`` since napari 0.9, else ``viewer.camera``)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


def _first_case(viewer: Any) -> Any | None:
    from napari_ssseg._napari.layers import cases_in_viewer

    cases = list(cases_in_viewer(viewer).values())
    return cases[0] if cases else None


def _overlays(viewer: Any) -> dict[str, Any]:
    from napari.components.overlays import TextOverlay

    overlays = viewer.canvas.overlays
    out = {}
    for edge, key in OVERLAY_KEYS.items():
        if key not in overlays:
            # created visible (with no text): napari builds an overlay's vispy visual the
            # first time it is visible (~50 ms each with software OpenGL); doing it here, when
            # a panel opens, keeps that cost out of the first case load
            overlays[key] = TextOverlay(
                text="",
                position=EDGES[edge],
                font_size=14,
                color=LETTER_COLOR,
                visible=True,
            )
        out[edge] = overlays[key]
    return out


def update_orientation(viewer: Any, reorient: bool = True) -> dict[str, str] | None:
    """Set the radiological 2D camera orientation and the edge letters of ``viewer``.

    Parameters
    ----------
    viewer : napari.Viewer
    reorient : bool
        Set the camera's ``orientation2d`` (False: only update the letters to the current
        camera orientation).

    Returns
    -------
    dict of str to str or None
        The letters shown (edge -> letter), or ``None`` when none are shown (3D view, no
        3D case in the viewer).
    """
    case = _first_case(viewer)
    overlays = _overlays(viewer)
    dims = viewer.dims
    displayed = tuple(int(d) for d in dims.displayed)
    if case is None or dims.ndisplay != 2 or dims.ndim != 3 or len(displayed) != 2:
        for overlay in overlays.values():
            overlay.visible = False
        return None
    letters = axis_letters(case)
    if reorient:
        wanted = radiological_orientation2d(letters, displayed)
        if tuple(str(o) for o in _camera(viewer).orientation2d) != wanted:
            _camera(viewer).orientation2d = wanted
    shown = view_letters(letters, displayed, tuple(str(o) for o in _camera(viewer).orientation2d))
    for edge, overlay in overlays.items():
        overlay.text = shown[edge]
        overlay.visible = True
    return shown


def install_orientation(viewer: Any) -> None:
    """Keep ``viewer``'s 2D views radiological and its orientation letters up to date.

    Idempotent: a second call on the same viewer does nothing more than an update.

    Parameters
    ----------
    viewer : napari.Viewer
    """
    if _INSTALLED.get(id(viewer)) is viewer:
        update_orientation(viewer)
        return

    def on_view_change(*_: Any) -> None:
        update_orientation(viewer)

    def on_camera_change(*_: Any) -> None:
        update_orientation(viewer, reorient=False)

    viewer.dims.events.order.connect(on_view_change)
    viewer.dims.events.ndisplay.connect(on_view_change)
    viewer.layers.events.inserted.connect(on_view_change)
    viewer.layers.events.removed.connect(on_view_change)
    _camera(viewer).events.orientation.connect(on_camera_change)
    _INSTALLED[id(viewer)] = viewer
    update_orientation(viewer)
