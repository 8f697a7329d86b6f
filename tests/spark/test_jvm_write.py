"""The pure parts of putInto's JVM path: path names, which casts it takes, error translation."""

from __future__ import annotations

import pytest

from spark_ext.exceptions import (
    BadArgumentError,
    DuplicateKeyError,
    FencedError,
    NullKeyError,
    SparkExtError,
    ValueOutOfRangeError,
)
from spark_ext.spark.jvm_write import jvm_castable, requested_path, translate


def test_requested_path_keyword() -> None:
    assert requested_path(None, "JVM ") == "jvm"
    assert requested_path(None, "python") == "python"
    assert requested_path(None, "auto") == "auto"
    with pytest.raises(BadArgumentError, match=r"putInto\(path=...\): expected one of auto, jvm, python, got 'fast'"):
        requested_path(None, "fast")
    with pytest.raises(BadArgumentError, match="got 3"):
        requested_path(None, 3)  # type: ignore[arg-type]


@pytest.mark.parametrize("source,target,ok", [
    ("int64", "int64", True), ("int32", "int64", True), ("int64", "int8", True),  # narrowing: range-checked
    ("float32", "float64", True), ("null", "string", True), ("string", "string", True),
    ("int64", "float64", False), ("int32", "decimal(10,2)", False), ("decimal(10,2)", "decimal(12,4)", False),
    ("float64", "float32", False),
])
def test_jvm_castable(source: str, target: str, ok: bool) -> None:
    assert jvm_castable(source, target) is ok


def test_translate_picks_the_tagged_error() -> None:
    text = ("org.apache.spark.SparkException: Job aborted due to stage failure: ...\n"
            "io.sparkext.spark.Errors$StoreException: [spark-ext NULL_KEY] table 'a.b': key column 'id' cannot be NULL\n"
            "\tat io.sparkext.spark.StoreWriter.stage(StoreWriter.java:156)")
    e = translate(RuntimeError(text), "a.b")
    assert type(e) is NullKeyError and str(e) == "table 'a.b': key column 'id' cannot be NULL"
    assert e.details["table"] == "a.b"
    # A retried attempt's TXN_STATE gives way to the violation behind it.
    two = "[spark-ext TXN_STATE] transaction t failed\n[spark-ext DUPLICATE_KEY] key 7 appears twice (found by ...)"
    assert type(translate(RuntimeError(two), "a.b")) is DuplicateKeyError
    assert type(translate(RuntimeError("[spark-ext FENCED] leader group 'g': token 5 is older"), "a.b")) is FencedError
    e = translate(RuntimeError("[spark-ext VALUE_OUT_OF_RANGE] table 'a.b', column 'n': value 9 does not fit int8"), "a.b")
    assert type(e) is ValueOutOfRangeError
    unknown = translate(RuntimeError("[spark-ext SOMETHING_NEW] what"), "a.b")
    assert isinstance(unknown, SparkExtError) and str(unknown) == "what"
    assert translate(RuntimeError("java.lang.OutOfMemoryError"), "a.b") is None
