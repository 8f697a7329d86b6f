"""Fixtures for the integration tests: real locator and store-server processes on loopback.

Clusters are module-scoped (each test module gets its own, so a test that kills or
restarts servers cannot disturb another module) and always torn down by their
finalizer, also after a failure. Processes must be started from the test's main thread
(children are tied to the starting thread with ``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from integration.cluster import Cluster, EmbeddedHome


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    # A SIGTERM'd test run would skip every finalizer and atexit hook, leaving servers
    # behind; as KeyboardInterrupt, pytest tears the fixtures down first.
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)


@pytest.fixture(scope="module")
def make_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Cluster]]:
    """A factory of started clusters, all stopped when the module's tests are done."""
    made: list[Cluster] = []

    def make(name: str = "cluster", **kw: Any) -> Cluster:
        c = Cluster(tmp_path_factory.mktemp(name), **kw)
        made.append(c)
        return c.start()

    try:
        yield make
    finally:
        for c in made:
            c.stop()


@pytest.fixture(scope="module")
def cluster(make_cluster: Callable[..., Cluster]) -> Cluster:
    """One locator and three store servers (s0, s1, s2) with a shared secret."""
    return make_cluster("cluster")


@pytest.fixture(scope="module")
def embedded_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedHome]:
    """A private SPARK_EXT_HOME; every embedded server started in it is killed at the end."""
    h = EmbeddedHome(Path(tmp_path_factory.mktemp("embedded")))
    try:
        yield h
    finally:
        h.kill_all()
