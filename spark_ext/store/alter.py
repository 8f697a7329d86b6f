"""Schema changes of a live table: add nullable columns, rename.

Both are metadata changes for the engine's indexes and keys, but the *storage layout*
(user columns, then the hidden ``_rowid`` of a table without a primary key) holds the
new columns in every run and delta row, so adding columns rewrites each bucket's
layout: runs get all-NULL columns (no copy of existing buffers: Arrow batches share
them), delta rows get ``None`` values. Keys, run key arrays, deleted positions and
secondary index entries are unchanged, so the change is O(runs + delta rows) per
bucket, not O(rows).

The :class:`~spark_ext.store.store.Store` checks, logs and then calls :func:`apply_schema`
under the table's lock; recovery replays the same call from the log record.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from typing import TYPE_CHECKING, Any, Sequence

import pyarrow as pa

from spark_ext.exceptions import BadArgumentError, SchemaError
from spark_ext.store import types
from spark_ext.store.schema import ROWID, TableSchema

if TYPE_CHECKING:
    from spark_ext.store.table import Table

logger = logging.getLogger(__name__)


def new_fields(table: str, columns: Any) -> list[pa.Field]:
    """Check the columns to add and return them as nullable Arrow fields. O(#columns).

    ``columns`` is an Arrow schema, a list of Arrow fields, or ``(name, type)`` pairs
    with type names (``"string"``, ``"decimal(10,2)"``...) or Arrow types.

    Raises:
        SchemaError: no columns, a NOT NULL column (there are no column defaults, so
            existing rows could not get a value), or an unsupported type; each names
            the table and the column.
    """
    if isinstance(columns, pa.Schema):
        columns = list(columns)
    if not isinstance(columns, (list, tuple)) or not columns:
        raise SchemaError(f"table {table!r}: ADD COLUMNS needs at least one column, got {columns!r}")
    out = []
    for c in columns:
        if isinstance(c, pa.Field):
            f = c
        elif isinstance(c, (list, tuple)) and len(c) == 2 and isinstance(c[0], str):
            name, typ = c
            try:
                f = pa.field(name, types.arrow_type(typ) if isinstance(typ, str) else typ)
            except SchemaError as e:
                raise SchemaError(f"table {table!r}, column {name!r}: {e}") from None
            except (TypeError, ValueError) as e:
                raise SchemaError(f"table {table!r}, column {name!r}: bad type {typ!r} ({e})") from None
        else:
            raise SchemaError(f"table {table!r}: a new column is a (name, type) pair or an Arrow field, got {c!r}")
        if not isinstance(f.name, str) or not f.name:
            raise SchemaError(f"table {table!r}: a new column needs a non-empty name")
        if not f.nullable:
            raise SchemaError(
                f"table {table!r}, column {f.name!r}: a column added to an existing table must be nullable "
                "(existing rows read NULL; column defaults are not supported)",
                table=table, column=f.name,
            )
        try:
            t = types.normalize(f.type)
        except SchemaError as e:
            raise SchemaError(f"table {table!r}, column {f.name!r}: {e}", table=table, column=f.name) from None
        out.append(pa.field(f.name, t, nullable=True))
    return out


def schema_with_columns(schema: TableSchema, fields: Sequence[pa.Field]) -> TableSchema:
    """The table's schema with ``fields`` appended to its user columns. O(#columns).

    Raises:
        SchemaError: a name is already a column of the table (case-insensitively, as
            at creation) or repeated, or is the reserved ``_rowid``.
    """
    taken = {n.lower(): n for n in schema.arrow_schema.names}
    adding: set[str] = set()
    for f in fields:
        if f.name == ROWID:
            raise SchemaError(f"table {schema.name!r}: column name {ROWID!r} is reserved", table=schema.name, column=f.name)
        if f.name.lower() in taken:
            raise SchemaError(
                f"table {schema.name!r} already has a column {taken[f.name.lower()]!r}; cannot add column {f.name!r}",
                table=schema.name, column=f.name,
            )
        if f.name.lower() in adding:
            raise SchemaError(f"table {schema.name!r}: column {f.name!r} is named twice in the columns to add",
                              table=schema.name, column=f.name)
        adding.add(f.name.lower())
    arrow = pa.schema(list(schema.arrow_schema) + list(fields))
    return TableSchema(schema.name, arrow, list(schema.primary_key), schema.num_buckets, dict(schema.options))


def renamed_schema(schema: TableSchema, new_name: str) -> TableSchema:
    """The same schema under another table name. O(#columns)."""
    if not isinstance(new_name, str) or not new_name.strip():
        raise BadArgumentError(f"a table's new name must be a non-empty string, got {new_name!r}")
    return dataclasses.replace(schema, name=new_name)


def apply_schema(t: "Table", new: TableSchema) -> None:
    """Switch a table to ``new`` (caller holds its lock and has checked it). Cannot fail.

    ``new`` has the table's user columns as a prefix, possibly more user columns after
    them, and possibly another name. O(runs + delta rows) per bucket.
    """
    old = t.schema
    pos = old.num_user_columns  # where new columns go in the storage layout
    added = new.num_user_columns - pos
    new_storage = new.storage_schema
    estimate = None
    for b in t.buckets:
        if added:
            runs = []
            for run in b.runs:
                r = copy.copy(run)  # keys, key arrays and positions stay valid
                cols = list(run.batch.columns)
                n = run.n
                nulls = [pa.nulls(n, new_storage.field(pos + i).type) for i in range(added)]
                r.batch = pa.RecordBatch.from_arrays(cols[:pos] + nulls + cols[pos:], schema=new_storage)
                r._decode = None
                r.nbytes = run.nbytes + sum(a.nbytes for a in nulls)
                runs.append(r)
            b.runs = runs
            pad = (None,) * added
            b.delta = {k: row[:pos] + pad + row[pos:] for k, row in b.delta.items()}
            for ix in b.indexes.values():
                ix.positions = [new.column_index(c) for c in ix.columns]
        b.schema = new
        if estimate is None:
            estimate = type(b)(new).row_estimate
        b.row_estimate = estimate
        b._restructure()
    t.schema = new
    t.name = new.name
    t.version += 1
    logger.info("table %s: schema now %s", new.name, ", ".join(f"{f.name} {types.type_name(f.type)}" for f in new.arrow_schema))


def field_json(fields: Sequence[pa.Field]) -> list[dict[str, Any]]:
    """Log / catalog form of new columns (as in ``TableSchema.to_json``)."""
    return [{"name": f.name, "type": types.type_name(f.type), "nullable": True} for f in fields]


def fields_from_json(table: str, obj: Any) -> list[pa.Field]:
    """Inverse of :func:`field_json`, checked like :func:`new_fields`."""
    if not isinstance(obj, list):
        raise SchemaError(f"table {table!r}: new columns must be a list of {{name, type}}, got {obj!r}")
    pairs = []
    for f in obj:
        if not isinstance(f, dict) or not isinstance(f.get("name"), str) or not isinstance(f.get("type"), str):
            raise SchemaError(f"table {table!r}: a new column is {{name: str, type: str}}, got {f!r}")
        if f.get("nullable", True) is not True:
            raise SchemaError(
                f"table {table!r}, column {f['name']!r}: a column added to an existing table must be nullable "
                "(existing rows read NULL; column defaults are not supported)",
                table=table, column=f["name"],
            )
        if f.get("default") is not None:
            raise SchemaError(
                f"table {table!r}, column {f['name']!r}: column defaults are not supported; "
                "add the column without a default (existing rows read NULL)",
                table=table, column=f["name"],
            )
        pairs.append((f["name"], f["type"]))
    return new_fields(table, pairs)
