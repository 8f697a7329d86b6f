"""Scans: pick the cheapest access path for a predicate and stream Arrow batches.

Access paths, best first:

1. primary key equality / IN: fetch those keys from their buckets only;
2. a secondary index: hash or ordered equality / IN, or an ordered range;
3. a full scan of the selected buckets, filtered vectorized.

Paths 1 and 2 examine only the candidate rows; ``Scan.rows_examined`` counts rows
looked at, so tests can prove an index was used. Candidates are collected and every
bucket snapshot is taken under the table lock, so the scan sees one moment of the table.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import pyarrow as pa

from spark_ext.exceptions import BadArgumentError, ConstraintError
from spark_ext.store import predicate as P
from spark_ext.store.bucket import BucketSnapshot
from spark_ext.store.index import OrderedIndex, SecondaryIndex
from spark_ext.store.schema import ROWID, TableSchema, rows_to_batch

if TYPE_CHECKING:
    from spark_ext.store.table import Table


@dataclass
class AccessPath:
    """How a scan finds its rows: ``full``, ``primary_key`` or ``index:<name>``."""

    kind: str
    keys_by_bucket: dict[int, list[Any]] | None = None


def plan(table: "Table", pred: P.Predicate | None, buckets: Sequence[int]) -> AccessPath:
    """Choose an access path; the caller holds the table lock. O(candidates)."""
    schema = table.schema
    terms = list(P.conjuncts(pred))
    wanted = set(buckets)
    pk = _pk_keys(schema, terms)
    if pk is not None:
        by_bucket: dict[int, list[Any]] = defaultdict(list)
        for k in pk:
            b = schema.bucket_of_key(k)
            if b in wanted:
                by_bucket[b].append(k)
        return AccessPath("primary_key", dict(by_bucket))
    if table.index_defs and table.buckets:
        for name in table.index_defs:
            ix0 = table.buckets[0].indexes[name]
            probe = _index_probe(ix0, terms)
            if probe is None:
                continue
            found = {}
            for b in wanted:
                found[b] = list(probe(table.buckets[b].indexes[name]))
            return AccessPath(f"index:{name}", found)
    return AccessPath("full")


def _pk_keys(schema: TableSchema, terms: list[P.Predicate]) -> list[Any] | None:
    kc = schema.key_columns
    kp = schema.key_positions
    if len(kc) == 1:
        for t in terms:
            if isinstance(t, P.Compare) and t.op == "=" and t.column == kc[0]:
                return [v for v in (_key_literal(schema, kp[0], t.value),) if v is not None]
            if isinstance(t, P.In) and t.column == kc[0]:
                return [v for v in dict.fromkeys(_key_literal(schema, kp[0], v) for v in t.values) if v is not None]
        return None
    eq = {t.column: t.value for t in terms if isinstance(t, P.Compare) and t.op == "="}
    if all(c in eq for c in kc):
        vals = tuple(_key_literal(schema, i, eq[c]) for c, i in zip(kc, kp))
        return [] if any(v is None for v in vals) else [vals]
    return None


def _key_literal(schema: TableSchema, pos: int, v: Any) -> Any:
    """A bound literal in key form, or None when no key can equal it.

    2.0 finds key 2, 2.5 finds nothing; a decimal is brought to the column's scale
    (1.5 finds key 1.50, hashed like it); NULL finds nothing.
    """
    if v is None:
        return None
    if isinstance(v, float):
        if not v.is_integer():
            return None
        v = int(v)
    try:
        return schema.coercers[pos](v)
    except ConstraintError:
        return None  # e.g. more fractional digits than the column has: equals no key


def _is_nan(v: Any) -> bool:
    return isinstance(v, float) and v != v


def _index_probe(ix: SecondaryIndex, terms: list[P.Predicate]) -> Any:
    # Terms with a NaN literal are left to the filter: Arrow's = and ranges never match
    # NaN but its IN does, and the index cannot follow both.
    terms = [
        t for t in terms
        if not ((isinstance(t, P.Compare) and _is_nan(t.value)) or (isinstance(t, P.In) and any(map(_is_nan, t.values))))
    ]
    cols = ix.columns
    if len(cols) == 1:
        c = cols[0]
        for t in terms:
            if isinstance(t, P.Compare) and t.op == "=" and t.column == c:
                v = t.value
                return lambda i: () if v is None else i.lookup(v)
            if isinstance(t, P.In) and t.column == c:
                vs = [v for v in dict.fromkeys(t.values) if v is not None]
                return lambda i: [k for v in vs for k in i.lookup(v)]
    else:
        eq = {t.column: t.value for t in terms if isinstance(t, P.Compare) and t.op == "="}
        if all(c in eq for c in cols):
            vals = tuple(eq[c] for c in cols)
            return lambda i: () if any(v is None for v in vals) else i.lookup(vals)
    if isinstance(ix, OrderedIndex):
        lead = cols[0]
        low = high = None
        low_inc = high_inc = True
        for t in terms:
            if isinstance(t, P.Compare) and t.column == lead and t.value is not None:
                if t.op in (">", ">=") and (low is None or t.value > low or (t.value == low and t.op == ">")):
                    low, low_inc = t.value, t.op == ">="
                elif t.op in ("<", "<=") and (high is None or t.value < high or (t.value == high and t.op == "<")):
                    high, high_inc = t.value, t.op == "<="
                elif t.op == "=" and len(cols) > 1:
                    low = high = t.value
                    low_inc = high_inc = True
        if low is not None or high is not None:
            return lambda i: list(i.range(low, high, low_inc, high_inc))
    return None


class Scan:
    """An iterable of Arrow record batches over one consistent moment of a table.

    Attributes:
        rows_examined: rows looked at so far (grows while iterating).
        access_path: ``full``, ``primary_key`` or ``index:<name>``.
        schema: the schema of the batches produced.
    """

    def __init__(
        self,
        table: "Table",
        columns: Sequence[str] | None = None,
        where: P.Predicate | list[Any] | None = None,
        limit: int | None = None,
        buckets: Sequence[int] | None = None,
    ) -> None:
        schema = table.schema
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise BadArgumentError(f"limit must be a non-negative integer, got {limit!r}")
        names = list(columns) if columns is not None else list(schema.arrow_schema.names)
        for c in names:
            schema.column_index(c)
        self._proj = [schema.index_of[c] for c in names]
        self.schema = pa.schema([schema.storage_schema.field(i) for i in self._proj])
        if isinstance(where, list):
            where = P.from_obj(where)
        self._pred = P.bind(where, schema) if where is not None else None
        nb = schema.num_buckets
        bl = list(range(nb)) if buckets is None else list(buckets)
        for b in bl:
            if not isinstance(b, int) or not 0 <= b < nb:
                raise BadArgumentError(f"table {table.name!r} has buckets 0..{nb - 1}, not {b!r}", table=table.name)
        bl = list(dict.fromkeys(bl))  # a bucket named twice is still read once
        self._limit = limit
        self._storage_schema = schema.storage_schema
        self.rows_examined = 0
        with table.lock:
            table.check_open()
            if table.schema is not schema:
                # Altered (ADD COLUMNS, rename) since it was read above: plan again on
                # the new layout, or the projection would pick the wrong columns.
                self.__init__(table, columns, where, limit, buckets)  # type: ignore[misc]
                return
            path = plan(table, self._pred, bl)
            self.access_path = path.kind
            self._snaps: list[tuple[int, BucketSnapshot]] = [(b, table.buckets[b].snapshot()) for b in bl]
            self.version = table.version
        self._keys = path.keys_by_bucket

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        remaining = self._limit
        if remaining == 0:
            return
        for b, snap in self._snaps:
            for batch in self._bucket_batches(b, snap):
                if self._pred is not None:
                    batch = batch.filter(P.evaluate(self._pred, batch))
                if batch.num_rows == 0:
                    continue
                out = batch.select(self._proj)
                if remaining is not None:
                    if out.num_rows >= remaining:
                        yield out.slice(0, remaining)
                        return
                    remaining -= out.num_rows
                yield out

    def _bucket_batches(self, b: int, snap: BucketSnapshot) -> Iterator[pa.RecordBatch]:
        if self._keys is None:
            for batch in snap.batches(self._storage_schema):
                self.rows_examined += batch.num_rows
                yield batch
            return
        keys = self._keys.get(b) or []
        if not keys:
            return
        self.rows_examined += len(keys)
        rows = [r for r in (snap.get(k) for k in keys) if r is not None]
        if rows:
            yield rows_to_batch(self._storage_schema, rows)

    def to_table(self) -> pa.Table:
        """All batches as one Arrow table. O(result)."""
        return pa.Table.from_batches(list(self), schema=self.schema)

    def count(self) -> int:
        """Number of rows the scan produces. O(rows examined)."""
        return sum(b.num_rows for b in self)


def visible_columns(schema: TableSchema, include_rowid: bool) -> list[str]:
    names = list(schema.arrow_schema.names)
    if include_rowid and schema.hidden_rowid:
        names.append(ROWID)
    return names
