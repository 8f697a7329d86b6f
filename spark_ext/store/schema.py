"""A table's definition: columns, primary key, buckets, options; and input conformance.

The *storage layout* of a row is the user columns in order, followed by the hidden
``_rowid`` column for tables without a primary key. Keys take one of two forms:

* the *int path*: a single integer key column (or the hidden row id). Keys are Python
  ints, base runs keep them as a sorted numpy array (no per-row index objects), and
  bucket hashing is vectorized;
* the *general path*: any other key (string, date, decimal, composite...). Keys are the
  engine value (a tuple for composite keys) and base runs keep a dict key -> position.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from spark_ext.exceptions import (
    NotNullViolationError,
    NullKeyError,
    SchemaError,
    TypeMismatchError,
    UnknownColumnError,
    ValueOutOfRangeError,
)
from spark_ext.store import keyhash, types

logger = logging.getLogger(__name__)

ROWID = "_rowid"
MAX_BUCKETS = 4096


@dataclass
class TableSchema:
    """Definition of one table.

    Attributes:
        name: the table's full name (``namespace.table`` by convention).
        arrow_schema: the user-visible columns, types normalized, key columns NOT NULL.
        primary_key: key column names, empty for a table with a hidden row id.
        num_buckets: how many buckets the key hash spreads rows over.
        options: free-form table options (persistence, flush policy, limits...).
    """

    name: str
    arrow_schema: pa.Schema
    primary_key: list[str] = field(default_factory=list)
    num_buckets: int = 8
    options: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise SchemaError(f"table name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.num_buckets, int) or not 1 <= self.num_buckets <= MAX_BUCKETS:
            raise SchemaError(
                f"table {self.name!r}: num_buckets must be an integer in 1..{MAX_BUCKETS}, "
                f"got {self.num_buckets!r}"
            )
        if len(self.arrow_schema) == 0:
            raise SchemaError(f"table {self.name!r} has no columns")
        names = self.arrow_schema.names
        seen: set[str] = set()
        for n in names:
            if not n or n.lower() in seen:
                raise SchemaError(f"table {self.name!r}: duplicate or empty column name {n!r}")
            seen.add(n.lower())
        if ROWID in names:
            raise SchemaError(f"table {self.name!r}: column name {ROWID!r} is reserved")
        fields = []
        for f in self.arrow_schema:
            try:
                t = types.normalize(f.type)
            except SchemaError as e:
                raise SchemaError(f"table {self.name!r}, column {f.name!r}: {e}") from None
            fields.append(pa.field(f.name, t, nullable=f.nullable))
        pk = list(self.primary_key or [])
        if len(set(pk)) != len(pk):
            raise SchemaError(f"table {self.name!r}: primary key {pk} repeats a column")
        for k in pk:
            if k not in names:
                raise UnknownColumnError(
                    f"table {self.name!r}: primary key column {k!r} is not a column",
                    table=self.name, column=k,
                )
            t = fields[names.index(k)].type
            if pa.types.is_floating(t):
                raise SchemaError(
                    f"table {self.name!r}: primary key column {k!r} has floating type {t}; "
                    "use an integer, decimal, string, date or timestamp key"
                )
        # Key columns are NOT NULL whatever the input said.
        fields = [f.with_nullable(False) if f.name in pk else f for f in fields]
        self.arrow_schema = pa.schema(fields)
        self.primary_key = pk
        self.options = {str(k): str(v) for k, v in (self.options or {}).items()}
        self._derive()

    def _derive(self) -> None:
        sch = self.arrow_schema
        self.hidden_rowid = not self.primary_key
        if self.hidden_rowid:
            self.storage_schema = sch.append(pa.field(ROWID, pa.int64(), nullable=False))
            self.key_columns = [ROWID]
        else:
            self.storage_schema = sch
            self.key_columns = list(self.primary_key)
        self.column_names: list[str] = list(self.storage_schema.names)
        self.index_of = {n: i for i, n in enumerate(self.column_names)}
        self.type_names = [types.type_name(f.type) for f in self.storage_schema]
        self.key_positions = [self.index_of[k] for k in self.key_columns]
        self.key_type_names = [self.type_names[i] for i in self.key_positions]
        self.int_key = len(self.key_positions) == 1 and self.key_type_names[0] in types.INTEGER_TYPES
        #: Every column's engine form is a plain Python value (see codec.encode_point_commit).
        self.plain_values = all(tn in types.PLAIN_TYPES for tn in self.type_names)
        self.num_user_columns = len(sch)
        self.nullable = [f.nullable for f in self.storage_schema]
        self.coercers = [
            types.make_coercer(self.name, f.name, f.type) for f in self.storage_schema
        ]
        # Point-path shortcut: a plain int within these bounds is already a key in key
        # form (what coerce_key would return). An empty range unless the key is one
        # integer column.
        self.int_key_min, self.int_key_max = types.int_range(self.key_type_names[0]) if self.int_key else (1, 0)
        # bucket_of_key specialised for the key form (same results, see the method).
        if self.hidden_rowid:
            nb = self.num_buckets
            self.bucket_of_key = lambda key: key % nb  # type: ignore[method-assign]
        elif self.int_key:
            self.bucket_of_key = keyhash.int_key_bucket_function(self.num_buckets)  # type: ignore[method-assign, assignment]

    # --- naming ---------------------------------------------------------------------

    def column_index(self, name: str) -> int:
        """Position of a column in the storage layout. O(1).

        Raises:
            UnknownColumnError: naming the table and the column.
        """
        try:
            return self.index_of[name]
        except KeyError:
            raise UnknownColumnError(
                f"table {self.name!r} has no column {name!r} (columns: {', '.join(self.arrow_schema.names)})",
                table=self.name, column=name,
            ) from None

    # --- keys -----------------------------------------------------------------------

    def key_of(self, row: Sequence[Any]) -> Any:
        """The key of a storage-layout row: an int, a value, or a tuple. O(#key cols)."""
        kp = self.key_positions
        if len(kp) == 1:
            return row[kp[0]]
        return tuple(row[i] for i in kp)

    def bucket_of_key(self, key: Any) -> int:
        """The bucket of a key in key form (see module doc). O(#key cols).

        A hidden row id carries its bucket itself (``rowid mod num_buckets``), so each
        server can hand out ids of the buckets it hosts.

        For a hidden row id or one integer key column, :meth:`_derive` replaces this
        method on the instance by an equivalent specialised function.
        """
        if self.hidden_rowid:
            return key % self.num_buckets
        if self.int_key:
            return keyhash.fmix64(keyhash.SEED ^ keyhash.fmix64(key & keyhash.MASK64)) % self.num_buckets
        comps = key if len(self.key_positions) > 1 else (key,)
        hs = [
            keyhash.component_of(types.key_component_value(tn, v))
            for tn, v in zip(self.key_type_names, comps)
        ]
        return keyhash.combine(hs) % self.num_buckets

    def coerce_key(self, key: Any) -> Any:
        """Check a user-given key and return it in key form. O(#key cols).

        Raises:
            NullKeyError, TypeMismatchError, ValueOutOfRangeError, BadArgumentError.
        """
        kp = self.key_positions
        if len(kp) == 1:
            if isinstance(key, (tuple, list)) and len(key) == 1:
                key = key[0]
            if key is None:
                raise NullKeyError(
                    f"table {self.name!r}: key column {self.key_columns[0]!r} cannot be NULL",
                    table=self.name, column=self.key_columns[0],
                )
            return self.coercers[kp[0]](key)
        if not isinstance(key, (tuple, list)) or len(key) != len(kp):
            raise TypeMismatchError(
                f"table {self.name!r}: a key is a tuple of {len(kp)} values "
                f"({', '.join(self.key_columns)}), got {key!r}",
                table=self.name, value=repr(key),
            )
        out = []
        for i, v in zip(kp, key):
            if v is None:
                raise NullKeyError(
                    f"table {self.name!r}: key column {self.column_names[i]!r} cannot be NULL",
                    table=self.name, column=self.column_names[i],
                )
            out.append(self.coercers[i](v))
        return tuple(out)

    # --- rows -----------------------------------------------------------------------

    def coerce_row(self, values: Sequence[Any]) -> list[Any]:
        """Check one row of user columns (storage order, no row id). O(#columns).

        Returns a list so the caller can append the hidden row id.
        """
        if len(values) != self.num_user_columns:
            raise TypeMismatchError(
                f"table {self.name!r}: a row has {self.num_user_columns} columns "
                f"({', '.join(self.arrow_schema.names)}), got {len(values)}: {tuple(values)!r}",
                table=self.name,
            )
        out: list[Any] = []
        co = self.coercers
        nullable = self.nullable
        for i, v in enumerate(values):
            if v is None:
                if not nullable[i]:
                    raise self._null_error(i)
                out.append(None)
            else:
                out.append(co[i](v))
        return out

    def _null_error(self, i: int) -> Exception:
        col = self.column_names[i]
        if i in self.key_positions:
            return NullKeyError(
                f"table {self.name!r}: key column {col!r} cannot be NULL", table=self.name, column=col
            )
        return NotNullViolationError(
            f"table {self.name!r}: column {col!r} is NOT NULL", table=self.name, column=col
        )

    def dict_to_values(self, d: dict[str, Any]) -> list[Any]:
        """User columns of a dict row in order; missing nullable columns become NULL."""
        unknown = [k for k in d if k not in self.index_of or k == ROWID]
        if unknown:
            raise UnknownColumnError(
                f"table {self.name!r} has no column {unknown[0]!r} (columns: {', '.join(self.arrow_schema.names)})",
                table=self.name, column=unknown[0],
            )
        return [d.get(n) for n in self.arrow_schema.names]

    # --- Arrow input ----------------------------------------------------------------

    def conform_batch(self, data: pa.RecordBatch | pa.Table) -> pa.RecordBatch:
        """Turn user Arrow data into one batch in the user column layout, or fail clearly.

        Columns are matched by name (extra columns are an error, missing nullable ones are
        filled with NULL), cast to the column types without loss, and checked for NULLs
        in NOT NULL columns. O(rows x columns), vectorized.
        """
        names = data.schema.names
        unknown = [n for n in names if n not in self.index_of or n == ROWID]
        if unknown:
            raise UnknownColumnError(
                f"table {self.name!r} has no column {unknown[0]!r} (columns: {', '.join(self.arrow_schema.names)})",
                table=self.name, column=unknown[0],
            )
        if isinstance(data, pa.Table):
            data = data.combine_chunks()
            arrays = [data.column(i).chunk(0) if data.column(i).num_chunks else pa.array([], data.schema.field(i).type) for i in range(data.num_columns)]
            data = pa.RecordBatch.from_arrays(arrays, schema=data.schema)
        n = data.num_rows
        out = []
        for f in self.arrow_schema:
            if f.name not in names:
                if not f.nullable:
                    raise self._null_error(self.index_of[f.name])
                out.append(pa.nulls(n, f.type))
                continue
            col = data.column(names.index(f.name))
            if col.type != f.type:
                col = self._cast(col, f)
            if not f.nullable and col.null_count:
                raise self._null_error(self.index_of[f.name])
            out.append(col)
        return pa.RecordBatch.from_arrays(out, schema=self.arrow_schema)

    def _cast(self, col: pa.Array, f: pa.Field) -> pa.Array:
        src = col.type
        ok = (
            (pa.types.is_integer(src) and (pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_decimal(f.type)))
            or (pa.types.is_floating(src) and pa.types.is_floating(f.type))
            or (pa.types.is_decimal(src) and pa.types.is_decimal(f.type))
            or ((pa.types.is_string(src) or pa.types.is_large_string(src)) and pa.types.is_string(f.type))
            or ((pa.types.is_binary(src) or pa.types.is_large_binary(src)) and pa.types.is_binary(f.type))
            or (pa.types.is_timestamp(src) and pa.types.is_timestamp(f.type))
            or (pa.types.is_date(src) and pa.types.is_date(f.type))
            or (pa.types.is_null(src))
        )
        if not ok:
            raise TypeMismatchError(
                f"table {self.name!r}, column {f.name!r}: cannot store {src} in a {f.type} column",
                table=self.name, column=f.name,
            )
        if pa.types.is_timestamp(src) and pa.types.is_timestamp(f.type) and (src.tz is None) != (f.type.tz is None):
            # A zoned instant and a wall-clock time are different things; refuse silently
            # reinterpreting one as the other.
            raise TypeMismatchError(
                f"table {self.name!r}, column {f.name!r}: cannot store {src} in a {f.type} column "
                "(time zone and no time zone differ)",
                table=self.name, column=f.name,
            )
        try:
            out = pc.cast(col, f.type, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            bad = _first_bad_value(col, f.type)
            raise ValueOutOfRangeError(
                f"table {self.name!r}, column {f.name!r}: value {bad!r} does not fit {f.type} ({e})",
                table=self.name, column=f.name, value=repr(bad),
            ) from None
        if pa.types.is_float32(f.type) and pa.types.is_float64(src):
            # Arrow turns a double too large for float32 into infinity even when safe.
            overflow = pc.and_(pc.is_inf(out), pc.invert(pc.is_inf(col)))
            if pc.any(overflow).as_py():
                bad = col.filter(overflow)[0].as_py()
                raise ValueOutOfRangeError(
                    f"table {self.name!r}, column {f.name!r}: value {bad!r} does not fit {f.type}",
                    table=self.name, column=f.name, value=repr(bad),
                )
        return out

    # --- catalog form ---------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The JSON-able catalog form (see docs/protocol.md, table schema). O(#columns)."""
        return {
            "name": self.name,
            "fields": [
                {"name": f.name, "type": types.type_name(f.type), "nullable": f.nullable}
                for f in self.arrow_schema
            ],
            "primary_key": list(self.primary_key),
            "num_buckets": self.num_buckets,
            "options": dict(self.options),
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "TableSchema":
        """Inverse of :meth:`to_json`."""
        if not isinstance(obj, dict) or not isinstance(obj.get("fields"), list):
            raise SchemaError("malformed table definition: need an object with a list of 'fields'")
        nb = obj.get("num_buckets", 8)
        if not isinstance(nb, int) or isinstance(nb, bool):
            raise SchemaError(f"malformed table definition: num_buckets must be an integer, got {nb!r}")
        opts = obj.get("options") or {}
        if not isinstance(opts, dict):
            raise SchemaError(f"malformed table definition: options must be an object, got {opts!r}")
        pk = obj.get("primary_key") or []
        if not isinstance(pk, list):
            raise SchemaError(f"malformed table definition: primary_key must be a list, got {pk!r}")
        try:
            fields = []
            for f in obj["fields"]:
                if not isinstance(f, dict) or not isinstance(f.get("name"), str) or not isinstance(f.get("type"), str):
                    raise SchemaError(f"malformed table definition: a field needs a string name and type, got {f!r}")
                fields.append(pa.field(f["name"], types.arrow_type(f["type"]), nullable=bool(f.get("nullable", True))))
            return cls(name=obj["name"], arrow_schema=pa.schema(fields), primary_key=list(pk),
                       num_buckets=nb, options=dict(opts))
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, SchemaError):
                raise
            raise SchemaError(f"malformed table definition: missing or bad {e}") from None


def _first_bad_value(col: pa.Array, target: pa.DataType) -> Any:
    """The first value of ``col`` that will not cast safely (for error messages)."""
    for v in col.to_pylist():
        if v is None:
            continue
        try:
            pc.cast(pa.array([v], col.type), target, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return v
    return None


def batch_key_array(schema: TableSchema, batch: pa.RecordBatch) -> np.ndarray:
    """The int keys of a storage-layout batch as an int64 numpy array (int path only)."""
    return batch.column(schema.key_positions[0]).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


def batch_buckets(schema: TableSchema, batch: pa.RecordBatch) -> np.ndarray:
    """Bucket number of every row of a storage-layout batch. O(rows), vectorized on the int path."""
    if schema.hidden_rowid:
        return batch_key_array(schema, batch) % schema.num_buckets
    if schema.int_key:
        keys = batch_key_array(schema, batch)
        h = keyhash.combine_arrays([keyhash.int_component_array(keys)])
        return keyhash.buckets_of_hashes(h, schema.num_buckets)
    return np.fromiter(
        (schema.bucket_of_key(k) for k in batch_keys(schema, batch)), dtype=np.int64, count=batch.num_rows
    )


def batch_keys(schema: TableSchema, batch: pa.RecordBatch) -> list[Any]:
    """The keys of a storage-layout batch as a list in key form. O(rows)."""
    cols = [batch.column(i).to_pylist() for i in schema.key_positions]
    if len(cols) == 1:
        return cols[0]
    return list(zip(*cols))


def rows_to_batch(schema: pa.Schema, rows: Iterable[Sequence[Any]]) -> pa.RecordBatch:
    """Build a batch from rows already in engine form (no checks). O(rows x columns)."""
    rows = list(rows)
    if not rows:
        return pa.RecordBatch.from_arrays([pa.array([], f.type) for f in schema], schema=schema)
    cols = list(zip(*rows))
    return pa.RecordBatch.from_arrays(
        [pa.array(c, type=f.type) for c, f in zip(cols, schema)], schema=schema
    )
