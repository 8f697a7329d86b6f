"""Schema changes of live tables: ADD COLUMNS (nullable) and RENAME, in memory, across
compaction, indexes, checkpoints, log replay and a kill -9 right after the change."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from spark_ext.exceptions import ConflictError, NoSuchTableError, SchemaError, TableExistsError
from spark_ext.store import Store, col
from tests.store.unit_helpers import contents, rows

ROOT = Path(__file__).resolve().parents[2]


def _open(path: Path) -> Store:
    return Store(path, flush="commit", background=False)


def _keyed(store: Store, name: str = "ns.t") -> Any:
    t = store.create_table(name, [("id", "int64"), ("v", "string")], "id", 4)
    t.insert([(i, f"v{i}") for i in range(50)])
    store.compact()  # rows 0..49 in base runs
    t.insert([(i, f"v{i}") for i in range(50, 60)])  # rows 50..59 in the delta
    t.delete([3, 55])
    return t


def test_add_column_existing_rows_read_null_everywhere(store: Store) -> None:
    t = _keyed(store)
    t.create_index("by_v", ["v"])
    store.add_columns("ns.t", [("c", "int32"), ("d", "decimal(10,2)")])
    assert t.schema.arrow_schema.names == ["id", "v", "c", "d"]
    assert t.get(1) == (1, "v1", None, None)       # from a base run
    assert t.get(57) == (57, "v57", None, None)    # from the delta
    assert t.get(3) is None and t.get(55) is None  # deleted stay deleted
    assert t.count() == 58
    got = rows(t)
    assert len(got) == 58 and all(r[2] is None and r[3] is None for r in got)
    # The index still finds rows (positions of old columns did not move).
    assert rows(t, where=col("v") == "v7") == [(7, "v7", None, None)]
    assert t.scan(where=col("v") == "v7").access_path == "index:by_v"
    # New writes use the new column; predicates and new indexes work on it.
    t.upsert({"id": 7, "v": "v7", "c": 70})
    t.insert([(100, "x", 5, "1.50")])
    t.update(8, {"c": 80})
    t.create_index("by_c", ["c"], "ordered")
    assert rows(t, where=col("c") >= 70) == [(7, "v7", 70, None), (8, "v8", 80, None)]
    assert t.scan(where=col("c") >= 70).access_path == "index:by_c"
    import decimal

    assert t.get(100) == (100, "x", 5, decimal.Decimal("1.50"))
    store.compact()
    t._check()
    assert t.get(7) == (7, "v7", 70, None) and t.get(1) == (1, "v1", None, None)
    assert len(rows(t)) == 59


def test_add_column_to_a_table_without_primary_key(store: Store) -> None:
    h = store.create_table("h", [("a", "string")], None, 2)
    h.insert([("x",), ("y",)])
    store.compact()
    h.insert([("z",)])
    store.add_columns("h", [("b", "float64")])
    got = h.scan(columns=["a", "b", "_rowid"]).to_table().to_pylist()
    assert sorted((r["a"], r["b"], r["_rowid"]) for r in got) == [("x", None, 1), ("y", None, 2), ("z", None, 3)]
    h.insert([("w", 2.5)])
    assert sorted(rows(h)) == [("w", 2.5), ("x", None), ("y", None), ("z", None)]
    assert h.delete_where(col("b").is_null()) == 3
    assert rows(h) == [("w", 2.5)]
    h._check()


def test_add_column_refusals_name_table_and_column(store: Store) -> None:
    t = _keyed(store)
    before = contents(t)
    with pytest.raises(SchemaError, match=r"table 'ns.t' already has a column 'v'; cannot add column 'V'") as e:
        store.add_columns("ns.t", [("V", "string")])
    assert e.value.details == {"table": "ns.t", "column": "V"}
    with pytest.raises(SchemaError, match=r"table 'ns.t', column 'n': .*must be nullable"):
        store.add_columns("ns.t", [pa.field("n", pa.int64(), nullable=False)])
    with pytest.raises(SchemaError, match=r"table 'ns.t', column 'm'"):
        store.add_columns("ns.t", [("m", "map<string,int>")])
    with pytest.raises(SchemaError, match=r"table 'ns.t', column 'l'"):
        store.add_columns("ns.t", [pa.field("l", pa.list_(pa.int64()))])
    with pytest.raises(SchemaError, match=r"'_rowid' is reserved"):
        store.add_columns("ns.t", [("_rowid", "int64")])
    with pytest.raises(SchemaError, match=r"column 'X' is named twice"):
        store.add_columns("ns.t", [("x", "int64"), ("X", "string")])
    with pytest.raises(SchemaError, match="at least one column"):
        store.add_columns("ns.t", [])
    with pytest.raises(NoSuchTableError, match="no table 'ns.nope'"):
        store.add_columns("ns.nope", [("c", "int32")])
    # Nothing changed by any refusal.
    assert t.schema.arrow_schema.names == ["id", "v"] and contents(t) == before


def test_schema_change_refused_while_a_transaction_holds_changes(store: Store) -> None:
    t = _keyed(store)
    cs = store.begin("tx1")
    cs.insert("ns.t", [(500, "p")])
    with pytest.raises(ConflictError, match=r"cannot add columns to table 'ns.t': open transactions"):
        store.add_columns("ns.t", [("c", "int32")])
    with pytest.raises(ConflictError, match=r"cannot rename table 'ns.t'"):
        store.rename_table("ns.t", "ns.u")
    cs.commit()
    store.add_columns("ns.t", [("c", "int32")])
    assert t.get(500) == (500, "p", None)


def test_rename_keeps_data_indexes_and_refuses_taken_names(store: Store) -> None:
    t = _keyed(store)
    t.create_index("by_v", ["v"])
    store.create_table("other.t2", [("k", "string")], "k", 2)
    with pytest.raises(TableExistsError, match=r"cannot rename table 'ns.t' to 'other.t2'"):
        store.rename_table("ns.t", "other.t2")
    with pytest.raises(NoSuchTableError):
        store.rename_table("ns.nope", "ns.x")
    before = contents(t)
    u = store.rename_table("ns.t", "other.u")
    assert u is t and u.name == "other.u" and u.schema.name == "other.u"
    assert "ns.t" not in store.tables and store.table("other.u") is t
    assert contents(u) == before
    assert rows(u, where=col("v") == "v9") == [(9, "v9")]
    u.insert([(700, "n")])
    assert u.get(700) == (700, "n")
    # The old name is free again.
    store.create_table("ns.t", [("id", "int64")], "id", 2)


@pytest.mark.parametrize("checkpoint_at", ["none", "before", "after"])
def test_changes_survive_reopen(tmp_path: Path, checkpoint_at: str) -> None:
    s = _open(tmp_path)
    t = _keyed(s)
    t.create_index("by_v", ["v"])
    h = s.create_table("h", [("a", "string")], None, 2)
    h.insert([("x",), ("y",)])
    if checkpoint_at == "before":
        s.checkpoint()
    s.add_columns("ns.t", [("c", "int32")])
    t.upsert({"id": 1, "v": "one", "c": 11})
    s.add_columns("h", [("b", "string")])
    h.insert([("z", "zz")])
    s.rename_table("ns.t", "ns2.t")
    t.upsert({"id": 2, "v": "two", "c": 22})
    s.add_columns("ns2.t", [("e", "bool")])
    t.insert([(900, "e", 9, True)])
    if checkpoint_at == "after":
        s.checkpoint()
    want = {n: (s.tables[n].schema.to_json(), contents(s.tables[n]), dict(s.tables[n].index_defs)) for n in s.tables}
    s.close()
    for _ in range(2):  # and once more after the recovered store checkpoints itself
        s = _open(tmp_path)
        got = {n: (s.tables[n].schema.to_json(), contents(s.tables[n]), dict(s.tables[n].index_defs)) for n in s.tables}
        assert got == want
        t = s.table("ns2.t")
        assert t.get(1) == (1, "one", 11, None) and t.get(5) == (5, "v5", None, None)
        assert rows(t, where=col("v") == "two") == [(2, "two", 22, None)]
        t._check()
        s.checkpoint()
        s.close()


CHILD = textwrap.dedent("""
    import sys, time
    from spark_ext.store import Store
    s = Store(sys.argv[1], flush="commit", background=False)
    t = s.create_table("ns.t", [("id", "int64"), ("v", "string")], "id", 4)
    t.insert([(i, "v%d" % i) for i in range(200)])
    s.checkpoint()
    t.insert([(i, "v%d" % i) for i in range(200, 220)])
    s.add_columns("ns.t", [("c", "int64")])
    print("added", flush=True)
    t.upsert({"id": 1, "v": "w", "c": 1})
    s.rename_table("ns.t", "ns.u")
    print("renamed", flush=True)
    time.sleep(60)
""")


def test_kill_right_after_the_change_recovers_it(tmp_path: Path) -> None:
    data = tmp_path / "d"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen([sys.executable, "-c", CHILD, str(data)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "added"
        assert p.stdout.readline().strip() == "renamed"
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    s = _open(tmp_path / "d")
    assert sorted(s.tables) == ["ns.u"]
    u = s.table("ns.u")
    assert u.schema.arrow_schema.names == ["id", "v", "c"]
    assert u.count() == 220
    assert u.get(1) == (1, "w", 1) and u.get(210) == (210, "v210", None) and u.get(5) == (5, "v5", None)
    u._check()
    s.close()
