"""Spark SQL types <-> the store's type names, and the compatibility rules of writes.

The store's names are those of :mod:`spark_ext.store.types` (``int64``, ``string``,
``decimal(10,2)``, ``timestamp_tz``...). A DataFrame column may be written into a table
column when the engine would accept its Arrow form without loss of meaning (the same rules
as ``TableSchema.conform_batch``): integers into any integer, floating or decimal column
(range checked per value), floats into floats, decimals into decimals, and each other type
into itself. Spark's ``TIMESTAMP`` is an instant (``timestamp_tz``), ``TIMESTAMP_NTZ`` a
wall-clock time (``timestamp_ntz``); the two never mix.
"""

from __future__ import annotations

from typing import Any

INTEGERS = ("int8", "int16", "int32", "int64")
FLOATS = ("float32", "float64")

_SPARK_TO_STORE = {
    "ByteType": "int8", "ShortType": "int16", "IntegerType": "int32", "LongType": "int64",
    "FloatType": "float32", "DoubleType": "float64", "StringType": "string", "CharType": "string",
    "VarcharType": "string", "BinaryType": "binary", "BooleanType": "bool", "DateType": "date",
    "TimestampType": "timestamp_tz", "TimestampNTZType": "timestamp_ntz", "NullType": "null",
}


def store_type_of(dt: Any) -> str | None:
    """The store type name of a Spark ``DataType`` (``"null"`` for NullType), or None."""
    name = type(dt).__name__
    if name == "DecimalType":
        return f"decimal({dt.precision},{dt.scale})"
    return _SPARK_TO_STORE.get(name)


def spark_type_of(store_type: str) -> Any:
    """The Spark ``DataType`` of a store type name."""
    from pyspark.sql import types as T

    if store_type.startswith("decimal("):
        p, s = store_type[len("decimal("):-1].split(",")
        return T.DecimalType(int(p), int(s))
    return {
        "int8": T.ByteType(), "int16": T.ShortType(), "int32": T.IntegerType(), "int64": T.LongType(),
        "float32": T.FloatType(), "float64": T.DoubleType(), "string": T.StringType(),
        "binary": T.BinaryType(), "bool": T.BooleanType(), "date": T.DateType(),
        "timestamp_tz": T.TimestampType(), "timestamp_ntz": T.TimestampNTZType(),
    }[store_type]


def _family(t: str) -> str:
    if t in INTEGERS:
        return "int"
    if t in FLOATS:
        return "float"
    if t.startswith("decimal("):
        return "decimal"
    return t


def writable(source: str, target: str) -> bool:
    """Whether a column of store type ``source`` may be written into one of ``target``."""
    if source == "null" or source == target:
        return True
    fs, ft = _family(source), _family(target)
    if fs == "int":
        return ft in ("int", "float", "decimal")
    if fs == "float":
        return ft == "float"
    if fs == "decimal":
        return ft == "decimal"
    return fs == ft


def spark_schema(arrow_schema: Any) -> Any:
    """A Spark ``StructType`` for an Arrow schema of store types (nullability kept)."""
    from pyspark.sql import types as T

    from spark_ext.store.types import type_name

    return T.StructType([T.StructField(f.name, spark_type_of(type_name(f.type)), f.nullable) for f in arrow_schema])
