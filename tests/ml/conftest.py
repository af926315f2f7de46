"""Fixtures for the ml tests: tiny random-weight checkpoints and tiny phantoms."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from tiny_checkpoints import TINY_UNET, make_tiny_checkpoint  # noqa: E402


@pytest.fixture
def make_ckpt():
    """Factory fixture: ``make_ckpt(path, **options)`` writes a tiny checkpoint."""
    return make_tiny_checkpoint


@pytest.fixture
def tiny_config():
    return dict(TINY_UNET)


@pytest.fixture
def tiny_ckpt(tmp_path):
    return make_tiny_checkpoint(tmp_path / "tiny.pt")


@pytest.fixture(scope="session")
def tiny_phantom():
    """tests/phantoms.py ``tiny_ml`` (shared with the other suite of ml and commands)."""
    from phantoms import master

    return master("tiny_ml")


@pytest.fixture
def tiny_case(tiny_phantom):
    return tiny_phantom.to_case(name="tiny")


@pytest.fixture
def rng():
    return np.random.default_rng(0)
