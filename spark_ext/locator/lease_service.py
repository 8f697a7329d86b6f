"""The lock service's requests (hosted by the locator): LEASE_ACQUIRE/RENEW/RELEASE/STATUS."""

from __future__ import annotations

from typing import Any

from spark_ext.exceptions import BadArgumentError
from spark_ext.ha.leases import LeaseTable
from spark_ext.server.tcp import FrameServer, Session
from spark_ext.wire.frames import Frame
from spark_ext.wire.kinds import Kind

#: Longest a LEASE_ACQUIRE may block its connection.
MAX_WAIT_MS = 60_000


def _int(m: dict[str, Any], name: str, default: Any = ...) -> Any:
    v = m.get(name)
    if v is None:
        v = default
    if v is ...:
        raise BadArgumentError(f"request field {name!r} is missing")
    if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
        raise BadArgumentError(f"request field {name!r} must be an integer, got {v!r}")
    return v


def _str(m: dict[str, Any], name: str) -> str:
    v = m.get(name)
    if not isinstance(v, str) or not v:
        raise BadArgumentError(f"request field {name!r} must be a non-empty string, got {v!r}")
    return v


class LeaseService:
    """Serves a :class:`LeaseTable` (see ``docs/protocol.md``, "Leases")."""

    def __init__(self, table: LeaseTable) -> None:
        self.table = table
        #: Called with (group, token) after each grant: the embedded server fences its
        #: own store at once, without waiting for the new leader's first write.
        self.on_grant: Any = None

    def register(self, server: FrameServer) -> None:
        server.register(Kind.LEASE_ACQUIRE, self.acquire)
        server.register(Kind.LEASE_RENEW, self.renew)
        server.register(Kind.LEASE_RELEASE, self.release)
        server.register(Kind.LEASE_STATUS, self.status)

    def acquire(self, f: Frame, s: Session) -> Frame:
        m = f.metadata
        wait = min(_int(m, "wait_ms", 0), MAX_WAIT_MS)
        g = self.table.acquire(_str(m, "name"), _str(m, "holder"), _int(m, "ttl_ms"), wait)
        if g.acquired and g.token is not None and self.on_grant is not None:
            self.on_grant(m["name"], g.token)
        return Frame(f.kind, f.request_id, g.to_json())

    def renew(self, f: Frame, s: Session) -> Frame:
        m = f.metadata
        ttl = self.table.renew(_str(m, "name"), _str(m, "holder"), _int(m, "token"), _int(m, "ttl_ms", None))
        return Frame(f.kind, f.request_id, {"expires_in_ms": ttl})

    def release(self, f: Frame, s: Session) -> Frame:
        m = f.metadata
        return Frame(f.kind, f.request_id, {"released": self.table.release(_str(m, "name"), _str(m, "holder"), _int(m, "token"))})

    def status(self, f: Frame, s: Session) -> Frame:
        name = f.metadata.get("name")
        return Frame(f.kind, f.request_id, {"leases": self.table.status(name if isinstance(name, str) else None)})
