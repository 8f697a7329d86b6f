"""The point read path: the generated row decoder, the specialised bucket functions and
the plain-int key shortcut of ``Table.get`` give exactly what the general code gives."""

from __future__ import annotations

import datetime as dt
import decimal
import math
import random
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from spark_ext.exceptions import NullKeyError, SparkExtError, TypeMismatchError, ValueOutOfRangeError
from spark_ext.store import Store, keyhash
from spark_ext.store.rowdecode import column_getter, row_decoder
from spark_ext.store.schema import TableSchema

UTC = dt.timezone.utc

TYPES: list[tuple[pa.DataType, Any]] = [
    (pa.int8(), lambda r: r.randrange(-128, 128)),
    (pa.int16(), lambda r: r.randrange(-(2**15), 2**15)),
    (pa.int32(), lambda r: r.randrange(-(2**31), 2**31)),
    (pa.int64(), lambda r: r.randrange(-(2**63), 2**63)),
    (pa.float32(), lambda r: r.choice([0.5, -0.0, float("inf"), float("nan"), 3.25])),
    (pa.float64(), lambda r: r.choice([r.random(), -0.0, float("-inf"), float("nan"), 1e300])),
    (pa.string(), lambda r: r.choice(["", "a", "é", "\U0001f600x", "z" * 300])),
    (pa.binary(), lambda r: r.choice([b"", b"\x00", b"\xff" * 40])),
    (pa.bool_(), lambda r: r.random() < 0.5),
    (pa.date32(), lambda r: dt.date(1, 1, 1) + dt.timedelta(days=r.randrange(3_652_058))),
    (pa.timestamp("us", tz="UTC"),
     lambda r: dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(microseconds=r.randrange(-(10**16), 10**17))),
    (pa.timestamp("us"), lambda r: dt.datetime(2000, 1, 1) + dt.timedelta(microseconds=r.randrange(-(10**15), 10**15))),
    (pa.decimal128(12, 3), lambda r: decimal.Decimal(r.randrange(-(10**11), 10**11)).scaleb(-3)),
]


def _same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, dt.datetime):
        return a == b and a.utcoffset() == b.utcoffset()
    if isinstance(a, decimal.Decimal):
        return a.as_tuple() == b.as_tuple()
    return bool(a == b)


@pytest.mark.parametrize("null_rate", [0.0, 0.3, 1.0])
def test_row_decoder_matches_as_py(null_rate: float) -> None:
    rng = random.Random(int(null_rate * 10))
    n = 300
    cols = {}
    for j, (t, gen) in enumerate(TYPES):
        cols[f"c{j}"] = pa.array([None if rng.random() < null_rate else gen(rng) for _ in range(n)], t)
    batch = pa.record_batch(cols)
    for b in (batch, batch.slice(1), batch.slice(37, 101), batch.slice(299), batch.slice(0, 0)):
        decode = row_decoder(b)
        getters = [column_getter(b.column(j)) for j in range(b.num_columns)]
        for i in range(b.num_rows):
            row = decode(i)
            want = [b.column(j)[i].as_py() for j in range(b.num_columns)]
            assert len(row) == len(want)
            for j, (g, w) in enumerate(zip(row, want)):
                assert _same(g, w), (j, b.schema.field(j).type, g, w)
                assert _same(getters[j](i), w)


EDGE_INTS = [0, 1, -1, 2**31 - 1, -(2**31), 2**63 - 1, -(2**63), 12345678901, -98765]


@pytest.mark.parametrize("num_buckets", [1, 2, 3, 7, 8, 64, 4096])
def test_int_key_bucket_function_is_the_spec(num_buckets: int) -> None:
    f = keyhash.int_key_bucket_function(num_buckets)
    rng = random.Random(num_buckets)
    for k in EDGE_INTS + [rng.randrange(-(2**63), 2**63) for _ in range(3000)]:
        assert f(k) == keyhash.combine([keyhash.int_component(k)]) % num_buckets


@pytest.mark.parametrize("key", [["id"], []], ids=["int key", "hidden row id"])
@pytest.mark.parametrize("num_buckets", [1, 5, 8])
def test_specialised_bucket_of_key_equals_the_method(key: list[str], num_buckets: int) -> None:
    ts = TableSchema("t", pa.schema([("id", pa.int64()), ("v", pa.string())]), key, num_buckets)
    generic = TableSchema.bucket_of_key  # the method, as written for every key form
    assert ts.bucket_of_key is not generic
    rng = random.Random(3)
    keys = EDGE_INTS + [rng.randrange(-(2**63), 2**63) for _ in range(2000)]
    if not key:
        keys = [abs(k) for k in keys]  # row ids are positive
    for k in keys:
        assert ts.bucket_of_key(k) == generic(ts, k)
    # The vectorized form agrees as well (what bulk writes and scans use).
    if key:
        arr = np.array(keys, dtype=np.int64)
        vec = keyhash.buckets_of_hashes(keyhash.combine_arrays([keyhash.int_component_array(arr)]), num_buckets)
        assert vec.tolist() == [ts.bucket_of_key(k) for k in keys]


@pytest.mark.parametrize("ktype", ["int8", "int16", "int32", "int64"])
def test_get_key_forms_and_errors(store: Store, ktype: str) -> None:
    t = store.create_table(f"k_{ktype}", [("id", ktype), ("v", "string")], primary_key="id", num_buckets=3)
    lo, hi = {"int8": (-128, 127), "int16": (-(2**15), 2**15 - 1), "int32": (-(2**31), 2**31 - 1),
              "int64": (-(2**63), 2**63 - 1)}[ktype]
    t.insert([(lo, "lo"), (hi, "hi"), (0, "zero"), (5, "five")])
    for compacted in (False, True):
        assert t.get(lo) == (lo, "lo") and t.get(hi) == (hi, "hi") and t.get(0) == (0, "zero")
        assert t.get(np.int64(5)) == (5, "five") and t.get((5,)) == (5, "five") and t.get([5]) == (5, "five")
        assert t.get(6) is None
        for bad, exc in ((hi + 1, ValueOutOfRangeError), (lo - 1, ValueOutOfRangeError), (True, TypeMismatchError),
                         (5.0, TypeMismatchError), ("5", TypeMismatchError), (None, NullKeyError),
                         ((5, 6), TypeMismatchError)):
            with pytest.raises(exc) as ei:
                t.get(bad)
            # Same error as the key check every other path uses.
            with pytest.raises(SparkExtError) as ref:
                t.schema.coerce_key(bad)
            assert type(ei.value) is type(ref.value) and str(ei.value) == str(ref.value)
        assert t.get_many([lo, 6, hi]) == [(lo, "lo"), None, (hi, "hi")]
        t.compact()


def test_get_on_hidden_rowid_table(store: Store) -> None:
    t = store.create_table("h", [("g", "int32"), ("s", "string")], num_buckets=4)
    t.insert([(i, f"s{i}") for i in range(50)])
    ids = [r[0] for r in t.scan(columns=["_rowid"]).to_table().to_pylist() for r in [tuple(r.values())]]
    for compacted in (False, True):
        got = sorted(t.get(i) for i in ids)
        assert got == sorted((i, f"s{i}") for i in range(50))
        assert t.get(10**9) is None
        t.compact()
