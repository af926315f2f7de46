"""Fixtures for the CLI tests that need a tiny checkpoint or phantom (the ml tests' ones)."""

from __future__ import annotations

import pytest
from tiny_checkpoints import make_tiny_checkpoint


@pytest.fixture
def tiny_ckpt(tmp_path):
    pytest.importorskip("torch")
    return make_tiny_checkpoint(tmp_path / "tiny.pt")


@pytest.fixture(scope="session")
def tiny_phantom():
    """tests/phantoms.py ``tiny_ml`` (shared with the other suite of ml and commands)."""
    from phantoms import master

    return master("tiny_ml")
