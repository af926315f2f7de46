"""The event file of a training run: ``RUN_DIR/events.jsonl``, one JSON object per line.

:class:`EventLog` appends the events (rank 0 only) and echoes a one-line description of
each; :func:`read_events` reads them back. The event kinds and their fields are described
in :mod:`napari_ssseg.ml.train` and ``docs/training.md``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["EventLog", "read_events", "clean"]


class EventLog:
    """Append-only JSON-lines event file (one flushed line per event; rank 0 only)."""

    def __init__(self, path: str | os.PathLike | None, echo: Callable[[str], None] | None = None):
        self.path = None if path is None else Path(path)
        self.echo = echo

    def write(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append ``{"event": event, "time": unix time, **fields}`` and return it."""
        rec = {"event": event, "time": round(time.time(), 3), **fields}
        if self.path is not None:
            line = json.dumps(rec, default=_jsonable, allow_nan=False)
            try:
                with open(self.path, "a", encoding="utf-8") as fh:
                    fh.write(line + "\n")
                    fh.flush()
                    with contextlib.suppress(OSError):
                        os.fsync(fh.fileno())
            except OSError as exc:  # e.g. disk full: training goes on, the event is lost
                if event == "error":
                    return rec
                msg = f"Could not write the {event!r} event to {self.path}: {exc}"
                warnings.warn(msg, stacklevel=2)
        if self.echo is not None and event != "error":  # errors are raised to the caller
            self.echo(_describe(rec))
        return rec


def _jsonable(v: Any) -> Any:
    if isinstance(v, (np.generic,)):
        return v.item()
    if isinstance(v, Path):
        return str(v)
    return str(v)


def clean(d: dict[str, Any]) -> dict[str, Any]:
    """Replace NaN/inf by None so that events stay strict JSON (nested dicts too)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out[k] = clean(v)
        elif isinstance(v, float) and not math.isfinite(v):
            out[k] = None
        else:
            out[k] = v
    return out


def _describe(rec: dict[str, Any]) -> str:
    ev = rec["event"]
    if ev == "epoch":
        losses = " ".join(f"{k} {v:.4f}" for k, v in rec["losses"].items() if v is not None)
        return f"epoch {rec['epoch']}/{rec['epochs']}: {losses} lr {rec['lr']:.2e}"
    if ev == "validation":
        return "validation: " + " ".join(
            f"{k} {v:.3f}" if v is not None else f"{k} -" for k, v in rec["metrics"].items()
        )
    if ev == "checkpoint":
        return f"checkpoint {rec['kind']}: {rec['path']}"
    if ev == "strategy":
        return f"{rec.get('strategy')}: {rec.get('message', '')}".rstrip(": ")
    if ev in ("error", "skipped"):
        return f"{ev}: {rec.get('message') or rec.get('reason')}"
    return ev + ("" if ev != "start" else f": {rec.get('strategy')} on {rec.get('device')}")


def read_events(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read ``events.jsonl`` (a torn last line, from a kill mid-write, is ignored)."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out
