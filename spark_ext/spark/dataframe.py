"""``df.putInto(table)`` and ``df.deleteFrom(table)``: distributed, atomic writes from Python.

putInto takes the JVM bridge's DSv2 writer when the session has it (see
:mod:`spark_ext.spark.jvm_write`; ``path=`` / conf ``spark.sparkext.putInto.path``), after
the same checks. Otherwise, and for deleteFrom, no JVM bridge is involved. The statement is one staged transaction on the store servers
(``spark_ext/server/txns.py``), driven like a Spark DSv2 write:

1. the driver checks the DataFrame's columns and types against the table (nothing runs
   if they do not fit) and picks a transaction id;
2. one Spark job runs ``mapInArrow``: each task conforms its Arrow batches to the table,
   splits them by owning server (bucket placement fixed by the driver), sends them as
   ``TXN_STAGE`` requests of its own part ``"<partition>-<attempt>"``, then prepares its part
   on every server of the table (task commit) and returns the part id;
3. the driver collects the parts of the successful tasks, sends ``TXN_PREPARE {txn, parts,
   participants}`` to every server (job commit, phase 1: logged durably), then
   ``TXN_COMMIT`` (phase 2: visible at once on each server); the servers in id order, the
   first being the *decider* whose commit decides (``docs/in-doubt.md``: the servers
   finish the statement by themselves if the driver dies in between); a table on one
   server commits in one phase, with ``TXN_COMMIT {txn, parts}`` alone;
4. any failure before phase 2 sends ``TXN_ABORT`` everywhere: nothing is visible.
   If the refusal is because a task attempt prepared and then failed (a Spark retry or a
   speculative copy left an extra prepared part), the statement runs once more.

The executors get the table's definition, its placement, the servers' addresses and the
secret in the task closure, so they never ask the locator.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import uuid
from typing import Any, Iterator, Sequence

from spark_ext import exceptions as X
from spark_ext.exceptions import BadArgumentError, SparkExtError, TypeMismatchError, UnknownColumnError

logger = logging.getLogger(__name__)

#: Rows buffered per server before one TXN_STAGE request (bounded by the frame cap).
STAGE_ROWS = 1_000_000
STAGE_BYTES = 48 << 20
DELETE_KEYS = 100_000
COMMIT_RETRIES = 3
STATEMENT_RUNS = 2


# --- checks on the driver (pure: unit-tested without Spark) -----------------------------


def plan_columns(table: str, schema: Any, fields: Sequence[tuple[str, str | None, str]], op: str,
                 case_sensitive: bool = False) -> list[tuple[str, str]]:
    """Match DataFrame columns to table columns; raise naming the first problem.

    Args:
        table: the table's name (for messages).
        schema: its :class:`~spark_ext.store.schema.TableSchema`.
        fields: the DataFrame's columns as ``(name, store type name or None if the Spark
            type has no store equivalent, Spark type for messages)``.
        op: ``"upsert"`` (putInto) or ``"delete"`` (deleteFrom).

    Returns:
        ``[(dataframe column, table column)]`` to send: every matched column for an upsert,
        the key columns for a delete.
    """
    what = "putInto" if op == "upsert" else "deleteFrom"
    if not schema.primary_key:
        raise BadArgumentError(
            f"{what}: table {table!r} has no primary key, so rows cannot be matched by key "
            "(declare a primary key, or append with INSERT / StoreTable.insert)", table=table)
    names = list(schema.arrow_schema.names)
    types = schema.type_names
    by_lower = {n.lower(): n for n in names}
    seen: dict[str, str] = {}
    matched: list[tuple[str, str, str | None, str]] = []
    for name, stype, display in fields:
        tcol = name if name in names else (None if case_sensitive else by_lower.get(name.lower()))
        if tcol is None:
            raise UnknownColumnError(
                f"{what}: table {table!r} has no column {name!r} (columns: {', '.join(names)})",
                table=table, column=name)
        if tcol in seen:
            raise BadArgumentError(f"{what}: the DataFrame has columns {seen[tcol]!r} and {name!r}, "
                                   f"both matching column {tcol!r} of table {table!r}", table=table, column=tcol)
        seen[tcol] = name
        matched.append((name, tcol, stype, display))
    missing_keys = [k for k in schema.primary_key if k not in seen]
    if missing_keys:
        raise BadArgumentError(
            f"{what}: the DataFrame lacks key column(s) {', '.join(missing_keys)} of table {table!r} "
            f"(DataFrame columns: {', '.join(f[0] for f in fields) or 'none'})", table=table, column=missing_keys[0])
    from spark_ext.spark.types import writable

    out = []
    for name, tcol, stype, display in matched:
        if op == "delete" and tcol not in schema.primary_key:
            continue
        ttype = types[names.index(tcol)]
        if stype is None or not writable(stype, ttype):
            raise TypeMismatchError(
                f"{what}: column {name!r} is {display} in the DataFrame but {ttype} in table {table!r}"
                + ("" if stype is not None else f" (Spark type {display} cannot be stored)"),
                table=table, column=tcol)
        out.append((name, tcol))
    if op == "upsert":
        for i, n in enumerate(names):
            if n not in seen and not schema.nullable[i]:
                raise BadArgumentError(
                    f"putInto: the DataFrame lacks column {n!r}, which is NOT NULL in table {table!r}",
                    table=table, column=n)
    return out


def _spark_fields(df: Any) -> list[tuple[str, str | None, str]]:
    from spark_ext.spark.types import store_type_of

    return [(f.name, store_type_of(f.dataType), f.dataType.simpleString()) for f in df.schema.fields]


# --- executor side --------------------------------------------------------------------

_pool_lock = threading.Lock()
_pools: dict[tuple[str, int, bytes | None], Any] = {}
_schemas: dict[str, Any] = {}


def _pool(host: str, port: int, secret: bytes | None) -> Any:
    from spark_ext.client.connection import ConnectionPool

    key = (host, port, secret)
    with _pool_lock:
        p = _pools.get(key)
        if p is None:
            p = _pools[key] = ConnectionPool(host, port, secret, 120.0)
        return p


def _schema(spec: dict[str, Any], key_only: bool) -> Any:
    import json

    import pyarrow as pa

    from spark_ext.store.schema import TableSchema

    ck = json.dumps(spec, sort_keys=True) + str(key_only)
    s = _schemas.get(ck)
    if s is None:
        s = TableSchema.from_json(spec)
        if key_only:
            fields = [s.arrow_schema.field(k) for k in s.primary_key]
            s = TableSchema(s.name, pa.schema(fields), list(s.primary_key), s.num_buckets)
        _schemas[ck] = s
    return s


def stage_partition(payload: dict[str, Any], batches: Iterator[Any]) -> Iterator[Any]:
    """The task of a putInto/deleteFrom job (runs in the executors' Python workers)."""
    import numpy as np
    import pyarrow as pa

    from pyspark import TaskContext
    from spark_ext.store.schema import batch_buckets, batch_keys
    from spark_ext.wire import values
    from spark_ext.wire.arrowio import write_ipc_stream
    from spark_ext.wire.frames import Flags
    from spark_ext.wire.kinds import Kind

    ctx = TaskContext.get()
    part = f"{ctx.partitionId()}-{ctx.attemptNumber()}" if ctx is not None else f"local-{uuid.uuid4().hex[:8]}"
    txn, op, secret = payload["txn"], payload["op"], payload["secret"]
    fence = {"fence": payload["fence"]} if payload.get("fence") else {}  # driver HA token
    schema = _schema(payload["spec"], key_only=op == "delete")
    placement = np.array(payload["placement"], dtype=object)
    pools = {sid: _pool(h, p, secret) for sid, (h, p) in payload["servers"].items()}
    src = [s for s, _ in payload["columns"]]
    dst = [t for _, t in payload["columns"]]
    pending: dict[str, list[Any]] = {}
    pending_rows: dict[str, int] = {}
    pending_bytes: dict[str, int] = {}
    staged = 0
    done: set[str] = set()  # servers where this part is prepared (it cannot be taken out there)

    def flush(sid: str) -> None:
        chunks = pending.pop(sid, [])
        pending_rows.pop(sid, None)
        pending_bytes.pop(sid, None)
        if not chunks:
            return
        batch = pa.Table.from_batches(chunks).combine_chunks().to_batches()[0] if len(chunks) > 1 else chunks[0]
        meta = {"txn": txn, "part": part, "table": payload["table"], "op": op, **fence}
        if op == "upsert":
            pools[sid].request(Kind.TXN_STAGE, meta, write_ipc_stream(batch), int(Flags.HAS_ARROW))
            return
        tns = schema.key_type_names
        keys = batch_keys(schema, batch)
        for i in range(0, len(keys), DELETE_KEYS):
            kj = [[values.to_json(tn, v) for tn, v in zip(tns, (k if len(tns) > 1 else (k,)))]
                  for k in keys[i:i + DELETE_KEYS]]
            pools[sid].request(Kind.TXN_STAGE, {**meta, "keys": kj})

    try:
        for raw in batches:
            if raw.num_rows == 0:
                continue
            b = pa.RecordBatch.from_arrays([raw.column(raw.schema.get_field_index(c)) for c in src], names=dst)
            b = schema.conform_batch(b)  # types, NOT NULL and key NULLs, checked here
            staged += b.num_rows
            sids = placement[batch_buckets(schema, b)]
            for sid in sorted(set(sids.tolist())):
                sub = b.filter(pa.array(sids == sid)) if len(pools) > 1 else b
                pending.setdefault(sid, []).append(sub)
                pending_rows[sid] = pending_rows.get(sid, 0) + sub.num_rows
                pending_bytes[sid] = pending_bytes.get(sid, 0) + sub.nbytes
                if pending_rows[sid] >= STAGE_ROWS or pending_bytes[sid] >= STAGE_BYTES:
                    flush(sid)
        for sid in list(pending):
            flush(sid)
        prepared = 0
        for sid in sorted(pools):  # task commit: prepare this part on every server
            r = pools[sid].request(Kind.TXN_PREPARE, {"txn": txn, "part": part, **fence})
            prepared += int(r.metadata.get("prepared", 0))
            done.add(sid)
        if payload.get("fail_after_prepare") and ctx is not None and ctx.partitionId() == 0 \
                and ctx.attemptNumber() == 0 and payload.get("run") == 0:
            raise RuntimeError("spark-ext test: injected task failure after prepare")
    except BaseException:
        for sid in sorted(set(pools) - done):  # task abort: drop this attempt's unprepared part
            try:
                pools[sid].request(Kind.TXN_ABORT, {"txn": txn, "part": part})
            except Exception:
                pass
        raise
    yield pa.RecordBatch.from_pydict({"part": [part], "rows": [staged], "n": [prepared]},
                                     schema=pa.schema([("part", pa.string()), ("rows", pa.int64()), ("n", pa.int64())]))


# --- driver side ----------------------------------------------------------------------

_ERR = re.compile(r"spark_ext\.exceptions\.(\w+): ([^\n]*)")


def _translate(e: BaseException) -> BaseException | None:
    """The spark-ext error behind a failed Spark job (from the worker's traceback), if any."""
    found = [(n, m) for n, m in _ERR.findall(str(e)) if isinstance(getattr(X, n, None), type)]
    if not found:
        return None
    name, msg = next(((n, m) for n, m in found if n != "TransactionStateError"), found[0])
    cls = getattr(X, name)
    try:
        return cls(msg.strip())
    except Exception:
        return SparkExtError(msg.strip())


def _target(df: Any, table: Any, what: str) -> tuple[Any, Any, str]:
    """(client, table info, full name) of the target; errors name the table."""
    from spark_ext.spark.store_table import StoreTable

    if isinstance(table, StoreTable):
        return table._client, table._client.table(table.name, refresh=True), table.name
    if not isinstance(table, str):
        raise BadArgumentError(f"{what}: expected a table name or a StoreTable, got {type(table).__name__}")
    t = StoreTable.forName(df.sparkSession, table)  # NoSuchTableError with a hint
    return t._client, t._client.table(t.name), t.name


def _servers(info: Any) -> dict[str, tuple[str, int]]:
    out = {}
    for sid in sorted(set(info.placement)):
        s = info.servers.get(sid) or {}
        if not s.get("up") or s.get("host") is None:
            raise X.BucketOfflineError(f"table {info.full_name!r}: its server {sid} is down; nothing was written",
                                       table=info.full_name, server=sid)
        out[sid] = (str(s["host"]), int(s["port"]))
    return out


#: Which path the last putInto of this process took ("jvm" or "python"): for tests and logs.
last_path: str | None = None


def run_statement(df: Any, table: Any, op: str, _test_fail_after_prepare: bool = False, path: str = "python") -> int:
    """Run a putInto ("upsert") or deleteFrom ("delete") statement; see the module doc.

    If a task attempt prepared its part and then failed (Spark retried it, or ran a
    speculative copy), the servers refuse the commit and everything is rolled back; the
    statement then runs once more under a new transaction (upsert and delete by key are
    idempotent).
    """
    for run in range(STATEMENT_RUNS):
        try:
            return _run_once(df, table, op, run, _test_fail_after_prepare, path)
        except X.TransactionStateError as e:
            if "not in the commit" not in str(e) or run == STATEMENT_RUNS - 1:
                raise
            logger.warning("%s: a task attempt prepared and then failed; running the statement again",
                           "putInto" if op == "upsert" else "deleteFrom")
    raise AssertionError("unreachable")


def _run_once(df: Any, table: Any, op: str, run: int, fail_after_prepare: bool, path: str = "python") -> int:
    global last_path
    from pyspark.sql import functions as F

    from spark_ext.spark import jvm_write
    from spark_ext.wire.kinds import Kind

    what = "putInto" if op == "upsert" else "deleteFrom"
    if not (hasattr(df, "mapInArrow") and hasattr(df, "schema")):
        raise BadArgumentError(f"{what} is a method of a Spark DataFrame, got {type(df).__name__}")
    client, info, name = _target(df, table, what)
    case_sensitive = str(df.sparkSession.conf.get("spark.sql.caseSensitive", "false")).lower() == "true"
    fields = _spark_fields(df)
    cols = plan_columns(name, info.schema, fields, op, case_sensitive)
    servers = _servers(info)
    if op == "upsert" and path != "python" and not fail_after_prepare:
        reason = jvm_write.why_not(df.sparkSession, client, fields, cols, info.schema)
        if reason is None:
            if client.leadership is not None:
                client.leadership.check()  # a deposed leader starts no job
            last_path = "jvm"
            return jvm_write.write(df, info, cols, jvm_write.catalog_of(df.sparkSession) or "")
        if path == "jvm":
            raise BadArgumentError(f"putInto into {name!r}: path 'jvm' is not possible: {reason}", table=name)
        logger.debug("putInto into %s: the Python path, because %s", name, reason)
    if op == "upsert":
        last_path = "python"
    txn = f"pyspark-{op}-{uuid.uuid4().hex}"
    payload = {
        "txn": txn, "op": op, "table": info.full_name, "spec": info.schema.to_json(),
        "placement": list(info.placement), "servers": servers, "secret": client.secret, "columns": cols,
        "run": run, "fail_after_prepare": fail_after_prepare, "fence": client.fence,
    }
    fence = {"fence": client.fence} if client.fence else {}
    if client.leadership is not None:
        client.leadership.check()  # a deposed leader starts no job
    pools = {sid: client._pool(h, p) for sid, (h, p) in servers.items()}

    def abort_all() -> None:
        for sid, pool in pools.items():
            try:
                pool.request(Kind.TXN_ABORT, {"txn": txn})
            except Exception:
                logger.warning("%s: abort of %s on server %s failed; its timeout will abort it", what, txn, sid)

    src = df.select(*[F.col("`" + s.replace("`", "``") + "`") for s, _ in cols])
    try:
        out = src.mapInArrow(functools.partial(stage_partition, payload), "part string, rows long, n long").collect()
        parts = [r["part"] for r in out]
        total = sum(int(r["n"]) for r in out)
        if len(pools) == 1:
            # One server holds the whole statement: it commits in one phase (one log
            # record, one fsync, one round trip less); refused, nothing was applied.
            (pool,) = pools.values()
            try:
                pool.request(Kind.TXN_COMMIT, {"txn": txn, "parts": parts, **fence})
            except BaseException:
                # Refused (nothing applied) or the reply was lost: the abort's answer tells.
                try:
                    if pool.request(Kind.TXN_ABORT, {"txn": txn}).metadata.get("state") == "committed":
                        return total
                except Exception:
                    pass
                raise
            return total
        participants = list(pools)  # in server id order (_servers): the first decides
        for sid, pool in pools.items():  # job commit, phase 1, the decider first
            pool.request(Kind.TXN_PREPARE, {"txn": txn, "parts": parts, "participants": participants, **fence})
    except BaseException as e:
        abort_all()
        t = _translate(e) if not isinstance(e, SparkExtError) else None
        if t is not None:
            raise t from e
        raise
    decider = next(iter(pools))
    for sid, pool in pools.items():  # job commit, phase 2, the decider first: its commit decides
        for attempt in range(COMMIT_RETRIES):
            try:
                pool.request(Kind.TXN_COMMIT, {"txn": txn, "parts": parts, **fence})
                break
            except Exception as e:
                if sid == decider and (isinstance(e, SparkExtError) or attempt == COMMIT_RETRIES - 1):
                    _settle_decider(what, name, txn, pool, e, abort_all)
                    break  # it had committed after all (its reply was lost)
                if attempt == COMMIT_RETRIES - 1:
                    raise SparkExtError(
                        f"{what}: transaction {txn} is committed but its commit on server {sid} failed ({e}); "
                        f"that server commits it by itself once it hears from the decider {decider}",
                        table=name, txn=txn) from e
    return total


def _settle_decider(what: str, name: str, txn: str, pool: Any, e: BaseException, abort_all: Any) -> None:
    """The decider's commit failed: returns if it committed after all (the abort's
    answer says so), else aborts everywhere and raises (nothing is visible)."""
    from spark_ext.wire.kinds import Kind

    try:
        state = pool.request(Kind.TXN_ABORT, {"txn": txn}).metadata.get("state")
    except Exception:
        raise SparkExtError(
            f"{what}: the outcome of transaction {txn} is unknown: its deciding server could not be reached "
            f"({e}); the servers settle it among themselves (see 'spark-ext txns')", table=name, txn=txn) from e
    if state == "committed":
        return
    abort_all()
    raise e


def put_into(df: Any, table: Any, path: str | None = None) -> int:
    """putInto; ``path`` is ``"auto"``, ``"jvm"`` or ``"python"`` (None: the session's conf)."""
    from spark_ext.spark.jvm_write import requested_path

    if not hasattr(df, "sparkSession"):
        raise BadArgumentError(f"putInto is a method of a Spark DataFrame, got {type(df).__name__}")
    return run_statement(df, table, "upsert", path=requested_path(df.sparkSession, path))


def delete_from(df: Any, table: Any) -> int:
    return run_statement(df, table, "delete")
