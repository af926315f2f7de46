"""Exceptions raised for bad input.

Every user-facing error is a :class:`SsegError`. Its message is one paragraph that names
what was wrong (the file or parameter and the bad value), what was expected, and how to fix
it. The CLI prints the message without a traceback and exits with status 2; the napari
panels show it as a notification.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["SsegError", "InputError", "GeometryError", "CacheError", "check_choice"]


class SsegError(Exception):
    """Base class of all errors the user can fix by changing the input."""


class InputError(SsegError, ValueError):
    """A file, array or parameter is missing, malformed or out of range."""


class GeometryError(InputError):
    """Two grids do not match (shape, spacing, origin or direction)."""


class CacheError(SsegError):
    """A cached result does not match the data or parameters it is asked for."""


def check_choice(name: str, value: str, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise with a "did you mean" hint.

    Parameters
    ----------
    name : str
        Parameter name, used in the message.
    value : str
        The value given by the user. Compared case-insensitively.
    choices : iterable of str
        Allowed values.

    Returns
    -------
    str
        The matching choice, in the spelling of ``choices``.

    Raises
    ------
    InputError
        If ``value`` is not one of ``choices``.
    """
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    key = str(value).lower()
    if key in lowered:
        return lowered[key]
    close = difflib.get_close_matches(key, list(lowered), n=1)
    hint = f" Did you mean {lowered[close[0]]!r}?" if close else ""
    raise InputError(
        f"{name}={value!r} is not valid; expected one of {', '.join(map(repr, choices))}.{hint}"
    )
