"""Named leases with fencing tokens: the lock service's state (no network here).

* A lease is granted to one holder for a time to live; the holder renews it; a lease
  not renewed in time lapses and the next waiter gets it.
* Every grant to a new holder takes a fencing token strictly greater than every token
  ever granted for that name, also across restarts: the newest token is written to disk
  (fsync) *before* the grant is returned.
* Waiters are served in arrival order.
* Expiry uses this process's monotonic clock only. A holder must count its TTL from
  *before* it sent the request, so it gives up no later than the table expires it;
  safety never depends on two machines' clocks agreeing, and fencing tokens catch a
  holder that was paused past its lease anyway.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spark_ext.exceptions import BadArgumentError, LeaseNotHeldError
from spark_ext.store.files import write_json_atomic

logger = logging.getLogger(__name__)

MIN_TTL_MS = 100
MAX_TTL_MS = 24 * 3600 * 1000


@dataclass
class Lease:
    holder: str
    token: int
    ttl_ms: int
    expires: float  # monotonic seconds


@dataclass
class Grant:
    """The answer to an acquire: granted or not, and who holds it."""

    acquired: bool
    token: int | None
    holder: str | None
    expires_in_ms: int | None

    def to_json(self) -> dict[str, Any]:
        return {"acquired": self.acquired, "token": self.token, "holder": self.holder, "expires_in_ms": self.expires_in_ms}


def _check(name: Any, holder: Any, ttl_ms: Any = MIN_TTL_MS) -> None:
    if not isinstance(name, str) or not name or len(name) > 200:
        raise BadArgumentError(f"a lease name must be a non-empty string, got {name!r}")
    if not isinstance(holder, str) or not holder or len(holder) > 200:
        raise BadArgumentError(f"a lease holder must be a non-empty string, got {holder!r}")
    if not isinstance(ttl_ms, int) or isinstance(ttl_ms, bool) or not MIN_TTL_MS <= ttl_ms <= MAX_TTL_MS:
        raise BadArgumentError(f"ttl_ms must be an integer in {MIN_TTL_MS}..{MAX_TTL_MS}, got {ttl_ms!r}")


class LeaseTable:
    """All leases of one lock service. Thread-safe.

    Args:
        path: file that keeps the newest token per name (None: memory only, tests).
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._cond = threading.Condition()
        self._leases: dict[str, Lease] = {}
        self._last_token: dict[str, int] = {}
        self._waiters: dict[str, deque[tuple[str, int]]] = {}
        self._ticket = 0
        if self.path is not None and self.path.exists():
            data = json.loads(self.path.read_text())
            if isinstance(data.get("tokens"), dict):  # {"tokens": {...}, "held": {...}}
                self._last_token = {k: int(v) for k, v in data["tokens"].items()}
                self._restore(data.get("held") or {})
            else:  # the first format: {name: newest token}
                self._last_token = {k: int(v) for k, v in data.items()}

    def _restore(self, held: dict[str, Any]) -> None:
        """Leases held when the service stopped stay held by the same holder for a full TTL
        from now: the holder may still be acting on it (its own clock says so until at most
        one TTL after its last renewal, which came before this start), so nobody else may be
        granted it before then. The holder just renews it as if nothing happened."""
        now = time.monotonic()
        for name, h in held.items():
            token, ttl_ms = int(h["token"]), int(h["ttl_ms"])
            if token == self._last_token.get(name):
                self._leases[name] = Lease(str(h["holder"]), token, ttl_ms, now + ttl_ms / 1000)
                logger.info("lease %s of %s (token %d) kept across the restart for %d ms", name, h["holder"], token, ttl_ms)

    def _persist(self) -> None:
        """Newest tokens and the held leases, on disk (fsync) before anyone hears of a change."""
        if self.path is None:
            return
        held = {n: {"holder": x.holder, "token": x.token, "ttl_ms": x.ttl_ms} for n, x in self._leases.items()}
        write_json_atomic(self.path, {"tokens": self._last_token, "held": held})

    def _live(self, name: str, now: float) -> Lease | None:
        lease = self._leases.get(name)
        if lease is not None and lease.expires <= now:
            logger.info("lease %s of %s (token %d) lapsed", name, lease.holder, lease.token)
            del self._leases[name]
            self._cond.notify_all()
            return None
        return lease

    def acquire(self, name: str, holder: str, ttl_ms: int, wait_ms: int = 0) -> Grant:
        """Take the lease, waiting up to ``wait_ms`` behind earlier waiters.

        Acquiring a lease one already holds renews it and keeps its token.
        O(waiters) per wake-up.
        """
        _check(name, holder, ttl_ms)
        if not isinstance(wait_ms, int) or wait_ms < 0:
            raise BadArgumentError(f"wait_ms must be a non-negative integer, got {wait_ms!r}")
        deadline = time.monotonic() + wait_ms / 1000
        with self._cond:
            self._ticket += 1
            me = (holder, self._ticket)
            q = self._waiters.setdefault(name, deque())
            q.append(me)
            try:
                while True:
                    now = time.monotonic()
                    lease = self._live(name, now)
                    if lease is not None and lease.holder == holder:
                        lease.expires = now + ttl_ms / 1000
                        if ttl_ms != lease.ttl_ms:
                            lease.ttl_ms = ttl_ms
                            self._persist()
                        return Grant(True, lease.token, holder, ttl_ms)
                    if lease is None and q[0] == me:
                        token = self._last_token.get(name, 0) + 1
                        self._last_token[name] = token
                        self._leases[name] = Lease(holder, token, ttl_ms, now + ttl_ms / 1000)
                        self._persist()  # the token (and the lease) is on disk before anyone learns it
                        logger.info("lease %s granted to %s with token %d", name, holder, token)
                        return Grant(True, token, holder, ttl_ms)
                    remaining = deadline - now
                    if remaining <= 0:
                        return Grant(False, None, lease.holder if lease else None,
                                     int((lease.expires - now) * 1000) if lease else None)
                    wake = remaining if lease is None else min(remaining, max(lease.expires - now, 0.001))
                    self._cond.wait(wake)
            finally:
                q.remove(me)
                if not q:
                    self._waiters.pop(name, None)
                self._cond.notify_all()

    def renew(self, name: str, holder: str, token: int, ttl_ms: int | None = None) -> int:
        """Extend a held lease; returns the new time to live in ms. O(1).

        Raises:
            LeaseNotHeldError: the lease lapsed or belongs to someone else now.
        """
        with self._cond:
            lease = self._live(name, time.monotonic())
            if lease is None or lease.holder != holder or lease.token != token:
                raise LeaseNotHeldError(
                    f"lease {name!r} is not held by {holder!r} with token {token}"
                    + (f" (held by {lease.holder!r}, token {lease.token})" if lease else " (it lapsed)"),
                    lease=name, holder=holder, token=token,
                )
            ttl = ttl_ms if ttl_ms is not None else lease.ttl_ms
            _check(name, holder, ttl)
            lease.expires = time.monotonic() + ttl / 1000
            if ttl != lease.ttl_ms:
                lease.ttl_ms = ttl
                self._persist()  # a restart must keep the lease for this long
            return ttl

    def release(self, name: str, holder: str, token: int) -> bool:
        """Give the lease up; the next waiter gets it at once. O(1)."""
        with self._cond:
            lease = self._live(name, time.monotonic())
            if lease is None or lease.holder != holder or lease.token != token:
                return False
            del self._leases[name]
            self._persist()  # else a restart would keep the released lease for a TTL
            self._cond.notify_all()
            logger.info("lease %s released by %s (token %d)", name, holder, token)
            return True

    def tokens(self) -> dict[str, int]:
        """Newest token ever granted per lease name. O(names)."""
        with self._cond:
            return dict(self._last_token)

    def status(self, name: str | None = None) -> list[dict[str, Any]]:
        """Holders, tokens and waiters of one lease or all. O(leases)."""
        with self._cond:
            now = time.monotonic()
            names = [name] if name is not None else sorted(set(self._last_token) | set(self._leases))
            out = []
            for n in names:
                lease = self._live(n, now)
                out.append({
                    "name": n, "held": lease is not None,
                    "holder": lease.holder if lease else None,
                    "token": lease.token if lease else None,
                    "expires_in_ms": int((lease.expires - now) * 1000) if lease else None,
                    "last_token": self._last_token.get(n, 0),
                    "waiters": [h for h, _ in self._waiters.get(n, ())],
                })
            return out
