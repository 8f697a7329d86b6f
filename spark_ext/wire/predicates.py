"""Structural checks of predicate and aggregate JSON (spec: "Predicates", "SCAN").

Only the *shape* is checked here: operators, arity, column names being strings,
literals being JSON scalars, depth and size limits. Parsing, binding columns to a table
and coercing literals is the engine's job (``spark_ext.store.predicate.from_obj`` and
``bind``), which has the schema; the store server uses the engine's parser directly.

Predicate forms::

    ["and", p, p, ...]   ["or", p, p, ...]   ["not", p]
    ["=", col, v]  ["<>", col, v]  ["<", col, v]  ["<=", col, v]  [">", col, v]  [">=", col, v]
    ["in", col, [v, ...]]   ["is_null", col]   ["is_not_null", col]
    ["starts_with", col, "prefix"]
"""

from __future__ import annotations

from typing import Any

from spark_ext.store import predicate as _engine
from spark_ext.wire.errors import WireError
from spark_ext.wire.kinds import ErrorCode

#: The comparison operators are the engine's (``spark_ext.store.predicate``).
COMPARISONS = frozenset(_engine.COMPARISONS)
LOGICAL = frozenset({"and", "or"})
OPERATORS = COMPARISONS | LOGICAL | {"not", "in", "is_null", "is_not_null", "starts_with"}
AGGREGATES = frozenset({"count_star", "count", "sum", "min", "max"})

#: Deeper trees are refused: Spark never pushes them, and recursion must stay bounded.
MAX_DEPTH = 64
#: Total nodes plus IN-list values; bounds the server's work for one request.
MAX_NODES = 100_000


def _bad(msg: str, path: str) -> WireError:
    return WireError(ErrorCode.BAD_ARGUMENT, f"predicate at {path}: {msg}", {"path": path})


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def validate_predicate(pred: Any, *, max_depth: int = MAX_DEPTH, max_nodes: int = MAX_NODES) -> None:
    """Check a predicate's JSON structure. O(size), iterative (no recursion).

    Raises:
        WireError: BAD_ARGUMENT with ``details.path`` (e.g. ``$[2][1]``) locating the
            first problem.
    """
    stack: list[tuple[Any, str, int]] = [(pred, "$", 1)]
    nodes = 0
    while stack:
        p, path, depth = stack.pop()
        nodes += 1
        if depth > max_depth:
            raise _bad(f"nested deeper than {max_depth}", path)
        if not isinstance(p, list) or not p or not isinstance(p[0], str):
            raise _bad(f"expected [operator, ...], got {_show(p)}", path)
        op, args = p[0], p[1:]
        if op not in OPERATORS:
            raise _bad(f"unknown operator {op!r}", path)
        if op in LOGICAL:
            if not args:
                raise _bad(f"{op!r} needs at least one operand", path)
            for i, a in enumerate(args, 1):
                stack.append((a, f"{path}[{i}]", depth + 1))
            continue
        if op == "not":
            if len(args) != 1:
                raise _bad("'not' takes exactly one operand", path)
            stack.append((args[0], f"{path}[1]", depth + 1))
            continue
        if op in ("is_null", "is_not_null"):
            if len(args) != 1:
                raise _bad(f"{op!r} takes a column", path)
            _column(args[0], path)
            continue
        if len(args) != 2:
            raise _bad(f"{op!r} takes a column and a value", path)
        _column(args[0], path)
        v = args[1]
        if op == "in":
            if not isinstance(v, list):
                raise _bad(f"'in' needs a list of values, got {_show(v)}", path)
            nodes += len(v)
            for j, x in enumerate(v):
                if not _is_scalar(x):
                    raise _bad(f"'in' value {j} is not a JSON scalar: {_show(x)}", path)
        elif op == "starts_with":
            if not isinstance(v, str):
                raise _bad(f"'starts_with' needs a string prefix, got {_show(v)}", path)
        elif not _is_scalar(v):
            raise _bad(f"literal is not a JSON scalar: {_show(v)}", path)
        if nodes > max_nodes:
            raise _bad(f"more than {max_nodes} nodes and values", path)
    if nodes > max_nodes:
        raise _bad(f"more than {max_nodes} nodes and values", "$")


def _column(c: Any, path: str) -> None:
    if not isinstance(c, str) or not c:
        raise _bad(f"a column name must be a non-empty string, got {_show(c)}", path)


def _show(v: Any, limit: int = 80) -> str:
    s = repr(v)
    return s if len(s) <= limit else s[:limit] + "..."


def predicate_columns(pred: Any) -> set[str]:
    """Columns a (structurally valid) predicate reads. O(size)."""
    out: set[str] = set()
    stack = [pred]
    while stack:
        p = stack.pop()
        op = p[0]
        if op in LOGICAL or op == "not":
            stack.extend(p[1:])
        else:
            out.add(p[1])
    return out


def validate_aggregates(aggregates: Any, group_by: Any = None) -> None:
    """Check SCAN ``aggregates`` and ``group_by``. O(size).

    ``aggregates`` is a non-empty list of ``["count_star"]`` or ``[fn, col]`` with fn in
    count, sum, min, max; ``group_by`` an optional list of column names. A column may
    also be an expression (a non-empty JSON array, ``["%", ["col", "k"], ["lit", 100,
    "int32"]]``); only its outer shape is checked here, the server checks the rest
    (protocol section 10.3).

    Raises:
        WireError: BAD_ARGUMENT naming the bad entry.
    """
    if not isinstance(aggregates, list) or not aggregates:
        raise WireError(ErrorCode.BAD_ARGUMENT, "'aggregates' must be a non-empty list")
    for i, a in enumerate(aggregates):
        where = f"aggregate {i}"
        if not isinstance(a, list) or not a or a[0] not in AGGREGATES:
            raise WireError(
                ErrorCode.BAD_ARGUMENT, f"{where}: expected [fn, column] with fn in {sorted(AGGREGATES)}, got {_show(a)}"
            )
        if a[0] == "count_star":
            if len(a) != 1:
                raise WireError(ErrorCode.BAD_ARGUMENT, f"{where}: 'count_star' takes no column")
        elif len(a) != 2 or not _column_or_expression(a[1]):
            raise WireError(ErrorCode.BAD_ARGUMENT, f"{where}: {a[0]!r} takes one column name or expression")
    if group_by is not None:
        if not isinstance(group_by, list) or not all(_column_or_expression(c) for c in group_by):
            raise WireError(ErrorCode.BAD_ARGUMENT, "'group_by' must be a list of column names and expressions")


def _column_or_expression(c: Any) -> bool:
    return (isinstance(c, str) and bool(c)) or (isinstance(c, list) and bool(c) and isinstance(c[0], str))
