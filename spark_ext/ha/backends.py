"""Lease backends behind one interface: the locator's lock service, or ZooKeeper.

Both give a fencing token that grows strictly with every grant of a name and never goes
back (the locator persists it; ZooKeeper's sequential nodes never reuse a number).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from spark_ext.client.connection import ConnectionPool
from spark_ext.exceptions import LeaseNotHeldError, SparkExtError
from spark_ext.wire.kinds import Kind

logger = logging.getLogger(__name__)


@dataclass
class Held:
    """A granted lease: its token, and until when (this process's monotonic clock) the
    holder may act on it without a successful renewal."""

    name: str
    holder: str
    token: int
    valid_until: float


class LeaseBackend(Protocol):
    def acquire(self, name: str, holder: str, ttl_s: float, wait_s: float) -> Held | None: ...

    def renew(self, held: Held, ttl_s: float) -> Held: ...

    def release(self, held: Held) -> None: ...

    def status(self, name: str | None = None) -> list[dict[str, Any]]: ...

    def watch_loss(self, held: Held, on_lost: Callable[[str], None]) -> None: ...

    def close(self) -> None: ...


class LocatorLeases:
    """Leases from a locator (or the embedded server). Renewal is the holder's job."""

    def __init__(self, address: tuple[str, int], secret: bytes | None = None) -> None:
        self.pool = ConnectionPool(address[0], address[1], secret, timeout=90.0, max_idle=4)

    def acquire(self, name: str, holder: str, ttl_s: float, wait_s: float) -> Held | None:
        """Block up to ``wait_s`` (in slices, so a dead locator is noticed) for the lease."""
        deadline = time.monotonic() + wait_s
        while True:
            sent = time.monotonic()  # the TTL counts from before the request: conservative
            slice_ms = int(max(0.0, min(deadline - sent, 30.0)) * 1000)
            r = self.pool.request(Kind.LEASE_ACQUIRE, {"name": name, "holder": holder, "ttl_ms": int(ttl_s * 1000), "wait_ms": slice_ms})
            m = r.metadata
            if m.get("acquired"):
                held = Held(name, holder, int(m["token"]), sent + ttl_s)
                if time.monotonic() - sent > ttl_s / 10:
                    # The grant came after a wait: counted from the send it could already be
                    # over. A renewal sent now starts a fresh TTL that is just as safe.
                    try:
                        held = self.renew(held, ttl_s)
                    except LeaseNotHeldError:
                        continue  # it lapsed already (we were paused): contend again
                return held
            if time.monotonic() >= deadline:
                return None

    def renew(self, held: Held, ttl_s: float) -> Held:
        sent = time.monotonic()
        self.pool.request(Kind.LEASE_RENEW, {"name": held.name, "holder": held.holder, "token": held.token, "ttl_ms": int(ttl_s * 1000)})
        return Held(held.name, held.holder, held.token, sent + ttl_s)

    def release(self, held: Held) -> None:
        self.pool.request(Kind.LEASE_RELEASE, {"name": held.name, "holder": held.holder, "token": held.token})

    def status(self, name: str | None = None) -> list[dict[str, Any]]:
        return list(self.pool.request(Kind.LEASE_STATUS, {"name": name}).metadata["leases"])

    def watch_loss(self, held: Held, on_lost: Callable[[str], None]) -> None:
        pass  # loss shows up as a failed renewal

    def close(self) -> None:
        self.pool.close()


class ZooKeeperLeases:
    """Leases on a ZooKeeper ensemble (kazoo, the ``zookeeper`` extra).

    Recipe: each contender creates an ephemeral sequential node under
    ``<root>/<name>/``; the lowest one holds the lease, the others wait on their
    predecessor (so waiters are served in order). The token is the node's sequence
    number. The lease lives as long as the ZooKeeper session (its timeout is the TTL);
    when the session is suspended or lost the holder must stop at once.
    """

    def __init__(self, hosts: str, root: str = "/spark-ext/leases", ttl_s: float = 10.0) -> None:
        try:
            from kazoo.client import KazooClient
        except ImportError as e:  # pragma: no cover - depends on the extra
            raise SparkExtError("the ZooKeeper backend needs kazoo: pip install 'spark-ext[zookeeper]'") from e
        self.root = root.rstrip("/")
        self.zk = KazooClient(hosts=hosts, timeout=ttl_s)
        self.zk.start(timeout=30)
        self._nodes: dict[str, str] = {}

    def acquire(self, name: str, holder: str, ttl_s: float, wait_s: float) -> Held | None:
        base = f"{self.root}/{name}"
        self.zk.ensure_path(base)
        node = self._nodes.get(name)
        if node is None or not self.zk.exists(node):
            node = self.zk.create(f"{base}/lease-", holder.encode(), ephemeral=True, sequence=True)
            self._nodes[name] = node
        me = node.rsplit("/", 1)[1]
        deadline = time.monotonic() + wait_s
        while True:
            sent = time.monotonic()  # our session was alive when this read was served
            kids = sorted(k for k in self.zk.get_children(base) if k.startswith("lease-"))
            if me not in kids:
                raise LeaseNotHeldError(f"lease {name!r}: our ZooKeeper node vanished (session lost)", lease=name)
            if kids[0] == me:
                return Held(name, holder, int(me.split("-")[1]), sent + ttl_s)
            pred = kids[kids.index(me) - 1]
            gone = threading.Event()
            if self.zk.exists(f"{base}/{pred}", watch=lambda ev: gone.set()) is None:
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.zk.delete(node)
                self._nodes.pop(name, None)
                return None
            gone.wait(min(remaining, 1.0))

    def renew(self, held: Held, ttl_s: float) -> Held:
        node = self._nodes.get(held.name)
        sent = time.monotonic()  # count from before the check, not after (a pause in between)
        if node is None or self.zk.state != "CONNECTED" or not self.zk.exists(node):
            raise LeaseNotHeldError(f"lease {held.name!r}: ZooKeeper session is not connected", lease=held.name)
        return Held(held.name, held.holder, held.token, sent + ttl_s)

    def release(self, held: Held) -> None:
        from kazoo.exceptions import NoNodeError

        node = self._nodes.get(held.name)
        if node is not None:
            try:
                self.zk.delete(node)
            except NoNodeError:  # the session expired: the node went with it
                pass
            except Exception as e:
                # Not connected right now: forgetting the node would orphan it (it lives on
                # with the session, blocking everyone, us included). Keep it: the next
                # acquire or release of this name deals with it.
                logger.warning("could not delete lease node %s (%s); keeping it", node, e)
                return
            self._nodes.pop(held.name, None)

    def status(self, name: str | None = None) -> list[dict[str, Any]]:
        names = [name] if name else (self.zk.get_children(self.root) if self.zk.exists(self.root) else [])
        out = []
        for n in names:
            base = f"{self.root}/{n}"
            kids = sorted(k for k in self.zk.get_children(base) if k.startswith("lease-")) if self.zk.exists(base) else []
            holders = [self.zk.get(f"{base}/{k}")[0].decode() for k in kids]
            out.append({"name": n, "held": bool(kids), "holder": holders[0] if holders else None,
                        "token": int(kids[0].split("-")[1]) if kids else None, "waiters": holders[1:]})
        return out

    def watch_loss(self, held: Held, on_lost: Callable[[str], None]) -> None:
        def listener(state: str) -> None:
            if state in ("SUSPENDED", "LOST"):
                on_lost(f"ZooKeeper session {state.lower()}")
        self.zk.add_listener(listener)

    def close(self) -> None:
        self.zk.stop()
        self.zk.close()
