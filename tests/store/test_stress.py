"""Randomized stress test of the storage engine against a plain reference model.

Each run (fixed seed) performs well over a thousand mixed operations on three tables:

* ``a``: int64 primary key (the vectorized int path) with int32, string, double,
  timestamp, decimal, date, bool and int8 columns, all but ``k`` nullable;
* ``b``: composite (string, int32) primary key (the general path);
* ``c``: no primary key (hidden row id), compared as a multiset.

Operations: point and bulk (Arrow, >= 128 rows: the vectorized path) inserts, some with
duplicate keys that must reject the whole call; point and bulk upserts; updates by key,
including key changes; deletes; update/delete by random predicate; truncation; change
sets over several tables that commit (directly, in a ``with`` block, or after prepare)
or abort; two concurrent change sets conflicting on keys; compaction; creating and
dropping hash and ordered indexes; scans with random predicates, projections, limits and
bucket selections; snapshot scans that must not see later writes; get and get_many; bad
input that must be refused without a trace. The durable variants add checkpoints,
close-and-reopen (recovery) and change sets left prepared (in doubt) across a reopen.

Keyed tables also get whole-row replacement (``ChangeSet.replace``) and every table is
now and then dropped and created again. A threaded test adds real concurrency: change
sets moving amounts between rows while other threads scan and compaction runs.

After every step the invariants of every table the step may have changed (all of them
when background compaction runs) are checked (``Table._check``: buckets, key placement,
indexes) and row counts compared with the model; every few steps, and at
the end, the full contents of every table are compared, as are index-using and
primary-key scans whenever they run.
"""

from __future__ import annotations

import datetime as dt
import random
import sys
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Sequence

import pyarrow as pa
import pytest

from spark_ext.exceptions import (
    BadArgumentError,
    ConflictError,
    DuplicateKeyError,
    IndexExistsError,
    NoSuchIndexError,
    NoSuchTableError,
    NotNullViolationError,
    NullKeyError,
    SchemaError,
    TypeMismatchError,
    UnknownColumnError,
    ValueOutOfRangeError,
)
from spark_ext.store import Store, col
from spark_ext.store import predicate as P
from spark_ext.store.txn import ABORTED, COMMITTED, PREPARED
from tests.store.model import ModelBag, ModelDuplicate, ModelTable, is_sub_multiset, sorted_rows

UTC = dt.timezone.utc
T0 = dt.datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
D0 = dt.date(2024, 1, 1)
STRS = ["", "a", "ab", "abc", "b", "ba", "bb", "é", "éa", "zz", "x1", "x10", "x2"]
R_KEYS = ["", "a", "b", "é", "zz", "k1", "k2", "k10"]
A_ID_RANGE = 2400
B_N_RANGE = 150
FULL_COMPARE_EVERY = 20


@dataclass(frozen=True)
class Col:
    name: str
    kind: str
    nullable: bool
    type: pa.DataType


SPECS: dict[str, dict[str, Any]] = {
    "a": {
        "cols": [
            Col("id", "id", False, pa.int64()),
            Col("k", "k", False, pa.int32()),
            Col("s", "str", True, pa.string()),
            Col("x", "f64", True, pa.float64()),
            Col("ts", "ts", True, pa.timestamp("us", tz="UTC")),
            Col("d", "dec", True, pa.decimal128(12, 3)),
            Col("dt", "date", True, pa.date32()),
            Col("b", "bool", True, pa.bool_()),
            Col("n8", "i8", True, pa.int8()),
        ],
        "key": ["id"],
        "buckets": 4,
    },
    "b": {
        "cols": [
            Col("r", "rkey", False, pa.string()),
            Col("n", "nkey", False, pa.int32()),
            Col("v", "v", False, pa.int64()),
            Col("s", "str", True, pa.string()),
            Col("dt", "date", True, pa.date32()),
        ],
        "key": ["r", "n"],
        "buckets": 5,
    },
    "c": {
        "cols": [
            Col("g", "g", True, pa.int32()),
            Col("s", "str", True, pa.string()),
            Col("x", "f64", True, pa.float64()),
        ],
        "key": [],
        "buckets": 3,
    },
}

INDEX_POOL: dict[str, list[tuple[str, str, list[str]]]] = {
    "a": [
        ("a_k", "hash", ["k"]),
        ("a_s", "ordered", ["s"]),
        ("a_ts", "ordered", ["ts"]),
        ("a_d", "hash", ["d"]),
        ("a_dt", "hash", ["dt"]),
        ("a_x", "ordered", ["x"]),
        ("a_ks", "hash", ["k", "s"]),
        ("a_kx", "ordered", ["k", "x"]),
    ],
    "b": [("b_v", "ordered", ["v"]), ("b_s", "hash", ["s"]), ("b_n", "ordered", ["n"])],
    "c": [("c_g", "hash", ["g"]), ("c_x", "ordered", ["x"])],
}

TABLES = ("a", "b", "c")

#: (value kind, type) of columns op_add_column may add (values as for SPECS' columns).
NEW_COLUMN_KINDS = [
    ("str", pa.string()), ("f64", pa.float64()), ("i8", pa.int8()), ("date", pa.date32()),
    ("dec", pa.decimal128(12, 3)), ("bool", pa.bool_()), ("ts", pa.timestamp("us", tz="UTC")),
]


def arrow_schema(name: str) -> pa.Schema:
    return pa.schema([pa.field(c.name, c.type, nullable=c.nullable) for c in SPECS[name]["cols"]])


def scan_rows(table: Any, **kw: Any) -> list[tuple[Any, ...]]:
    """Every row of a scan as a tuple, sorted like the model's."""
    tbl = table.scan(**kw).to_table()
    return sorted_rows(zip(*[c.to_pylist() for c in tbl.columns]))


def rows_of(scan: Any) -> list[tuple[Any, ...]]:
    tbl = scan.to_table()
    return sorted_rows(zip(*[c.to_pylist() for c in tbl.columns]))


def diff(got: Sequence[Any], want: Sequence[Any]) -> str:
    g, w = Counter(got), Counter(want)
    extra = list((g - w).elements())[:5]
    missing = list((w - g).elements())[:5]
    return f"{len(got)} rows, expected {len(want)}; unexpected {extra}; missing {missing}"


class Harness:
    """One randomized run: a store, its tables, and the model they must match."""

    def __init__(self, seed: int, data_dir: Path | None, *, background: bool = False, flush: str = "off") -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.data_dir = data_dir
        self.background = background
        self.flush = flush
        self.store = self._open()
        self.model: dict[str, Any] = {}
        # Column lists per table: SPECS plus the columns op_add_column added.
        self.specs: dict[str, dict[str, Any]] = {n: {**SPECS[n], "cols": list(SPECS[n]["cols"])} for n in TABLES}
        self.index_defs: dict[str, dict[str, tuple[str, list[str]]]] = {n: {} for n in TABLES}
        for name in TABLES:
            spec = SPECS[name]
            self.store.create_table(name, arrow_schema(name), primary_key=spec["key"] or None, num_buckets=spec["buckets"])
            cols = [c.name for c in spec["cols"]]
            self.model[name] = ModelTable(name, cols, spec["key"]) if spec["key"] else ModelBag(name, cols)
        self.history: list[str] = []
        self.step = 0
        self.txn_no = 0
        self.stats: Counter[str] = Counter()
        self.sizes: Counter[str] = Counter()  # sum over steps of each table's size

    def _open(self) -> Store:
        kw: dict[str, Any] = {"background": self.background}
        if self.background:
            kw.update(compaction_min_rows=64, compaction_fraction=0.1, compaction_max_runs=3)
        return Store(self.data_dir, flush=self.flush, **kw)

    def t(self, name: str) -> Any:
        return self.store.table(name)

    def ctx(self) -> str:
        return f"seed {self.seed}, step {self.step}, last ops: {self.history[-8:]}"

    def note(self, what: str) -> None:
        self.history.append(f"{self.step}:{what}")
        self.stats[what.split("(")[0]] += 1

    # --- values -------------------------------------------------------------------------

    def value(self, c: Col, null_rate: float = 0.15) -> Any:
        r = self.rng
        if c.nullable and r.random() < null_rate:
            return None
        k = c.kind
        if k == "id":
            return r.randrange(A_ID_RANGE)
        if k == "k":
            return r.randrange(12)
        if k == "rkey":
            return r.choice(R_KEYS)
        if k == "nkey":
            return r.randrange(B_N_RANGE)
        if k == "v":
            return r.randrange(-40, 40)
        if k == "g":
            return r.randrange(8)
        if k == "i8":
            return r.choice([-128, 127, 0]) if r.random() < 0.2 else r.randrange(-20, 20)
        if k == "str":
            return r.choice(STRS)
        if k == "f64":
            return r.choice([0.0, -1.5, 2.25, 1e10, -3.75]) if r.random() < 0.3 else round(r.uniform(-100, 100), 2)
        if k == "ts":
            return T0 + dt.timedelta(seconds=r.randrange(40), microseconds=r.choice([0, 1, 999_999]))
        if k == "dec":
            return Decimal(r.randrange(-60, 60) * 7).scaleb(-r.choice([2, 3]))
        if k == "date":
            return D0 + dt.timedelta(days=r.randrange(40))
        if k == "bool":
            return r.random() < 0.5
        raise AssertionError(k)

    def cols(self, name: str) -> list[Col]:
        return self.specs[name]["cols"]

    def col_of(self, name: str, cname: str) -> Col:
        return next(c for c in self.cols(name) if c.name == cname)

    def row(self, name: str, key: Any = None) -> tuple[Any, ...]:
        """A random row (with the given key, if any)."""
        spec = self.specs[name]
        vals = {c.name: self.value(c) for c in spec["cols"]}
        if key is not None:
            ks = key if len(spec["key"]) > 1 else (key,)
            for kc, kv in zip(spec["key"], ks):
                vals[kc] = kv
        return tuple(vals[c.name] for c in spec["cols"])

    def random_key(self, name: str) -> Any:
        if name == "a":
            return self.rng.randrange(A_ID_RANGE)
        return (self.rng.choice(R_KEYS), self.rng.randrange(B_N_RANGE))

    def existing_key(self, m: ModelTable) -> Any:
        if m.rows and self.rng.random() < 0.85:
            return self.rng.choice(list(m.rows))
        return self.random_key(m.name)

    def fresh_keys(self, m: ModelTable, n: int, avoid: set[Any] = frozenset()) -> list[Any]:  # type: ignore[assignment]
        out: dict[Any, None] = {}
        for _ in range(n * 20):
            if len(out) >= n:
                break
            k = self.random_key(m.name)
            if k not in m.rows and k not in avoid:
                out[k] = None
        return list(out)

    def literal(self, name: str, c: Col) -> Any:
        """A predicate literal for column ``c``: often a value present in the table."""
        r = self.rng
        m = self.model[name]
        if r.random() < 0.05:
            return None
        v: Any = None
        rows = m.rows if isinstance(m, ModelBag) else list(m.rows.values())
        if rows and r.random() < 0.6:
            v = r.choice(rows)[m.index_of[c.name]]
        if v is None:
            v = self.value(c, null_rate=0)
        if c.kind in ("id", "k", "nkey", "v", "g", "i8") and r.random() < 0.1:
            v = v + r.choice([0.0, 0.5, -0.5])  # a float literal against an integer column
        return v

    def predicate(self, name: str, depth: int = 0) -> Any:
        r = self.rng
        x = r.random()
        if depth < 2 and x < 0.25:
            kids = tuple(self.predicate(name, depth + 1) for _ in range(r.randint(2, 3)))
            return P.And(kids) if r.random() < 0.5 else P.Or(kids)
        if depth < 2 and x < 0.32:
            return P.Not(self.predicate(name, depth + 1))
        c = r.choice(self.cols(name))
        y = r.random()
        if y < 0.5:
            ops = ["=", "<>"] if c.kind == "bool" else list(P.COMPARISONS)
            return P.Compare(r.choice(ops), c.name, self.literal(name, c))
        if y < 0.7:
            vals = [self.literal(name, c) for _ in range(r.randint(1, 4))]
            return col(c.name).isin(vals)
        if y < 0.85 or c.kind != "str":
            return col(c.name).is_null() if r.random() < 0.5 else col(c.name).is_not_null()
        return col(c.name).startswith(r.choice(["", "a", "b", "x1", "é"]))

    def narrow(self, name: str, pred: Any) -> Any:
        """Usually AND a selective term to a random predicate (deletes stay moderate)."""
        r = self.rng
        if r.random() < 0.3:
            return pred
        if name == "a":
            lo = r.randrange(A_ID_RANGE)
            term: Any = P.And((col("id") >= lo, col("id") < lo + r.randint(10, 400)))
        elif name == "b":
            term = col("r") == r.choice(R_KEYS)
        else:
            term = col("g") == r.randrange(8)
        return P.And((term, pred)) if r.random() < 0.5 else P.And((pred, term))

    def as_where(self, pred: Any) -> Any:
        """The predicate as given, or (sometimes) in its JSON form."""
        return P.to_obj(pred) if pred is not None and self.rng.random() < 0.2 else pred

    def values(self, name: str, allow_key: bool) -> dict[str, Any]:
        spec = self.specs[name]
        nonkey = [c for c in spec["cols"] if c.name not in spec["key"]]
        chosen = self.rng.sample(nonkey, self.rng.randint(1, min(3, len(nonkey))))
        vals = {c.name: self.value(c) for c in chosen}
        if allow_key and spec["key"] and self.rng.random() < 0.25:
            kc = self.col_of(name, self.rng.choice(spec["key"]))
            vals[kc.name] = self.value(kc)
        return vals

    # --- inputs -------------------------------------------------------------------------

    def to_arrow(self, name: str, rows: list[tuple[Any, ...]], batch: bool) -> Any:
        """Arrow input for rows: sometimes shuffled columns, a wider int type, or a
        missing nullable column (whose values are then NULL in ``rows``)."""
        r = self.rng
        cols = list(self.cols(name))
        arrays: dict[str, pa.Array] = {}
        drop = None
        if r.random() < 0.2:
            nullable = [i for i, c in enumerate(cols) if c.nullable]
            if nullable:
                drop = r.choice(nullable)
                rows[:] = [tuple(None if i == drop else v for i, v in enumerate(row)) for row in rows]
        for i, c in enumerate(cols):
            if i == drop:
                continue
            typ = c.type
            if pa.types.is_int32(typ) and r.random() < 0.3:
                typ = pa.int64()  # cast back to int32 by the engine, losslessly
            arrays[c.name] = pa.array([row[i] for row in rows], type=typ)
        names = list(arrays)
        if r.random() < 0.3:
            r.shuffle(names)
        tbl = pa.table({n: arrays[n] for n in names})
        if batch:
            return tbl.to_batches()[0] if tbl.num_rows else tbl
        return tbl

    def rows_input(self, name: str, rows: list[tuple[Any, ...]]) -> Any:
        """Point-path input: tuples, dicts, one tuple, one dict, or small Arrow data.

        May replace values in ``rows`` (in place) when a column is omitted.
        """
        r = self.rng
        x = r.random()
        cols = self.cols(name)
        if len(rows) == 1 and x < 0.15:
            return rows[0]
        if len(rows) == 1 and x < 0.3:
            return {c.name: v for c, v in zip(cols, rows[0]) if v is not None or r.random() < 0.5}
        if x < 0.55:
            return [dict((c.name, v) for c, v in zip(cols, row) if v is not None or r.random() < 0.5) for row in rows]
        if x < 0.75:
            return self.to_arrow(name, rows, batch=r.random() < 0.5)
        return [list(row) if r.random() < 0.3 else row for row in rows]

    # --- applying one write to the engine and the model ---------------------------------

    def write(self, target: Any, m: Any, name: str, kind: str, *args: Any, engine_args: tuple[Any, ...] | None = None) -> None:
        """Run one write on the engine (``target``: None for autocommit, or a change set)
        and on the model ``m``, and check both agree (result or DuplicateKeyError)."""
        try:
            expected = getattr(m, kind)(*args)
            want_dup = False
        except ModelDuplicate:
            expected, want_dup = None, True
        eargs = args if engine_args is None else engine_args
        t = self.t(name)
        single = False
        if target is None:
            if kind == "update" and len(eargs[0]) == 1 and self.rng.random() < 0.5:
                single = True
                fn: Callable[[], Any] = lambda: t.update(eargs[0][0], eargs[1])
            elif kind == "update":
                fn = lambda: t.update_many(eargs[0], eargs[1])
            elif kind == "delete" and len(eargs[0]) == 1 and self.rng.random() < 0.5:
                fn = lambda: t.delete(eargs[0][0])
            else:
                fn = lambda: getattr(t, kind)(*eargs)
        else:
            fn = lambda: getattr(target, kind)(name, *eargs)
        if want_dup:
            with pytest.raises(DuplicateKeyError):
                fn()
            self.stats["dup_rejected"] += 1
            return
        got = fn()
        if single:
            got = int(got)
        if kind != "truncate":
            assert got == expected, f"{kind} on {name} returned {got}, model says {expected}; {self.ctx()}"

    def random_write(self, target: Any, m: Any, name: str, *, allow_truncate: bool = True) -> str:
        """One random write to table ``name`` (engine via ``target``, model ``m``)."""
        r = self.rng
        x = r.random()
        if isinstance(m, ModelBag):
            if x < 0.35:
                rows = [self.row(name) for _ in range(r.randint(1, 4))]
                data = self.rows_input(name, rows)
                self.write(target, m, name, "insert", rows, engine_args=(data,))
                return "c.insert"
            if x < 0.5:
                rows = [self.row(name) for _ in range(r.randint(128, 220))]
                data = self.to_arrow(name, rows, batch=r.random() < 0.5)
                self.write(target, m, name, "insert", rows, engine_args=(data,))
                return "c.bulk_insert"
            if x < 0.75:
                pred = self.predicate(name)
                vals = self.values(name, False)
                self.write(target, m, name, "update_where", pred, vals, engine_args=(self.as_where(pred), vals))
                return "c.update_where"
            if x < 0.99 or not allow_truncate:
                pred = self.narrow(name, self.predicate(name))
                self.write(target, m, name, "delete_where", pred, engine_args=(self.as_where(pred),))
                return "c.delete_where"
            self.write(target, m, name, "truncate")
            return "c.truncate"
        # keyed tables
        big = len(m) > (900 if name == "a" else 500)
        if target is not None and r.random() < 0.06:
            # Whole-row replacement by old key (Spark's delta update); may move rows.
            pairs = []
            for _ in range(r.randint(1, 3)):
                ok = self.existing_key(m)
                nk = ok if r.random() < 0.7 else self.random_key(name)
                pairs.append((ok, self.row(name, nk)))
            self.write(target, m, name, "replace", pairs)
            return f"{name}.replace"
        if x < 0.12:
            n = r.randint(1, 4)
            mode = r.random()
            keys = self.fresh_keys(m, n)
            if mode < 0.15 and m.rows:
                keys.append(self.existing_key(m))  # an existing key rejects the call
            elif mode < 0.25 and keys:
                keys.append(keys[0])  # a repeated key rejects the call
            rows = [self.row(name, k) for k in keys]
            data = self.rows_input(name, rows)
            self.write(target, m, name, "insert", rows, engine_args=(data,))
            return f"{name}.insert"
        if x < 0.2 and not big:
            n = r.randint(128, 200)
            keys = self.fresh_keys(m, n)
            mode = r.random()
            if mode < 0.2 and m.rows:
                keys.insert(r.randrange(len(keys) + 1), self.rng.choice(list(m.rows)))
            elif mode < 0.3 and keys:
                keys.insert(r.randrange(len(keys) + 1), r.choice(keys))
            rows = [self.row(name, k) for k in keys]
            data = self.to_arrow(name, rows, batch=r.random() < 0.5)
            self.write(target, m, name, "insert", rows, engine_args=(data,))
            return f"{name}.bulk_insert"
        if x < 0.3:
            keys = list(dict.fromkeys(self.existing_key(m) for _ in range(r.randint(1, 4))))
            if r.random() < 0.05:
                keys.append(keys[0])  # repeated within one upsert: rejected
            rows = [self.row(name, k) for k in keys]
            data = self.rows_input(name, rows)
            self.write(target, m, name, "upsert", rows, engine_args=(data,))
            return f"{name}.upsert"
        if x < 0.36 and not big:
            keys = list(dict.fromkeys(self.existing_key(m) for _ in range(r.randint(128, 200))))
            if r.random() < 0.08:
                keys.append(keys[0])
            rows = [self.row(name, k) for k in keys]
            data = self.to_arrow(name, rows, batch=r.random() < 0.5)
            self.write(target, m, name, "upsert", rows, engine_args=(data,))
            return f"{name}.bulk_upsert"
        if x < 0.52:
            keys = [self.existing_key(m) for _ in range(r.choice([1, 1, 2, 3]))]
            self.write(target, m, name, "update", keys, self.values(name, allow_key=True))
            return f"{name}.update"
        if x < 0.62:
            keys = [self.existing_key(m) for _ in range(r.randint(1, 4))]
            self.write(target, m, name, "delete", keys)
            return f"{name}.delete"
        if x < 0.74:
            pred = self.predicate(name)
            vals = self.values(name, allow_key=True)
            self.write(target, m, name, "update_where", pred, vals, engine_args=(self.as_where(pred), vals))
            return f"{name}.update_where"
        if x < 0.86 or big:
            pred = self.narrow(name, self.predicate(name))
            if big and r.random() < 0.5:
                c = self.cols(name)[1]  # k / n: a wide cut
                pred = col(c.name) < self.value(c, null_rate=0)
            self.write(target, m, name, "delete_where", pred, engine_args=(self.as_where(pred),))
            return f"{name}.delete_where"
        if x < 0.995 or not allow_truncate:
            # A key range: exercises the int path / composite ordering on deletes.
            if name == "a":
                lo = r.randrange(A_ID_RANGE)
                pred = P.And((col("id") >= lo, col("id") < lo + r.randint(1, 120)))
            else:
                pred = P.And((col("r") == r.choice(R_KEYS), col("n") <= r.randrange(B_N_RANGE // 2)))
            self.write(target, m, name, "delete_where", pred, engine_args=(self.as_where(pred),))
            return f"{name}.delete_range"
        self.write(target, m, name, "truncate")
        return f"{name}.truncate"

    # --- checks -------------------------------------------------------------------------

    def quick_check(self, name: str) -> None:
        t = self.t(name)
        t._check()
        assert t.count() == len(self.model[name]), f"{name}: count {t.count()} != model {len(self.model[name])}; {self.ctx()}"

    def full_check(self, name: str) -> None:
        t = self.t(name)
        m = self.model[name]
        t._check()
        got = scan_rows(t)
        want = m.select()
        assert got == want, f"table {name}: {diff(got, want)}; {self.ctx()}"
        assert t.index_defs == self.index_defs[name], f"{name}: indexes {t.index_defs} != {self.index_defs[name]}"
        assert t.memory_bytes() > 0 or not len(m)
        if isinstance(m, ModelBag):
            ids = [v for b in t.scan(columns=["_rowid"]) for v in b.column(0).to_pylist()]
            assert len(ids) == len(set(ids)), f"duplicate hidden row ids; {self.ctx()}"
            assert all(i < t.next_rowid for i in ids)

    def check_all(self) -> None:
        for name in TABLES:
            self.full_check(name)

    # --- operations ---------------------------------------------------------------------

    def op_write(self) -> set[str]:
        name = self.rng.choice(["a", "a", "a", "b", "b", "c"])
        what = self.random_write(None, self.model[name], name)
        self.note(what)
        return {name}

    def op_bad_input(self) -> set[str]:
        r = self.rng
        a, b, c = self.t("a"), self.t("b"), self.t("c")
        good = list(self.row("a", 50_000 + self.step))  # a key outside the id range: never present
        cases: list[tuple[type[BaseException], Callable[[], Any]]] = [
            (NullKeyError, lambda: a.insert([tuple(good[:0] + [None] + good[1:])])),
            (NotNullViolationError, lambda: a.insert([tuple(good[:1] + [None] + good[2:])])),
            (TypeMismatchError, lambda: a.insert([tuple(good[:2] + [5] + good[3:])])),
            (ValueOutOfRangeError, lambda: a.insert([tuple(good[:8] + [300] + good[9:])])),
            (UnknownColumnError, lambda: a.update(good[0], {"nope": 1})),
            (NullKeyError, lambda: b.upsert([(None, 1, 1, None, None) + (None,) * (len(self.cols("b")) - 5)])),
            (TypeMismatchError, lambda: b.get(("a",))),
            (BadArgumentError, lambda: c.upsert([(1, "a", 1.0)])),
            (NullKeyError, lambda: a.insert(pa.table({"id": pa.array([None] + list(range(10_000, 10_200)), pa.int64()),
                                                      "k": pa.array([1] * 201, pa.int32())}))),
            (ValueOutOfRangeError, lambda: a.upsert(pa.table({"id": pa.array(range(10_000, 10_200), pa.int64()),
                                                              "k": pa.array([1] * 199 + [1 << 40], pa.int64())}))),
            (NotNullViolationError, lambda: b.update_where(None, {"v": None})),
            (BadArgumentError, lambda: a.update_where(col("id") >= 0, {"_rowid": 1})),
        ]
        exc, fn = r.choice(cases)
        with pytest.raises(exc):
            fn()
        self.note("bad_input")
        return {"a", "b", "c"}

    def op_get(self) -> set[str]:
        name = self.rng.choice(["a", "b"])
        t, m = self.t(name), self.model[name]
        keys = [self.existing_key(m) for _ in range(self.rng.randint(1, 12))]
        if len(keys) == 1 or self.rng.random() < 0.3:
            for k in keys[:3]:
                assert t.get(k) == m.get(k), f"get({k!r}) on {name}; {self.ctx()}"
        else:
            assert t.get_many(keys) == [m.get(k) for k in keys], f"get_many on {name}; {self.ctx()}"
        self.note("get")
        return set()

    def op_scan(self) -> set[str]:
        r = self.rng
        name = r.choice(TABLES)
        t, m = self.t(name), self.model[name]
        pred = self.predicate(name) if r.random() < 0.85 else None
        names = [c.name for c in self.cols(name)]
        columns = r.sample(names, r.randint(1, len(names))) if r.random() < 0.5 else None
        want = m.select(pred, columns)
        if r.random() < 0.2:
            limit = r.randint(0, 30)
            got = rows_of(t.scan(columns=columns, where=self.as_where(pred), limit=limit))
            assert len(got) == min(limit, len(want)), f"limit {limit}: {len(got)} rows of {len(want)}; {self.ctx()}"
            assert is_sub_multiset(got, want), f"limited scan returned rows not matching; {self.ctx()}"
        else:
            s = t.scan(columns=columns, where=self.as_where(pred))
            got = rows_of(s)
            assert got == want, f"scan {name} where {pred} cols {columns}: {diff(got, want)}; {self.ctx()}"
            assert s.rows_examined >= len(got)
        self.note(f"scan({name})")
        return set()

    def op_index_scan(self) -> set[str]:
        """A scan whose predicate an index covers: the index must be used and agree."""
        r = self.rng
        name = r.choice([n for n in TABLES if self.index_defs[n]] or ["a"])
        t, m = self.t(name), self.model[name]
        if not self.index_defs[name]:
            return set()
        iname = r.choice(sorted(self.index_defs[name]))
        kind, cols = self.index_defs[name][iname]
        cs = [self.col_of(name, c) for c in cols]
        rows = m.all_rows()
        sample = r.choice(rows) if rows and r.random() < 0.8 else self.row(name)
        lit = [sample[m.index_of[c.name]] for c in cs]
        lit = [self.value(c, null_rate=0) if v is None and r.random() < 0.7 else v for c, v in zip(cs, lit)]
        equality = True
        lo = None
        if len(cs) == 1 and r.random() < 0.3:
            term: Any = col(cs[0].name).isin([lit[0], self.literal(name, cs[0])])
        elif kind == "ordered" and r.random() < 0.4:
            equality = False
            lo = self.literal(name, cs[0])
            term = P.Compare(r.choice([">", ">="]), cs[0].name, lo)
            if r.random() < 0.6:
                term = P.And((term, P.Compare(r.choice(["<", "<="]), cs[0].name, self.literal(name, cs[0]))))
        else:
            term = P.And(tuple(col(c.name) == v for c, v in zip(cs, lit))) if len(cs) > 1 else col(cs[0].name) == lit[0]
        pred = term
        if r.random() < 0.3:
            pred = P.And((term, self.predicate(name, depth=1)))
        s = t.scan(where=self.as_where(pred))
        got = rows_of(s)
        want = m.select(pred)
        assert got == want, f"index scan {name} where {pred}: {diff(got, want)}; {self.ctx()}"
        key = self.specs[name]["key"]
        terms = list(P.conjuncts(pred))
        eq_cols = {x.column for x in terms if isinstance(x, P.Compare) and x.op == "="}
        if len(key) == 1:
            pk_term = bool(eq_cols & set(key)) or any(isinstance(x, P.In) and x.column == key[0] for x in terms)
        else:
            pk_term = bool(key) and set(key) <= eq_cols
        if not equality and lo is not None and not pk_term:
            assert s.access_path.startswith("index:"), f"{pred} used {s.access_path}, not an index; {self.ctx()}"
        if equality and not pk_term:
            assert s.access_path.startswith("index:"), f"{pred} used {s.access_path}, not an index; {self.ctx()}"
            assert s.rows_examined <= len(m)
            self.stats["index_path_checked"] += 1
            if s.access_path == f"index:{iname}" and isinstance(term, P.Compare) and lit[0] is not None:
                # A single-column equality examines exactly the rows holding the value.
                n = sum(1 for row in rows if row[m.index_of[cs[0].name]] == lit[0])
                assert s.rows_examined == n, f"{pred}: examined {s.rows_examined}, {n} rows hold the value"
                self.stats["index_rows_examined_checked"] += 1
        self.note(f"index_scan({iname})")
        return set()

    def op_pk_scan(self) -> set[str]:
        name = self.rng.choice(["a", "b"])
        t, m = self.t(name), self.model[name]
        keys = [self.existing_key(m) for _ in range(self.rng.randint(1, 5))]
        if name == "a":
            pred: Any = col("id").isin(keys) if len(keys) > 1 else col("id") == keys[0]
        else:
            pred = P.And((col("r") == keys[0][0], col("n") == keys[0][1]))
            keys = keys[:1]
        s = t.scan(where=self.as_where(pred))
        got = rows_of(s)
        want = m.select(pred)
        assert got == want, f"pk scan {pred}: {diff(got, want)}; {self.ctx()}"
        assert s.access_path == "primary_key" and s.rows_examined <= len(keys)
        self.note("pk_scan")
        return set()

    def op_bucket_scan(self) -> set[str]:
        name = self.rng.choice(TABLES)
        t, m = self.t(name), self.model[name]
        schema = t.schema
        # One bucket per scan (as Spark reads), in random groups, with or without a
        # predicate (which may take the primary-key or an index path).
        pred = None
        if self.rng.random() < 0.5:
            pred = self.predicate(name)
        elif name != "c" and self.rng.random() < 0.5:
            keys = [self.existing_key(m) for _ in range(6)]
            pred = col("id").isin(keys) if name == "a" else P.And((col("r") == keys[0][0], col("n") == keys[0][1]))
        groups = list(range(schema.num_buckets))
        self.rng.shuffle(groups)
        every: list[tuple[Any, ...]] = []
        for part_buckets in (groups[:1], groups[1:]):
            part = scan_rows(t, columns=list(schema.column_names), buckets=part_buckets, where=self.as_where(pred))
            for row in part:
                b = schema.bucket_of_key(schema.key_of(row))
                assert b in part_buckets, f"row {row} of bucket {b} scanned from buckets {part_buckets}"
            every.extend(r[: len(self.cols(name))] for r in part)
        got = sorted_rows(every)
        want = m.select(pred)
        assert got == want, f"bucket-by-bucket scan of {name} where {pred}: {diff(got, want)}; {self.ctx()}"
        self.note("bucket_scan")
        return set()

    def op_snapshot_scan(self) -> set[str]:
        """A scan started before writes sees the table as it was when it started."""
        r = self.rng
        name = r.choice(TABLES)
        t, m = self.t(name), self.model[name]
        pred = self.predicate(name) if r.random() < 0.5 else None
        s = t.scan(where=self.as_where(pred))
        want = m.select(pred)
        for _ in range(r.randint(1, 3)):
            self.random_write(None, m, name)
        if r.random() < 0.3:
            t.compact()
        got = rows_of(s)
        assert got == want, f"snapshot scan of {name} saw later writes: {diff(got, want)}; {self.ctx()}"
        self.note("snapshot_scan")
        return {name}

    def op_compact(self) -> set[str]:
        if self.rng.random() < 0.5:
            self.t(self.rng.choice(TABLES)).compact()
        else:
            self.store.compact()
        self.note("compact")
        return set(TABLES)

    def op_index(self) -> set[str]:
        r = self.rng
        name = r.choice(TABLES)
        t = self.t(name)
        defs = self.index_defs[name]
        iname, kind, cols = r.choice(INDEX_POOL[name])
        if iname in defs:
            if r.random() < 0.1:
                with pytest.raises(IndexExistsError):
                    t.create_index(iname, cols, kind)
            else:
                t.drop_index(iname)
                del defs[iname]
            self.note(f"drop_index({iname})")
        else:
            if r.random() < 0.08:
                with pytest.raises(NoSuchIndexError):
                    t.drop_index(iname)
            else:
                t.create_index(iname, cols if len(cols) > 1 or r.random() < 0.5 else cols[0], kind)
                defs[iname] = (kind, list(cols))
            self.note(f"create_index({iname})")
        assert t.index_defs == defs
        return {name}

    def op_add_column(self) -> set[str]:
        """ALTER TABLE ADD COLUMNS: a nullable column of a random type; every row reads
        NULL in it, and later writes, predicates and checks use it. Sometimes a refused
        one (a name the table has, NOT NULL) that must change nothing."""
        r = self.rng
        name = r.choice(TABLES)
        spec = self.specs[name]
        added = len(spec["cols"]) - len(SPECS[name]["cols"])
        if added >= 3 or r.random() < 0.15:
            taken = r.choice(spec["cols"]).name
            with pytest.raises(SchemaError, match=f"table '{name}'"):
                if r.random() < 0.5:
                    self.store.add_columns(name, [(taken.upper(), "string")])
                else:
                    self.store.add_columns(name, [pa.field(f"nn{added}", pa.int32(), nullable=False)])
            self.note(f"add_column_refused({name})")
            return {name}
        kind, typ = r.choice(NEW_COLUMN_KINDS)
        c = Col(f"{name}_new{added}", kind, True, typ)
        self.store.add_columns(name, [pa.field(c.name, c.type)])
        spec["cols"].append(c)
        self.model[name].add_column(c.name)
        assert self.t(name).schema.arrow_schema.names == [x.name for x in spec["cols"]], self.ctx()
        self.note(f"add_column({name})")
        return {name}

    def begin(self, named: bool = False) -> Any:
        self.txn_no += 1
        return self.store.begin(f"stress-{self.seed}-{self.txn_no}" if named else None)

    def op_changeset(self) -> set[str]:
        """Several changes over several tables, then commit or abort as a unit."""
        r = self.rng
        cs = self.begin(named=r.random() < 0.5)
        clones: dict[str, Any] = {}
        for _ in range(r.randint(1, 6)):
            name = r.choice(["a", "a", "b", "b", "c"])
            m = clones.setdefault(name, self.model[name].clone())
            self.random_write(cs, m, name)
        # Nothing is visible before commit.
        for name in clones:
            assert self.t(name).count() == len(self.model[name]), f"uncommitted changes visible; {self.ctx()}"
        outcome = r.choice(["commit", "commit", "prepare_commit", "abort", "prepare_abort", "with_commit", "with_error"])
        committed = outcome in ("commit", "prepare_commit", "with_commit")
        if outcome.startswith("prepare"):
            cs.prepare()
            assert cs.state == PREPARED
        if outcome in ("commit", "prepare_commit"):
            cs.commit()
        elif outcome in ("abort", "prepare_abort"):
            cs.abort()
        elif outcome == "with_commit":
            with cs:
                pass
        else:
            with pytest.raises(RuntimeError):
                with cs:
                    raise RuntimeError("the statement failed")
        assert cs.state == (COMMITTED if committed else ABORTED)
        if committed:
            for name, m in clones.items():
                m.merge_into(self.model[name])
        for name in clones:
            assert not self.t(name).locks and self.t(name).truncating is None, "locks left behind"
        self.note(f"changeset({outcome},{sorted(clones)})")
        return set(clones)

    def op_conflict(self) -> set[str]:
        """Two concurrent change sets: the second conflicts on a key the first holds."""
        r = self.rng
        cs1 = self.begin(named=True)
        m1 = {n: self.model[n].clone() for n in ("a", "b")}
        for _ in range(r.randint(1, 4)):
            name = r.choice(["a", "b"])
            self._point_write(cs1, m1[name], name, set())
        held = {n: sorted(m1[n].touched) for n in ("a", "b")}
        if not held["a"] and not held["b"]:
            k = self.existing_key(m1["a"])
            self.write(cs1, m1["a"], "a", "upsert", [self.row("a", k)])
            held["a"] = [k]
        cs2 = self.begin(named=r.random() < 0.5)
        m2 = {n: self.model[n].clone() for n in ("a", "b")}
        conflicts = 0
        for _ in range(r.randint(2, 5)):
            name = r.choice([n for n in ("a", "b") if held[n]])
            if r.random() < 0.5:
                # A change on a key the first set holds: refused, and cs2 unchanged.
                k = r.choice(held[name])
                kind = r.choice(["upsert", "update", "delete", "insert", "autocommit"])
                t = self.t(name)
                with pytest.raises(ConflictError):
                    if kind == "upsert":
                        cs2.upsert(name, [self.row(name, k)])
                    elif kind == "insert":
                        cs2.insert(name, [self.row(name, k)])
                    elif kind == "update":
                        cs2.update(name, [k], self.values(name, allow_key=False))
                    elif kind == "delete":
                        cs2.delete(name, [self.random_key(name), k])
                    else:
                        t.upsert([self.row(name, k)]) if r.random() < 0.5 else t.delete([k])
                conflicts += 1
            else:
                self._point_write(cs2, m2[name], name, set(held[name]))
        if r.random() < 0.2:
            with pytest.raises(ConflictError):
                cs2.truncate(r.choice([n for n in ("a", "b") if held[n]]))
        assert conflicts == 0 or cs2.state == "open"
        # Disjoint changes commit independently, in either order; the loser usually aborts.
        outcomes = [(cs1, m1, r.random() < 0.7), (cs2, m2, r.random() < 0.3)]
        r.shuffle(outcomes)
        for cs, ms, ok in outcomes:
            if ok:
                cs.commit()
                for n, m in ms.items():
                    m.merge_into(self.model[n])
            else:
                cs.abort()
        self.note(f"conflict({conflicts})")
        return {"a", "b"}

    def _point_write(self, cs: Any, m: ModelTable, name: str, avoid: set[Any]) -> None:
        """An upsert, fresh insert, update (no key change) or delete on keys not in ``avoid``."""
        r = self.rng
        x = r.random()
        keys = [k for k in (self.existing_key(m) for _ in range(3)) if k not in avoid][: r.randint(1, 3)]
        if x < 0.3 or not keys:
            keys = self.fresh_keys(m, r.randint(1, 3), avoid=avoid)
            self.write(cs, m, name, "insert", [self.row(name, k) for k in keys])
        elif x < 0.6:
            self.write(cs, m, name, "upsert", [self.row(name, k) for k in keys])
        elif x < 0.85:
            self.write(cs, m, name, "update", keys, self.values(name, allow_key=False))
        else:
            self.write(cs, m, name, "delete", keys)

    def op_truncate_conflict(self) -> set[str]:
        """A change set truncating a table blocks every other writer of that table."""
        r = self.rng
        name = r.choice(TABLES)
        cs = self.begin()
        m = self.model[name].clone()
        cs.truncate(name)
        m.truncate()
        if r.random() < 0.5:
            self.random_write(cs, m, name, allow_truncate=False)
        with pytest.raises(ConflictError):
            if name == "c":
                self.t(name).insert([self.row(name)])
            else:
                self.t(name).delete([self.random_key(name)])
        with pytest.raises(ConflictError):
            self.store.drop_table(name)
        assert self.t(name).count() == len(self.model[name])
        if r.random() < 0.2:
            cs.commit()
            m.merge_into(self.model[name])
        else:
            cs.abort()
        self.note(f"truncate_conflict({name})")
        return {name}

    def op_drop_recreate(self) -> set[str]:
        """Drop a table and create it again: empty, without indexes."""
        name = self.rng.choice(TABLES)
        old = self.t(name)
        self.store.drop_table(name)
        with pytest.raises(NoSuchTableError):
            old.insert([self.row(name)] if name == "c" else [self.row(name, self.random_key(name))])
        spec = SPECS[name]
        self.store.create_table(name, arrow_schema(name), primary_key=spec["key"] or None, num_buckets=spec["buckets"])
        cols = [c.name for c in spec["cols"]]
        self.model[name] = ModelTable(name, cols, spec["key"]) if spec["key"] else ModelBag(name, cols)
        self.specs[name] = {**spec, "cols": list(spec["cols"])}  # the added columns went with the table
        self.index_defs[name] = {}
        self.note(f"drop_recreate({name})")
        return {name}

    # --- durable-only operations ----------------------------------------------------------

    def op_checkpoint(self) -> set[str]:
        self.store.checkpoint()
        self.note("checkpoint")
        return set()

    def reopen(self) -> None:
        self.store.close()
        self.store = self._open()
        assert sorted(self.store.tables) == sorted(TABLES)

    def op_reopen(self) -> set[str]:
        self.reopen()
        self.note("reopen")
        self.check_all()
        return set(TABLES)

    def op_in_doubt(self) -> set[str]:
        """A change set prepared, then the store closes: after recovery it is in doubt,
        invisible, holding its keys, until it is committed or aborted."""
        r = self.rng
        cs = self.begin(named=True)
        txn = cs.id
        clones: dict[str, Any] = {}
        for _ in range(r.randint(1, 4)):
            name = r.choice(["a", "b", "c"])
            m = clones.setdefault(name, self.model[name].clone())
            if name == "c":
                self.random_write(cs, m, name, allow_truncate=False)
            else:
                self._point_write(cs, m, name, set())
        cs.prepare()
        if r.random() < 0.3:
            self.store.checkpoint()
        self.reopen()
        # Whether the set staged anything the model can see (a no-op set logs nothing).
        staged = any(
            m.rows != self.model[m.name].rows if isinstance(m, ModelBag) else bool(m.touched)
            for m in clones.values()
        )
        if staged:
            assert self.store.in_doubt() == [txn], f"in doubt: {self.store.in_doubt()}; {self.ctx()}"
        for name in TABLES:
            assert self.t(name).count() == len(self.model[name]), f"in-doubt changes visible in {name}; {self.ctx()}"
        for name, m in clones.items():
            if isinstance(m, ModelTable) and m.touched:
                k = sorted(m.touched)[0]
                with pytest.raises(ConflictError):
                    self.t(name).upsert([self.row(name, k)])
        if "c" in clones and r.random() < 0.7:
            # Other writers of a table without a key must not collide with the in-doubt rows.
            rows = [self.row("c") for _ in range(r.randint(1, 3))]
            self.write(None, self.model["c"], "c", "insert", rows)
            clones["c"].insert(rows)
        if r.random() < 0.3:
            self.store.checkpoint()
        if r.random() < 0.3:
            self.reopen()
        if not staged and not self.store.in_doubt():
            self.note("in_doubt(empty)")
            return set(TABLES)
        doubtful = self.store.transaction(txn)
        if r.random() < 0.6:
            doubtful.commit()
            for name, m in clones.items():
                m.merge_into(self.model[name])
            outcome = "commit"
        else:
            doubtful.abort()
            outcome = "abort"
        assert self.store.in_doubt() == []
        if r.random() < 0.5:
            self.reopen()
        self.note(f"in_doubt({outcome})")
        return set(TABLES)

    # --- driver -------------------------------------------------------------------------

    def run(self, steps: int, durable: bool) -> None:
        ops: list[tuple[Callable[[], set[str]], float]] = [
            (self.op_write, 40),
            (self.op_changeset, 8),
            (self.op_conflict, 3),
            (self.op_truncate_conflict, 0.7),
            (self.op_get, 6),
            (self.op_scan, 10),
            (self.op_index_scan, 6),
            (self.op_pk_scan, 2),
            (self.op_bucket_scan, 1),
            (self.op_snapshot_scan, 2),
            (self.op_compact, 3),
            (self.op_index, 3),
            (self.op_bad_input, 1.5),
            (self.op_drop_recreate, 0.3),
            (self.op_add_column, 1.2),
        ]
        if durable:
            ops += [(self.op_checkpoint, 1.5), (self.op_reopen, 1.2), (self.op_in_doubt, 0.8)]
        funcs = [f for f, _ in ops]
        weights = [w for _, w in ops]
        for self.step in range(steps):
            op = self.rng.choices(funcs, weights)[0]
            touched = op()
            # Reads change nothing; with background compaction any table may change.
            for name in TABLES if self.background else sorted(touched):
                self.quick_check(name)
            for name in TABLES:
                self.sizes[name] += len(self.model[name])
            if self.step % FULL_COMPARE_EVERY == 0:
                self.check_all()
        self.check_all()
        if durable:
            self.reopen()
            self.check_all()
        self.store.close()
        # The run was not vacuous: the interesting paths were taken.
        st = self.stats
        assert st["dup_rejected"] and st["index_path_checked"] and st["changeset"] and st["conflict"], st
        assert st["a.bulk_insert"] + st["b.bulk_insert"] + st["c.bulk_insert"] and st["a.bulk_upsert"] + st["b.bulk_upsert"], st
        assert not durable or (st["reopen"] and st["checkpoint"] and st["in_doubt"]), st
        assert st["add_column"], st


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_stress_in_memory(seed: int) -> None:
    Harness(seed, None).run(steps=1200, durable=False)


@pytest.mark.parametrize("seed", [11, 12])
def test_stress_durable(seed: int, tmp_path: Path) -> None:
    Harness(seed, tmp_path / "data").run(steps=1000, durable=True)


def test_stress_background_upkeep(tmp_path: Path) -> None:
    """Background compaction (low thresholds) runs while the operations go on."""
    Harness(21, tmp_path / "data", background=True, flush="group").run(steps=800, durable=True)


def test_concurrent_transfers_and_snapshot_reads() -> None:
    """Threads move amounts between rows in change sets (and rewrite rows in bulk) while
    other threads scan and background compaction runs: every scan sees whole change sets
    (the total never changes), and the invariants hold at the end."""
    import threading

    store = Store(background=True, compaction_min_rows=32, compaction_fraction=0.05, compaction_max_runs=2)
    n_rows, start = 2000, 1000
    t = store.create_table("acct", [("id", "int64"), ("bal", "int64"), ("grp", "int32")], primary_key="id", num_buckets=4)
    t.insert(pa.table({"id": pa.array(range(n_rows), pa.int64()), "bal": [start] * n_rows, "grp": pa.array([i % 7 for i in range(n_rows)], pa.int32())}))
    t.create_index("by_grp", "grp", "hash")
    t.create_index("by_bal", "bal", "ordered")
    total = n_rows * start
    errors: list[BaseException] = []
    done = threading.Event()
    commits: Counter[str] = Counter()

    def transfers(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(300):
                a, b = rng.sample(range(n_rows), 2)
                ra, rb = t.get(a), t.get(b)
                assert ra is not None and rb is not None
                amount = rng.randint(1, 50)
                cs = store.begin()
                try:
                    cs.update("acct", [a], {"bal": ra[1] - amount})
                    cs.update("acct", [b], {"bal": rb[1] + amount, "grp": rng.randrange(7)})
                except ConflictError:
                    cs.abort()
                    continue
                # The keys are locked now: the committed values cannot change under us.
                if t.get(a) != ra or t.get(b) != rb or rng.random() < 0.1:
                    cs.abort()
                    continue
                cs.commit()
                commits["transfer"] += 1
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    def bulk_rewrites(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(40):
                lo = rng.randrange(n_rows - 200)
                ids = list(range(lo, lo + rng.randint(128, 200)))
                cs = store.begin()
                try:
                    before = t.get_many(ids)
                    cs.upsert("acct", pa.table({
                        "id": pa.array(ids, pa.int64()),
                        "bal": pa.array([r[1] for r in before if r is not None], pa.int64()),
                        "grp": pa.array([rng.randrange(7) for _ in ids], pa.int32()),
                    }))
                except ConflictError:
                    cs.abort()
                    continue
                if t.get_many(ids) != before:
                    cs.abort()
                    continue
                cs.commit()
                commits["bulk"] += 1
        except BaseException as e:  # pragma: no cover
            errors.append(e)

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        try:
            while not done.is_set():
                kind = rng.random()
                if kind < 0.05:
                    t.compact()  # besides the background upkeep
                elif kind < 0.6:
                    s = t.scan(columns=["bal"])
                    bals = [v for b in s for v in b.column(0).to_pylist()]
                    assert len(bals) == n_rows and sum(bals) == total, f"scan saw a partial change set: {sum(bals)}"
                else:
                    g = rng.randrange(7)
                    s = t.scan(columns=["id", "grp"], where=col("grp") == g)
                    got = [r for b in s for r in zip(*[c.to_pylist() for c in b.columns])]
                    assert s.access_path == "index:by_grp" and all(r[1] == g for r in got)
                commits["scan"] += 1
        except BaseException as e:  # pragma: no cover
            errors.append(e)

    writers = [threading.Thread(target=transfers, args=(i,)) for i in range(3)]
    writers.append(threading.Thread(target=bulk_rewrites, args=(9,)))
    readers = [threading.Thread(target=reader, args=(20 + i,)) for i in range(2)]
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # interleave the threads finely
    try:
        for th in writers + readers:
            th.start()
        for th in writers:
            th.join()
        done.set()
        for th in readers:
            th.join()
    finally:
        sys.setswitchinterval(old_interval)
        store.close()
    assert not errors, errors[0]
    assert commits["transfer"] > 0 and commits["bulk"] > 0 and commits["scan"] > 0
    t._check()
    assert not t.locks
    assert t.count() == n_rows
    assert sum(v for b in t.scan(columns=["bal"]) for v in b.column(0).to_pylist()) == total
    by_bal = t.scan(where=col("bal") >= start)
    assert by_bal.access_path == "index:by_bal"
    assert by_bal.count() == sum(1 for b in t.scan(columns=["bal"]) for v in b.column(0).to_pylist() if v >= start)
