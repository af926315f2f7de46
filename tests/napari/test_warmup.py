"""napari's one-time first-layer costs are paid in a background thread when a panel opens."""

from __future__ import annotations

import threading

import pytest

from napari_ssseg._napari import warmup

pytestmark = pytest.mark.gui


def test_warm_up_runs_once_in_a_daemon_thread(monkeypatch):
    monkeypatch.setattr(warmup, "_STARTED", threading.Event())
    ran: list[str] = []
    real = warmup._warm
    monkeypatch.setattr(
        warmup, "_warm", lambda: (ran.append(threading.current_thread().name), real())
    )
    thread = warmup.warm_up_layers()
    assert thread is not None and thread.daemon
    thread.join(60)
    assert not thread.is_alive()
    assert ran == ["ssseg-napari-warm-up"]  # not the caller's (GUI) thread
    assert warmup.warm_up_layers() is None  # once per process


def test_a_failing_warm_up_is_harmless(monkeypatch):
    monkeypatch.setattr(warmup, "_STARTED", threading.Event())

    def broken():
        raise RuntimeError("no napari here")

    monkeypatch.setattr(warmup, "_warm", broken)
    thread = warmup.warm_up_layers()
    thread.join(10)
    assert not thread.is_alive()


def test_opening_a_panel_starts_the_warm_up(make_napari_viewer, monkeypatch):
    monkeypatch.setattr(warmup, "_STARTED", threading.Event())
    viewer = make_napari_viewer()
    viewer.window.add_plugin_dock_widget("napari-ssseg", "Loader")
    assert warmup._STARTED.is_set()


def test_warm_up_builds_vispy_dash_patterns(monkeypatch):
    """The first labels layer's polygon outline needs vispy's dash atlas (60-90 ms of NumPy
    on the GUI thread when cold): the warm-up builds it."""
    from vispy.visuals.line import dash_atlas

    dash_atlas._make_pattern.cache_clear()
    monkeypatch.setattr(warmup, "_STARTED", threading.Event())
    warmup.warm_up_layers().join(60)
    assert dash_atlas._make_pattern.cache_info().currsize > 0
