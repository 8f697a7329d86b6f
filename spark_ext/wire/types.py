"""Column types on the wire: type strings and their Arrow types (spec: "Types").

Canonical type strings are ``int8 int16 int32 int64 float32 float64 bool string binary
date timestamp_tz timestamp_ntz decimal(p,s)``; Spark SQL names (``bigint``,
``double``, ``timestamp``...) are accepted as aliases. The names match the engine's
(``spark_ext.store.types``) so a schema passes between the layers unchanged; the wire
keeps its own copy because it must not depend on the engine's internals.
"""

from __future__ import annotations

import re
from typing import Final

import pyarrow as pa

from spark_ext.wire.errors import WireError
from spark_ext.wire.kinds import ErrorCode

UTC_TZ: Final = "UTC"

_SIMPLE: Final[dict[str, pa.DataType]] = {
    "int8": pa.int8(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
    "string": pa.string(),
    "binary": pa.binary(),
    "date": pa.date32(),
    "timestamp_tz": pa.timestamp("us", tz=UTC_TZ),
    "timestamp_ntz": pa.timestamp("us"),
}

#: Accepted alternative spellings (Spark SQL and Arrow names) -> canonical name.
ALIASES: Final[dict[str, str]] = {
    "byte": "int8", "tinyint": "int8", "short": "int16", "smallint": "int16",
    "int": "int32", "integer": "int32", "long": "int64", "bigint": "int64",
    "float": "float32", "real": "float32", "double": "float64",
    "utf8": "string", "str": "string", "varchar": "string", "text": "string",
    "boolean": "bool", "date32": "date", "timestamp": "timestamp_tz",
    "bytes": "binary",
}

CANONICAL_SIMPLE: Final = tuple(_SIMPLE)
INTEGER_TYPES: Final = frozenset({"int8", "int16", "int32", "int64"})
FLOAT_TYPES: Final = frozenset({"float32", "float64"})
MAX_DECIMAL_PRECISION: Final = 38

_DECIMAL_RE = re.compile(r"^decimal\(\s*(\d{1,3})\s*,\s*(\d{1,3})\s*\)$")


def parse_type(name: str) -> pa.DataType:
    """The Arrow type of a type string (canonical or alias, any case). O(len(name)).

    Raises:
        WireError: BAD_ARGUMENT for an unknown name or an invalid decimal.
    """
    if not isinstance(name, str):
        raise WireError(ErrorCode.BAD_ARGUMENT, f"a type must be a string, got {name!r}")
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    t = _SIMPLE.get(key)
    if t is not None:
        return t
    m = _DECIMAL_RE.match(key)
    if m:
        p, s = int(m.group(1)), int(m.group(2))
        if not 1 <= p <= MAX_DECIMAL_PRECISION or s > p:
            raise WireError(
                ErrorCode.BAD_ARGUMENT,
                f"decimal({p},{s}) is not valid: need 1 <= precision <= 38 and 0 <= scale <= precision",
            )
        return pa.decimal128(p, s)
    raise WireError(ErrorCode.BAD_ARGUMENT, f"unknown type {name!r}", {"type": name})


def type_string(t: pa.DataType) -> str:
    """The canonical type string of an Arrow type the protocol carries. O(1).

    ``large_string``/``large_binary`` map to ``string``/``binary``; a timestamp with
    any time zone is ``timestamp_tz`` (its values are instants either way).

    Raises:
        WireError: TYPE_MISMATCH for a type the protocol does not carry (other
            timestamp units, unsigned integers, nested types...).
    """
    if pa.types.is_decimal(t):
        if not isinstance(t, pa.Decimal128Type):
            raise WireError(ErrorCode.TYPE_MISMATCH, f"{t} is not supported: decimals go up to precision 38")
        return f"decimal({t.precision},{t.scale})"
    if pa.types.is_timestamp(t):
        assert isinstance(t, pa.TimestampType)
        if t.unit != "us":
            raise WireError(ErrorCode.TYPE_MISMATCH, f"{t} is not supported: timestamps travel in microseconds")
        return "timestamp_tz" if t.tz is not None else "timestamp_ntz"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "binary"
    for name, st in _SIMPLE.items():
        if t == st:
            return name
    raise WireError(ErrorCode.TYPE_MISMATCH, f"Arrow type {t} is not supported by the protocol", {"type": str(t)})


def canonical(name_or_type: str | pa.DataType) -> str:
    """Canonical type string of a type string or an Arrow type. O(1)."""
    if isinstance(name_or_type, pa.DataType):
        return type_string(name_or_type)
    return type_string(parse_type(name_or_type))


def decimal_params(name: str) -> tuple[int, int]:
    """(precision, scale) of a canonical ``decimal(p,s)`` string. O(1)."""
    t = parse_type(name)
    assert isinstance(t, pa.Decimal128Type)
    return t.precision, t.scale
