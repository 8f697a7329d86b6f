"""Driver leadership: hold a group's lease, renew it, stop writing the moment it is lost.

    with Leadership("orders", ttl=3.0) as lead:      # blocks while another driver leads
        client.fence = lead.fence                    # every write carries the token
        ...

A background thread renews the lease every ttl/3. The holder counts its lease as valid
until ``ttl`` after it *sent* the last successful renewal, so it gives up before the
lock service can grant the lease to anyone else, whatever the clocks say. When the lease
is lost the ``lost`` event is set, callbacks run, and :meth:`check` raises FencedError;
the store servers refuse the old token anyway once the next leader has written.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Any, Callable

from spark_ext.exceptions import BadArgumentError, FencedError, LeaseNotHeldError
from spark_ext.ha.backends import Held, LeaseBackend, LocatorLeases

logger = logging.getLogger(__name__)


def default_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def _retryable() -> tuple[type[BaseException], ...]:
    """Errors of a lease acquisition that only mean "not now": try again."""
    errs: tuple[type[BaseException], ...] = (ConnectionError, LeaseNotHeldError)
    try:
        from kazoo.exceptions import ConnectionLoss, SessionExpiredError
    except ImportError:  # pragma: no cover - the zookeeper extra is optional
        return errs
    return errs + (ConnectionLoss, SessionExpiredError)


class Leadership:
    """Leadership of ``group`` while the context is open.

    Args:
        group: leader group name (one leader per group).
        ttl: lease time to live in seconds (a dead leader is replaced about this fast).
        backend: a lease backend; default the embedded server's lock service.
        holder: this contender's name (default host:pid:random).
        wait: seconds to wait for leadership (None: forever).
    """

    def __init__(self, group: str, ttl: float = 3.0, backend: LeaseBackend | None = None,
                 holder: str | None = None, wait: float | None = None) -> None:
        if not isinstance(group, str) or not group:
            raise BadArgumentError(f"a leader group needs a name, got {group!r}")
        if not isinstance(ttl, (int, float)) or not 0.3 <= ttl <= 3600:
            raise BadArgumentError(f"ttl must be between 0.3 and 3600 seconds, got {ttl!r}")
        self.group = group
        self.ttl = float(ttl)
        self.holder = holder or default_holder()
        self.wait = wait
        self._backend = backend
        self._own_backend = backend is None
        self.held: Held | None = None
        self.lost = threading.Event()
        self.lost_reason: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._callbacks: list[Callable[[str], None]] = []

    @property
    def backend(self) -> LeaseBackend:
        if self._backend is None:
            from spark_ext.client.embedded import ensure_embedded

            address, secret = ensure_embedded()
            self._backend = LocatorLeases(address, secret)
        return self._backend

    @property
    def token(self) -> int:
        """The fencing token of this leadership."""
        if self.held is None:
            raise FencedError(f"not the leader of group {self.group!r}", group=self.group)
        return self.held.token

    @property
    def fence(self) -> dict[str, Any]:
        """What every write of the leader carries: ``{group, token}``."""
        return {"group": self.group, "token": self.token}

    @property
    def is_leader(self) -> bool:
        return self.held is not None and not self.lost.is_set() and time.monotonic() < self.held.valid_until

    def on_lost(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(reason)`` when leadership is lost."""
        self._callbacks.append(callback)

    def check(self) -> None:
        """Raise FencedError unless this process still leads. O(1)."""
        if not self.is_leader:
            raise FencedError(
                f"this driver is no longer the leader of group {self.group!r} (its token "
                f"{self.held.token if self.held else None} may not write): {self.lost_reason or 'lease expired'}",
                group=self.group, token=self.held.token if self.held else None,
            )

    def acquire(self) -> "Leadership":
        """Block until this process leads the group (or ``wait`` runs out)."""
        start = time.monotonic()
        logged = False
        attempts = 0
        while True:
            step = 5.0 if self.wait is None else max(0.0, self.wait - (time.monotonic() - start))
            # The first attempt does not wait, so a standby says at once that it stands by.
            step = 0.0 if attempts == 0 else min(step, 5.0)
            attempts += 1
            try:
                held = self.backend.acquire(self.group, self.holder, self.ttl, step)
            except _retryable() as e:
                # The lock service is restarting or unreachable (or our ZooKeeper session
                # expired): a standby keeps standing by rather than dying.
                logger.warning("waiting for the lease of group %s: %s: %s", self.group, type(e).__name__, e)
                time.sleep(min(0.5, self.ttl / 3))
                held = None
            if held is not None:
                break
            if not logged:
                logger.info("standing by: another driver leads group %s", self.group)
                logged = True
            if self.wait is not None and time.monotonic() - start >= self.wait:
                raise FencedError(f"did not become leader of group {self.group!r} within {self.wait}s", group=self.group)
        self.held = held
        self.lost.clear()
        logger.info("leader of group %s with token %d (%s)", self.group, held.token, self.holder)
        self.backend.watch_loss(held, self._lose)
        self._thread = threading.Thread(target=self._renew_loop, name=f"lease-{self.group}", daemon=True)
        self._thread.start()
        return self

    def _lose(self, reason: str) -> None:
        if self.lost.is_set():
            return
        self.lost_reason = reason
        self.lost.set()
        logger.error("lost leadership of group %s: %s", self.group, reason)
        for cb in self._callbacks:
            try:
                cb(reason)
            except Exception:
                logger.exception("leadership-lost callback failed")

    def _renew_loop(self) -> None:
        interval = self.ttl / 3
        while not self._stop.wait(interval):
            held = self.held
            if held is None or self.lost.is_set():
                return
            if time.monotonic() >= held.valid_until:
                self._lose("lease expired before it could be renewed")
                return
            try:
                self.held = self.backend.renew(held, self.ttl)
            except LeaseNotHeldError as e:
                self._lose(str(e))  # someone else holds it now: stop at once
                return
            except Exception as e:
                if time.monotonic() >= held.valid_until:
                    self._lose(f"renewal failed: {e}")
                    return
                logger.warning("lease renewal of %s failed (will retry): %s", self.group, e)

    def release(self) -> None:
        """Stop renewing and give the lease up."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.ttl)
        if self.held is not None and not self.lost.is_set():
            try:
                self.backend.release(self.held)
            except Exception as e:
                logger.warning("releasing lease %s failed: %s", self.group, e)
        self.held = None
        if self._own_backend and self._backend is not None:
            self._backend.close()

    def __enter__(self) -> "Leadership":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
