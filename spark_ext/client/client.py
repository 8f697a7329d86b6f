"""The Python client: catalog calls to the locator, data calls routed by bucket.

Thread-safe: share one :class:`StoreClient` between threads; each request borrows a
pooled connection. Rows are checked against the table's schema here, before anything is
sent, so bad input fails with the engine's own error and nothing reaches a server.

Writes that touch buckets on several servers run as one staged transaction (stage on
each server, prepare all, commit all), so a statement is all-or-nothing. Reads and
idempotent writes (put, update with values, delete) are retried after a broken
connection or a placement change; inserts and transaction steps are not (a retried
insert would fail on its own first attempt's rows).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence, TypeVar

import numpy as np
import pyarrow as pa

from spark_ext.client.connection import ConnectionFailedError, ConnectionPool, NotOwnerError
from spark_ext.exceptions import BadArgumentError, BucketOfflineError, ConflictError
from spark_ext.store import alter
from spark_ext.store import predicate as P
from spark_ext.store.rows import normalize_rows
from spark_ext.store.schema import TableSchema, batch_buckets
from spark_ext.wire import values
from spark_ext.wire.arrowio import read_ipc_batches, write_ipc_stream
from spark_ext.wire.frames import Flags
from spark_ext.wire.kinds import Kind
from spark_ext.wire.rowcodec import RowCodec

logger = logging.getLogger(__name__)
T = TypeVar("T")

RETRIES = 3


def split_name(name: str | Sequence[str]) -> tuple[list[str], str]:
    """``"ns.t"`` -> (["ns"], "t"); a bare name goes to the ``default`` namespace."""
    parts = name.split(".") if isinstance(name, str) else list(name)
    if not parts or not all(parts):
        raise BadArgumentError(f"bad table name {name!r}")
    return (parts[:-1] or ["default"]), parts[-1]


@dataclass
class TableInfo:
    """What the client knows of a table: schema, indexes, where its buckets live."""

    namespace: list[str]
    name: str
    schema: TableSchema
    indexes: list[dict[str, Any]]
    placement: list[str]
    servers: dict[str, dict[str, Any]]
    version: int

    @property
    def full_name(self) -> str:
        return self.schema.name

    @functools.cached_property
    def codec(self) -> RowCodec:
        """Compact-row codec of the user columns (built once: it is on every point call)."""
        return RowCodec(self.schema.arrow_schema)


class StoreClient:
    """A client of one spark-ext cluster (or the embedded server).

    Args:
        locator: ``(host, port)`` of the locator or embedded server.
        secret: the cluster's shared secret, if it has one.
        timeout: seconds per request.
    """

    def __init__(self, locator: tuple[str, int], secret: bytes | None = None, timeout: float = 60.0) -> None:
        self.locator_address = locator
        self.secret = secret
        self.timeout = timeout
        self._locator = ConnectionPool(locator[0], locator[1], secret, timeout)
        self._pools: dict[tuple[str, int], ConnectionPool] = {}
        self._tables: dict[str, TableInfo] = {}
        self._given: dict[str, str] = {}  # names as callers spell them -> full names
        self._lock = threading.Lock()
        self.fence: dict[str, Any] | None = None  # {"group", "token"}: set by driver HA
        self.leadership: Any = None  # a spark_ext.ha.Leadership whose loss stops writes

    def close(self) -> None:
        self._locator.close()
        for p in self._pools.values():
            p.close()

    def __enter__(self) -> "StoreClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- plumbing -----------------------------------------------------------------------

    def _pool(self, host: str, port: int) -> ConnectionPool:
        key = (host, port)
        with self._lock:
            p = self._pools.get(key)
            if p is None:
                if key == self.locator_address:
                    p = self._locator  # embedded: one process, one pool
                else:
                    p = self._pools[key] = ConnectionPool(host, port, self.secret, self.timeout)
            return p

    def _meta(self, m: dict[str, Any]) -> dict[str, Any]:
        if self.leadership is not None:
            self.leadership.check()  # a deposed leader stops here, before sending anything
        if self.fence is not None:
            m["fence"] = self.fence
        return m

    def _retry(self, table: str | None, fn: Callable[[], T], idempotent: bool = True) -> T:
        """Run ``fn`` again after a transient failure that proves nothing was applied
        (a lock conflict; for idempotent calls also a broken connection or stale
        placement). Backoff doubles from 50 ms; at most :data:`RETRIES` attempts."""
        transient: tuple[type[BaseException], ...] = (ConflictError,)
        if idempotent:
            transient += (ConnectionFailedError, NotOwnerError, BucketOfflineError)
        for attempt in range(RETRIES):
            try:
                return fn()
            except transient as e:
                if attempt == RETRIES - 1:
                    raise
                logger.info("retrying after %s", e)
                time.sleep(0.05 * (2 ** attempt))
                if table is not None and not isinstance(e, ConflictError):
                    self._tables.pop(self._given.get(table, table), None)  # re-read placement
        raise AssertionError("unreachable")

    # --- catalog ------------------------------------------------------------------------

    def create_namespace(self, namespace: str | Sequence[str], if_not_exists: bool = False) -> None:
        ns = namespace.split(".") if isinstance(namespace, str) else list(namespace)
        self._locator.request(Kind.CREATE_NAMESPACE, self._meta({"namespace": ns, "if_not_exists": if_not_exists}))

    def drop_namespace(self, namespace: str | Sequence[str], cascade: bool = False, if_exists: bool = False) -> list[str]:
        ns = namespace.split(".") if isinstance(namespace, str) else list(namespace)
        r = self._locator.request(Kind.DROP_NAMESPACE, self._meta({"namespace": ns, "cascade": cascade, "if_exists": if_exists}))
        for t in r.metadata.get("dropped_tables", []):
            self._tables.pop(t, None)
        return list(r.metadata.get("dropped_tables", []))

    def list_namespaces(self, parent: Sequence[str] = ()) -> list[list[str]]:
        return list(self._locator.request(Kind.LIST_NAMESPACES, {"parent": list(parent)}).metadata["namespaces"])

    def list_tables(self, namespace: str | Sequence[str] = "default") -> list[str]:
        ns = namespace.split(".") if isinstance(namespace, str) else list(namespace)
        return list(self._locator.request(Kind.LIST_TABLES, {"namespace": ns}).metadata["tables"])

    def create_table(
        self,
        name: str,
        columns: pa.Schema | Sequence[tuple[str, Any]],
        primary_key: Sequence[str] | str | None = None,
        num_buckets: int = 8,
        options: Mapping[str, str] | None = None,
        indexes: Sequence[Mapping[str, Any]] = (),
        if_not_exists: bool = False,
    ) -> TableInfo:
        """Create a table; the definition is checked here first (engine rules)."""
        ns, nm = split_name(name)
        if not isinstance(columns, pa.Schema):
            from spark_ext.store.types import arrow_type

            columns = pa.schema([pa.field(c, arrow_type(t) if isinstance(t, str) else t) for c, t in columns])
        pk = [primary_key] if isinstance(primary_key, str) else list(primary_key or [])
        schema = TableSchema(".".join([*ns, nm]), columns, pk, num_buckets, dict(options or {}))
        spec = schema.to_json()
        spec["indexes"] = [dict(ix) for ix in indexes]
        r = self._locator.request(Kind.CREATE_TABLE, self._meta({
            "namespace": ns, "name": nm, "table": spec, "if_not_exists": if_not_exists}))
        return self._remember(r.metadata)

    def _remember(self, meta: dict[str, Any]) -> TableInfo:
        e = meta["table"]
        info = TableInfo(e["namespace"], e["name"], TableSchema.from_json(e["spec"]), e["indexes"],
                         e["placement"], meta["servers"], e["version"])
        self._tables[info.full_name] = info
        return info

    def table(self, name: str, refresh: bool = False) -> TableInfo:
        """The table's definition and placement (cached; ``refresh`` re-reads it)."""
        if not refresh:
            hit = self._tables.get(self._given.get(name, name)) if isinstance(name, str) else None
            if hit is not None:
                return hit
        ns, nm = split_name(name)
        key = ".".join([*ns, nm])
        if isinstance(name, str):
            self._given[name] = key
        info = None if refresh else self._tables.get(key)
        if info is None:
            info = self._remember(self._locator.request(Kind.GET_TABLE, {"namespace": ns, "name": nm}).metadata)
        return info

    def drop_table(self, name: str, if_exists: bool = False) -> bool:
        ns, nm = split_name(name)
        r = self._locator.request(Kind.DROP_TABLE, self._meta({"namespace": ns, "name": nm, "if_exists": if_exists}))
        self._tables.pop(".".join([*ns, nm]), None)
        return bool(r.metadata.get("dropped"))

    def set_options(self, name: str, options: Mapping[str, str], expected_version: int | None = None) -> TableInfo:
        ns, nm = split_name(name)
        return self._remember(self._locator.request(Kind.ALTER_TABLE, self._meta({
            "namespace": ns, "name": nm, "set_options": dict(options), "expected_version": expected_version})).metadata)

    def add_columns(self, name: str, columns: Any, expected_version: int | None = None) -> TableInfo:
        """ALTER TABLE ADD COLUMNS: append nullable columns; existing rows read NULL.

        ``columns`` is ``(name, type)`` pairs (type names such as ``"string"``,
        ``"decimal(10,2)"``), Arrow fields or an Arrow schema. Checked here first by the
        engine's rules (SchemaError naming the table and column for a NOT NULL column,
        a name the table has, an unsupported type); CONFLICT when ``expected_version``
        is given and the table changed meanwhile. Every up server of the table has the
        columns when this returns.
        """
        ns, nm = split_name(name)
        key = ".".join([*ns, nm])
        fields = alter.new_fields(key, columns)
        if name in self._given or key in self._tables:
            alter.schema_with_columns(self.table(name).schema, fields)  # duplicate names, before sending
        return self._remember(self._locator.request(Kind.ALTER_TABLE, self._meta({
            "namespace": ns, "name": nm, "add_columns": alter.field_json(fields),
            "expected_version": expected_version})).metadata)

    def rename_table(self, name: str, new_name: str, expected_version: int | None = None) -> TableInfo:
        """ALTER TABLE ... RENAME TO: ``new_name`` is ``"ns.t"`` (another namespace is
        fine) or a bare name (same namespace). TABLE_EXISTS when it is taken."""
        ns, nm = split_name(name)
        if isinstance(new_name, str) and "." not in new_name:
            new_ns, new_nm = ns, new_name
        else:
            new_ns, new_nm = split_name(new_name)
        r = self._locator.request(Kind.RENAME_TABLE, self._meta({
            "namespace": ns, "name": nm, "new_namespace": new_ns, "new_name": new_nm,
            "expected_version": expected_version}))
        old = ".".join([*ns, nm])
        self._tables.pop(old, None)
        for given in [g for g, k in self._given.items() if k == old]:
            del self._given[given]
        return self._remember(r.metadata)

    def create_index(self, name: str, index: str, columns: Sequence[str] | str, kind: str = "hash") -> TableInfo:
        ns, nm = split_name(name)
        cols = [columns] if isinstance(columns, str) else list(columns)
        return self._remember(self._locator.request(Kind.CREATE_INDEX, self._meta({
            "namespace": ns, "name": nm, "index": {"name": index, "columns": cols, "kind": kind}})).metadata)

    def drop_index(self, name: str, index: str) -> TableInfo:
        ns, nm = split_name(name)
        return self._remember(self._locator.request(Kind.DROP_INDEX, self._meta({
            "namespace": ns, "name": nm, "index": index})).metadata)

    def announce(self) -> list[str]:
        """Send this client's fence to every live server (a new leader does this at once).

        Servers also learn new grants from the locator with each heartbeat; this closes
        that last gap. Returns the ids of servers that could not be reached.
        """
        if self.fence is None:
            raise BadArgumentError("announce() needs a fence: set client.fence to the leadership's fence first")
        failed = []
        for srv in self.servers():
            if not srv["up"]:
                failed.append(srv["server_id"])
                continue
            try:
                self._pool(srv["host"], srv["port"]).request(Kind.PING, {"fence": self.fence})
            except ConnectionFailedError:
                failed.append(srv["server_id"])
        return failed

    def servers(self) -> list[dict[str, Any]]:
        return list(self._locator.request(Kind.LIST_SERVERS, {}).metadata["servers"])

    def server_status(self, host: str, port: int) -> dict[str, Any]:
        return self._pool(host, port).request(Kind.STATUS, {}).metadata

    # --- routing ------------------------------------------------------------------------

    def _server_pool(self, info: TableInfo, bucket: int) -> ConnectionPool:
        sid = info.placement[bucket]
        s = info.servers.get(sid) or {}
        if not s.get("up") or s.get("host") is None:
            raise BucketOfflineError(
                f"bucket {bucket} of table {info.full_name!r} is offline: its server {sid} is down",
                table=info.full_name, bucket=bucket, server=sid,
            )
        return self._pool(s["host"], s["port"])

    def _by_server(self, info: TableInfo, buckets: Sequence[int]) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for i, b in enumerate(buckets):
            out.setdefault(info.placement[b], []).append(i)
        return out

    def _keys_json(self, info: TableInfo, keys: Sequence[Any]) -> tuple[list[Any], list[list[Any]]]:
        s = info.schema
        coerced = [s.coerce_key(k) for k in keys]
        tns = s.key_type_names
        js = [[values.to_json(tn, v) for tn, v in zip(tns, (k if len(tns) > 1 else (k,)))] for k in coerced]
        return coerced, js

    # --- reads --------------------------------------------------------------------------

    def get(self, table: str, key: Any) -> tuple[Any, ...] | None:
        """The row with this key, or None. One round trip to the owning server."""
        try:
            return self._get_once(table, key)  # the common case: no retry machinery
        except (ConnectionFailedError, NotOwnerError, BucketOfflineError, ConflictError):
            return self._retry(table, lambda: self._get_once(table, key))

    def _get_once(self, table: str, key: Any) -> tuple[Any, ...] | None:
        info = self.table(table)
        schema = info.schema
        if type(key) is int and schema.int_key_min <= key <= schema.int_key_max:
            k, kj = key, [key]  # what _keys_json returns for a one-column integer key
        else:
            (k,), (kj,) = self._keys_json(info, [key])
        r = self._server_pool(info, schema.bucket_of_key(k)).request(
            Kind.GET, {"table": info.full_name, "key": kj, "ncols": schema.num_user_columns})
        if r.metadata:
            self._stale(info, r.metadata)
        return info.codec.decode(r.body, presence=True)[0]

    def _stale(self, info: TableInfo, reply: dict[str, Any]) -> None:
        """A server said the table has more columns than ``info`` (ADD COLUMNS by
        someone else): forget it, so the next call reads the new definition."""
        if reply.get("ncols", info.schema.num_user_columns) != info.schema.num_user_columns:
            self._tables.pop(info.full_name, None)

    def get_many(self, table: str, keys: Sequence[Any]) -> list[tuple[Any, ...] | None]:
        """Rows for many keys (None where absent), one request per server."""
        def go() -> list[tuple[Any, ...] | None]:
            info = self.table(table)
            ks, kjs = self._keys_json(info, keys)
            out: list[tuple[Any, ...] | None] = [None] * len(ks)
            for sid, idx in self._by_server(info, [info.schema.bucket_of_key(k) for k in ks]).items():
                pool = self._server_pool(info, info.schema.bucket_of_key(ks[idx[0]]))
                r = pool.request(Kind.GET_MANY, {"table": info.full_name, "keys": [kjs[i] for i in idx],
                                                 "ncols": info.schema.num_user_columns})
                self._stale(info, r.metadata)
                for i, row in zip(idx, info.codec.decode(r.body, presence=True)):
                    out[i] = row
            return out
        return self._retry(table, go)

    def scan_batches(self, table: str, columns: Sequence[str] | None = None, where: Any = None,
                     limit: int | None = None, buckets: Sequence[int] | None = None) -> Iterator[pa.RecordBatch]:
        """Stream Arrow batches from every server holding the table's (chosen) buckets."""
        info = self.table(table)
        w = None if where is None else (where if isinstance(where, list) else P.to_obj(where))
        nb = info.schema.num_buckets
        wanted = list(range(nb)) if buckets is None else list(buckets)
        per_server: dict[str, list[int]] = {}
        for b in wanted:
            per_server.setdefault(info.placement[b], []).append(b)
        remaining = limit
        for sid, bs in sorted(per_server.items()):
            pool = self._server_pool(info, bs[0])
            meta = {"table": info.full_name, "columns": list(columns) if columns is not None else None,
                    "where": w, "limit": remaining, "buckets": bs}
            with pool.connection() as c:
                for f in c.stream(Kind.SCAN, meta):
                    if not f.has_arrow:
                        continue
                    _, batches = read_ipc_batches(f.body, validate=False)
                    for b in batches:
                        if remaining is not None:
                            b = b.slice(0, remaining)
                            remaining -= b.num_rows
                        if b.num_rows:
                            yield b
                    if remaining == 0:
                        # Drain the rest of the stream so the connection stays usable.
                        continue
            if remaining == 0:
                return

    def scan(self, table: str, columns: Sequence[str] | None = None, where: Any = None,
             limit: int | None = None, buckets: Sequence[int] | None = None) -> pa.Table:
        """The matching rows as one Arrow table (read with retries)."""
        def go() -> pa.Table:
            info = self.table(table)
            names = list(columns) if columns is not None else list(info.schema.arrow_schema.names)
            sch = pa.schema([info.schema.storage_schema.field(info.schema.column_index(c)) for c in names])
            return pa.Table.from_batches(list(self.scan_batches(table, columns, where, limit, buckets)), schema=sch)
        return self._retry(table, go)

    def count(self, table: str, where: Any = None) -> int:
        def go() -> int:
            info = self.table(table)
            w = None if where is None else (where if isinstance(where, list) else P.to_obj(where))
            total = 0
            for sid, idx in self._by_server(info, range(info.schema.num_buckets)).items():
                r = self._server_pool(info, idx[0]).request(Kind.COUNT, {"table": info.full_name, "where": w, "buckets": idx})
                total += int(r.metadata["count"])
            return total
        return self._retry(table, go)

    def lookup(self, table: str, column: str, value: Any) -> pa.Table:
        """Rows whose column equals ``value`` (an index on it makes this cheap)."""
        return self.scan(table, where=P.Compare("=", column, value))

    def range(self, table: str, column: str, low: Any = None, high: Any = None) -> pa.Table:
        """Rows with ``low <= column <= high`` (None: unbounded)."""
        terms: list[P.Predicate] = []
        if low is not None:
            terms.append(P.Compare(">=", column, low))
        if high is not None:
            terms.append(P.Compare("<=", column, high))
        return self.scan(table, where=P.And(tuple(terms)) if terms else None)

    # --- writes -------------------------------------------------------------------------

    def _row_groups(self, info: TableInfo, rows: Any) -> dict[str, tuple[int, Any]]:
        """Rows split per server: {server: (a bucket of it, rows as list or Arrow batch)}."""
        s = info.schema
        data = normalize_rows(s, rows)
        servers = sorted(set(info.placement))
        if isinstance(data, pa.RecordBatch):
            if s.hidden_rowid:
                # The server assigns row ids in its own buckets: spread rows evenly.
                chunks = np.array_split(np.arange(data.num_rows), len(servers))
                return {sid: (info.placement.index(sid), data.take(pa.array(c))) for sid, c in zip(servers, chunks) if len(c)}
            bks = batch_buckets(s, data)
            sids = np.array(info.placement, dtype=object)[bks]
            return {sid: (int(bks[np.nonzero(sids == sid)[0][0]]), data.filter(pa.array(sids == sid)))
                    for sid in set(sids.tolist())}
        out: dict[str, tuple[int, Any]] = {}
        for i, r in enumerate(data):
            if s.hidden_rowid:
                sid = servers[i % len(servers)]
                b = info.placement.index(sid)
            else:
                b = s.bucket_of_key(s.key_of(r))
                sid = info.placement[b]
            out.setdefault(sid, (b, []))[1].append(tuple(r))
        return out

    @staticmethod
    def _body(info: TableInfo, rows: Any) -> tuple[Any, int]:
        if isinstance(rows, pa.RecordBatch):
            return write_ipc_stream(rows), int(Flags.HAS_ARROW)
        return info.codec.encode(rows), int(Flags.COMPACT_ROWS)

    def _write_rows(self, table: str, rows: Any, kind: Kind, op: str) -> int:
        info = self.table(table)
        groups = self._row_groups(info, rows)
        if len(groups) <= 1:
            total = 0
            for sid, (b, rs) in groups.items():
                body, flags = self._body(info, rs)
                meta = {"table": info.full_name, "ncols": info.schema.num_user_columns}
                total += int(self._server_pool(info, b).request(kind, self._meta(meta), body, flags).metadata["count"])
            return total
        return self._in_txn(info, {sid: [(op, {}, rs)] for sid, (b, rs) in groups.items()},
                            {sid: b for sid, (b, _) in groups.items()})

    def _in_txn(self, info: TableInfo, work: dict[str, list[tuple[str, dict[str, Any], Any]]], bucket_of: dict[str, int]) -> int:
        """Stage work on several servers, prepare all, commit all; abort all on failure.

        Counts come from the prepare step, where the server resolves keys and predicates.
        The servers are taken in id order; the first is the *decider* (see
        ``docs/in-doubt.md``): it is prepared first and committed first, and its outcome
        is the transaction's, so the servers can finish it by themselves if this process
        dies half way.
        """
        txn = f"py-{uuid.uuid4().hex}"
        work = {sid: work[sid] for sid in sorted(work)}
        participants = list(work)
        decider = participants[0]
        pools = {sid: self._server_pool(info, bucket_of[sid]) for sid in work}
        total = 0
        try:
            for sid, steps in work.items():
                for op, extra, rs in steps:
                    body, flags = (b"", 0) if rs is None else self._body(info, rs)
                    meta = {"txn": txn, "table": info.full_name, "op": op, "ncols": info.schema.num_user_columns, **extra}
                    pools[sid].request(Kind.TXN_STAGE, self._meta(meta), body, flags)
            for sid in work:
                r = pools[sid].request(Kind.TXN_PREPARE, self._meta({"txn": txn, "part": ""}))
                total += int(r.metadata.get("prepared", 0))
            for sid in work:
                pools[sid].request(Kind.TXN_PREPARE, self._meta({"txn": txn, "parts": [""],
                                                                 "participants": participants}))
        except BaseException:
            for sid in work:
                try:
                    pools[sid].request(Kind.TXN_ABORT, {"txn": txn})
                except Exception:
                    logger.warning("abort of %s on %s failed; the server's timeout will abort it", txn, sid)
            raise
        # The decider's commit decides. If it failed, its abort's answer tells whether it
        # committed after all (the reply was lost) or not (refused: its in-doubt timeout
        # or a newer leader aborted it); then abort everywhere. Unreachable: the servers
        # resolve it with the decider later.
        try:
            pools[decider].request(Kind.TXN_COMMIT, self._meta({"txn": txn, "parts": [""]}))
        except Exception as e:
            try:
                state = pools[decider].request(Kind.TXN_ABORT, {"txn": txn}).metadata.get("state")
            except Exception:
                logger.warning("commit of %s on its decider %s has an unknown outcome (%s); the servers "
                               "will resolve it with %s", txn, decider, e, decider)
                raise e
            if state != "committed":
                for sid in participants[1:]:
                    try:
                        pools[sid].request(Kind.TXN_ABORT, {"txn": txn})
                    except Exception:
                        logger.warning("abort of %s on %s failed; it asks %s when in doubt", txn, sid, decider)
                raise e
        # Decided: every prepared part must commit. A server that fails here keeps its
        # part in doubt and gets the outcome from the decider; the others must not be
        # left holding theirs, so go on committing and report the first failure afterwards.
        failure: BaseException | None = None
        for sid in participants[1:]:
            try:
                pools[sid].request(Kind.TXN_COMMIT, self._meta({"txn": txn, "parts": [""]}))
            except Exception as e:
                logger.warning("commit of %s on %s failed (%s); it stays in doubt there", txn, sid, e)
                failure = failure or e
        if failure is not None:
            raise failure
        return total

    def put(self, table: str, rows: Any) -> int:
        """Upsert rows (dicts, tuples, pandas or Arrow) by primary key; atomic."""
        return self._retry(table, lambda: self._write_rows(table, rows, Kind.PUT, "upsert"))

    def insert(self, table: str, rows: Any) -> int:
        """Insert rows; an existing key fails the whole call and nothing is written."""
        return self._retry(table, lambda: self._write_rows(table, rows, Kind.INSERT, "insert"), idempotent=False)

    def _keyed(self, table: str, keys: Sequence[Any], kind: Kind, op: str, extra: dict[str, Any]) -> int:
        info = self.table(table)
        ks, kjs = self._keys_json(info, keys)
        groups: dict[str, list[int]] = self._by_server(info, [info.schema.bucket_of_key(k) for k in ks])
        bucket_of = {sid: info.schema.bucket_of_key(ks[idx[0]]) for sid, idx in groups.items()}
        if len(groups) <= 1:
            total = 0
            for sid, idx in groups.items():
                r = self._server_pool(info, bucket_of[sid]).request(
                    kind, self._meta({"table": info.full_name, "keys": [kjs[i] for i in idx], **extra}))
                total += int(r.metadata["count"])
            return total
        work = {sid: [(op, {"keys": [kjs[i] for i in idx], **extra}, None)] for sid, idx in groups.items()}
        return self._in_txn(info, work, bucket_of)

    def update(self, table: str, keys: Sequence[Any], values_: Mapping[str, Any]) -> int:
        """Set columns of the rows with these keys; returns how many existed."""
        def go() -> int:
            info = self.table(table)
            vj = {}
            for c, v in values_.items():
                i = info.schema.column_index(c)
                vj[c] = values.to_json(info.schema.type_names[i], info.schema.coercers[i](v) if v is not None else None)
            return self._keyed(table, keys, Kind.UPDATE, "update", {"values": vj})
        return self._retry(table, go)

    def delete(self, table: str, keys: Sequence[Any]) -> int:
        """Delete rows by key; returns how many existed."""
        return self._retry(table, lambda: self._keyed(table, keys, Kind.DELETE, "delete", {}))

    def _where_all(self, table: str, op: str, kind: Kind, extra: dict[str, Any]) -> int:
        info = self.table(table)
        servers = sorted(set(info.placement))
        bucket_of = {sid: info.placement.index(sid) for sid in servers}
        if len(servers) == 1:
            r = self._server_pool(info, bucket_of[servers[0]]).request(kind, self._meta({"table": info.full_name, **extra}))
            return int(r.metadata.get("count", 0))
        return self._in_txn(info, {sid: [(op, extra, None)] for sid in servers}, bucket_of)

    def update_where(self, table: str, where: Any, values_: Mapping[str, Any]) -> int:
        info = self.table(table)
        vj = {c: values.to_json(info.schema.type_names[info.schema.column_index(c)],
                                None if v is None else info.schema.coercers[info.schema.column_index(c)](v))
              for c, v in values_.items()}
        w = None if where is None else (where if isinstance(where, list) else P.to_obj(where))
        return self._where_all(table, "update_where", Kind.UPDATE_WHERE, {"where": w, "values": vj})

    def delete_where(self, table: str, where: Any) -> int:
        w = None if where is None else (where if isinstance(where, list) else P.to_obj(where))
        return self._where_all(table, "delete_where", Kind.DELETE_WHERE, {"where": w})

    def truncate(self, table: str) -> None:
        self._where_all(table, "truncate", Kind.TRUNCATE, {})
