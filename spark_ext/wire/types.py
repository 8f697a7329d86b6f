"""Column types on the wire: type strings and their Arrow types (spec: "Types").

Canonical type strings are ``int8 int16 int32 int64 float32 float64 bool string binary
date timestamp_tz timestamp_ntz decimal(p,s)``; Spark SQL names (``bigint``,
``double``, ``timestamp``...) are accepted as aliases. The names, the aliases and the
Arrow types are the engine's (:mod:`spark_ext.store.types`), so a schema passes between
the layers unchanged: this module only adds the protocol's errors (``WireError``) and
the protocol's stricter rule for Arrow types received (timestamps in microseconds
only).
"""

from __future__ import annotations

import functools
from typing import Final

import pyarrow as pa

from spark_ext.exceptions import SchemaError
from spark_ext.store import types as _engine
from spark_ext.wire.errors import WireError
from spark_ext.wire.kinds import ErrorCode

#: Accepted alternative spellings (Spark SQL and Arrow names) -> canonical name.
ALIASES: Final = _engine._ALIASES
#: Canonical names of the types without parameters (all but ``decimal(p,s)``).
CANONICAL_SIMPLE: Final = tuple(_engine._SIMPLE)
INTEGER_TYPES: Final = _engine.INTEGER_TYPES
FLOAT_TYPES: Final = frozenset({"float32", "float64"})


def parse_type(name: str) -> pa.DataType:
    """The Arrow type of a type string (canonical or alias, any case). O(len(name)).

    Raises:
        WireError: BAD_ARGUMENT for a non-string, an unknown name or an invalid decimal.
    """
    if not isinstance(name, str):
        raise WireError(ErrorCode.BAD_ARGUMENT, f"a type must be a string, got {name!r}")
    try:
        return _engine.arrow_type(name)
    except SchemaError as e:
        raise WireError(ErrorCode.BAD_ARGUMENT, e.message, {"type": name}) from None


def type_string(t: pa.DataType) -> str:
    """The canonical type string of an Arrow type the protocol carries. O(1).

    ``large_string``/``large_binary`` map to ``string``/``binary``; a timestamp with
    any time zone is ``timestamp_tz`` (its values are instants either way).

    Raises:
        WireError: TYPE_MISMATCH for a type the protocol does not carry (timestamps in
            other units than microseconds, unsigned integers, nested types...).
    """
    if pa.types.is_timestamp(t) and t.unit != "us":
        raise WireError(ErrorCode.TYPE_MISMATCH, f"{t} is not supported: timestamps travel in microseconds")
    try:
        return _engine.type_name(t)
    except SchemaError as e:
        raise WireError(ErrorCode.TYPE_MISMATCH, e.message, {"type": str(t)}) from None


def canonical(name_or_type: str | pa.DataType) -> str:
    """Canonical type string of a type string or an Arrow type. O(1)."""
    if isinstance(name_or_type, pa.DataType):
        return type_string(name_or_type)
    return _canonical_name(name_or_type)


@functools.lru_cache(maxsize=1024)
def _canonical_name(name: str) -> str:
    # Hot: every key and value literal of every request asks this for its column type.
    return type_string(parse_type(name))


def decimal_params(name: str) -> tuple[int, int]:
    """(precision, scale) of a canonical ``decimal(p,s)`` string. O(1)."""
    t = parse_type(name)
    assert isinstance(t, pa.Decimal128Type)
    return t.precision, t.scale
