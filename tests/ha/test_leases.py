"""Lease table and fencing registry: grants, tokens, expiry, order of waiters, restarts."""

from __future__ import annotations

import threading
import time

import pytest

from spark_ext.exceptions import BadArgumentError, FencedError, LeaseNotHeldError
from spark_ext.ha.leases import LeaseTable
from spark_ext.server.fencing import FenceRegistry


def test_grant_renew_release_and_tokens_grow() -> None:
    t = LeaseTable()
    g = t.acquire("g", "a", 1000)
    assert g.acquired and g.token == 1
    assert not t.acquire("g", "b", 1000).acquired
    assert t.acquire("g", "a", 1000).token == 1  # re-acquire by the holder renews
    assert t.renew("g", "a", 1, 2000) == 2000
    assert t.release("g", "a", 1)
    g2 = t.acquire("g", "b", 1000)
    assert g2.acquired and g2.token == 2


def test_lapsed_lease_goes_to_the_next_and_old_holder_cannot_renew() -> None:
    t = LeaseTable()
    t.acquire("g", "a", 100)
    time.sleep(0.15)
    g = t.acquire("g", "b", 1000)
    assert g.acquired and g.token == 2
    with pytest.raises(LeaseNotHeldError, match="held by 'b'"):
        t.renew("g", "a", 1)
    assert not t.release("g", "a", 1)


def test_waiters_are_served_in_order() -> None:
    t = LeaseTable()
    first = t.acquire("g", "holder", 1000)
    order: list[str] = []

    def wait(name: str) -> None:
        g = t.acquire("g", name, 1000, wait_ms=5000)
        assert g.acquired
        order.append(name)
        t.release("g", name, g.token)

    threads = []
    for name in ("w1", "w2", "w3"):
        th = threading.Thread(target=wait, args=(name,))
        th.start()
        threads.append(th)
        while name not in t.status("g")[0]["waiters"]:
            time.sleep(0.005)
    assert t.status("g")[0]["waiters"] == ["w1", "w2", "w3"]
    t.release("g", "holder", first.token)
    for th in threads:
        th.join(10)
    assert order == ["w1", "w2", "w3"]
    assert t.status("g")[0]["last_token"] == 4


def test_timed_acquire_gives_up_and_leaves_no_waiter() -> None:
    t = LeaseTable()
    t.acquire("g", "a", 5000)
    g = t.acquire("g", "b", 1000, wait_ms=50)
    assert not g.acquired and g.holder == "a"
    assert t.status("g")[0]["waiters"] == []


def test_tokens_survive_a_restart(tmp_path) -> None:
    path = tmp_path / "leases.json"
    t = LeaseTable(path)
    for holder in ("a", "b", "c"):
        g = t.acquire("g", holder, 1000)
        t.release("g", holder, g.token)
    t2 = LeaseTable(path)  # a restarted lock service
    assert t2.acquire("g", "d", 1000).token == 4


@pytest.mark.parametrize("args", [("", "a", 1000), ("g", "", 1000), ("g", "a", 5), ("g", "a", "1000")])
def test_bad_arguments_are_named(args) -> None:
    with pytest.raises(BadArgumentError):
        LeaseTable().acquire(*args)


def test_fencing_refuses_older_tokens_and_remembers_across_restarts(tmp_path) -> None:
    path = tmp_path / "fences.json"
    f = FenceRegistry(path)
    f.check(None)  # unfenced requests pass
    f.check({"group": "g", "token": 3})
    f.check({"group": "g", "token": 3})
    f.check({"group": "other", "token": 1})
    with pytest.raises(FencedError, match="token 2 is older than token 3"):
        f.check({"group": "g", "token": 2})
    f.check({"group": "g", "token": 5})
    f2 = FenceRegistry(path)
    assert f2.newest("g") == 5
    with pytest.raises(FencedError):
        f2.check({"group": "g", "token": 4})
    with pytest.raises(BadArgumentError):
        f2.check({"group": "g", "token": "7"})


def test_guard_makes_check_and_write_atomic_per_group() -> None:
    """A write that passed with token 1 and is still running holds the group: token 2
    waits for it, and once token 2 has written, token 1 is refused."""
    f = FenceRegistry()
    order: list[str] = []
    inside = threading.Event()
    release = threading.Event()

    def old_leader() -> None:
        with f.guard({"group": "g", "token": 1}):
            inside.set()
            release.wait(5)
            order.append("write-1")

    def new_leader() -> None:
        with f.guard({"group": "g", "token": 2}):
            order.append("write-2")

    a = threading.Thread(target=old_leader)
    a.start()
    inside.wait(5)
    b = threading.Thread(target=new_leader)
    b.start()
    time.sleep(0.05)
    assert order == []  # the newer write waits for the older one in flight
    release.set()
    a.join(5)
    b.join(5)
    assert order == ["write-1", "write-2"]
    with pytest.raises(FencedError):
        with f.guard({"group": "g", "token": 1}):
            order.append("late-1")
    assert order == ["write-1", "write-2"]
    with f.guard(None):  # unfenced requests pass and are not serialized
        pass


def test_observed_grants_fence_old_leaders_before_they_write() -> None:
    t = LeaseTable()
    f = FenceRegistry()
    t.acquire("g", "a", 100)
    time.sleep(0.15)
    t.acquire("g", "b", 1000)
    for group, token in t.tokens().items():  # what a heartbeat carries to each server
        f.observe(group, token)
    with pytest.raises(FencedError):
        f.check({"group": "g", "token": 1})
    f.check({"group": "g", "token": 2})
