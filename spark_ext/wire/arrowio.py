"""Arrow payloads and table schemas on the wire.

* Bodies with ``HAS_ARROW`` are one complete Arrow IPC *stream* each (schema message,
  zero or more record batches, end-of-stream marker), uncompressed, no dictionaries.
  :func:`write_ipc_stream` builds one; :func:`read_ipc_stream` parses and validates one
  (validation matters: a crafted IPC body with bad offsets could otherwise make Arrow
  read out of bounds).
* A table schema travels as JSON ``{fields, primary_key, num_buckets, indexes,
  options}`` (CREATE_TABLE's ``table``); :class:`TableSpec` is its checked Python
  form, a wrapper of the engine's ``TableSchema`` plus the indexes.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence, Union

import pyarrow as pa
import pyarrow.ipc as ipc

from spark_ext.exceptions import SparkExtError
from spark_ext.store.index import KINDS as INDEX_KINDS
from spark_ext.store.schema import MAX_BUCKETS, TableSchema
from spark_ext.wire.errors import WireError
from spark_ext.wire.kinds import ErrorCode
from spark_ext.wire.types import parse_type, type_string

logger = logging.getLogger(__name__)

Buffer = Union[bytes, bytearray, memoryview, pa.Buffer]

#: Name given to the engine schema a TableSpec checks with (CREATE_TABLE names the
#: table in its own fields); it appears in error messages.
_SPEC_NAME = "(new table)"
_NAME_MAX = 255
_IDENT_RE = re.compile(r"^[^\x00-\x1f]+$")

_WRITE_OPTIONS = ipc.IpcWriteOptions(compression=None)


# --- IPC streams ------------------------------------------------------------------------


def write_ipc_stream(
    data: pa.RecordBatch | pa.Table | Iterable[pa.RecordBatch], schema: pa.Schema | None = None
) -> memoryview:
    """Serialize batches as one Arrow IPC stream. O(bytes).

    Args:
        data: a batch, a table, or an iterable of batches (then ``schema`` is needed
            when it may be empty).
        schema: the stream's schema; defaults to the data's.

    Returns:
        A memoryview over Arrow's buffer (no copy; it keeps the buffer alive).
    """
    if isinstance(data, pa.RecordBatch):
        batches: list[pa.RecordBatch] = [data]
        schema = schema or data.schema
    elif isinstance(data, pa.Table):
        schema = schema or data.schema
        batches = data.to_batches()
    else:
        batches = list(data)
        if schema is None:
            if not batches:
                raise ValueError("an empty stream needs an explicit schema")
            schema = batches[0].schema
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, schema, options=_WRITE_OPTIONS) as writer:
        for b in batches:
            writer.write_batch(b)
    return memoryview(sink.getvalue())


def read_ipc_stream(body: Buffer, *, validate: bool = True) -> pa.Table:
    """Parse one IPC stream body into a table. O(bytes) (validation included).

    Raises:
        WireError: BAD_ARGUMENT when the body is not one valid IPC stream (the frame
            itself was fine, so the connection stays usable).
    """
    schema, batches = read_ipc_batches(body, validate=validate)
    return pa.Table.from_batches(batches, schema=schema)


def read_ipc_batches(body: Buffer, *, validate: bool = True) -> tuple[pa.Schema, list[pa.RecordBatch]]:
    """Parse one IPC stream body into its schema and batches. O(bytes).

    Raises:
        WireError: BAD_ARGUMENT (see :func:`read_ipc_stream`).
    """
    buf = body if isinstance(body, pa.Buffer) else pa.py_buffer(body)
    try:
        reader = ipc.open_stream(buf)
        schema = reader.schema
        batches = []
        for b in reader:
            if validate:
                b.validate(full=True)
            batches.append(b)
    except (pa.ArrowException, ValueError, OSError) as e:
        raise WireError(ErrorCode.BAD_ARGUMENT, f"body is not a valid Arrow IPC stream: {_short(e)}") from None
    return schema, batches


def _short(e: BaseException, limit: int = 200) -> str:
    s = str(e)
    return s if len(s) <= limit else s[:limit] + "..."


def check_wire_schema(schema: pa.Schema) -> None:
    """Check every field of an Arrow schema has a protocol type. O(#fields).

    Raises:
        WireError: TYPE_MISMATCH naming the column.
    """
    for f in schema:
        try:
            type_string(f.type)
        except WireError as e:
            raise WireError(e.code, f"column {f.name!r}: {e.message}", {"column": f.name}) from None


# --- table schema JSON ------------------------------------------------------------------


def _bad(msg: str, **details: Any) -> WireError:
    return WireError(ErrorCode.BAD_ARGUMENT, msg, details)


def _check_name(v: Any, what: str) -> str:
    if not isinstance(v, str) or not v or len(v) > _NAME_MAX or not _IDENT_RE.fullmatch(v):
        raise _bad(f"{what} must be a non-empty string without control characters (at most {_NAME_MAX}), got {v!r}")
    return v


@dataclass(frozen=True)
class IndexSpec:
    """A secondary index: ``hash`` (equality, IN) or ``ordered`` (also ranges)."""

    name: str
    columns: tuple[str, ...]
    kind: str = "hash"

    def to_json(self) -> dict[str, Any]:
        """JSON form ``{name, columns, kind}``. O(#columns)."""
        return {"name": self.name, "columns": list(self.columns), "kind": self.kind}

    @classmethod
    def from_json(cls, obj: Any) -> "IndexSpec":
        """Parse and check the JSON form. O(#columns).

        Raises:
            WireError: BAD_ARGUMENT naming the problem.
        """
        if not isinstance(obj, dict):
            raise _bad(f"an index must be an object, got {obj!r}")
        name = _check_name(obj.get("name"), "index name")
        cols = obj.get("columns")
        if not isinstance(cols, list) or not cols:
            raise _bad(f"index {name!r}: 'columns' must be a non-empty list", index=name)
        kind = obj.get("kind", "hash")
        if kind not in INDEX_KINDS:
            raise _bad(f"index {name!r}: kind must be one of {INDEX_KINDS}, got {kind!r}", index=name)
        return cls(name, tuple(_check_name(c, "index column") for c in cols), kind)


@dataclass(frozen=True)
class TableSpec:
    """A table's schema as CREATE_TABLE carries it (``table``): the engine's table
    definition plus its secondary indexes.

    The JSON shape is checked here, strictly (a protocol matter); what makes a valid
    table (column names, types, key rules, bucket count) is decided by the engine's
    :class:`~spark_ext.store.schema.TableSchema`, which this wraps, so the wire and the
    engine cannot disagree.

    Attributes:
        schema: user columns (Arrow, canonical types); key columns are NOT NULL.
        primary_key: key column names in key order; empty means a hidden ``_rowid``.
        num_buckets: 1..4096.
        indexes: secondary indexes.
        options: string options (persistence, flush policy...).
    """

    schema: pa.Schema
    primary_key: tuple[str, ...] = ()
    num_buckets: int = 8
    indexes: tuple[IndexSpec, ...] = ()
    options: Mapping[str, str] = field(default_factory=dict)
    _table: TableSchema = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_wire_schema(self.schema)
        for f in self.schema:
            _check_name(f.name, "column name")
        if isinstance(self.num_buckets, bool) or not isinstance(self.num_buckets, int):
            raise _bad(f"num_buckets must be an integer in 1..{MAX_BUCKETS}, got {self.num_buckets!r}")
        for k, v in self.options.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise _bad(f"option {k!r}: options are string -> string, got {v!r}")
        try:
            table = TableSchema(_SPEC_NAME, self.schema, list(self.primary_key), self.num_buckets, dict(self.options))
            index_names: set[str] = set()
            for ix in self.indexes:
                if ix.name in index_names:
                    raise WireError(ErrorCode.INDEX_EXISTS, f"duplicate index name {ix.name!r}", {"index": ix.name})
                index_names.add(ix.name)
                for c in ix.columns:
                    table.column_index(c)
        except SparkExtError as e:
            raise WireError.from_exception(e) from None
        # Normalized by the engine: canonical types, NOT NULL keys, immutable containers.
        object.__setattr__(self, "_table", table)
        object.__setattr__(self, "schema", table.arrow_schema)
        object.__setattr__(self, "primary_key", tuple(table.primary_key))
        object.__setattr__(self, "indexes", tuple(self.indexes))
        object.__setattr__(self, "options", dict(table.options))

    @property
    def key_columns(self) -> tuple[str, ...]:
        """Columns that identify a row: the primary key, or ``("_rowid",)``."""
        return tuple(self._table.key_columns)

    @property
    def key_types(self) -> tuple[str, ...]:
        """Canonical types of :attr:`key_columns`."""
        return tuple(self._table.key_type_names)

    def to_json(self) -> dict[str, Any]:
        """The JSON form (spec: "Table schema"): the engine's, without the table name,
        with ``indexes``. O(#columns)."""
        out = self._table.to_json()
        del out["name"]
        out["indexes"] = [ix.to_json() for ix in self.indexes]
        return out

    @classmethod
    def from_json(cls, obj: Any) -> "TableSpec":
        """Parse and check the JSON form; unknown keys are ignored. O(#columns).

        Raises:
            WireError: BAD_ARGUMENT (or UNKNOWN_COLUMN, INDEX_EXISTS) naming the problem.
        """
        if not isinstance(obj, dict):
            raise _bad(f"a table schema must be a JSON object, got {type(obj).__name__}")
        raw_fields = obj.get("fields")
        if not isinstance(raw_fields, list) or not raw_fields:
            raise _bad("'fields' must be a non-empty list")
        fields = []
        for i, f in enumerate(raw_fields):
            if not isinstance(f, dict):
                raise _bad(f"field {i} must be an object, got {f!r}")
            name = _check_name(f.get("name"), f"field {i} name")
            try:
                t = parse_type(f.get("type"))  # type: ignore[arg-type]  # parse_type checks it is a str
            except WireError as e:
                raise WireError(e.code, f"column {name!r}: {e.message}", {"column": name}) from None
            nullable = f.get("nullable", True)
            if not isinstance(nullable, bool):
                raise _bad(f"column {name!r}: 'nullable' must be true or false", column=name)
            fields.append(pa.field(name, t, nullable=nullable))
        pk = obj.get("primary_key", [])
        if not isinstance(pk, list) or not all(isinstance(k, str) for k in pk):
            raise _bad("'primary_key' must be a list of column names")
        nb = obj.get("num_buckets", 8)
        idx = obj.get("indexes", [])
        if not isinstance(idx, list):
            raise _bad("'indexes' must be a list")
        opts = obj.get("options", {})
        if not isinstance(opts, dict):
            raise _bad("'options' must be an object of strings")
        return cls(pa.schema(fields), tuple(pk), nb, tuple(IndexSpec.from_json(x) for x in idx), opts)

    def codec_fields(self, columns: Sequence[str] | None = None) -> list[tuple[str, str]]:
        """(name, type) pairs for a compact-rows codec over ``columns`` (default: all
        user columns; ``_rowid`` allowed for keyless tables). O(#columns).

        Raises:
            WireError: UNKNOWN_COLUMN.
        """
        t = self._table
        if columns is None:
            return [(n, t.type_names[i]) for i, n in enumerate(self.schema.names)]
        try:
            return [(c, t.type_names[t.column_index(c)]) for c in columns]
        except SparkExtError as e:
            raise WireError.from_exception(e) from None
