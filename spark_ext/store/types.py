"""Column types: which Arrow types a table may hold, their names, and Python value checks.

Every supported type has a stable name (used in catalog JSON and on the wire), a
normalized Arrow type, and a *coercer* that turns one Python value into the engine's
value form or raises an error naming the table, the column and the value.

Engine value forms (what ``get`` returns, what the delta holds): ``int`` for integer
types, ``float``, ``decimal.Decimal`` quantized to the column scale, ``str``,
``bytes``, ``bool``, ``datetime.date``, ``datetime.datetime`` (aware in UTC for
``timestamp_tz``, naive for ``timestamp_ntz``). Timestamps are microsecond precision.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import re
import struct
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from spark_ext.exceptions import SchemaError, TypeMismatchError, ValueOutOfRangeError

UTC = _dt.timezone.utc
EPOCH_NAIVE = _dt.datetime(1970, 1, 1)
EPOCH_UTC = _dt.datetime(1970, 1, 1, tzinfo=UTC)
EPOCH_ORDINAL = _dt.date(1970, 1, 1).toordinal()
ONE_MICRO = _dt.timedelta(microseconds=1)

Coercer = Callable[[Any], Any]

_F32 = struct.Struct("<f")
_INF = float("inf")

_INT_RANGES = {
    "int8": (-(1 << 7), (1 << 7) - 1),
    "int16": (-(1 << 15), (1 << 15) - 1),
    "int32": (-(1 << 31), (1 << 31) - 1),
    "int64": (-(1 << 63), (1 << 63) - 1),
}
_SIMPLE: dict[str, pa.DataType] = {
    "int8": pa.int8(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "string": pa.string(),
    "binary": pa.binary(),
    "bool": pa.bool_(),
    "date": pa.date32(),
    "timestamp_tz": pa.timestamp("us", tz="UTC"),
    "timestamp_ntz": pa.timestamp("us"),
}
_ALIASES = {
    "byte": "int8", "tinyint": "int8", "short": "int16", "smallint": "int16",
    "int": "int32", "integer": "int32", "long": "int64", "bigint": "int64",
    "float": "float32", "real": "float32", "double": "float64",
    "utf8": "string", "str": "string", "varchar": "string", "text": "string",
    "boolean": "bool", "date32": "date", "timestamp": "timestamp_tz",
    "bytes": "binary",
}
_DECIMAL_RE = re.compile(r"^decimal\(\s*(\d+)\s*,\s*(\d+)\s*\)$")

#: Types whose key values hash as integers (see keyhash); they are also the types of
#: the fast primary-key path (sorted numpy keys instead of a dict) when a key is one
#: integer column.
INTEGER_TYPES = frozenset({"int8", "int16", "int32", "int64"})
#: Types whose engine form is an exact None, bool, int, float, str or bytes.
PLAIN_TYPES = INTEGER_TYPES | {"float32", "float64", "string", "binary", "bool"}


def int_range(name: str) -> tuple[int, int]:
    """``(min, max)`` of an integer type name (``int8`` ... ``int64``). O(1)."""
    return _INT_RANGES[name]


def type_name(t: pa.DataType) -> str:
    """The stable name of a supported Arrow type. O(1).

    Raises:
        SchemaError: if the type is not supported.
    """
    if pa.types.is_decimal(t):
        if not isinstance(t, pa.Decimal128Type):
            raise SchemaError(f"decimal with precision {t.precision} is not supported (max 38)")
        return f"decimal({t.precision},{t.scale})"
    if pa.types.is_timestamp(t):
        return "timestamp_tz" if t.tz is not None else "timestamp_ntz"
    if pa.types.is_large_string(t) or pa.types.is_string(t):
        return "string"
    if pa.types.is_large_binary(t) or pa.types.is_binary(t):
        return "binary"
    for name, st in _SIMPLE.items():
        if t == st:
            return name
    if pa.types.is_nested(t):
        raise SchemaError(
            f"nested type {t} is not supported yet: store arrays, maps and structs "
            "as string (JSON) or binary columns"
        )
    raise SchemaError(f"type {t} is not supported")


def arrow_type(name: str) -> pa.DataType:
    """The normalized Arrow type of a type name (aliases such as ``bigint`` allowed)."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key in _SIMPLE:
        return _SIMPLE[key]
    m = _DECIMAL_RE.match(key)
    if m:
        p, s = int(m.group(1)), int(m.group(2))
        if not 1 <= p <= 38 or s > p:
            raise SchemaError(f"decimal({p},{s}) is not valid: need 1 <= precision <= 38 and scale <= precision")
        return pa.decimal128(p, s)
    raise SchemaError(f"unknown type name {name!r}")


def normalize(t: pa.DataType) -> pa.DataType:
    """The engine's storage type for an Arrow type (timestamps to us, large to plain)."""
    return arrow_type(type_name(t))


# --- Python value coercion ------------------------------------------------------------


def _err(table: str, column: str, value: Any, expected: str) -> TypeMismatchError:
    return TypeMismatchError(
        f"table {table!r}, column {column!r}: value {value!r} of type "
        f"{type(value).__name__} is not a {expected}",
        table=table, column=column, value=repr(value),
    )


def _range_err(table: str, column: str, value: Any, tname: str) -> ValueOutOfRangeError:
    return ValueOutOfRangeError(
        f"table {table!r}, column {column!r}: value {value!r} is out of range for {tname}",
        table=table, column=column, value=repr(value),
    )


def make_coercer(table: str, column: str, t: pa.DataType) -> Coercer:
    """A function turning one non-null Python value into the engine form of type ``t``.

    Each call is O(1) (O(len) for strings and bytes); errors name table, column, value.
    """
    name = type_name(t)
    if name in _INT_RANGES:
        lo, hi = _INT_RANGES[name]

        def c_int(v: Any) -> Any:
            if type(v) is int:
                if lo <= v <= hi:
                    return v
                raise _range_err(table, column, v, name)
            if isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)):
                return c_int(int(v))
            raise _err(table, column, v, name)

        return c_int
    if name in ("float32", "float64"):

        def c_float(v: Any) -> Any:
            if type(v) is float:
                return v
            if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)):
                try:
                    return float(v)
                except OverflowError:  # an int beyond the largest double
                    raise _range_err(table, column, v, name) from None
            raise _err(table, column, v, name)

        if name == "float64":
            return c_float

        def c_float32(v: Any) -> Any:
            # Round to single precision now, so a row reads the same before and after
            # compaction (Arrow holds it as float32); a finite value too large for
            # float32 is refused rather than silently becoming infinity.
            f = c_float(v)
            try:
                r = _F32.unpack(_F32.pack(f))[0]
            except OverflowError:
                raise _range_err(table, column, v, name) from None
            if r in (_INF, -_INF) and f not in (_INF, -_INF):
                raise _range_err(table, column, v, name)
            return r

        return c_float32
    if name == "string":

        def c_str(v: Any) -> Any:
            if type(v) is str:
                return v
            raise _err(table, column, v, name)

        return c_str
    if name == "binary":

        def c_bin(v: Any) -> Any:
            if type(v) is bytes:
                return v
            if isinstance(v, (bytes, bytearray, memoryview)):
                return bytes(v)
            raise _err(table, column, v, name)

        return c_bin
    if name == "bool":

        def c_bool(v: Any) -> Any:
            if type(v) is bool:
                return v
            if isinstance(v, np.bool_):
                return bool(v)
            raise _err(table, column, v, name)

        return c_bool
    if name == "date":

        def c_date(v: Any) -> Any:
            if type(v) is _dt.date:
                return v
            if isinstance(v, _dt.date) and not isinstance(v, _dt.datetime):
                return _dt.date(v.year, v.month, v.day)
            raise _err(table, column, v, "date")

        return c_date
    if name == "timestamp_tz":

        def c_ts(v: Any) -> Any:
            if isinstance(v, _dt.datetime):
                if v.tzinfo is None:
                    # Naive input for a zoned column is read as UTC, as Arrow does.
                    return v.replace(tzinfo=UTC)
                return v.astimezone(UTC) if v.tzinfo is not UTC else v
            raise _err(table, column, v, "timestamp")

        return c_ts
    if name == "timestamp_ntz":

        def c_ntz(v: Any) -> Any:
            if isinstance(v, _dt.datetime):
                if v.tzinfo is not None:
                    raise _err(table, column, v, "timestamp without time zone (got an aware datetime)")
                return v
            raise _err(table, column, v, "timestamp_ntz")

        return c_ntz
    if name.startswith("decimal"):
        assert isinstance(t, pa.Decimal128Type)
        precision, scale = t.precision, t.scale
        quantum = decimal.Decimal(1).scaleb(-scale)
        ctx = decimal.Context(prec=60)

        def c_dec(v: Any) -> Any:
            if isinstance(v, decimal.Decimal):
                d = v
            elif isinstance(v, (int, np.integer)) and not isinstance(v, bool):
                d = decimal.Decimal(int(v))
            elif isinstance(v, str):
                try:
                    d = decimal.Decimal(v)
                except decimal.InvalidOperation:
                    raise _err(table, column, v, name) from None
            else:
                raise _err(table, column, v, name)
            if not d.is_finite():
                raise _range_err(table, column, v, name)
            q = d.quantize(quantum, context=ctx)
            if q != d:
                raise _range_err(table, column, v, f"{name} (more than {scale} fractional digits)")
            if len(q.as_tuple().digits) > precision and q != 0:
                raise _range_err(table, column, v, name)
            return q

        return c_dec
    raise SchemaError(f"no coercer for {name}")  # pragma: no cover - type_name guards


# --- key forms ------------------------------------------------------------------------


def key_component_value(name: str, v: Any) -> Any:
    """The value hashed for a key column value in engine form (see keyhash). O(1)."""
    if name in INTEGER_TYPES:
        return v
    if name == "bool":
        return int(v)
    if name == "date":
        return v.toordinal() - EPOCH_ORDINAL
    if name == "timestamp_tz":
        return (v - EPOCH_UTC) // ONE_MICRO
    if name == "timestamp_ntz":
        return (v - EPOCH_NAIVE) // ONE_MICRO
    if name.startswith("decimal"):
        sign, digits, exp = v.as_tuple()
        unscaled = int("".join(map(str, digits)) or "0")
        return (-unscaled if sign else unscaled).to_bytes(16, "little", signed=True)
    return v  # str, bytes
