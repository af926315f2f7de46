"""Worker helpers: progress protocol, callback adapter, cancel, errors as notifications."""

from __future__ import annotations

import threading
import time
import warnings

import pytest

from napari_ssseg._napari.workers import (
    TaskCancelled,
    callback_generator,
    callback_report,
    normalise_progress,
    start_task,
)
from napari_ssseg.errors import InputError


@pytest.mark.parametrize(
    ("report", "expected"),
    [
        ({"step": 2, "total": 5, "message": "m"}, {"step": 2, "total": 5, "message": "m"}),
        ({"fraction": 0.25}, {"step": 250, "total": 1000, "fraction": 0.25}),
        ({"message": "hello"}, {"message": "hello"}),
    ],
)
def test_normalise_progress(report, expected):
    assert normalise_progress(report) == expected


def test_normalise_progress_refuses_what_is_not_a_report():
    with pytest.raises(TypeError, match="progress dicts"):
        normalise_progress((3, 10))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((0.25, "reading"), {"step": 250, "total": 1000, "fraction": 0.25, "message": "reading"}),
        ((0,), {"step": 0, "total": 1000, "fraction": 0.0}),
        # clipped, and kept below the total (the task's end closes the bar)
        ((1.5,), {"step": 999, "total": 1000, "fraction": 1.0}),
    ],
)
def test_callback_report_is_the_core_form(args, expected):
    assert callback_report(*args) == expected


@pytest.mark.parametrize("args", [(3, 10), ("hello",), (True, "m"), (0.5, 3)])
def test_callback_report_refuses_other_forms(args):
    """One callback form (core.progress): progress(fraction, message)."""
    with pytest.raises(TypeError, match=r"fraction in \[0, 1\], message"):
        callback_report(*args)


def _work(n, progress=None, fail=False):
    for i in range(n):
        progress(i / n, f"step {i}")
    if fail:
        raise InputError("bad input file x.nii.gz")
    return n * 10


def test_callback_generator_yields_reports_and_returns():
    gen = callback_generator(_work, 3)
    reports = []
    try:
        while True:
            item = next(gen)
            if item is not None:
                reports.append(item)
    except StopIteration as stop:
        result = stop.value
    assert result == 30
    assert [r["message"] for r in reports] == ["step 0", "step 1", "step 2"]


def test_callback_generator_reraises():
    with pytest.raises(InputError, match="x.nii.gz"):
        for _ in callback_generator(_work, 2, fail=True):
            pass


def test_callback_generator_close_stops_function():
    stopped = threading.Event()

    def slow(progress=None):
        try:
            for i in range(1000):
                progress(i / 1000, "")
                time.sleep(0.005)
        except TaskCancelled:
            stopped.set()
            raise

    gen = callback_generator(slow)
    next(gen)
    gen.close()
    assert stopped.wait(2.0), "the function did not see the cancel"


def _job(n, delay=0.0, fail=False):
    for i in range(n):
        time.sleep(delay)
        yield {"step": i + 1, "total": n, "message": f"{i + 1}/{n}"}
    if fail:
        raise InputError("the FLAIR file is truncated")
    return "done"


@pytest.mark.gui
def test_start_task_reports_and_returns(qtbot):
    seen, returned = [], []
    handle = start_task(_job, 4, desc="test", on_yielded=seen.append, on_returned=returned.append)
    qtbot.waitUntil(lambda: not handle.running, timeout=5000)
    assert returned == ["done"]
    assert [r["step"] for r in seen] == [1, 2, 3, 4]
    assert handle.pbar.total == 4 and handle.pbar.n == 4


@pytest.mark.gui
def test_start_task_error_is_a_notification(qtbot, monkeypatch):
    shown = []
    monkeypatch.setattr("napari_ssseg._napari.widgets._common.show_error", shown.append)
    handle = start_task(_job, 2, fail=True)
    qtbot.waitUntil(lambda: not handle.running, timeout=5000)
    assert shown == ["the FLAIR file is truncated"]


@pytest.mark.gui
def test_start_task_cancel(qtbot):
    aborted, returned = [], []
    handle = start_task(
        _job, 1000, delay=0.01, on_aborted=lambda: aborted.append(1), on_returned=returned.append
    )
    qtbot.waitUntil(lambda: "last" in handle.state, timeout=5000)
    handle.cancel()
    qtbot.waitUntil(lambda: not handle.running, timeout=5000)
    assert aborted == [1] and returned == []
    assert handle.state["last"]["step"] < 1000


@pytest.mark.gui
def test_start_task_needs_generator(qtbot):
    with pytest.raises(TypeError, match="generator"):
        start_task(lambda: 1)


@pytest.mark.gui
def test_cancel_closes_generator_and_clears_stop_event(qtbot):
    from napari_ssseg._napari.workers import current_stop_event

    closed, events = [], []

    def job():
        events.append(current_stop_event())
        try:
            while True:
                time.sleep(0.01)
                yield {"message": "working"}
        finally:
            closed.append(current_stop_event())

    handle = start_task(job, show_progress=False)
    qtbot.waitUntil(lambda: "last" in handle.state, timeout=5000)
    handle.cancel()
    qtbot.waitUntil(lambda: not handle.running, timeout=5000)
    assert events == [handle.stop_event] and handle.stop_event.is_set()
    qtbot.waitUntil(lambda: bool(closed), timeout=2000)  # finally ran at the cancel, not at GC


# ----------------------------------------------------------------------------- warnings
# warnings.catch_warnings is not thread-safe on Python < 3.14 (it swaps process-wide state);
# tasks must neither lose what the GUI thread does with warnings nor capture its warnings.


def _warn(text):
    warnings.warn(text, UserWarning, stacklevel=1)


def _waiting_job(entered, go):
    """Job that warns, then waits (between two yields) for the test's go-ahead."""
    _warn("raised in the task's thread")
    entered.set()
    yield {"message": "waiting"}
    assert go.wait(5)
    for _ in callback_generator(_warn, "raised in a helper thread", progress_kwarg=""):
        pass
    return "ok"


@pytest.mark.gui
def test_task_leaves_gui_thread_warnings_alone(qtbot, monkeypatch, recwarn):
    """Fails with superqt's worker (catch_warnings around every job) or a job using it:
    a filter added on the GUI thread while a task runs is lost when the task ends, and a
    warning raised on the GUI thread meanwhile lands in the task's notifications."""
    relayed: list[str] = []
    monkeypatch.setattr(
        "napari_ssseg._napari.workers.notify_warning", lambda w: relayed.append(str(w[0]))
    )
    entered, go = threading.Event(), threading.Event()
    handle = start_task(_waiting_job, entered, go, show_progress=False)
    assert entered.wait(5)
    warnings.filterwarnings("ignore", message="added on the GUI thread during a task")
    _warn("raised on the GUI thread during a task")
    go.set()
    qtbot.waitUntil(lambda: not handle.running, timeout=5000)
    assert any(
        f[0] == "ignore" and f[1] is not None and f[1].pattern.startswith("added on the GUI")
        for f in warnings.filters
    ), "the GUI thread's filter was lost when the task ended"
    ours = [str(w.message) for w in recwarn]
    assert "raised on the GUI thread during a task" in ours
    assert "raised on the GUI thread during a task" not in relayed
    # the task's own warnings (its thread and its helper thread) became notifications
    qtbot.waitUntil(lambda: len(relayed) >= 2, timeout=2000)
    assert relayed == ["raised in the task's thread", "raised in a helper thread"]
    assert not any("raised in" in m for m in ours)


def test_recorded_warnings_are_per_thread_and_repeatable(recwarn):
    from napari_ssseg._napari.workers import recorded_warnings

    warnings.simplefilter("default", UserWarning)  # Python's default: once per location
    warnings.filterwarnings("ignore", message="ignored by a filter")
    before = list(warnings.filters)
    recording, go = threading.Event(), threading.Event()
    out: dict[str, list[str]] = {}

    def other() -> None:
        with recorded_warnings(UserWarning) as log:
            recording.set()
            go.wait(5)
            for _ in range(2):  # the same line twice: recorded twice ("always")
                _warn("raised in the recording thread")
            _warn("ignored by a filter")
            for _ in callback_generator(_warn, "raised in its helper", progress_kwarg=""):
                pass
        out["log"] = [str(w.message) for w in log]

    thread = threading.Thread(target=other)
    thread.start()
    assert recording.wait(5)
    _warn("raised in the main thread meanwhile")
    go.set()
    thread.join(10)
    assert out["log"] == [
        "raised in the recording thread",
        "raised in the recording thread",
        "raised in its helper",
    ]
    assert [str(w.message) for w in recwarn] == ["raised in the main thread meanwhile"]
    assert warnings.filters == before  # the recording changed no filter


def test_router_survives_a_hook_that_calls_it_back(monkeypatch, recwarn):
    from napari_ssseg._napari import workers

    workers._install_router()
    router = warnings.showwarning
    seen: list[str] = []

    def chaining(*args):  # a hook that saved the router as "the original" and calls it
        seen.append(str(args[0]))
        router(*args)

    monkeypatch.setattr(warnings, "showwarning", chaining)
    workers._install_router()  # the router's previous hook is now `chaining`
    _warn("shown once, no endless loop")
    assert seen == ["shown once, no endless loop"]
    assert [str(w.message) for w in recwarn] == ["shown once, no endless loop"]


def test_below_total_keeps_step_under_total():
    from napari_ssseg._napari.workers import below_total

    def gen():
        yield {"step": 0, "total": 4, "message": "a"}
        yield None
        yield {"step": 4, "total": 4, "message": "b"}
        yield {"step": 7, "total": 0}
        yield {"message": "c"}
        return "result"

    wrapped = below_total(gen())
    reports = []
    with pytest.raises(StopIteration) as stop:
        while True:
            reports.append(next(wrapped))
    assert stop.value.value == "result"
    assert reports == [
        {"step": 0, "total": 4, "message": "a"},
        None,
        {"step": 3, "total": 4, "message": "b"},
        {"step": 7, "total": 0},
        {"message": "c"},
    ]


@pytest.mark.gui
def test_runtime_error_in_a_job_is_an_error_not_a_hang(qtbot):
    errors, finished = [], []

    def job():
        yield {"message": "about to fail"}
        raise RuntimeError("CUDA out of memory (torch raises RuntimeErrors)")

    handle = start_task(
        job, on_error=errors.append, on_finished=lambda: finished.append(1), show_progress=False
    )
    qtbot.waitUntil(lambda: not handle.running, timeout=5000)
    assert finished == [1]
    assert len(errors) == 1 and "out of memory" in str(errors[0])


def _blocked(started: list, release: threading.Event):
    started.append(threading.get_ident())
    yield None
    release.wait(10)
    return "released"


@pytest.mark.gui
def test_tasks_do_not_queue_behind_each_other_on_few_cores(qtbot):
    """Qt's global pool has as many threads as cores (2 on CI): a long background task
    (e.g. the Scribble panel's preparation) made a Refine click wait for a free slot. Three
    tasks blocked at once must all be running."""
    from qtpy.QtCore import QThreadPool

    from napari_ssseg._napari.workers import MIN_POOL_THREADS

    pool = QThreadPool.globalInstance()
    before = pool.maxThreadCount()
    pool.setMaxThreadCount(2)  # what a 2-core machine gets
    release = threading.Event()
    started: list[int] = []
    handles = []
    try:
        handles = [start_task(_blocked, started, release, show_progress=False) for _ in range(3)]
        qtbot.waitUntil(lambda: len(started) == 3, timeout=5000)
        assert len(set(started)) == 3  # three threads at once
        assert pool.maxThreadCount() >= MIN_POOL_THREADS >= 3
    finally:
        release.set()
        for h in handles:
            qtbot.waitUntil(lambda h=h: not h.running, timeout=10_000)
        pool.setMaxThreadCount(max(before, MIN_POOL_THREADS))


@pytest.mark.gui
def test_a_core_function_runs_in_the_worker_thread_itself(qtbot):
    """Inside a task, callback_generator runs a function with a progress hook in the
    worker's own thread (no helper thread): its reports reach on_yielded and the bar, and
    after a cancel its next report raises core's Cancelled, which ends the task as a cancel."""
    from napari_ssseg.core.progress import Cancelled

    threads: dict[str, int] = {}
    stopped: list[BaseException] = []

    def core_function(n, progress=None, should_stop=None):
        threads["function"] = threading.get_ident()
        try:
            for i in range(n):
                time.sleep(0.01)
                progress(i / n, f"item {i}")
        except Cancelled as exc:
            stopped.append(exc)
            raise
        return n

    def job(n):
        threads["job"] = threading.get_ident()
        return (yield from callback_generator(core_function, n, stop_kwarg="should_stop"))

    seen, returned = [], []
    handle = start_task(job, 5, on_yielded=seen.append, on_returned=returned.append)
    qtbot.waitUntil(lambda: not handle.running, timeout=5000)
    assert returned == [5]
    assert threads["function"] == threads["job"] != threading.get_ident()
    assert [r["message"] for r in seen] == [f"item {i}" for i in range(5)]
    assert [r["step"] for r in seen] == [0, 200, 400, 600, 800] and handle.pbar.n == 800

    aborted: list[int] = []
    handle = start_task(job, 100_000, on_aborted=lambda: aborted.append(1))
    qtbot.waitUntil(lambda: "last" in handle.state, timeout=5000)
    handle.cancel()
    qtbot.waitUntil(lambda: not handle.running, timeout=5000)
    assert aborted == [1] and len(stopped) == 1
