"""spark_ext.store.keyhash against the shared vectors (tests/data/keyhash_vectors.json).

The vectors come from an independent implementation of the spec
(tests/data/make_keyhash_vectors.py); the JVM side checks the same file.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from spark_ext.store import keyhash

VECTORS_PATH = Path(__file__).resolve().parents[1] / "data" / "keyhash_vectors.json"
VECTORS: list[dict[str, Any]] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))

INT_LIKE = {"int8", "int16", "int32", "int64", "bool", "date", "timestamp_tz", "timestamp_ntz"}
_DEC = re.compile(r"^decimal\((\d+),(\d+)\)$")


def engine_form(type_: str, value: Any) -> int | str | bytes:
    """The value keyhash takes (see keyhash.component_of), from the JSON literal form."""
    if type_ == "bool":
        return 1 if value else 0
    if type_ == "date":
        return (dt.date.fromisoformat(value) - dt.date(1970, 1, 1)).days
    if type_ in INT_LIKE:
        return int(value)
    if type_ == "string":
        return str(value)
    if type_ == "binary":
        return base64.b64decode(value, validate=True)
    m = _DEC.match(type_)
    assert m, f"unexpected type {type_}"
    scale = int(m.group(2))
    unscaled = decimal.Decimal(value).scaleb(scale, decimal.Context(prec=100))
    return keyhash.decimal_bytes(int(unscaled))


def scalar_component(type_: str, value: Any) -> int:
    v = engine_form(type_, value)
    if isinstance(v, int):
        return keyhash.int_component(v)
    if isinstance(v, str):
        return keyhash.bytes_component(v.encode("utf-8"))
    return keyhash.bytes_component(v)


def test_vectors_file_is_substantial() -> None:
    types = {t for v in VECTORS for t in v["types"]}
    assert len(VECTORS) >= 100
    assert {"int8", "int16", "int32", "int64", "bool", "date", "timestamp_tz", "timestamp_ntz", "string", "binary"} <= types
    assert any(t.startswith("decimal(38") for t in types)
    assert any(len(v["types"]) == 3 for v in VECTORS)


@pytest.mark.parametrize("vec", VECTORS, ids=lambda v: f"{'+'.join(v['types'])}:{str(v['values'])[:40]}")
def test_scalar_functions_match_vector(vec: dict[str, Any]) -> None:
    comps = [scalar_component(t, v) for t, v in zip(vec["types"], vec["values"])]
    assert [str(c) for c in comps] == vec["components"]
    h = keyhash.combine(comps)
    assert str(h) == vec["hash"]
    assert keyhash.bucket_of_hash(h, vec["num_buckets"]) == vec["bucket"]
    # component_of is the engine's entry point for already-converted values.
    forms = [engine_form(t, v) for t, v in zip(vec["types"], vec["values"])]
    assert [keyhash.component_of(f) for f in forms] == comps


def test_vectorized_functions_agree_with_vectors() -> None:
    groups: dict[tuple[tuple[str, ...], int], list[dict[str, Any]]] = defaultdict(list)
    for vec in VECTORS:
        groups[(tuple(vec["types"]), vec["num_buckets"])].append(vec)
    checked = 0
    for (types, nb), vecs in groups.items():
        columns = []
        for i, t in enumerate(types):
            if t in INT_LIKE:
                ints = np.array([engine_form(t, v["values"][i]) for v in vecs], dtype=np.int64)
                columns.append(keyhash.int_component_array(ints))
            else:
                columns.append(np.array([scalar_component(t, v["values"][i]) for v in vecs], dtype=np.uint64))
        h = keyhash.combine_arrays(columns)
        assert [str(x) for x in h.tolist()] == [v["hash"] for v in vecs]
        assert keyhash.buckets_of_hashes(h, nb).tolist() == [v["bucket"] for v in vecs]
        checked += len(vecs)
    assert checked == len(VECTORS)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint64])
def test_int_component_array_matches_scalar_for_every_width(dtype: type) -> None:
    info = np.iinfo(dtype)
    values: np.ndarray = np.array([info.min, info.max, 0, 1, info.max // 3], dtype=dtype)
    got = keyhash.int_component_array(values).tolist()
    want = [keyhash.int_component(int(v)) for v in values.tolist()]
    assert got == want


def test_same_value_hashes_alike_across_integer_widths() -> None:
    # Sign extension to 64 bits: a key keeps its bucket when a column widens.
    assert keyhash.int_component(-1) == keyhash.fmix64((1 << 64) - 1)
    assert int(keyhash.int_component_array(np.array([-1], dtype=np.int8))[0]) == keyhash.int_component(-1)


def test_fmix64_is_a_bijection_fixing_zero() -> None:
    assert keyhash.fmix64(0) == 0
    seen = {keyhash.fmix64(i) for i in range(10000)}
    assert len(seen) == 10000
