"""Small helpers shared by the plugin's panels: error notifications and a busy state.

* :func:`notify_error` shows an exception as a napari notification: a
  :class:`~napari_ssseg.errors.SsegError` (bad input the user can fix) as its one-paragraph
  message, anything else through napari's notification manager (which keeps the traceback
  available from the notification's "View traceback" button).
* :func:`busy` is a context manager / :class:`BusyState` a small object that disables a set of
  widgets while a task runs and shows a status text, restoring everything afterwards.

Nothing here creates modal dialogs, so panels that use these helpers stay testable.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

from napari.utils.notifications import (
    notification_manager,
    show_error,
    show_info,
    show_warning,
)

from napari_ssseg.errors import SsegError

__all__ = ["BusyState", "busy", "notify_error", "notify_info", "notify_warning", "qwidget"]


def notify_error(exc: BaseException) -> None:
    """Show ``exc`` as a napari error notification (never raises, never blocks).

    Parameters
    ----------
    exc : BaseException
        The error. A :class:`SsegError` is shown as its plain message; other exceptions are
        passed to napari's notification manager with their traceback.
    """
    if isinstance(exc, SsegError):
        show_error(str(exc))
    else:
        notification_manager.receive_error(type(exc), exc, exc.__traceback__)


def notify_warning(warning: Any) -> None:
    """Show a warning as a napari notification.

    Parameters
    ----------
    warning : str or tuple
        A message, or the ``(message, category, filename, lineno, file, line)`` tuple that a
        napari worker's ``warned`` signal carries (napari deduplicates repeated warnings).
    """
    if isinstance(warning, tuple):
        notification_manager.receive_warning(*warning)
    else:
        show_warning(str(warning))


def notify_info(message: str) -> None:
    """Show an information notification."""
    show_info(message)


def qwidget(widget: Any) -> Any:
    """The Qt widget of ``widget`` (a magicgui widget's ``.native`` or a QWidget itself)."""
    return getattr(widget, "native", widget)


class BusyState:
    """Disable widgets and show a status text while a task runs.

    Parameters
    ----------
    widgets : iterable
        magicgui or Qt widgets to disable while busy.
    status : object, optional
        A widget with a ``value`` (magicgui Label) or ``setText`` (QLabel) showing the state.
    """

    def __init__(self, widgets: Iterable[Any] = (), status: Any | None = None) -> None:
        self.widgets = list(widgets)
        self.status = status
        self.is_busy = False
        self._saved: list[bool] = []

    def _set_status(self, text: str) -> None:
        if self.status is None:
            return
        if hasattr(self.status, "setText"):
            self.status.setText(text)
        else:
            self.status.value = text

    def start(self, message: str = "working...") -> None:
        """Enter the busy state: remember and disable the widgets, show ``message``."""
        if self.is_busy:
            return
        self._saved = [qwidget(w).isEnabled() for w in self.widgets]
        for w in self.widgets:
            qwidget(w).setEnabled(False)
        self.is_busy = True
        self._set_status(message)

    def stop(self, message: str = "") -> None:
        """Leave the busy state: restore the widgets, show ``message``."""
        if self.is_busy:
            for w, enabled in zip(self.widgets, self._saved):
                qwidget(w).setEnabled(enabled)
        self.is_busy = False
        self._set_status(message)


@contextlib.contextmanager
def busy(
    widgets: Iterable[Any] = (),
    status: Any | None = None,
    message: str = "working...",
    done: str = "",
) -> Iterator[BusyState]:
    """Context manager form of :class:`BusyState` for short synchronous GUI-thread work."""
    state = BusyState(widgets, status)
    state.start(message)
    try:
        yield state
    finally:
        state.stop(done)


def button_row(*widgets: Any) -> Any:
    """A horizontal magicgui ``Container`` of ``widgets`` without labels (e.g. Start/Cancel)."""
    from magicgui.widgets import Container

    return Container(widgets=list(widgets), layout="horizontal", labels=False)
