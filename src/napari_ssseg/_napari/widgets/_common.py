"""Small helpers shared by the plugin's panels: error notifications and a busy state.

* :func:`notify_error` shows an exception as a napari notification: a
  :class:`~napari_ssseg.errors.SsegError` (bad input the user can fix) as its one-paragraph
  message, anything else through napari's notification manager (which keeps the traceback
  available from the notification's "View traceback" button).
* :func:`busy` is a context manager / :class:`BusyState` a small object that disables a set of
  widgets while a task runs and shows a status text, restoring everything afterwards.
* :class:`PanelLife` knows whether a panel's Qt widget still exists, and undoes what the panel
  connected (viewer events, tasks) when it goes; every panel has one.

Nothing here creates modal dialogs, so panels that use these helpers stay testable.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from napari.utils.notifications import (
    notification_manager,
    show_error,
    show_info,
    show_warning,
)

from napari_ssseg.errors import SsegError

__all__ = [
    "BusyState",
    "PanelLife",
    "busy",
    "notify_error",
    "notify_info",
    "notify_warning",
    "qwidget",
]


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


class PanelLife:
    """Whether a panel's Qt widget still exists, and what to undo when it goes.

    Closing the panel or the viewer deletes the panel's Qt widgets while its worker may still
    run and the viewer may still emit layer events: a late callback touching a widget would
    raise "wrapped C/C++ object ... has been deleted". When the widget is destroyed this
    object cancels the panel's tasks (:meth:`on_close`), disconnects the viewer events it
    connected (:meth:`connect`) and stops its timers; callbacks wrapped by :meth:`guard` do
    nothing afterwards.

    Parameters
    ----------
    native : QWidget
        The panel's Qt widget.
    """

    def __init__(self, native: Any) -> None:
        from napari_ssseg._napari.warmup import warm_up_layers

        warm_up_layers()  # every panel: napari's first-layer costs, off the GUI thread
        self.alive = True
        self._on_close: list[Callable[[], None]] = []
        self._hooks: list[tuple[Any, Callable[..., Any]]] = []
        native.destroyed.connect(functools.partial(PanelLife._destroyed, self))

    def guard(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """``func`` that does nothing once the panel is gone."""

        @functools.wraps(func)
        def call(*args: Any, **kwargs: Any) -> Any:
            if self.alive:
                return func(*args, **kwargs)
            return None

        return call

    def connect(self, emitter: Any, func: Callable[..., Any]) -> None:
        """Connect ``func`` (guarded) to ``emitter``; disconnected when the panel goes."""
        guarded = self.guard(func)
        emitter.connect(guarded)
        self._hooks.append((emitter, guarded))

    def on_close(self, func: Callable[[], None]) -> None:
        """Call ``func`` when the panel's widget is destroyed (e.g. to cancel a task)."""
        self._on_close.append(func)

    def _destroyed(self, *_: Any) -> None:
        self.alive = False
        for emitter, func in self._hooks:
            with contextlib.suppress(Exception):
                emitter.disconnect(func)
        self._hooks = []
        for func in self._on_close:
            with contextlib.suppress(Exception):
                func()
