"""KeyHasher (Python values) against the shared key-hash vectors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from spark_ext.wire.errors import WireError
from spark_ext.wire.keys import KeyHasher
from spark_ext.wire.kinds import ErrorCode
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
