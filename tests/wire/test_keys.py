"""The bucket of a key: KeyHasher and the engine's own routing against the shared vectors,
and the rule for tables without a primary key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from spark_ext.store import Store
from spark_ext.store.schema import TableSchema
from spark_ext.wire.errors import WireError
from spark_ext.wire.keys import KeyHasher
from spark_ext.wire.kinds import ErrorCode
from spark_ext.wire.types import parse_type
from spark_ext.wire.values import from_json

VECTORS: list[dict[str, Any]] = json.loads(
    (Path(__file__).resolve().parents[1] / "data" / "keyhash_vectors.json").read_text(encoding="utf-8")
)


@pytest.mark.parametrize("vec", VECTORS, ids=lambda v: f"{'+'.join(v['types'])}:{str(v['values'])[:40]}")
def test_vectors(vec: dict[str, Any]) -> None:
    h = KeyHasher(vec["types"])
    values = [from_json(t, v) for t, v in zip(vec["types"], vec["values"])]
    assert [str(c) for c in h.components(values)] == vec["components"]
    assert str(h.hash(values)) == vec["hash"]
    assert h.bucket(values, vec["num_buckets"]) == vec["bucket"]


def test_errors() -> None:
    with pytest.raises(WireError) as ei:
        KeyHasher(["float64"], ["f"])
    assert ei.value.code == ErrorCode.BAD_ARGUMENT
    with pytest.raises(WireError):
        KeyHasher([])
    h = KeyHasher(["int8", "string"], ["a", "b"])
    with pytest.raises(WireError) as ei:
        h.hash([1, None])
    assert ei.value.code == ErrorCode.NULL_KEY and ei.value.details["column"] == "b"
    with pytest.raises(WireError) as ei:
        h.hash([300, "x"])
    assert ei.value.code == ErrorCode.VALUE_OUT_OF_RANGE and ei.value.details["column"] == "a"
    with pytest.raises(WireError):
        h.hash([1])
    with pytest.raises(WireError):
        h.hash([1, "\ud800"])
    one = KeyHasher(["int8"])
    with pytest.raises(WireError):
        one.hash([300])  # the single-int fast path still checks the range
    with pytest.raises(WireError):
        one.hash([True])


# --- the table's own routing (spec 8.1-8.4) ----------------------------------------------


@pytest.mark.parametrize("vec", VECTORS[::7], ids=lambda v: f"{'+'.join(v['types'])}:{str(v['values'])[:40]}")
def test_table_schema_routes_like_the_vectors(vec: dict[str, Any]) -> None:
    # KeyHasher is built on the engine; the engine's own routing (with its fast path for
    # one integer column) must give the vectors' buckets too.
    names = [f"k{i}" for i in range(len(vec["types"]))]
    schema = TableSchema("t", pa.schema([pa.field(n, parse_type(t)) for n, t in zip(names, vec["types"])]),
                         names, vec["num_buckets"])
    values = [from_json(t, v) for t, v in zip(vec["types"], vec["values"])]
    assert schema.bucket_of_key(schema.coerce_key(tuple(values))) == vec["bucket"]


def test_keyless_bucket_is_rowid_mod_num_buckets() -> None:
    schema = TableSchema("t", pa.schema([("v", pa.string())]), [], 16)
    for rowid in [1, 2, 15, 16, 17, 2**40 + 3, 2**63 - 1]:
        assert schema.bucket_of_key(rowid) == rowid % 16  # not hashed


def test_new_rowids_fall_in_hosted_buckets() -> None:
    store = Store(None)
    try:
        t = store.create_table("ns.t", pa.schema([("v", pa.string())]), [], 8, {})
        t.rowid_buckets = frozenset({1, 5})  # what OPEN_BUCKETS sets
        ids = t.reserve_rowids(20).tolist()
        assert len(set(ids)) == 20 and all(i > 0 and i % 8 in (1, 5) for i in ids)
    finally:
        store.close()
