"""Arrow IPC bodies, type strings, and the table schema JSON."""

from __future__ import annotations

import datetime as dt
import decimal
import json

import pyarrow as pa
import pytest

from spark_ext.wire.arrowio import IndexSpec, TableSpec, check_wire_schema, read_ipc_batches, read_ipc_stream, write_ipc_stream
from spark_ext.wire.errors import WireError
from spark_ext.wire.kinds import ErrorCode
from spark_ext.wire.types import ALIASES, CANONICAL_SIMPLE, canonical, parse_type, type_string

SPARK_TYPES = {
    # Spark SQL type -> (type string, Arrow type)
    "byte": ("int8", pa.int8()),
    "short": ("int16", pa.int16()),
    "int": ("int32", pa.int32()),
    "long": ("int64", pa.int64()),
    "float": ("float32", pa.float32()),
    "double": ("float64", pa.float64()),
    "boolean": ("bool", pa.bool_()),
    "string": ("string", pa.string()),
    "binary": ("binary", pa.binary()),
    "date": ("date", pa.date32()),
    "timestamp": ("timestamp_tz", pa.timestamp("us", tz="UTC")),
}


@pytest.mark.parametrize("spark,expected", sorted(SPARK_TYPES.items()))
def test_spark_type_mapping(spark: str, expected: tuple[str, pa.DataType]) -> None:
    name, arrow = expected
    assert parse_type(spark) == arrow
    assert parse_type(name) == arrow
    assert type_string(arrow) == name


def test_other_type_strings() -> None:
    assert parse_type("timestamp_ntz") == pa.timestamp("us")
    assert parse_type("decimal(38,10)") == pa.decimal128(38, 10)
    assert parse_type(" DECIMAL( 10 , 2 ) ") == pa.decimal128(10, 2)
    assert type_string(pa.decimal128(38, 10)) == "decimal(38,10)"
    assert type_string(pa.large_string()) == "string"
    assert type_string(pa.large_binary()) == "binary"
    assert type_string(pa.timestamp("us", tz="America/New_York")) == "timestamp_tz"
    for name in CANONICAL_SIMPLE:
        assert canonical(name) == name
    for alias, name in ALIASES.items():
        assert canonical(alias) == name


@pytest.mark.parametrize("bad", ["decimal(39,0)", "decimal(5,6)", "decimal(0,0)", "int128", "", "array<int>", "decimal"])
def test_bad_type_strings(bad: str) -> None:
    with pytest.raises(WireError) as ei:
        parse_type(bad)
    assert ei.value.code == ErrorCode.BAD_ARGUMENT


@pytest.mark.parametrize(
    "t", [pa.uint8(), pa.float16(), pa.timestamp("ns"), pa.timestamp("ms", tz="UTC"), pa.list_(pa.int8()), pa.decimal256(40, 0), pa.date64()]
)
def test_unsupported_arrow_types(t: pa.DataType) -> None:
    with pytest.raises(WireError) as ei:
        type_string(t)
    assert ei.value.code == ErrorCode.TYPE_MISMATCH
    with pytest.raises(WireError) as ei:
        check_wire_schema(pa.schema([("ok", pa.int8()), ("bad", t)]))
    assert ei.value.details == {"column": "bad"}


def test_type_names_agree_with_engine() -> None:
    # The wire delegates to the engine's names (spark_ext.store.types); its wrappers must
    # give the same answers.
    store_types = pytest.importorskip("spark_ext.store.types")
    for name in list(CANONICAL_SIMPLE) + list(ALIASES) + ["decimal(38,10)", "decimal(1,0)"]:
        assert store_types.arrow_type(name) == parse_type(name), name
        assert store_types.type_name(parse_type(name)) == canonical(name), name


# --- IPC ---------------------------------------------------------------------------------


def sample_table() -> pa.Table:
    return pa.table(
        {
            "id": pa.array([1, 2, None], pa.int64()),
            "s": pa.array(["a", None, "\u00e9"], pa.string()),
            "d": pa.array([decimal.Decimal("1.10"), None, decimal.Decimal("-2.00")], pa.decimal128(10, 2)),
            "t": pa.array([dt.datetime(2024, 1, 1), None, dt.datetime(1969, 1, 1)], pa.timestamp("us", tz="UTC")),
            "day": pa.array([dt.date(2024, 1, 1), None, dt.date(1, 1, 1)], pa.date32()),
        }
    )


def test_ipc_round_trip() -> None:
    t = sample_table()
    body = write_ipc_stream(t)
    assert isinstance(body, memoryview)
    back = read_ipc_stream(bytes(body))
    assert back.equals(t)
    schema, batches = read_ipc_batches(body)
    assert schema == t.schema and sum(b.num_rows for b in batches) == 3


def test_ipc_empty_stream_carries_schema() -> None:
    schema = pa.schema([("a", pa.int32())])
    body = write_ipc_stream([], schema)
    back = read_ipc_stream(body)
    assert back.schema == schema and back.num_rows == 0
    with pytest.raises(ValueError):
        write_ipc_stream([])


def test_ipc_many_batches() -> None:
    b = pa.record_batch([pa.array(range(10))], names=["x"])
    body = write_ipc_stream([b, b, b])
    assert read_ipc_stream(body).num_rows == 30
    assert read_ipc_stream(write_ipc_stream(b)).num_rows == 10


@pytest.mark.parametrize("mutate", ["truncate", "garbage", "flip"])
def test_ipc_bad_bodies(mutate: str) -> None:
    body = bytes(write_ipc_stream(sample_table()))
    if mutate == "truncate":
        bad = body[: len(body) // 2]
    elif mutate == "garbage":
        bad = b"\x00\x01garbage" * 10
    else:
        ba = bytearray(body)
        for i in range(0, len(ba), 7):
            ba[i] ^= 0x5A
        bad = bytes(ba)
    with pytest.raises(WireError) as ei:
        read_ipc_stream(bad)
    assert ei.value.code == ErrorCode.BAD_ARGUMENT


# --- table schema JSON ------------------------------------------------------------------

SCHEMA_JSON = {
    "fields": [
        {"name": "id", "type": "int64", "nullable": False},
        {"name": "tenant", "type": "string", "nullable": False},
        {"name": "amount", "type": "decimal(38,10)", "nullable": True},
        {"name": "at", "type": "timestamp_tz", "nullable": True},
        {"name": "local", "type": "timestamp_ntz", "nullable": True},
        {"name": "day", "type": "date", "nullable": True},
        {"name": "flag", "type": "bool", "nullable": True},
        {"name": "blob", "type": "binary", "nullable": True},
        {"name": "ratio", "type": "float64", "nullable": True},
    ],
    "primary_key": ["tenant", "id"],
    "num_buckets": 16,
    "indexes": [{"name": "by_day", "columns": ["day"], "kind": "ordered"}, {"name": "by_flag", "columns": ["flag"], "kind": "hash"}],
    "options": {"persistence": "sync", "flush": "group"},
}


def test_schema_json_round_trip() -> None:
    spec = TableSpec.from_json(json.loads(json.dumps(SCHEMA_JSON)))
    assert spec.to_json() == SCHEMA_JSON
    assert TableSpec.from_json(spec.to_json()) == spec
    assert spec.key_columns == ("tenant", "id")
    assert spec.key_types == ("string", "int64")
    assert spec.schema.field("amount").type == pa.decimal128(38, 10)
    assert spec.codec_fields(["id", "at"]) == [("id", "int64"), ("at", "timestamp_tz")]


def test_schema_json_is_the_engines() -> None:
    # CREATE_TABLE's `table` minus `indexes` is the engine's TableSchema JSON (the
    # catalog's `spec` without its name).
    from spark_ext.store.schema import TableSchema

    spec = TableSpec.from_json(SCHEMA_JSON)
    engine = TableSchema.from_json({**SCHEMA_JSON, "name": "ns.t"})
    assert {**spec.to_json(), "name": "ns.t"} == {**engine.to_json(), "indexes": SCHEMA_JSON["indexes"]}
    assert spec.key_types == tuple(engine.key_type_names)


def test_schema_json_normalizes() -> None:
    obj = {"fields": [{"name": "k", "type": "BIGINT"}, {"name": "v", "type": "double"}], "primary_key": ["k"], "name": "ignored"}
    spec = TableSpec.from_json(obj)
    assert spec.to_json() == {
        "fields": [{"name": "k", "type": "int64", "nullable": False}, {"name": "v", "type": "float64", "nullable": True}],
        "primary_key": ["k"],
        "num_buckets": 8,
        "indexes": [],
        "options": {},
    }


def test_keyless_table() -> None:
    spec = TableSpec.from_json({"fields": [{"name": "v", "type": "string"}]})
    assert spec.key_columns == ("_rowid",) and spec.key_types == ("int64",)
    assert spec.codec_fields(["_rowid", "v"]) == [("_rowid", "int64"), ("v", "string")]


@pytest.mark.parametrize(
    "change,code",
    [
        ({"fields": []}, ErrorCode.BAD_ARGUMENT),
        ({"fields": "x"}, ErrorCode.BAD_ARGUMENT),
        ({"fields": [{"name": "a", "type": "nope"}]}, ErrorCode.BAD_ARGUMENT),
        ({"fields": [{"name": "a", "type": "int8"}, {"name": "A", "type": "int8"}]}, ErrorCode.BAD_ARGUMENT),
        ({"fields": [{"name": "_rowid", "type": "int64"}]}, ErrorCode.BAD_ARGUMENT),
        ({"fields": [{"name": "", "type": "int64"}]}, ErrorCode.BAD_ARGUMENT),
        ({"fields": [{"name": "a\n", "type": "int64"}]}, ErrorCode.BAD_ARGUMENT),
        ({"fields": [{"name": "a", "type": "int64", "nullable": "yes"}]}, ErrorCode.BAD_ARGUMENT),
        ({"primary_key": ["nope"]}, ErrorCode.UNKNOWN_COLUMN),
        ({"primary_key": ["id", "id"]}, ErrorCode.BAD_ARGUMENT),
        ({"primary_key": ["ratio"]}, ErrorCode.BAD_ARGUMENT),
        ({"primary_key": "id"}, ErrorCode.BAD_ARGUMENT),
        ({"num_buckets": 0}, ErrorCode.BAD_ARGUMENT),
        ({"num_buckets": 4097}, ErrorCode.BAD_ARGUMENT),
        ({"num_buckets": True}, ErrorCode.BAD_ARGUMENT),
        ({"num_buckets": "8"}, ErrorCode.BAD_ARGUMENT),
        ({"indexes": [{"name": "i", "columns": ["zz"]}]}, ErrorCode.UNKNOWN_COLUMN),
        ({"indexes": [{"name": "i", "columns": ["id"], "kind": "btree"}]}, ErrorCode.BAD_ARGUMENT),
        ({"indexes": [{"name": "i", "columns": []}]}, ErrorCode.BAD_ARGUMENT),
        ({"indexes": [{"name": "i", "columns": ["id"]}, {"name": "i", "columns": ["day"]}]}, ErrorCode.INDEX_EXISTS),
        ({"options": {"a": 1}}, ErrorCode.BAD_ARGUMENT),
        ({"options": []}, ErrorCode.BAD_ARGUMENT),
    ],
)
def test_schema_json_errors(change: dict, code: ErrorCode) -> None:
    base = {**SCHEMA_JSON, "primary_key": [], "indexes": []} if "fields" in change else SCHEMA_JSON
    with pytest.raises(WireError) as ei:
        TableSpec.from_json({**base, **change})
    assert ei.value.code == code


def test_schema_json_not_an_object() -> None:
    with pytest.raises(WireError):
        TableSpec.from_json([1])
    with pytest.raises(WireError):
        IndexSpec.from_json("x")
