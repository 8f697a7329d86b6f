"""Shared fixtures for the test suite (kept small on purpose)."""

from __future__ import annotations

from typing import Iterator

import pytest

from spark_ext.store import Store


@pytest.fixture
def store() -> Iterator[Store]:
    """An in-memory store without background upkeep (deterministic)."""
    s = Store(background=False)
    try:
        yield s
    finally:
        s.close()
