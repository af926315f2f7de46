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

Core, io and ml functions do not know about generators: they take the core protocol's
``progress(fraction, message)`` callback and ``should_stop()`` and raise
:class:`~napari_ssseg.core.progress.Cancelled` (:mod:`napari_ssseg.core.progress`; no Qt
types). :func:`callback_generator` is the one adapter: inside a task it runs such a function
directly in the worker thread, each callback call going to the progress bar, and after a
cancel the next callback raises ``Cancelled`` so the function stops at its next report
(``TaskCancelled`` is the same class). Only a function with no hook at all runs in a helper
thread, so that a cancel still ends the task at once.

:func:`start_task` wires a generator function to napari's ``create_worker``: a
:class:`napari.utils.progress` bar (shown in napari's activity dock), the GUI-thread callbacks
``on_returned`` / ``on_error`` / ``on_yielded`` / ``on_finished``, errors shown as
notifications by default (a :class:`~napari_ssseg.errors.SsegError` as its plain message),
and warnings issued by the task shown as warning notifications. All callbacks run on the GUI
thread; the generator must never touch widgets or layers (read what it needs before starting
the task).

Warnings
--------
``warnings.catch_warnings`` is not thread-safe before Python 3.14: it swaps the process-wide
filter list and ``showwarning`` hook, so using it in a worker (superqt's worker does, around
every job) can swallow a warning raised meanwhile on the GUI thread, or lose a filter the GUI
thread installs. Tasks started here instead run in :class:`TaskWorker`, which never touches
the filters: a process-wide ``showwarning`` router (installed once, from the thread starting
the task) sends each warning to the *sink* of the thread that raised it -- the task's
``warned`` signal, or a :func:`recorded_warnings` block -- and every other thread's warnings
to the hook that was installed before (napari's notifications, pytest's recorder...). Helper
threads started by :func:`callback_generator` inherit the sink of the thread starting them.
A warning delivered to a sink is not marked as already shown, so the next identical warning
is delivered again (what superqt's ``filterwarnings("always")`` gave), while filters installed
by the application (e.g. ``ignore``) still apply.
"""

from __future__ import annotations

import contextlib
import inspect
import queue
import sys
import threading
import time
import warnings
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils import progress as napari_progress
from qtpy.QtCore import Qt

from napari_ssseg._napari.widgets._common import notify_error, notify_warning
from napari_ssseg.core.progress import Cancelled

__all__ = [
    "MIN_POOL_THREADS",
    "TURN_PAUSE_MS",
    "TaskCancelled",
    "TaskWorker",
    "current_stop_event",
    "TaskHandle",
    "below_total",
    "callback_generator",
    "gui_steps",
    "normalise_progress",
    "recorded_warnings",
    "start_task",
]


#: Raised inside a progress callback after the user cancelled the task: core's
#: :class:`~napari_ssseg.core.progress.Cancelled` itself (one cancel exception everywhere).
TaskCancelled = Cancelled


def normalise_progress(report: dict[str, Any]) -> dict[str, Any]:
    """A copy of a generator's progress dict (module docstring), ``fraction`` turned into steps.

    ``{"fraction": f}`` without ``step`` gets ``step``/``total`` out of 1000.

    Raises
    ------
    TypeError
        ``report`` is not a dict (a task yields progress dicts or ``None`` heartbeats).
    """
    if not isinstance(report, dict):
        raise TypeError(
            f"a task yields progress dicts ({{'step', 'total', 'message'}}) or None; got "
            f"{type(report).__name__} {report!r}."
        )
    out = dict(report)
    if "fraction" in out and "step" not in out:
        fraction = min(1.0, max(0.0, float(out["fraction"])))
        out.update(step=int(round(fraction * _FRACTION_STEPS)), total=_FRACTION_STEPS)
    return out


def callback_report(fraction: float, message: str = "") -> dict[str, Any]:
    """The progress dict of one call of the core callback ``progress(fraction, message)``.

    The one callback form of core, io and ml (:mod:`napari_ssseg.core.progress`):
    ``fraction`` in [0, 1] (clipped), reported as ``step`` out of 1000, below the total
    (napari's bar reaching 100 % costs ~0.2 s of GUI time and the task's end closes it).

    Raises
    ------
    TypeError
        ``fraction`` is not a number (e.g. an old ``progress(step, total)`` caller).
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        raise TypeError(
            f"progress callbacks take (fraction in [0, 1], message); got {fraction!r}, {message!r}."
        )
    if not isinstance(message, str):
        raise TypeError(
            f"progress callbacks take (fraction in [0, 1], message: str); got {fraction!r}, "
            f"{message!r} (a progress(step, total) call?)."
        )
    f = min(1.0, max(0.0, float(fraction)))
    out: dict[str, Any] = {
        "step": min(int(round(f * _FRACTION_STEPS)), _FRACTION_STEPS - 1),
        "total": _FRACTION_STEPS,
        "fraction": f,
    }
    if message:
        out["message"] = message
    return out


_FRACTION_STEPS = 1000
#: Fewest threads of Qt's global thread pool (napari's workers run there). Qt sizes it to the
#: CPU count, so on a 2-core machine one background task (the Scribble panel preparing
#: superpixels, an edit panel's click session) left a single slot, and a user's Refine
#: waited behind it for 7-9 s with the viewer stalled (tests/napari/test_real_loop.py).
#: The tasks mostly run NumPy / SimpleITK / torch code that releases the interpreter lock or
#: wait on child processes, so a few more threads than cores cost little.
MIN_POOL_THREADS = 8


def current_stop_event() -> threading.Event | None:
    """The cancel event of the task running in this thread (set by :func:`start_task`)."""
    return getattr(_CURRENT, "stop", None)


#: Longest wait (s) for the GUI thread to take a handed-over step (:func:`gui_steps`).
HANDOVER_TIMEOUT = 120.0
#: Pause (s) of the worker between two GUI steps: a request posted at once would be handled
#: before Qt's timers and pending input (posted events come first).
TURN_PAUSE = 0.02
#: The same pause in ms, for ``QTimer.singleShot`` chains of GUI steps (a 0 ms single shot
#: is a posted event: chained ones run back to back, with no repaint or input between).
TURN_PAUSE_MS = round(TURN_PAUSE * 1000)


def gui_steps(
    request: dict[str, Any], key: str, message: str | Callable[[int], str]
) -> Generator[Any, None, bool]:
    """Worker side of handing GUI work over one step per event-loop turn.

    Yields ``{"message": message, key: request}`` and waits until the GUI thread's
    ``on_yielded`` handler has done one step and set ``request["ack"]``; again and again
    until the handler sets ``request["done"]``. Each step (e.g. adding one napari layer)
    thus runs in its own event-loop turn, and the task stays running until the last one.

    Parameters
    ----------
    request : dict
        Shared with the GUI thread; ``"ack"`` (a :class:`threading.Event`) and ``"done"``
        are added when missing.
    key : str
        The report key the GUI handler looks for.
    message : str or callable
        Progress message of each report, or ``message(step)`` (0 for the first report).

    Returns
    -------
    bool
        True once the GUI said done; False if the task was cancelled or the GUI did not
        answer within :data:`HANDOVER_TIMEOUT` seconds (e.g. the panel is gone).
    """
    request.setdefault("ack", threading.Event())
    request.setdefault("done", False)
    stop = current_stop_event()
    step = 0
    while True:
        yield {"message": message(step) if callable(message) else message, key: request}
        waited = 0.0
        while not request["ack"].wait(0.05):
            waited += 0.05
            if (stop is not None and stop.is_set()) or waited > HANDOVER_TIMEOUT:
                return False
        request["ack"].clear()
        if request["done"]:
            return True
        time.sleep(TURN_PAUSE)
        step += 1


def below_total(gen: Iterator[Any]) -> Generator[Any, None, Any]:
    """Pass on the reports of the generator ``gen`` with ``step`` kept below ``total``.

    napari's progress bar reaching 100 % costs ~0.2 s of GUI-thread time (measured by the
    Workspace panel), and :func:`start_task` closes the bar as soon as the task ends anyway,
    so a report with ``step >= total`` is passed on with ``step = total - 1``. Other reports
    (``None`` heartbeats, messages without a total) pass unchanged.

    Returns
    -------
    object
        Whatever ``gen`` returned. Closing this generator closes ``gen``.
    """
    try:
        while True:
            try:
                report = next(gen)
            except StopIteration as stop:
                return stop.value
            if isinstance(report, dict):
                step, total = report.get("step"), report.get("total")
                if step is not None and total is not None and 0 < int(total) <= int(step):
                    report = {**report, "step": int(total) - 1}
            yield report
    finally:
        close = getattr(gen, "close", None)
        if close is not None:
            close()


# ----------------------------------------------------------------------------- warnings
#: A warning sink: called, in the thread that raised the warning, with its WarningMessage.
WarningSink = Callable[[warnings.WarningMessage], None]
#: thread id -> stack of sinks (innermost last)
_SINKS: dict[int, list[WarningSink]] = {}
_SINKS_LOCK = threading.Lock()
#: the ``warnings.showwarning`` found when the router was installed
_PREVIOUS_HOOK: list[Callable[..., Any]] = []
#: per thread: inside the previous hook (guards against a hook that calls the router back)
_ROUTING = threading.local()


def _push_sink(ident: int, sink: WarningSink) -> None:
    with _SINKS_LOCK:
        _SINKS.setdefault(ident, []).append(sink)


def _remove_sink(ident: int, sink: WarningSink) -> None:
    # by thread id and identity: a generator finalised in another thread must not remove
    # that thread's sinks
    with _SINKS_LOCK:
        stack = _SINKS.get(ident, [])
        for i in range(len(stack) - 1, -1, -1):
            if stack[i] is sink:
                del stack[i]
                break
        if not stack:
            _SINKS.pop(ident, None)


def _current_sink() -> WarningSink | None:
    with _SINKS_LOCK:
        stack = _SINKS.get(threading.get_ident())
        return stack[-1] if stack else None


def _show_elsewhere(w: warnings.WarningMessage) -> None:
    """Hand a warning to the hook that was installed before the router."""
    hook = _PREVIOUS_HOOK[0] if _PREVIOUS_HOOK else warnings._showwarning_orig
    if getattr(_ROUTING, "active", False):
        # that hook called back into the router (it had saved the router as its original)
        hook = warnings._showwarning_orig
    _ROUTING.active = True
    try:
        hook(w.message, w.category, w.filename, w.lineno, w.file, w.line)
    finally:
        _ROUTING.active = False


def _forget_shown(message: Any, category: type[Warning], filename: str, lineno: int) -> None:
    """Drop the "already shown" mark the ``"default"`` action just left in the raising
    module's ``__warningregistry__`` (key ``(text, category, lineno)``), so an identical
    warning raised later reaches its sink again. No filter is touched."""
    if isinstance(message, Warning):
        text, category = str(message), type(message)
    else:
        text = str(message)
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_lineno == lineno and frame.f_code.co_filename == filename:
            registry = frame.f_globals.get("__warningregistry__")
            if isinstance(registry, dict):
                registry.pop((text, category, lineno), None)
            return
        frame = frame.f_back


def _route_warning(
    message: Any,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """The process-wide ``warnings.showwarning``: deliver to the raising thread's sink."""
    w = warnings.WarningMessage(message, category, filename, lineno, file, line)
    sink = _current_sink()
    if sink is None:
        _show_elsewhere(w)
        return
    _forget_shown(message, category, filename, lineno)
    sink(w)


def _install_router() -> None:
    """Make :func:`_route_warning` the ``showwarning`` hook (no-op when it already is).

    Re-installed at every task start: something else (``catch_warnings``, napari's
    notification hooks) may have replaced it meanwhile; the hook found is kept for the
    threads without a sink.
    """
    with _SINKS_LOCK:
        current = warnings.showwarning
        if current is not _route_warning:
            _PREVIOUS_HOOK[:] = [current]
            warnings.showwarning = _route_warning


@contextlib.contextmanager
def recorded_warnings(
    category: type[Warning] = Warning,
) -> Iterator[list[warnings.WarningMessage]]:
    """Record the warnings of ``category`` raised in this thread, thread-safely.

    A replacement for ``warnings.catch_warnings(record=True)`` in worker code: the filters
    and the process-wide hooks are left alone, so warnings of other threads (the GUI thread,
    other tasks) are neither recorded here nor lost. Helper threads started meanwhile by
    :func:`callback_generator` record into the same list. Warnings of other categories go on
    to the enclosing sink (the task's ``warned`` signal, shown as notifications) or, without
    one, to the previous ``showwarning`` hook.

    Parameters
    ----------
    category : Warning subclass
        What to record (default: every warning).

    Yields
    ------
    list of warnings.WarningMessage
        Filled as warnings are raised. Recording the same warning twice records it twice
        (as the ``"always"`` action would), unless a filter ignores it.
    """
    log: list[warnings.WarningMessage] = []
    outer = _current_sink()

    def sink(w: warnings.WarningMessage) -> None:
        if issubclass(w.category, category):
            log.append(w)
        elif outer is not None:
            outer(w)
        else:
            _show_elsewhere(w)

    ident = threading.get_ident()
    _install_router()
    _push_sink(ident, sink)
    try:
        yield log
    finally:
        _remove_sink(ident, sink)


class TaskWorker(GeneratorWorker):
    """napari's generator worker without superqt's process-wide ``catch_warnings``.

    superqt's ``WorkerBase.run`` wraps every job in ``warnings.catch_warnings()`` with
    ``filterwarnings("always")`` and a replaced ``showwarning``: process-wide state swapped
    from the worker thread (see the module docstring). This ``run`` is the same minus that:
    warnings raised in the worker thread (and in its :func:`callback_generator` helpers) reach
    the ``warned`` signal through the warnings router.
    """

    def run(self) -> None:
        """Run the job (called by the thread pool); emits the worker's signals."""
        self.started.emit()
        self._running = True
        ident = threading.get_ident()
        sink = self._relay_warning  # one bound-method object: removed by identity below
        _push_sink(ident, sink)
        try:
            try:
                result = self.work()
            finally:
                _remove_sink(ident, sink)
            if isinstance(result, RuntimeError):
                # superqt's work() returns a RuntimeError instead of raising it, taking it for
                # a deleted worker; but jobs raise RuntimeErrors too (torch does): report it
                # as an error, unless the worker's signals are really gone
                try:
                    self.errored.emit(result)
                except RuntimeError:
                    warnings.warn(
                        f"RuntimeError in aborted thread: {result}", RuntimeWarning, stacklevel=2
                    )
                    return
            elif isinstance(result, Exception):
                raise result
            elif not self.abort_requested:
                self.returned.emit(result)
        except Exception as exc:  # noqa: BLE001 - relayed to the GUI thread
            self.errored.emit(exc)
        self._running = False
        self.finished.emit()
        self._finished.emit(self)

    def _relay_warning(self, w: warnings.WarningMessage) -> None:
        self.warned.emit((w.message, w.category, w.filename, w.lineno, w.file, w.line))


def callback_generator(
    func: Callable[..., Any],
    *args: Any,
    progress_kwarg: str = "progress",
    stop_kwarg: str = "",
    heartbeat: float = 0.2,
    **kwargs: Any,
) -> Generator[dict[str, Any] | None, None, Any]:
    """Run a core function ``func(*args, progress=callback, **kwargs)`` as part of a task.

    The one adapter from the core protocol (:mod:`napari_ssseg.core.progress`:
    ``progress(fraction, message)``, ``should_stop()``, ``Cancelled``) to napari's workers.

    * **Inside a task** (:func:`start_task`) and with a hook to report through
      (``progress_kwarg`` or ``stop_kwarg``), ``func`` runs **directly in the worker
      thread**: each callback call goes straight to the task's progress bar and
      ``on_yielded`` (the worker's ``yielded`` signal), and after a cancel the next callback
      raises :class:`~napari_ssseg.core.progress.Cancelled` (``should_stop()`` returns True),
      which the task reports as a cancel. No helper thread.
    * Otherwise (a function with no hook at all, or this generator driven outside a task,
      e.g. by a test) ``func`` runs in a helper thread and its reports are yielded, with
      ``None`` heartbeats every ``heartbeat`` seconds: for a function with no hook this is
      the only way a cancel takes effect at once (the task ends at the next heartbeat; the
      function's result is dropped when it returns).

    Parameters
    ----------
    func : callable
        A function taking the core progress callback as keyword ``progress_kwarg``.
    progress_kwarg : str
        Name of that keyword; ``""`` to pass no callback.
    stop_kwarg : str
        If given (e.g. ``"should_stop"``), also pass a zero-argument callable under this
        name that returns True once the task is cancelled.
    heartbeat : float
        Helper-thread path: seconds between heartbeats while ``func`` reports nothing.

    Yields
    ------
    dict or None
        Helper-thread path only: progress dicts (:func:`callback_report`) or heartbeats.

    Returns
    -------
    object
        Whatever ``func`` returned. An exception raised by ``func`` is re-raised here.
    """
    emit = getattr(_CURRENT, "emit", None)
    if emit is not None and (progress_kwarg or stop_kwarg):
        return (yield from _run_in_worker(func, args, kwargs, progress_kwarg, stop_kwarg, emit))
    return (yield from _run_in_helper(func, args, kwargs, progress_kwarg, stop_kwarg, heartbeat))


def _run_in_worker(
    func: Callable[..., Any],
    args: tuple,
    kwargs: dict[str, Any],
    progress_kwarg: str,
    stop_kwarg: str,
    emit: Callable[[dict[str, Any]], None],
) -> Generator[dict[str, Any] | None, None, Any]:
    """:func:`callback_generator` in the task's own thread (yields nothing)."""
    task_stop = current_stop_event()

    def cancelled() -> bool:
        return task_stop is not None and task_stop.is_set()

    def callback(fraction: float, message: str = "") -> None:
        if cancelled():
            raise Cancelled("cancelled by the user")
        emit(callback_report(fraction, message))

    if progress_kwarg:
        kwargs[progress_kwarg] = callback
    if stop_kwarg:
        kwargs[stop_kwarg] = cancelled
    return func(*args, **kwargs)
    yield  # a generator, so that callers ``yield from`` both paths alike  # noqa: B901


def _run_in_helper(
    func: Callable[..., Any],
    args: tuple,
    kwargs: dict[str, Any],
    progress_kwarg: str,
    stop_kwarg: str,
    heartbeat: float,
) -> Generator[dict[str, Any] | None, None, Any]:
    """:func:`callback_generator` in a helper thread, its reports and heartbeats yielded."""
    reports: queue.Queue = queue.Queue()
    stop = threading.Event()
    task_stop = current_stop_event()
    outcome: dict[str, Any] = {}

    def cancelled() -> bool:
        return stop.is_set() or (task_stop is not None and task_stop.is_set())

    def callback(fraction: float, message: str = "") -> None:
        if cancelled():
            raise Cancelled("cancelled by the user")
        reports.put(callback_report(fraction, message))

    def target() -> None:
        ident = threading.get_ident()
        if sink is not None:
            _push_sink(ident, sink)
        try:
            if progress_kwarg:
                kwargs[progress_kwarg] = callback
            if stop_kwarg:
                kwargs[stop_kwarg] = cancelled
            outcome["result"] = func(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the generator
            outcome["error"] = exc
        finally:
            if sink is not None:
                _remove_sink(ident, sink)
            reports.put(_DONE)

    sink = _current_sink()  # the helper's warnings go where this thread's go
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

    holder: dict[str, Any] = {}

    def emit(report: dict[str, Any]) -> None:  # a core function's report, from this thread
        holder["worker"].yielded.emit(report)

    def run_with_stop_event(*a: Any, **kw: Any) -> Generator[Any, None, Any]:
        _CURRENT.stop, _CURRENT.emit = stop_event, emit
        try:
            return (yield from gen_func(*a, **kw))
        finally:
            _CURRENT.stop = _CURRENT.emit = None

    run_with_stop_event.__name__ = getattr(gen_func, "__name__", "task")
    _install_router()
    worker = create_worker(
        run_with_stop_event,
        *args,
        _start_thread=False,
        _ignore_errors=True,
        _worker_class=TaskWorker,
        **kwargs,
    )
    holder["worker"] = worker
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
        if stop_event.is_set() and isinstance(exc, Cancelled):
            _aborted()
            return
        (on_error if on_error is not None else notify_error)(exc)

    worker.errored.connect(_errored)
    # warnings raised in the task (e.g. an oblique image, a resampled modality) become
    # notifications (TaskWorker relays them without touching the filters); napari's own
    # relay is not connected in napari 0.9 (its mixin's __init__ does not run), and napari
    # deduplicates if it ever is.
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
    _ensure_pool_threads()
    if start:
        worker.start()
    return handle


def _ensure_pool_threads(minimum: int = MIN_POOL_THREADS) -> None:
    """Let Qt's global thread pool run at least ``minimum`` workers at once."""
    from qtpy.QtCore import QThreadPool

    pool = QThreadPool.globalInstance()
    if pool.maxThreadCount() < minimum:
        pool.setMaxThreadCount(int(minimum))
