"""Progress reporting and cancellation for long-running core functions.

Every long-running function in :mod:`napari_ssseg.core` accepts two optional keyword
arguments:

``progress(fraction, message)``
    A :class:`ProgressCallback`. ``fraction`` is in ``[0, 1]`` (monotonically non-decreasing
    within one call), ``message`` a short human-readable status such as
    ``"SLIC iteration 3/10"``. It is called from the thread doing the work; a GUI must marshal
    it to its own thread (e.g. a Qt signal).

``should_stop()``
    A zero-argument callable returning ``True`` when the caller wants the work abandoned.
    The function checks it at safe points (at least once per iteration) and raises
    :class:`Cancelled`; no partial result is returned and no cache entry is written.

Both default to ``None`` (no reporting, never cancelled). Use :func:`report` and
:func:`check_cancel` inside core code so that ``None`` is handled in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

__all__ = [
    "Cancelled",
    "ProgressCallback",
    "StopCallback",
    "check_cancel",
    "report",
    "stage_progress",
]


class Cancelled(Exception):  # noqa: N818 - the name reads naturally at the call site
    """The caller asked (through ``should_stop``) for the computation to stop."""


class ProgressCallback(Protocol):
    """``progress(fraction, message)``: called with a fraction in [0, 1] and a status text."""

    def __call__(self, fraction: float, message: str) -> None: ...


StopCallback = Callable[[], bool]


def report(progress: ProgressCallback | None, fraction: float, message: str) -> None:
    """Call ``progress(fraction, message)`` if a callback was given (fraction clipped to [0, 1])."""
    if progress is not None:
        progress(min(1.0, max(0.0, float(fraction))), message)


def check_cancel(should_stop: StopCallback | None, what: str = "computation") -> None:
    """Raise :class:`Cancelled` if ``should_stop`` is given and returns true.

    Parameters
    ----------
    should_stop : callable or None
        Zero-argument callable; ``None`` means never stop.
    what : str
        Name of the interrupted work, used in the exception message.
    """
    if should_stop is not None and should_stop():
        raise Cancelled(f"{what} cancelled")


def stage_progress(
    progress: ProgressCallback | None, lo: float, hi: float, prefix: str
) -> ProgressCallback | None:
    """A callback for one stage of a longer job: its ``[0, 1]`` mapped to ``[lo, hi]``.

    Messages are prefixed with ``prefix`` (``"WT superpixels: iteration 3/10"``); the stage's
    fraction is clipped to [0, 1], so it never reports outside its range; ``None`` stays
    ``None``.
    """
    if progress is None:
        return None

    def scaled(fraction: float, message: str = "") -> None:
        text = f"{prefix}: {message}".rstrip(": ") if message else prefix
        f = min(1.0, max(0.0, float(fraction)))  # a stage never reports past its range
        report(progress, lo + (hi - lo) * f, text)

    return scaled
