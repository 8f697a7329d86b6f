"""The store server's requests: point reads and writes, scans, staged transactions.

A server hosts some buckets of each table (told by the locator with OPEN_BUCKETS). Its
engine holds each table with the full bucket count, but only the owned buckets ever
receive rows: a point request for a key of another server's bucket is refused with
NOT_OWNER before anything changes, so a client with stale placement cannot misplace data.
Request and reply fields are specified in ``docs/protocol.md``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Iterator, Sequence

import numpy as np
import pyarrow as pa

from spark_ext.exceptions import (
    BadArgumentError,
    ConflictError,
    NoSuchTableError,
    SchemaError,
)
from spark_ext.server import scan_aggregates
from spark_ext.server.tcp import FrameServer, Handler, Session, WouldBlock
from spark_ext.server.txns import TxnManager
from spark_ext.store import Store, Table
from spark_ext.store import predicate as P
from spark_ext.store.schema import TableSchema, batch_buckets
from spark_ext.store.txn import OrderedBatch, order_rows
from spark_ext.wire import values
from spark_ext.wire.arrowio import read_ipc_stream, write_ipc_stream
from spark_ext.wire.errors import WireError
from spark_ext.wire.frames import Flags, Frame, encode_count_reply
from spark_ext.wire.kinds import ErrorCode, Kind
from spark_ext.wire.predicates import validate_predicate
from spark_ext.wire.rowcodec import RowCodec, codec_for

logger = logging.getLogger(__name__)

#: Requests that change data or transactions: checked against the leader's fence.
_FENCED = frozenset({
    Kind.PUT, Kind.INSERT, Kind.UPDATE, Kind.DELETE, Kind.UPDATE_WHERE, Kind.DELETE_WHERE, Kind.TRUNCATE,
    Kind.TXN_STAGE, Kind.TXN_PREPARE, Kind.TXN_COMMIT, Kind.PING,
})

_COMPACT, _ARROW = int(Flags.COMPACT_ROWS), int(Flags.HAS_ARROW)  # plain ints: IntFlag ops are slow

#: GET_MANY with at most this many keys is answered on the server's event loop.
INLINE_GET_MANY_KEYS = 256

#: A write request with a body up to this size may be applied on the event loop.
INLINE_WRITE_BYTES = 64 * 1024

#: Target size of one streamed scan frame's Arrow payload.
SCAN_FRAME_BYTES = 4 << 20


def _field(meta: dict[str, Any], name: str, typ: type | tuple[type, ...], default: Any = ...) -> Any:
    v = meta.get(name, default)
    if v is ...:
        raise BadArgumentError(f"request field {name!r} is missing")
    if v is not None and not isinstance(v, typ):
        raise BadArgumentError(f"request field {name!r} has the wrong type: {type(v).__name__}")
    return v


def _waiting_for_txns(change: Any, wait_s: float = 30.0) -> Any:
    """Run a schema change, retrying while open transactions hold the table (CONFLICT):
    statements are short, and the catalog has already decided the change."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return change()
        except ConflictError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _index_list(raw: list[Any]) -> list[dict[str, Any]]:
    """Index definitions of a control request, checked: ``[{name, columns, kind?}]``."""
    for ix in raw:
        cols = ix.get("columns") if isinstance(ix, dict) else None
        if (not isinstance(ix, dict) or not isinstance(ix.get("name"), str) or not isinstance(cols, list) or not cols
                or not all(isinstance(c, str) for c in cols) or ix.get("kind", "hash") not in ("hash", "ordered")):
            raise BadArgumentError(f"an index definition is {{name, columns: [str], kind: hash|ordered}}, got {ix!r}")
    return raw



def _unless_locked(t: Table, fn: Any, f: Frame, s: Session) -> Any:
    """Run an inline handler holding ``t``'s lock, or raise WouldBlock when another
    thread holds it (the event loop must not wait). The handler takes the same
    re-entrant lock again at once."""
    lock = t.lock
    if not lock.acquire(blocking=False):
        raise WouldBlock
    try:
        return fn(f, s)
    finally:
        lock.release()

class StoreService:
    """Serves one :class:`Store` over a :class:`FrameServer`.

    Args:
        store: the engine (durable or not).
        server_id: this server's id in the cluster.
        txn_timeout_s: an open or prepared transaction idle this long is aborted (a
            Spark job that died leaves no locks behind forever).
    """

    def __init__(self, store: Store, server_id: str = "embedded", txn_timeout_s: float = 600.0) -> None:
        self.store = store
        self.server_id = server_id
        self.owned: dict[str, frozenset[int] | None] = {}  # None: every bucket
        self._codecs: dict[str, tuple[TableSchema, RowCodec]] = {}
        self.txns = TxnManager(store, txn_timeout_s)
        self._stop = threading.Event()
        #: Checks a request's ``fence`` (see spark_ext/server/fencing.py); None: not fenced.
        self.fence: Any = None
        #: Resolves prepared transactions of dead or deposed coordinators
        #: (spark_ext/server/indoubt.py); None: they wait for their coordinator.
        self.resolver: Any = None
        # Tables with PUTs grouped by the event loop, whose locks it holds (see
        # _inline_put), and that thread's id.
        self._grouped: dict[Table, None] = {}
        self._group_thread = 0
        self._group_error: BaseException | None = None  # a failed flush, until the pass ends
        for t in store.tables:
            self.owned.setdefault(t, None)
        threading.Thread(target=self._reap, name="txn-reaper", daemon=True).start()

    def register(self, server: FrameServer) -> None:
        """Register this service's handlers on a frame server."""
        handlers: dict[Kind, Handler] = {
            Kind.GET: self.get, Kind.GET_MANY: self.get_many, Kind.PUT: self.put, Kind.INSERT: self.insert,
            Kind.UPDATE: self.update, Kind.DELETE: self.delete, Kind.UPDATE_WHERE: self.update_where,
            Kind.DELETE_WHERE: self.delete_where, Kind.TRUNCATE: self.truncate, Kind.SCAN: self.scan,
            Kind.COUNT: self.count, Kind.TXN_STAGE: self.txn_stage, Kind.TXN_PREPARE: self.txn_prepare,
            Kind.TXN_COMMIT: self.txn_commit, Kind.TXN_ABORT: self.txn_abort, Kind.TXN_STATUS: self.txn_status,
            Kind.OPEN_BUCKETS: self.open_buckets, Kind.CLOSE_BUCKETS: self.close_buckets,
            Kind.UPDATE_TABLE: self.update_table, Kind.STATUS: self.status, Kind.PING: self.ping,
        }
        for kind, fn in handlers.items():
            server.register(kind, self._guarded(kind, fn) if kind in _FENCED else fn)
        # Point reads run on the event loop (see spark_ext/server/tcp.py): they take only
        # the table lock, and go to a worker thread instead when it is busy.
        server.register(Kind.GET, self.get, inline=self._inline_read(self.get))
        server.register(Kind.GET_MANY, self.get_many, inline=self._inline_read(self.get_many))
        # One-row PUTs on the loop are grouped per table (the loop holds the table's
        # lock meanwhile) and logged with deferred records; before the loop sends the
        # replies of its pass, or hands a connection to a worker, the groups are logged
        # and applied and the records written (one system call). A worker writes the
        # records before its own reply, which may show rows the loop has applied.
        server.before_replies.append(self._before_replies)
        if self.store.flush != "commit":  # with "commit" every write waits for an fsync
            for kind, fn in {Kind.PUT: self.put, Kind.INSERT: self.insert,
                             Kind.UPDATE: self.update, Kind.DELETE: self.delete}.items():
                inline = self._inline_write(fn)
                if kind == Kind.PUT:
                    inline = self._inline_put(inline)
                server.register(kind, self._guarded(kind, fn), inline=inline)

    def _inline_read(self, fn: Any) -> Any:
        """Wrap a point-read handler for the event loop: raise WouldBlock rather than wait
        for the table lock (held by a long commit, say), or for a long list of keys."""
        def inline(f: Frame, s: Session) -> Any:
            if self._grouped:
                self._flush_groups()  # a read sees the PUTs before it
            keys = f.metadata.get("keys")
            if type(keys) is list and len(keys) > INLINE_GET_MANY_KEYS:
                raise WouldBlock
            return _unless_locked(self._table(f.metadata), fn, f, s)
        return inline

    def _inline_write(self, fn: Any) -> Any:
        """Wrap a small write's handler for the event loop (log flush not ``commit``).

        It raises WouldBlock, sending the request to the connection's worker, when it
        might wait: a fenced request (the fence guard), a large one, the table lock held
        (a compaction, say), or a commit visibly under way. A commit that starts between
        that check and this write's own can still make the loop wait for it.
        """
        def inline(f: Frame, s: Session) -> Any:
            if self._grouped:
                self._flush_groups()  # writes apply in the order they came
            m = f.metadata
            keys = m.get("keys")
            if (len(f.body) > INLINE_WRITE_BYTES or (type(keys) is list and len(keys) > INLINE_GET_MANY_KEYS)
                    or (self.fence is not None and m.get("fence") is not None) or self.store.commit_busy()):
                raise WouldBlock
            t = self._table(m)
            if t.flush == "commit":  # the table's own policy: this write waits for an fsync
                raise WouldBlock
            return _unless_locked(t, fn, f, s)
        return inline

    def _inline_put(self, general: Any) -> Any:
        """The event loop's PUT handler: the common request, one compact row of every
        user column, ``{table, ncols}`` and nothing else (no fence), answered with the
        fewest steps; any other PUT goes to ``general`` (the :meth:`_inline_write`
        wrapper of :meth:`put`), whose checks and errors it keeps.

        It makes the same checks in the same order as ``general`` and :meth:`put`
        (table hosted, flush not ``commit``, no commit under way, table lock free,
        rows decoded by the same codec, bucket owned, then the engine's one-row checks)
        and adds the row to the table's point group (``Store.group_row``): the rows of
        one loop pass are logged in one record and applied together by
        :meth:`_flush_groups`, before any reply of the pass goes out. The loop holds the
        table's lock from the first grouped row to the flush. The reply comes
        pre-encoded. O(row size).
        """
        store = self.store
        owned = self.owned

        def inline(f: Frame, s: Session) -> Any:
            m = f.metadata
            name = m.get("table")
            t = store.tables.get(name) if type(name) is str else None
            if (t is None or f.flags != _COMPACT or len(m) != 2 or t.flush == "commit"
                    or len(f.body) > INLINE_WRITE_BYTES):
                return self._ungrouped(general, f, s)
            # One read: CLOSE_BUCKETS on a worker thread may drop the entry meanwhile.
            mine = owned.get(t.name, False)
            schema = t.schema
            ncols = m.get("ncols")
            # type(): JSON true == 1 and 2.0 == 2, which the general path refuses.
            if mine is False or type(ncols) is not int or ncols != schema.num_user_columns or schema.hidden_rowid:
                return self._ungrouped(general, f, s)
            grouped = self._grouped
            held = t in grouped
            if not held:
                if store.commit_busy():
                    raise WouldBlock
                if not t.lock.acquire(blocking=False):
                    raise WouldBlock
            try:
                rows = self._codec(t).decode(f.body)
                row = rows[0] if len(rows) == 1 else None
                if row is not None and mine is not None:
                    self._check_owned(t, (schema.bucket_of_key(schema.coerce_key(schema.key_of(row))),))
                if row is None or not store.group_row(t, row):
                    # Several rows or none, or a case of the change-set path: after the
                    # PUTs before it, by the general path.
                    if not held:
                        t.lock.release()
                        held = True  # released: nothing left to undo below
                    return self._ungrouped(general, f, s)
            except BaseException:
                if not held:
                    t.lock.release()
                raise
            if not held:
                grouped[t] = None
                self._group_thread = threading.get_ident()
            return encode_count_reply(f.kind, f.request_id, 1)
        return inline

    def _ungrouped(self, handler: Any, f: Frame, s: Session) -> Any:
        """Run an inline handler after the grouped PUTs before it are applied."""
        if self._grouped:
            self._flush_groups()
        return handler(f, s)

    def _flush_groups(self) -> None:
        """Log and apply every table's grouped PUTs and release the tables' locks (the
        event loop's thread only). O(grouped rows)."""
        grouped, self._grouped = self._grouped, {}
        error: BaseException | None = None
        for t in grouped:
            try:
                self.store.flush_point_group(t)
            except BaseException as e:  # every lock is released; the first error is raised
                error = error or e
            finally:
                t.lock.release()
        if error is not None:
            # The grouped PUTs' replies (queued already) must not go out: raised again by
            # _before_replies, whoever called this, so that their connections close.
            self._group_error = error
            raise error

    def _before_replies(self) -> None:
        """FrameServer.before_replies: what the replies about to go out acknowledge is
        applied and written to the OS (see :meth:`register`)."""
        if threading.get_ident() == self._group_thread:
            if self._grouped:
                self._flush_groups()
            error, self._group_error = self._group_error, None
            if error is not None:
                raise error
        self.store.write_deferred()

    def _guarded(self, kind: Kind, fn: Any) -> Any:
        """Wrap a write handler: its fence is checked and held while it runs."""
        def guarded(f: Frame, s: Session) -> Any:
            fence = f.metadata.get("fence")
            if self.fence is None or fence is None:
                return fn(f, s)
            if kind == Kind.TXN_COMMIT and self.txns.status(str(f.metadata.get("txn")))["state"] == "prepared":
                # Phase 2 of a commit decided while the sender still led: every server
                # prepared it under a valid token, so it must finish everywhere or the
                # statement would be half visible. Its keys stayed locked meanwhile.
                return fn(f, s)
            with self.fence.guard(fence):
                if kind in (Kind.TXN_STAGE, Kind.TXN_PREPARE):
                    self.txns.note_fence(f.metadata.get("txn"), fence["group"], fence["token"])
                return fn(f, s)
        return guarded

    def close(self) -> None:
        self._stop.set()

    # --- hosting ------------------------------------------------------------------------

    def host_assignments(self, assignments: Sequence[dict[str, Any]]) -> None:
        """Host what REGISTER_SERVER assigned: renames missed while away first (so a
        new table reusing an old name cannot take the renamed table's data), then
        every table with its columns and indexes brought in line with the catalog."""
        for a in assignments:
            self.follow_rename(a["table"]["name"], a.get("former_names") or [])
        for a in assignments:
            try:
                self.host_table(a["table"], a["buckets"], a.get("indexes", []))
            except SchemaError:
                # One table whose local layout disagrees with the catalog must not keep the
                # others offline: it stays unhosted (NO_SUCH_TABLE) and its data untouched.
                logger.exception("cannot host table %s", a["table"].get("name"))

    def follow_rename(self, name: str, former_names: Sequence[str]) -> None:
        """If this server still holds the table under an earlier name, rename it here."""
        if name in self.store.tables:
            return
        for old in reversed(list(former_names)):  # the newest earlier name first
            if isinstance(old, str) and old in self.store.tables:
                logger.info("table %s was renamed to %s: following", old, name)
                _waiting_for_txns(lambda: self.store.rename_table(old, name))
                if old in self.owned:
                    self.owned[name] = self.owned.pop(old)
                self._codecs.pop(old, None)
                return

    def _follow_columns(self, t: Table, schema: TableSchema) -> None:
        """Add the catalog's columns the local table lacks (ALTER TABLE ADD COLUMNS)."""
        have = t.schema.to_json()["fields"]
        want = schema.to_json()["fields"]
        if have == want:
            return
        if len(want) > len(have) and want[: len(have)] == have:
            extra = [(f["name"], f["type"]) for f in want[len(have):]]
            logger.info("table %s: adding column(s) %s as the catalog says", t.name, [c for c, _ in extra])
            _waiting_for_txns(lambda: self.store.add_columns(t.name, extra))
        elif not (len(have) > len(want) and have[: len(want)] == want):
            # Only columns added here and not (yet) in the catalog are expected; anything
            # else would mean the catalog and this server disagree on the data layout.
            raise SchemaError(
                f"table {t.name!r}: its columns on server {self.server_id} ({[f['name'] for f in have]}) do not "
                f"extend to the catalog's ({[f['name'] for f in want]})", table=t.name)

    def host_table(self, spec: dict[str, Any], buckets: Sequence[int] | None, indexes: Sequence[dict[str, Any]] = ()) -> Table:
        """Create (if missing) and own a table's buckets. Idempotent."""
        schema = TableSchema.from_json(spec)
        t = self.store.tables.get(schema.name)
        if t is None:
            t = self.store.create_table(
                schema.name, schema.arrow_schema, schema.primary_key, schema.num_buckets, schema.options
            )
        else:
            self._follow_columns(t, schema)
        for ix in indexes:
            if ix["name"] not in t.index_defs:
                t.create_index(ix["name"], list(ix["columns"]), ix.get("kind", "hash"))
        owned = None if buckets is None else frozenset(int(b) for b in buckets)
        if owned is not None and owned == frozenset(range(schema.num_buckets)):
            owned = None  # every bucket (one server, the embedded one): no check per request
        self.owned[schema.name] = owned
        t.rowid_buckets = owned  # new hidden row ids must fall in buckets hosted here
        return t

    def open_buckets(self, f: Frame, s: Session) -> Frame:
        m = f.metadata
        spec = _field(m, "table", dict)
        buckets = _field(m, "buckets", list, None)
        t = self.host_table(spec, buckets, _index_list(_field(m, "indexes", list, [])))
        return Frame(f.kind, f.request_id, {"table": t.name, "rows": t.count()})

    def close_buckets(self, f: Frame, s: Session) -> Frame:
        name = _field(f.metadata, "table", str)
        dropped = False
        if f.metadata.get("drop", False):
            dropped = self.store.drop_table(name, if_exists=True)
        self.owned.pop(name, None)
        return Frame(f.kind, f.request_id, {"dropped": dropped})

    def update_table(self, f: Frame, s: Session) -> Frame:
        """Bring the table in line with the catalog: name, columns, indexes."""
        m = f.metadata
        spec = _field(m, "spec", dict, None)
        if spec is not None:
            former = _field(m, "former_names", list, [])
            self.follow_rename(_field(m, "table", str), former)
        t = self._table(m)
        if spec is not None:
            self._follow_columns(t, TableSchema.from_json(spec))
        wanted = {ix["name"]: ix for ix in _index_list(_field(m, "indexes", list, []))}
        for name in list(t.index_defs):
            if name not in wanted:
                t.drop_index(name)
        for name, ix in wanted.items():
            if name not in t.index_defs:
                t.create_index(name, list(ix["columns"]), ix.get("kind", "hash"))
        return Frame(f.kind, f.request_id, {"indexes": sorted(t.index_defs)})

    # --- helpers ------------------------------------------------------------------------

    def _table(self, m: dict[str, Any]) -> Table:
        name = _field(m, "table", str)
        t = self.store.tables.get(name)
        if t is None or name not in self.owned:
            raise NoSuchTableError(f"no table {name!r} on server {self.server_id}", table=name)
        return t

    def _check_owned(self, t: Table, buckets: Iterator[int] | Sequence[int]) -> None:
        owned = self.owned.get(t.name)
        if owned is None:
            return
        for b in buckets:
            if b not in owned:
                raise WireError(
                    ErrorCode.NOT_OWNER,
                    f"bucket {b} of table {t.name!r} is not hosted by server {self.server_id}; refresh placement",
                    {"table": t.name, "bucket": int(b)},
                )

    def _keys(self, t: Table, raw: Any) -> list[Any]:
        if not isinstance(raw, list):
            raise BadArgumentError(f"table {t.name!r}: 'keys' must be a list of keys", table=t.name)
        schema = t.schema
        tns = schema.key_type_names
        out = []
        for k in raw:
            if not isinstance(k, list) or len(k) != len(tns):
                raise BadArgumentError(
                    f"table {t.name!r}: a key is a list of {len(tns)} value(s) ({', '.join(schema.key_columns)}), got {k!r}",
                    table=t.name,
                )
            vals = [values.from_json(tn, v) for tn, v in zip(tns, k)]
            out.append(schema.coerce_key(vals[0] if len(vals) == 1 else tuple(vals)))
        self._check_owned(t, (schema.bucket_of_key(k) for k in out))
        return out

    def _set_values(self, t: Table, raw: Any) -> dict[str, Any]:
        if not isinstance(raw, dict) or not raw:
            raise BadArgumentError(f"table {t.name!r}: 'values' must be an object of column: value", table=t.name)
        out = {}
        for c, v in raw.items():
            i = t.schema.column_index(c)
            out[c] = values.from_json(t.schema.type_names[i], v)
        return out

    def _rows(self, t: Table, f: Frame, ordered: bool = False) -> Any:
        """Rows of a write request: an Arrow stream or compact rows (user columns).

        ``ordered``: large Arrow rows of an int-key table come back conformed and ordered
        by (bucket, key), as a ``txn.OrderedBatch`` (see :func:`order_rows`).
        """
        schema = t.schema
        if f.flags & _ARROW:
            data = read_ipc_stream(f.body)
            buckets = None
            if self.owned.get(t.name) is not None and data.num_rows:
                # Conformed once, here: the engine takes a batch in the table's layout as
                # it is (type checks only, no second cast or copy).
                data = schema.conform_batch(data)
                if not schema.hidden_rowid:  # row ids are assigned here: every bucket is fine
                    buckets = batch_buckets(schema, data)
                    counts = np.bincount(buckets, minlength=schema.num_buckets)
                    self._check_owned(t, np.flatnonzero(counts).tolist())
            if not ordered:
                return data
            # A logged table's rows are encoded for the log here too, off the commit's path.
            return order_rows(schema, data, buckets, encode=t.persistent and self.store.data_dir is not None)
        if f.flags & _COMPACT:
            rows = self._codec(t, f.metadata).decode(f.body)
            if self.owned.get(t.name) is not None and not schema.hidden_rowid:
                self._check_owned(t, (schema.bucket_of_key(schema.coerce_key(
                    tuple(r[i] for i in schema.key_positions) if len(schema.key_positions) > 1 else r[schema.key_positions[0]]))
                    for r in rows if r is not None))
            pad = (None,) * (schema.num_user_columns - self._width(t, f.metadata))
            return [tuple(r) + pad for r in rows if r is not None]
        raise BadArgumentError(f"table {t.name!r}: a write needs rows (an Arrow stream or compact rows)", table=t.name)

    def _where(self, m: dict[str, Any]) -> Any:
        w = m.get("where")
        if w is None:
            return None
        validate_predicate(w)  # bounded depth and size before any recursion
        return P.from_obj(w)

    def _check_key_changes(self, t: Table, values_: dict[str, Any]) -> None:
        """A key change may move a row to another server's bucket: refuse it on a table
        spread over servers (the client deletes and inserts instead)."""
        if self.owned.get(t.name) is not None and any(c in t.schema.key_columns for c in values_):
            raise BadArgumentError(
                f"table {t.name!r} is spread over several servers: change key columns with a "
                "delete and an insert (or 'replace' routed by the new key), not with UPDATE",
                table=t.name,
            )

    # --- reads --------------------------------------------------------------------------

    def _codec(self, t: Table, m: dict[str, Any] | None = None) -> RowCodec:
        """The compact-row codec of a table's user columns, built once per schema; with
        a request's ``ncols`` smaller than the table's (a sender that has not seen an
        ADD COLUMNS yet), the codec of that many leading columns."""
        if m is not None and m.get("ncols") not in (None, t.schema.num_user_columns):
            return codec_for(pa.schema(list(t.schema.arrow_schema)[: self._width(t, m)]))
        cached = self._codecs.get(t.name)
        if cached is None or cached[0] is not t.schema:
            cached = self._codecs[t.name] = (t.schema, RowCodec(t.schema.arrow_schema))
        return cached[1]

    @staticmethod
    def _width(t: Table, m: dict[str, Any]) -> int:
        """How many leading user columns the sender's compact rows hold (``ncols``)."""
        n = m.get("ncols")
        have = t.schema.num_user_columns
        if n is None:
            return have
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise BadArgumentError(f"table {t.name!r}: 'ncols' must be a positive integer, got {n!r}", table=t.name)
        if n > have:
            raise WireError(
                ErrorCode.CONFLICT,
                f"table {t.name!r} has {have} column(s) on this server, the request assumes {n}: "
                "the table's definition changed meanwhile; reload it and retry",
                {"table": t.name},
            )
        return n

    def _point_reply(self, f: Frame, t: Table, rows: list[Any]) -> Frame:
        """Rows of GET / GET_MANY in the width the sender asked for (see ``ncols``)."""
        m = f.metadata
        if m.get("ncols") is None or m["ncols"] == t.schema.num_user_columns:
            return Frame(f.kind, f.request_id, {}, self._codec(t).encode(rows, presence=True), _COMPACT)
        n = self._width(t, m)
        rows = [None if r is None else r[:n] for r in rows]
        # ``ncols`` in the reply tells the sender its definition is out of date.
        meta = {"ncols": t.schema.num_user_columns}
        return Frame(f.kind, f.request_id, meta, self._codec(t, m).encode(rows, presence=True), _COMPACT)

    def get(self, f: Frame, s: Session) -> Frame:
        m = f.metadata
        t = self._table(m)
        key = m.get("key")
        schema = t.schema
        # The hot path: a one-column integer key sent as [int] within the column's range
        # is already what _keys (from_json, coerce_key) would return; anything else takes
        # that general path and its errors. About half of a GET's handler time.
        if (type(key) is list and len(key) == 1 and type(key[0]) is int
                and schema.int_key_min <= key[0] <= schema.int_key_max):
            k = key[0]
            if self.owned.get(t.name) is not None:
                self._check_owned(t, (schema.bucket_of_key(k),))
        else:
            (k,) = self._keys(t, [key])
        ncols = m.get("ncols")
        if ncols is None or ncols == schema.num_user_columns:
            return Frame(f.kind, f.request_id, {}, self._codec(t).encode_one(t.get(k)), _COMPACT)
        return self._point_reply(f, t, [t.get(k)])  # a sender with an older definition

    def get_many(self, f: Frame, s: Session) -> Frame:
        t = self._table(f.metadata)
        keys = self._keys(t, f.metadata.get("keys"))
        return self._point_reply(f, t, t.get_many(keys))

    def count(self, f: Frame, s: Session) -> Frame:
        t = self._table(f.metadata)
        where = self._where(f.metadata)
        buckets = self._scan_buckets(t, f.metadata)
        if where is None and buckets is None:
            return Frame(f.kind, f.request_id, {"count": t.count()})
        sc = t.scan(columns=[t.schema.column_names[0]], where=where, buckets=buckets)
        return Frame(f.kind, f.request_id, {"count": sc.count(), "rows_examined": sc.rows_examined})

    def _scan_buckets(self, t: Table, m: dict[str, Any]) -> list[int] | None:
        req = _field(m, "buckets", list, None)
        owned = self.owned.get(t.name)
        if req is None:
            return None if owned is None else sorted(owned)
        nb = t.schema.num_buckets
        bs = []
        for b in req:
            if not isinstance(b, int) or isinstance(b, bool) or not 0 <= b < nb:
                raise BadArgumentError(
                    f"table {t.name!r}: 'buckets' must list bucket numbers in 0..{nb - 1}, got {b!r}", table=t.name)
            bs.append(b)
        self._check_owned(t, bs)
        return bs

    def scan(self, f: Frame, s: Session) -> Iterator[Frame]:
        m = f.metadata
        t = self._table(m)
        cols = _field(m, "columns", list, None)
        limit = _field(m, "limit", int, None)
        schema = t.schema
        agg = scan_aggregates.parse(t.name, schema.storage_schema, schema.column_names, m)
        if agg is not None:
            # Partial aggregates of the rows scanned here (section 10.2): one frame.
            cols = agg.input_columns() or [schema.column_names[0]]
            sc = t.scan(columns=cols, where=self._where(m), buckets=self._scan_buckets(t, m))
            return self._aggregate_scan(f, t, agg, sc)
        sc = t.scan(columns=cols, where=self._where(m), limit=limit, buckets=self._scan_buckets(t, m))
        return self._stream_scan(f, sc)

    def _aggregate_scan(self, f: Frame, t: Table, agg: Any, sc: Any) -> Iterator[Frame]:
        result = scan_aggregates.compute(t.name, agg, sc.schema, sc)
        meta = {"rows_examined": sc.rows_examined, "access_path": sc.access_path, "groups": result.num_rows}
        yield Frame(f.kind, f.request_id, meta, write_ipc_stream(result.to_batches(), result.schema), int(Flags.HAS_ARROW))

    def _stream_scan(self, f: Frame, sc: Any) -> Iterator[Frame]:
        pending: list[pa.RecordBatch] = []
        size = 0
        for batch in sc:
            pending.append(batch)
            size += batch.nbytes
            if size >= SCAN_FRAME_BYTES:
                yield Frame(f.kind, f.request_id, {}, write_ipc_stream(pending, sc.schema), int(Flags.HAS_ARROW))
                pending, size = [], 0
        meta = {"rows_examined": sc.rows_examined, "access_path": sc.access_path}
        yield Frame(f.kind, f.request_id, meta, write_ipc_stream(pending, sc.schema), int(Flags.HAS_ARROW))

    # --- writes (each one statement, atomic on this server) -----------------------------

    def put(self, f: Frame, s: Session) -> Frame:
        t = self._table(f.metadata)
        return Frame(f.kind, f.request_id, {"count": t.upsert(self._rows(t, f))})

    def insert(self, f: Frame, s: Session) -> Frame:
        t = self._table(f.metadata)
        return Frame(f.kind, f.request_id, {"count": t.insert(self._rows(t, f))})

    def update(self, f: Frame, s: Session) -> Frame:
        t = self._table(f.metadata)
        keys = self._keys(t, f.metadata.get("keys"))
        vals = self._set_values(t, f.metadata.get("values"))
        self._check_key_changes(t, vals)
        return Frame(f.kind, f.request_id, {"count": t.update_many(keys, vals)})

    def delete(self, f: Frame, s: Session) -> Frame:
        t = self._table(f.metadata)
        return Frame(f.kind, f.request_id, {"count": t.delete(self._keys(t, f.metadata.get("keys")))})

    def update_where(self, f: Frame, s: Session) -> Frame:
        t = self._table(f.metadata)
        vals = self._set_values(t, f.metadata.get("values"))
        self._check_key_changes(t, vals)
        n = t.update_where(self._where(f.metadata), vals)
        return Frame(f.kind, f.request_id, {"count": n})

    def delete_where(self, f: Frame, s: Session) -> Frame:
        t = self._table(f.metadata)
        return Frame(f.kind, f.request_id, {"count": t.delete_where(self._where(f.metadata))})

    def truncate(self, f: Frame, s: Session) -> Frame:
        self._table(f.metadata).truncate()
        return Frame(f.kind, f.request_id, {})

    # --- transactions (see spark_ext/server/txns.py for the life cycle) ---------------

    def _txn_id(self, m: dict[str, Any]) -> str:
        return str(_field(m, "txn", str))

    def txn_stage(self, f: Frame, s: Session) -> Frame:
        """Buffer one change of a writer's part; rows are decoded and type-checked now."""
        m = f.metadata
        t = self._table(m)
        op = _field(m, "op", str)
        part = _field(m, "part", str, "")
        if op in ("insert", "upsert"):
            # Arrow rows are conformed and ordered by (bucket, key) now, while the writer
            # prepares its next batch, rather than at its task commit.
            rows = self._rows(t, f, ordered=True)
            n = len(rows) if isinstance(rows, list) else rows.num_rows
            change: tuple[Any, ...] = (rows,)
        elif op == "update":
            keys = self._keys(t, m.get("keys"))
            vals = self._set_values(t, m.get("values"))
            self._check_key_changes(t, vals)
            change, n = (keys, vals), len(keys)
        elif op == "delete":
            keys = self._keys(t, m.get("keys"))
            change, n = (keys,), len(keys)
        elif op == "replace":
            keys = self._keys(t, m.get("keys"))
            staged_rows = self._rows(t, f)
            # (Arrow rows become dicts: columns are matched by name.)
            rows = staged_rows if isinstance(staged_rows, list) else staged_rows.to_pylist()
            if len(rows) != len(keys):
                raise BadArgumentError(f"table {t.name!r}: replace needs as many rows as keys", table=t.name)
            if self.owned.get(t.name) is not None and not t.schema.hidden_rowid:
                sch = t.schema
                new_keys = []
                for r in rows:
                    row_vals = sch.dict_to_values(r) if isinstance(r, dict) else list(r)
                    kv = [row_vals[i] for i in sch.key_positions]
                    new_keys.append(sch.coerce_key(kv[0] if len(kv) == 1 else tuple(kv)))
                self._check_owned(t, (sch.bucket_of_key(k) for k in new_keys))
            change, n = (list(zip(keys, rows)),), len(keys)
        elif op == "update_where":
            vals = self._set_values(t, m.get("values"))
            self._check_key_changes(t, vals)
            change, n = (self._where(m), vals), 0
        elif op == "delete_where":
            change, n = (self._where(m),), 0
        elif op == "truncate":
            change, n = (), 0
        else:
            raise BadArgumentError(f"unknown staged operation {op!r}")
        log = None
        ordered = change[0] if op in ("insert", "upsert") and change else None
        ipc = ordered.ipc if isinstance(ordered, OrderedBatch) else None
        if isinstance(ordered, OrderedBatch) and ipc is not None:

            def log(cs: Any) -> None:
                # The rows go to the write-ahead log now, while the writer produces its
                # next batch: the statement's commit record then only refers to them.
                ordered.lsn = self.store.log_staged(cs, t, ipc)

        self.txns.stage(self._txn_id(m), part, (op, t.name, change), n, log)
        return Frame(f.kind, f.request_id, {"staged": n})

    @staticmethod
    def _apply(cs: Any, ch: tuple[str, str, tuple[Any, ...]]) -> int:
        op, table, args = ch
        fn = {"insert": cs.insert, "upsert": cs.upsert, "update": cs.update, "delete": cs.delete,
              "replace": cs.replace, "update_where": cs.update_where, "delete_where": cs.delete_where,
              "truncate": cs.truncate}[op]
        n = fn(table, *args)
        return int(n or 0)

    def txn_prepare(self, f: Frame, s: Session) -> Frame:
        m = f.metadata
        txn_id = self._txn_id(m)
        if m.get("parts") is not None:
            parts = _field(m, "parts", list)
            state = self.txns.prepare_all(txn_id, [str(p) for p in parts], self._participants(m))
            return Frame(f.kind, f.request_id, {"state": state})
        n = self.txns.prepare_part(txn_id, _field(m, "part", str, ""), self._apply)
        return Frame(f.kind, f.request_id, {"prepared": n})

    def _participants(self, m: dict[str, Any]) -> list[str] | None:
        """The job-form PREPARE's ``participants`` (server ids, the decider first), checked."""
        ps = _field(m, "participants", list, None)
        if ps is None:
            return None
        if not ps or len(ps) > 10000 or not all(isinstance(p, str) and p for p in ps) or len(set(ps)) != len(ps):
            raise BadArgumentError(f"request field 'participants' must be distinct server ids, got {ps!r}")
        if self.server_id not in ps:
            raise BadArgumentError(
                f"request field 'participants' {ps!r} does not name this server ({self.server_id!r})")
        return [str(p) for p in ps]

    def txn_commit(self, f: Frame, s: Session) -> Frame:
        m = f.metadata
        parts = _field(m, "parts", list, None)
        state = self.txns.commit(self._txn_id(m), None if parts is None else [str(p) for p in parts])
        return Frame(f.kind, f.request_id, {"state": state})

    def txn_abort(self, f: Frame, s: Session) -> Frame:
        m = f.metadata
        txn_id = self._txn_id(m)
        if "part" in m:
            return Frame(f.kind, f.request_id, {"state": self.txns.abort_part(txn_id, _field(m, "part", str))})
        return Frame(f.kind, f.request_id, {"state": self.txns.abort(txn_id)})

    def txn_status(self, f: Frame, s: Session) -> Frame:
        m = f.metadata
        txn_id = self._txn_id(m)
        if m.get("resolve") is True and self.resolver is not None:
            # A participant in doubt asks this server, its decider, for the outcome.
            state = self.resolver.answer(txn_id, m.get("fences"))
            return Frame(f.kind, f.request_id, {**self.txns.status(txn_id), "state": state,
                                                "in_doubt": self.store.in_doubt()})
        st = self.txns.status(txn_id)
        return Frame(f.kind, f.request_id, {**st, "in_doubt": self.store.in_doubt()})

    def _reap(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.txns.reap()
            except Exception:
                logger.exception("transaction reaper failed")

    def ping(self, f: Frame, s: Session) -> Frame:
        """Liveness; with ``fence`` a new leader announces its token (nothing else changes)."""
        return Frame(f.kind, f.request_id, {"pong": True, "server_id": self.server_id})

    # --- status -------------------------------------------------------------------------

    def status(self, f: Frame, s: Session) -> Frame:
        tables = []
        for name, t in sorted(self.store.tables.items()):
            owned = self.owned.get(name)
            tables.append({
                "table": name, "rows": t.count(), "memory_bytes": t.memory_bytes(),
                "buckets": sorted(owned) if owned is not None else list(range(t.schema.num_buckets)),
                "indexes": sorted(t.index_defs),
            })
        return Frame(f.kind, f.request_id, {
            "server_id": self.server_id, "tables": tables, "memory_bytes": self.store.memory_bytes(),
            "open_transactions": self.txns.open_count(), "in_doubt": self.store.in_doubt(),
            "in_doubt_txns": self.txns.in_doubt_report(self.server_id),
        })
