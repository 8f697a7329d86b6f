"""Structural checks of predicate and aggregate JSON."""

from __future__ import annotations

from typing import Any

import pytest

from spark_ext.wire.errors import WireError
from spark_ext.wire.kinds import ErrorCode
from spark_ext.wire.predicates import predicate_columns, validate_aggregates, validate_predicate

GOOD: list[Any] = [
    ["=", "a", 1],
    ["<>", "a", "x"],
    ["<", "a", 1.5],
    ["<=", "a", None],
    [">", "a", True],
    [">=", "a", "2024-01-01"],
    ["in", "a", [1, 2, None]],
    ["in", "a", []],
    ["is_null", "a"],
    ["is_not_null", "a"],
    ["starts_with", "s", "pre"],
    ["and", ["=", "a", 1], ["or", ["not", ["is_null", "b"]], ["in", "c", ["x"]]]],
    ["or", ["=", "a", 1]],
]


@pytest.mark.parametrize("pred", GOOD)
def test_valid(pred: Any) -> None:
    validate_predicate(pred)


BAD: list[tuple[Any, str]] = [
    (None, "$"),
    ([], "$"),
    ("=", "$"),
    ([1, "a", 1], "$"),
    (["==", "a", 1], "$"),
    (["AND", ["=", "a", 1]], "$"),
    (["and"], "$"),
    (["not"], "$"),
    (["not", ["=", "a", 1], ["=", "a", 1]], "$"),
    (["=", "a"], "$"),
    (["=", "a", 1, 2], "$"),
    (["=", 1, 1], "$"),
    (["=", "", 1], "$"),
    (["=", "a", [1]], "$"),
    (["=", "a", {"x": 1}], "$"),
    (["in", "a", 1], "$"),
    (["in", "a", [[1]]], "$"),
    (["is_null"], "$"),
    (["is_null", "a", 1], "$"),
    (["starts_with", "a", 1], "$"),
    (["and", ["=", "a", 1], ["bogus"]], "$[2]"),
    (["or", ["=", "a", 1], ["not", ["=", 5, 1]]], "$[2][1]"),
]


@pytest.mark.parametrize("pred,path", BAD)
def test_invalid(pred: Any, path: str) -> None:
    with pytest.raises(WireError) as ei:
        validate_predicate(pred)
    assert ei.value.code == ErrorCode.BAD_ARGUMENT
    assert ei.value.details["path"] == path


def test_depth_and_size_limits() -> None:
    p: Any = ["=", "a", 1]
    for _ in range(63):
        p = ["not", p]
    validate_predicate(p)
    with pytest.raises(WireError):
        validate_predicate(["not", p])
    deep: Any = ["=", "a", 1]
    for _ in range(5000):  # far deeper than Python's recursion limit: must not crash
        deep = ["not", deep]
    with pytest.raises(WireError):
        validate_predicate(deep)
    with pytest.raises(WireError):
        validate_predicate(["in", "a", list(range(200_000))])
    validate_predicate(["in", "a", list(range(50_000))])


def test_columns() -> None:
    assert predicate_columns(GOOD[11]) == {"a", "b", "c"}
    assert predicate_columns(["is_null", "z"]) == {"z"}


def test_aggregates() -> None:
    validate_aggregates([["count_star"], ["count", "a"], ["sum", "b"], ["min", "c"], ["max", "c"]], ["g"])
    k100 = ["%", ["col", "k"], ["lit", 100, "int32"]]
    validate_aggregates([["sum", ["*", ["col", "x"], ["lit", 2.0, "float64"]]]], ["g", k100])
    for bad in ([], None, [["avg", "a"]], [["count_star", "a"]], [["sum"]], [["sum", 1]], ["sum"], [["sum", []]]):
        with pytest.raises(WireError):
            validate_aggregates(bad)
    with pytest.raises(WireError):
        validate_aggregates([["count_star"]], "g")
    with pytest.raises(WireError):
        validate_aggregates([["count_star"]], [[1, 2]])
