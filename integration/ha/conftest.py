"""Fixtures and process helpers for the driver-HA tests.

* ``ha_cluster`` (shared) and ``own_cluster`` (per module): one locator and three store
  servers (real processes, always torn down), from :mod:`integration.cluster`.
* ``zk_single`` / ``zk_ensemble``: ZooKeeper from pyspark's jars (see :mod:`.zk`),
  killed at the end whatever happened.
* every driver or contender process a test started is killed after the test.
"""

from __future__ import annotations

from typing import Iterator

import pytest

from integration.cluster import Cluster
from integration.ha.driver import Child, kill_children, start_driver  # noqa: F401  (re-exported for the tests)
from integration.ha.zk import ZooKeeperEnsemble, ZooKeeperNode


@pytest.fixture(autouse=True)
def _kill_children_after_test() -> Iterator[None]:
    try:
        yield
    finally:
        kill_children()


def _cluster(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp(name))
    try:
        yield c.start()
    finally:
        kill_children()
        c.stop()


@pytest.fixture(scope="session")
def ha_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A locator and three store servers on loopback, shared by the HA tests (each test
    uses its own leader group and tables)."""
    yield from _cluster(tmp_path_factory, "ha")


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A cluster of its own, for a module that restarts the locator."""
    yield from _cluster(tmp_path_factory, "ha-own")


@pytest.fixture(scope="module")
def zk_single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZooKeeperNode]:
    z = ZooKeeperNode.single(tmp_path_factory.mktemp("zk1"))
    try:
        yield z.start()
    finally:
        z.stop()


@pytest.fixture
def zk_ensemble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZooKeeperEnsemble]:
    e = ZooKeeperEnsemble(tmp_path_factory.mktemp("zk3"), 3)
    try:
        yield e.start()
    finally:
        e.stop()
