"""Run long jobs off the GUI thread with a progress bar and a cancel hook.

Protocol
--------
Long-running work is written as a **generator function** that yields *progress dicts* and
``return``\\ s its result::

    def job(case, ...):
        for i in range(n):
            ...                                   # one step of work
            yield {"step": i + 1, "total": n, "message": f"slice {i + 1}/{n}"}
        return result

Keys of a progress dict (all optional):

``step`` : int
    Steps done so far (0 <= step <= total).
``total`` : int or None
    Number of steps, or ``None`` if unknown (the bar then only shows activity).
``message`` : str
    Short text shown next to the bar.

Any other key is passed through untouched to ``on_yielded`` (e.g. a preview array). A
generator may also yield ``None`` (a heartbeat: lets a cancel request take effect without
reporting progress). Yield at least about once a second so the bar moves and a cancel
(:meth:`TaskHandle.cancel`, i.e. ``worker.quit()``) takes effect quickly: napari stops a
generator worker only *between* yields.

Core and io functions do not know about generators: they take a plain ``progress`` callback
(no Qt types). :func:`callback_generator` adapts such a function to the protocol: it runs the
function in a helper thread, turns each callback call into a yielded progress dict, and makes
the callback raise :class:`TaskCancelled` after a cancel so the function stops at its next
progress report.

:func:`start_task` wires a generator function to napari's ``create_worker``: a
:class:`napari.utils.progress` bar (shown in napari's activity dock), the GUI-thread callbacks
``on_returned`` / ``on_error`` / ``on_yielded`` / ``on_finished``, errors shown as
notifications by default (a :class:`~napari_ssseg.errors.SsegError` as its plain message),
and warnings issued by the task shown as warning notifications. All callbacks run on the GUI
thread; the generator must never touch widgets or layers (read what it needs before starting
the task).
"""

from __future__ import annotations

import contextlib
import inspect
import queue
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils import progress as napari_progress
from qtpy.QtCore import Qt

from napari_ssseg._napari.widgets._common import notify_error, notify_warning
from napari_ssseg.core.progress import Cancelled

__all__ = [
    "TaskCancelled",
    "current_stop_event",
    "TaskHandle",
    "callback_generator",
    "normalise_progress",
    "start_task",
]


class TaskCancelled(Exception):
    """Raised inside a progress callback after the user cancelled the task."""


def normalise_progress(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Turn the arguments of a progress callback into a progress dict.

    Accepts the core convention ``cb(fraction, message)`` (``0 <= fraction <= 1``, see
    :mod:`napari_ssseg.core.progress`; reported as ``step``/``total`` out of 1000 plus
    ``fraction``), ``cb({"step": .., "total": .., "message": ..})``, ``cb(step, total)``,
    ``cb(step, total, message)``, ``cb(fraction)``, ``cb(message)`` and keyword forms.
    """
    if len(args) == 1 and isinstance(args[0], dict):
        out = dict(args[0])
        out.update(kwargs)
        return out
    out: dict[str, Any] = {}
    if len(args) == 1 and isinstance(args[0], str):
        out["message"] = args[0]
    elif (len(args) == 1 and isinstance(args[0], float)) or (
        len(args) == 2 and isinstance(args[1], str)
    ):
        fraction = min(1.0, max(0.0, float(args[0])))
        out.update(
            step=int(round(fraction * _FRACTION_STEPS)), total=_FRACTION_STEPS, fraction=fraction
        )
        if len(args) == 2:
            out["message"] = args[1]
    else:
        for key, value in zip(("step", "total", "message"), args):
            out[key] = value
    if "fraction" in kwargs and "step" not in kwargs:
        fraction = min(1.0, max(0.0, float(kwargs["fraction"])))
        out.update(step=int(round(fraction * _FRACTION_STEPS)), total=_FRACTION_STEPS)
    out.update(kwargs)
    return out


_FRACTION_STEPS = 1000


def current_stop_event() -> threading.Event | None:
    """The cancel event of the task running in this thread (set by :func:`start_task`)."""
    return getattr(_CURRENT, "stop", None)


def callback_generator(
    func: Callable[..., Any],
    *args: Any,
    progress_kwarg: str = "progress",
    stop_kwarg: str = "",
    heartbeat: float = 0.2,
    **kwargs: Any,
) -> Generator[dict[str, Any] | None, None, Any]:
    """Run ``func(*args, progress=callback, **kwargs)`` and yield its progress reports.

    Parameters
    ----------
    func : callable
        A function taking a progress callback as keyword ``progress_kwarg`` (the core
        convention ``progress(fraction, message)`` and the other forms of
        :func:`normalise_progress` are understood).
    progress_kwarg : str
        Name of that keyword; ``""`` to pass no callback (then only heartbeats are yielded).
    stop_kwarg : str
        If given (e.g. ``"should_stop"``, see :mod:`napari_ssseg.core.progress`), also pass a
        zero-argument callable under this name that returns True once the task is cancelled.
    heartbeat : float
        Seconds between heartbeats (``None`` yields) while ``func`` reports nothing.

    Yields
    ------
    dict or None
        Progress dicts (see the module docstring) or ``None`` heartbeats.

    Returns
    -------
    object
        Whatever ``func`` returned. An exception raised by ``func`` is re-raised here.

    Notes
    -----
    Cancelling -- :meth:`TaskHandle.cancel` of the task running this generator, or closing
    the generator -- makes the next progress callback raise :class:`TaskCancelled` (and
    ``should_stop()`` return True), so ``func`` stops at its next report.
    """
    reports: queue.Queue = queue.Queue()
    stop = threading.Event()
    task_stop = current_stop_event()
    outcome: dict[str, Any] = {}

    def cancelled() -> bool:
        return stop.is_set() or (task_stop is not None and task_stop.is_set())

    def callback(*cb_args: Any, **cb_kwargs: Any) -> None:
        if cancelled():
            raise TaskCancelled("cancelled by the user")
        reports.put(normalise_progress(*cb_args, **cb_kwargs))

    def target() -> None:
        try:
            if progress_kwarg:
                kwargs[progress_kwarg] = callback
            if stop_kwarg:
                kwargs[stop_kwarg] = cancelled
            outcome["result"] = func(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the generator
            outcome["error"] = exc
        finally:
            reports.put(_DONE)

    thread = threading.Thread(target=target, name=f"ssseg-{getattr(func, '__name__', 'task')}")
    thread.daemon = True
    thread.start()
    try:
        while True:
            try:
                item = reports.get(timeout=heartbeat)
            except queue.Empty:
                yield None
                continue
            if item is _DONE:
                break
            yield item
    finally:
        # reached on normal exit and on GeneratorExit: stop the function at its next report
        stop.set()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("result")


_CURRENT = threading.local()
_DONE = object()


@dataclass
class TaskHandle:
    """A running task: its napari worker and progress bar.

    Attributes
    ----------
    worker : GeneratorWorker
        The napari worker (signals ``yielded``, ``returned``, ``errored``, ``finished``,
        ``aborted``).
    pbar : napari.utils.progress or None
        The progress bar, closed when the worker finishes.
    """

    worker: GeneratorWorker
    pbar: Any = None
    state: dict[str, Any] = field(default_factory=dict)
    stop_event: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        """Ask the task to stop: ``worker.quit()`` (takes effect at the next yield) and set
        :attr:`stop_event`, which functions run through :func:`callback_generator` see at
        their next progress report."""
        self.stop_event.set()
        self.worker.quit()

    @property
    def running(self) -> bool:
        """True until the worker has finished (returned, errored or aborted)."""
        return not self.state.get("finished", False)


def start_task(
    gen_func: Callable[..., Iterator[Any]],
    *args: Any,
    desc: str = "napari-ssseg",
    on_returned: Callable[[Any], None] | None = None,
    on_error: Callable[[BaseException], None] | None = None,
    on_yielded: Callable[[dict[str, Any]], None] | None = None,
    on_finished: Callable[[], None] | None = None,
    on_aborted: Callable[[], None] | None = None,
    show_progress: bool = True,
    start: bool = True,
    **kwargs: Any,
) -> TaskHandle:
    """Run ``gen_func(*args, **kwargs)`` in a napari worker thread.

    Parameters
    ----------
    gen_func : generator function
        Yields progress dicts (module docstring) and returns the result.
    desc : str
        Progress bar title.
    on_returned, on_error, on_yielded, on_finished, on_aborted : callable, optional
        GUI-thread callbacks. ``on_error`` defaults to :func:`notify_error` (a napari
        notification with the error's message). ``on_finished`` runs after every outcome
        (returned, error or cancel).
    show_progress : bool
        Show a :class:`napari.utils.progress` bar.
    start : bool
        Start the worker now (set False to connect more signals first, then call
        ``handle.worker.start()``).

    Returns
    -------
    TaskHandle
    """
    if not inspect.isgeneratorfunction(gen_func):
        raise TypeError(f"start_task needs a generator function; {gen_func!r} is not one.")
    stop_event = threading.Event()

    def run_with_stop_event(*a: Any, **kw: Any) -> Generator[Any, None, Any]:
        _CURRENT.stop = stop_event
        try:
            return (yield from gen_func(*a, **kw))
        finally:
            _CURRENT.stop = None

    run_with_stop_event.__name__ = getattr(gen_func, "__name__", "task")
    worker = create_worker(
        run_with_stop_event, *args, _start_thread=False, _ignore_errors=True, **kwargs
    )
    # napari relays worker errors to its notification manager (traceback notification);
    # we show our own (a SsegError as its plain message), so drop the relay to avoid two.
    with contextlib.suppress(TypeError, RuntimeError):
        worker.errored.disconnect(worker._relay_error)
    pbar = napari_progress(total=0, desc=desc) if show_progress else None
    handle = TaskHandle(worker=worker, pbar=pbar, stop_event=stop_event)

    def _yielded(report: Any) -> None:
        # Updating the progress bar can process pending Qt events (re-entrancy), so the
        # callback runs first and reports arriving after the end are dropped.
        if report is None or handle.state.get("finished"):
            return
        report = normalise_progress(report)
        handle.state["last"] = report
        if on_yielded is not None:
            on_yielded(report)
        if pbar is None:
            return
        total, step, message = report.get("total"), report.get("step"), report.get("message")
        updates = []
        if total is not None and int(total) > 0:
            updates.append(lambda: setattr(pbar, "total", int(total)))
        if step is not None:
            updates.append(lambda: setattr(pbar, "n", int(step)))
        if message:
            updates.append(lambda: pbar.set_description(f"{desc}: {message}"))
        updates.append(pbar.refresh)
        for update in updates:
            if handle.state.get("finished"):  # closed by a re-entrant _finished
                return
            update()

    def _finished() -> None:
        handle.state["finished"] = True
        if pbar is not None:
            pbar.close()
        if on_finished is not None:
            on_finished()

    worker.yielded.connect(_yielded)
    if on_returned is not None:
        worker.returned.connect(on_returned)

    def _aborted() -> None:
        if handle.state.get("aborted"):
            return
        handle.state["aborted"] = True
        if on_aborted is not None:
            on_aborted()

    def _errored(exc: BaseException) -> None:
        # a function stopped by the cancel (TaskCancelled, core's Cancelled) is a cancel
        if stop_event.is_set() and isinstance(exc, (TaskCancelled, Cancelled)):
            _aborted()
            return
        (on_error if on_error is not None else notify_error)(exc)

    worker.errored.connect(_errored)
    # warnings raised in the task (e.g. an oblique image, a resampled modality) become
    # notifications; napari's own relay is not connected in napari 0.9 (its mixin's __init__
    # does not run), and napari deduplicates if it ever is.
    worker.warned.connect(notify_warning)
    worker.aborted.connect(_aborted)

    def _close_generator() -> None:
        # Runs in the worker thread right after napari's loop stopped iterating (direct
        # connection): closing the generator runs its ``finally`` blocks now (stopping a
        # callback_generator's function, clearing the thread's stop event) instead of at
        # garbage collection.
        gen = getattr(worker, "_gen", None)
        if gen is not None:
            with contextlib.suppress(Exception):
                gen.close()

    with contextlib.suppress(Exception):
        worker.aborted.connect(_close_generator, Qt.ConnectionType.DirectConnection)
    worker.finished.connect(_finished)
    if start:
        worker.start()
    return handle
