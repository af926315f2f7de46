"""Shared tiny fixtures for core tests (fast: each phantom takes well under a second).

Fixtures return fresh copies, so a test may modify them freely.
"""

from __future__ import annotations

import copy

import pytest
from phantoms import master

from napari_ssseg.core.phantom import Phantom


@pytest.fixture(scope="session")
def _tiny_phantom_master() -> Phantom:
    return master("tiny")


@pytest.fixture(scope="session")
def _small_phantom_master() -> Phantom:
    return master("small")


@pytest.fixture
def tiny_phantom(_tiny_phantom_master: Phantom) -> Phantom:
    """A 32 x 40 x 40 (1 mm) phantom, seed 0, with all three tumour classes."""
    return copy.deepcopy(_tiny_phantom_master)


@pytest.fixture
def small_phantom(_small_phantom_master: Phantom) -> Phantom:
    """A 48 x 64 x 64 (1 mm) phantom, seed 1."""
    return copy.deepcopy(_small_phantom_master)


@pytest.fixture
def tiny_case(_tiny_phantom_master: Phantom):
    """:class:`~napari_ssseg.core.case.Case` of the tiny phantom (name ``tiny``)."""
    return _tiny_phantom_master.to_case(name="tiny")
