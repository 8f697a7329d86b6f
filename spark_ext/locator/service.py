"""The locator's requests: membership, catalog DDL, placement.

Store servers REGISTER (and are told which buckets they host) and send HEARTBEATs; one
silent for longer than ``lost_after_s`` is declared lost and its buckets are reported
offline in placement replies until it registers again. DDL is applied to the catalog
and pushed to the servers that host the table's buckets before it is acknowledged.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from spark_ext.client.connection import ConnectionPool
from spark_ext.exceptions import BadArgumentError, SparkExtError
from spark_ext.locator.catalog import Catalog, check_ident, check_namespace, full_name
from spark_ext.server.tcp import FrameServer, Session
from spark_ext.store.schema import MAX_BUCKETS
from spark_ext.wire.frames import Frame
from spark_ext.wire.kinds import Kind

logger = logging.getLogger(__name__)


_DDL = frozenset({
    Kind.CREATE_NAMESPACE, Kind.DROP_NAMESPACE, Kind.CREATE_TABLE, Kind.DROP_TABLE,
    Kind.ALTER_TABLE, Kind.RENAME_TABLE, Kind.CREATE_INDEX, Kind.DROP_INDEX,
})


class ServerLink(Protocol):
    """How the locator sends control requests to one store server."""

    def call(self, kind: Kind, metadata: dict[str, Any]) -> dict[str, Any]: ...

    def close(self) -> None: ...


class RemoteLink:
    """A link over the network (pooled connections)."""

    def __init__(self, host: str, port: int, secret: bytes | None) -> None:
        self.pool = ConnectionPool(host, port, secret, timeout=60.0, max_idle=2)

    def call(self, kind: Kind, metadata: dict[str, Any]) -> dict[str, Any]:
        return self.pool.request(kind, metadata).metadata

    def close(self) -> None:
        self.pool.close()


class LocalLink:
    """A link to a store service in the same process (the embedded default)."""

    def __init__(self, handlers: dict[int, Callable[[Frame, Any], Any]]) -> None:
        self.handlers = handlers

    def call(self, kind: Kind, metadata: dict[str, Any]) -> dict[str, Any]:
        reply = self.handlers[int(kind)](Frame(int(kind), 0, metadata), None)
        return reply.metadata if reply is not None else {}

    def close(self) -> None:
        pass


@dataclass
class Member:
    server_id: str
    host: str
    port: int
    link: ServerLink
    last_seen: float = field(default_factory=time.monotonic)
    up: bool = True
    #: Missed a definition change: told to register again (and so catch up) at its next heartbeat.
    resync: bool = False


class LocatorService:
    """Membership, catalog and placement over a :class:`Catalog`.

    Args:
        catalog: the (persisted) catalog.
        secret: secret used to reach store servers.
        lost_after_s: silence after which a server is declared lost.
    """

    def __init__(self, catalog: Catalog, secret: bytes | None = None, lost_after_s: float = 10.0) -> None:
        self.catalog = catalog
        self.secret = secret
        self.lost_after_s = lost_after_s
        self.members: dict[str, Member] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        threading.Thread(target=self._watch, name="locator-membership", daemon=True).start()
        #: The lock service (leases) and the fencing registry for DDL, when hosted here.
        self.lease_service: Any = None
        self.fences: Any = None

    def register(self, server: FrameServer) -> None:
        for kind, fn in {
            Kind.REGISTER_SERVER: self.register_server, Kind.HEARTBEAT: self.heartbeat,
            Kind.DEREGISTER_SERVER: self.deregister_server, Kind.LIST_SERVERS: self.list_servers,
            Kind.GET_PLACEMENT: self.get_table, Kind.GET_TABLE: self.get_table,
            Kind.CREATE_NAMESPACE: self.create_namespace, Kind.DROP_NAMESPACE: self.drop_namespace,
            Kind.LIST_NAMESPACES: self.list_namespaces, Kind.GET_NAMESPACE: self.get_namespace,
            Kind.CREATE_TABLE: self.create_table, Kind.DROP_TABLE: self.drop_table,
            Kind.ALTER_TABLE: self.alter_table, Kind.RENAME_TABLE: self.rename_table,
            Kind.LIST_TABLES: self.list_tables,
            Kind.CREATE_INDEX: self.create_index, Kind.DROP_INDEX: self.drop_index,
        }.items():
            server.register(kind, self._fenced(fn) if kind in _DDL else fn)
        if self.lease_service is not None:
            self.lease_service.register(server)

    def _fenced(self, fn: Callable[[Frame, Session], Frame]) -> Callable[[Frame, Session], Frame]:
        def guarded(f: Frame, s: Session) -> Frame:
            if self.fences is not None:
                self.fences(f.metadata)
            return fn(f, s)
        return guarded

    def close(self) -> None:
        self._stop.set()
        for m in list(self.members.values()):
            m.link.close()

    # --- membership ---------------------------------------------------------------------

    def add_member(self, server_id: str, host: str, port: int, link: ServerLink) -> list[dict[str, Any]]:
        """Register a server (new or returning); returns the buckets it must host."""
        check_ident(server_id, "server id")
        with self._lock:
            old = self.members.get(server_id)
            if old is not None and old.link is not link:
                old.link.close()
            self.members[server_id] = Member(server_id, host, port, link)
        if old is None or not old.up:
            logger.info("store server %s at %s:%d is up", server_id, host, port)
        return self.catalog.assignments(server_id)

    def register_server(self, f: Frame, s: Session) -> Frame:
        m = f.metadata
        sid = check_ident(m.get("server_id"), "server id")
        host, port = m.get("host"), m.get("port")
        if not isinstance(host, str) or not isinstance(port, int):
            raise BadArgumentError("REGISTER_SERVER needs host (string) and port (integer)")
        assigned = self.add_member(sid, host, port, RemoteLink(host, port, self.secret))
        return Frame(f.kind, f.request_id, {"assignments": assigned, "catalog_version": self.catalog.version,
                                            "fences": self.fence_tokens()})

    def fence_tokens(self) -> dict[str, int]:
        """Newest token per leader group known here (granted leases and fenced requests).

        Servers take these with every heartbeat, so a deposed leader is refused by every
        server within a heartbeat of the new grant, even where the new leader has not
        written yet.
        """
        out: dict[str, int] = {}
        if self.lease_service is not None:
            out.update(self.lease_service.table.tokens())
        if self.fences is not None:
            for g, t in self.fences.snapshot().items():
                out[g] = max(t, out.get(g, 0))
        return out

    def heartbeat(self, f: Frame, s: Session) -> Frame:
        sid = f.metadata.get("server_id")
        with self._lock:
            m = self.members.get(sid) if isinstance(sid, str) else None
            if m is None or m.resync:
                # Unknown (e.g. the locator restarted), or it missed a pushed change: ask
                # the server to register again (its assignments bring it up to date).
                if m is not None:
                    m.resync = False
                return Frame(f.kind, f.request_id, {"register": True})
            m.last_seen = time.monotonic()
            if not m.up:
                m.up = True
                logger.info("store server %s is back", sid)
        return Frame(f.kind, f.request_id, {"register": False, "catalog_version": self.catalog.version,
                                            "fences": self.fence_tokens()})

    def deregister_server(self, f: Frame, s: Session) -> Frame:
        sid = f.metadata.get("server_id")
        with self._lock:
            m = self.members.get(sid) if isinstance(sid, str) else None
            if m is not None:
                m.up = False
                logger.info("store server %s left", sid)
        return Frame(f.kind, f.request_id, {})

    def _watch(self) -> None:
        while not self._stop.wait(min(1.0, self.lost_after_s / 4)):
            now = time.monotonic()
            with self._lock:
                for m in self.members.values():
                    if m.up and now - m.last_seen > self.lost_after_s and not isinstance(m.link, LocalLink):
                        m.up = False
                        logger.warning("store server %s lost: no heartbeat for %.1fs", m.server_id, now - m.last_seen)

    def list_servers(self, f: Frame, s: Session) -> Frame:
        with self._lock:
            servers = [
                {"server_id": m.server_id, "host": m.host, "port": m.port, "up": m.up,
                 "seconds_since_heartbeat": round(time.monotonic() - m.last_seen, 3)}
                for m in sorted(self.members.values(), key=lambda m: m.server_id)
            ]
        return Frame(f.kind, f.request_id, {"servers": servers})

    def _live_ids(self) -> list[str]:
        with self._lock:
            return sorted(m.server_id for m in self.members.values() if m.up)

    def _servers_of(self, placement: list[str]) -> dict[str, Any]:
        with self._lock:
            return {
                sid: {"host": m.host, "port": m.port, "up": m.up}
                for sid in set(placement)
                for m in [self.members.get(sid)]
                if m is not None
            } | {sid: {"host": None, "port": None, "up": False} for sid in set(placement) if sid not in self.members}

    def _push(self, placement: list[str], kind: Kind, meta_for: Callable[[str, list[int]], dict[str, Any]]) -> None:
        by_server: dict[str, list[int]] = {}
        for b, sid in enumerate(placement):
            by_server.setdefault(sid, []).append(b)
        for sid, buckets in by_server.items():
            with self._lock:
                m = self.members.get(sid)
            if m is None or not m.up:
                continue  # it learns its assignment when it registers again
            m.link.call(kind, meta_for(sid, buckets))

    # --- catalog --------------------------------------------------------------------------

    def _reply_table(self, f: Frame, entry: dict[str, Any], **extra: Any) -> Frame:
        return Frame(f.kind, f.request_id, {
            "table": entry, "servers": self._servers_of(entry["placement"]),
            "catalog_version": self.catalog.version, **extra,
        })

    def create_namespace(self, f: Frame, s: Session) -> Frame:
        m = f.metadata
        self.catalog.create_namespace(m.get("namespace"), m.get("properties"), bool(m.get("if_not_exists", False)))
        return Frame(f.kind, f.request_id, {"catalog_version": self.catalog.version})

    def drop_namespace(self, f: Frame, s: Session) -> Frame:
        m = f.metadata
        with self.catalog.lock:
            ns = check_namespace(m.get("namespace"))
            entries = [self.catalog.tables[k] for k in list(self.catalog.tables)
                       if tuple(self.catalog.tables[k]["namespace"])[: len(ns)] == ns]
            dropped = self.catalog.drop_namespace(m.get("namespace"), bool(m.get("cascade", False)), bool(m.get("if_exists", False)))
        for e in entries:
            if e["spec"]["name"] in dropped:
                self._push(e["placement"], Kind.CLOSE_BUCKETS, lambda sid, bs: {"table": e["spec"]["name"], "drop": True})
        return Frame(f.kind, f.request_id, {"dropped_tables": dropped})

    def list_namespaces(self, f: Frame, s: Session) -> Frame:
        return Frame(f.kind, f.request_id, {"namespaces": self.catalog.list_namespaces(f.metadata.get("parent") or ())})

    def get_namespace(self, f: Frame, s: Session) -> Frame:
        return Frame(f.kind, f.request_id, {"properties": self.catalog.namespace_properties(f.metadata.get("namespace"))})

    def list_tables(self, f: Frame, s: Session) -> Frame:
        return Frame(f.kind, f.request_id, {"tables": self.catalog.list_tables(f.metadata.get("namespace"))})

    def get_table(self, f: Frame, s: Session) -> Frame:
        m = f.metadata
        return self._reply_table(f, self.catalog.get(m.get("namespace"), m.get("name")))

    def create_table(self, f: Frame, s: Session) -> Frame:
        m = f.metadata
        spec = m.get("table")
        if not isinstance(spec, dict):
            raise BadArgumentError("CREATE_TABLE needs 'table': the table definition")
        live = self._live_ids()
        if not live:
            raise SparkExtError("no store server is up to host the table's buckets")
        nb = spec.get("num_buckets", 8)
        if not isinstance(nb, int) or isinstance(nb, bool) or not 1 <= nb <= MAX_BUCKETS:
            # Checked before the placement list is built from it.
            raise BadArgumentError(f"num_buckets must be an integer in 1..{MAX_BUCKETS}, got {nb!r}")
        placement = [live[b % len(live)] for b in range(nb)]
        entry, created = self.catalog.create_table(
            m.get("namespace"), m.get("name"), spec, placement, bool(m.get("if_not_exists", False))
        )
        if created:
            try:
                self._push(entry["placement"], Kind.OPEN_BUCKETS,
                           lambda sid, bs: {"table": entry["spec"], "buckets": bs, "indexes": entry["indexes"]})
            except Exception:
                # Leave nothing half-made: forget the table and drop it where it was made.
                self.catalog.drop_table(entry["spec"]["name"], if_exists=True)
                try:
                    self._push(entry["placement"], Kind.CLOSE_BUCKETS,
                               lambda sid, bs: {"table": entry["spec"]["name"], "drop": True})
                except Exception:
                    logger.exception("cleaning up table %s after a failed create", entry["spec"]["name"])
                raise
        return self._reply_table(f, entry, created=created)

    def drop_table(self, f: Frame, s: Session) -> Frame:
        m = f.metadata
        key = full_name(check_namespace(m.get("namespace")), check_ident(m.get("name"), "table name"))
        entry = self.catalog.drop_table(key, bool(m.get("if_exists", False)), m.get("expected_version"))
        if entry is not None:
            self._push(entry["placement"], Kind.CLOSE_BUCKETS, lambda sid, bs: {"table": key, "drop": True})
        return Frame(f.kind, f.request_id, {"dropped": entry is not None})

    def alter_table(self, f: Frame, s: Session) -> Frame:
        m = f.metadata
        key = full_name(check_namespace(m.get("namespace")), check_ident(m.get("name"), "table name"))
        opts = m.get("set_options") or {}
        remove = m.get("remove_options") or []
        add = m.get("add_columns")
        if not isinstance(opts, dict) or not isinstance(remove, list) or not isinstance(add, (list, type(None))):
            raise BadArgumentError(
                "ALTER_TABLE takes 'set_options' (object), 'remove_options' (list) and 'add_columns' (list)")
        if add is not None and (opts or remove):
            raise BadArgumentError("ALTER_TABLE: send 'add_columns' alone, not with option changes")
        if add is None:
            entry = self.catalog.set_options(key, opts, remove, m.get("expected_version"))
            return self._reply_table(f, entry)
        entry = self.catalog.add_columns(key, add, m.get("expected_version"))
        self._push_definition(entry)
        return self._reply_table(f, entry)

    def rename_table(self, f: Frame, s: Session) -> Frame:
        m = f.metadata
        key = full_name(check_namespace(m.get("namespace")), check_ident(m.get("name"), "table name"))
        new_ns = m.get("new_namespace") if m.get("new_namespace") is not None else m.get("namespace")
        entry = self.catalog.rename_table(key, new_ns, m.get("new_name"), m.get("expected_version"))
        self._push_definition(entry)
        return self._reply_table(f, entry)

    def _push_definition(self, entry: dict[str, Any]) -> None:
        """Send a changed definition (columns, name) to the table's servers that are up.

        The catalog has decided the change already; a server that is down, or that
        fails here, catches up when it registers again (REGISTER_SERVER assignments).
        """
        name = entry["spec"]["name"]
        meta = {"table": name, "spec": entry["spec"], "indexes": entry["indexes"],
                "former_names": entry.get("former_names", [])}
        failure: Exception | None = None
        for sid in sorted(set(entry["placement"])):
            with self._lock:
                m = self.members.get(sid)
            if m is None or not m.up:
                continue
            try:
                m.link.call(Kind.UPDATE_TABLE, meta)
            except Exception as e:
                # Go on with the others; this one re-registers at its next heartbeat and
                # takes the definition from its assignments then.
                logger.warning("server %s did not take the new definition of %s: %s", sid, name, e)
                m.resync = True
                failure = failure or e
        if failure is not None:
            raise failure

    def create_index(self, f: Frame, s: Session) -> Frame:
        m = f.metadata
        key = full_name(check_namespace(m.get("namespace")), check_ident(m.get("name"), "table name"))
        index = m.get("index")
        if not isinstance(index, dict):
            raise BadArgumentError("CREATE_INDEX needs 'index': {name, columns, kind}")
        entry = self.catalog.add_index(key, index, m.get("expected_version"))
        self._push(entry["placement"], Kind.UPDATE_TABLE, lambda sid, bs: {"table": key, "indexes": entry["indexes"]})
        return self._reply_table(f, entry)

    def drop_index(self, f: Frame, s: Session) -> Frame:
        m = f.metadata
        key = full_name(check_namespace(m.get("namespace")), check_ident(m.get("name"), "table name"))
        index = m.get("index")
        if not isinstance(index, str):
            raise BadArgumentError(f"DROP_INDEX needs 'index': the index name, got {index!r}")
        entry = self.catalog.remove_index(key, index, m.get("expected_version"))
        self._push(entry["placement"], Kind.UPDATE_TABLE, lambda sid, bs: {"table": key, "indexes": entry["indexes"]})
        return self._reply_table(f, entry)
