"""Worker helpers: progress protocol, callback adapter, cancel, errors as notifications."""

from __future__ import annotations

import threading
import time

import pytest

from napari_ssseg._napari.workers import (
    TaskCancelled,
    callback_generator,
    normalise_progress,
    start_task,
)
from napari_ssseg.errors import InputError


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (({"step": 2, "total": 5, "message": "m"},), {"step": 2, "total": 5, "message": "m"}),
        ((0.25, "reading"), {"step": 250, "total": 1000, "fraction": 0.25, "message": "reading"}),
        ((3, 10), {"step": 3, "total": 10}),
        ((3, 10, "x"), {"step": 3, "total": 10, "message": "x"}),
        (("hello",), {"message": "hello"}),
        ((1.5,), {"step": 1000, "total": 1000, "fraction": 1.0}),
    ],
)
def test_normalise_progress(args, expected):
    assert normalise_progress(*args) == expected


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
