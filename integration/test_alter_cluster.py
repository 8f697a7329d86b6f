"""ALTER TABLE against one locator and three store servers (real processes): ADD COLUMNS
and RENAME reach every server, survive kill -9, reach a server that was down, and are
seen by a second client; concurrent DDL cannot clobber; bad input changes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from integration.cluster import Cluster
from spark_ext.client.client import StoreClient
from spark_ext.exceptions import (
    BadArgumentError,
    ConflictError,
    NoSuchNamespaceError,
    NoSuchTableError,
    SchemaError,
    TableExistsError,
)
from spark_ext.wire.kinds import Kind


def by_key(c: StoreClient, table: str) -> dict[Any, tuple[Any, ...]]:
    t = c.scan(table)
    names = t.column_names
    out = {}
    for r in t.to_pylist():
        assert r[names[0]] not in out
        out[r[names[0]]] = tuple(r[n] for n in names)
    return out


def servers_holding(c: StoreClient, table: str, keys: range) -> dict[str, int]:
    """One key per server of the table's placement."""
    info = c.table(table, refresh=True)
    out: dict[str, int] = {}
    for k in keys:
        out.setdefault(info.placement[info.schema.bucket_of_key(k)], k)
    return out


def test_add_column_reaches_every_server_and_survives_kill(cluster: Cluster) -> None:
    c1, c2 = cluster.client(), cluster.client()
    c1.create_namespace("alt", if_not_exists=True)
    c1.create_table("alt.t", [("id", "int64"), ("v", "string")], "id", num_buckets=12)
    model = {i: (i, f"v{i}") for i in range(300)}
    c1.put("alt.t", list(model.values()))
    assert c2.get("alt.t", 5) == (5, "v5")  # c2 caches the two-column definition
    spread = servers_holding(c1, "alt.t", range(300))
    assert len(spread) == 3

    info = c1.add_columns("alt.t", [("c", "int32"), ("note", "string")])
    assert info.version == 2 and info.schema.arrow_schema.names == ["id", "v", "c", "note"]
    model = {k: (*v, None, None) for k, v in model.items()}
    assert by_key(c1, "alt.t") == model
    for sid, k in spread.items():  # a point read on each server
        assert c1.get("alt.t", k) == model[k], sid
        st = c1.server_status(*cluster.servers[sid].address)
        assert any(t["table"] == "alt.t" for t in st["tables"])

    # Writes with the new columns on every server, by the client that altered.
    for sid, k in spread.items():
        model[k] = (k, f"w{k}", k * 10, sid)
        c1.put("alt.t", [model[k]])
    c1.update("alt.t", [7], {"c": 70})
    model[7] = (7, "v7", 70, None)
    # The second client first reads with its old definition, then sees the change.
    old = c2.get("alt.t", 7)
    assert old == (7, "v7")
    assert c2.get("alt.t", 7) == (7, "v7", 70, None)
    assert c2.table("alt.t").version == 2
    # A client application started afresh sees it too.
    got = cluster.run_app("c = cluster_client(); emit(list(c.get('alt.t', 7)))")
    assert got == [7, "v7", 70, None]
    # A writer still on the old definition (compact rows of two columns) writes NULLs.
    stale = cluster.client()
    stale._tables["alt.t"] = _old_info(c1, "alt.t")
    stale.put("alt.t", [(1000, "stale")])
    model[1000] = (1000, "stale", None, None)
    assert by_key(c1, "alt.t") == model

    # kill -9 one server and restart it: its rows and the new columns come back.
    victim = sorted(spread)[1]
    cluster.kill_server(victim)
    cluster.restart_server(victim)
    assert by_key(c1, "alt.t") == model
    assert c1.get("alt.t", spread[victim]) == model[spread[victim]]
    c1.put("alt.t", [(spread[victim], "after", 1, "x")])
    model[spread[victim]] = (spread[victim], "after", 1, "x")
    assert by_key(c1, "alt.t") == model


def _old_info(c: StoreClient, table: str) -> Any:
    """The client's view of ``table`` before its last ADD COLUMNS (two columns)."""
    from spark_ext.client.client import TableInfo
    from spark_ext.store.schema import TableSchema

    info = c.table(table, refresh=True)
    spec = info.schema.to_json()
    spec["fields"] = spec["fields"][:2]
    return TableInfo(info.namespace, info.name, TableSchema.from_json(spec), info.indexes, info.placement,
                     info.servers, 1)


def test_rename_within_and_across_namespaces(cluster: Cluster) -> None:
    c1, c2 = cluster.client(), cluster.client()
    c1.create_namespace("ra", if_not_exists=True)
    c1.create_namespace("rb", if_not_exists=True)
    c1.create_table("ra.src", [("k", "string"), ("n", "int64")], "k", num_buckets=6)
    c1.create_index("ra.src", "by_n", "n")
    rows = {f"k{i}": (f"k{i}", i) for i in range(60)}
    c1.put("ra.src", list(rows.values()))
    c2.get("ra.src", "k1")
    c1.create_table("ra.taken", [("k", "string")], "k", num_buckets=3)

    with pytest.raises(TableExistsError, match=r"cannot rename table 'ra.src' to 'ra.taken': that table already exists"):
        c1.rename_table("ra.src", "taken")
    with pytest.raises(NoSuchNamespaceError, match="no namespace 'nowhere'"):
        c1.rename_table("ra.src", "nowhere.x")
    with pytest.raises(NoSuchTableError):
        c1.rename_table("ra.nope", "x")

    info = c1.rename_table("ra.src", "dst")  # same namespace
    assert (info.namespace, info.name, info.full_name) == (["ra"], "dst", "ra.dst")
    assert by_key(c1, "ra.dst") == rows
    assert c1.list_tables("ra") == ["dst", "taken"]
    with pytest.raises(NoSuchTableError):
        c2.table("ra.src", refresh=True)
    assert c2.get("ra.dst", "k3") == ("k3", 3)

    info = c1.rename_table("ra.dst", "rb.moved")  # another namespace
    assert info.full_name == "rb.moved" and info.indexes == [{"name": "by_n", "columns": ["n"], "kind": "hash"}]
    assert c1.list_tables("ra") == ["taken"] and c1.list_tables("rb") == ["moved"]
    assert by_key(c2, "rb.moved") == rows
    assert c2.lookup("rb.moved", "n", 42).to_pylist() == [{"k": "k42", "n": 42}]
    c2.put("rb.moved", [("new", 1000)])
    assert c1.get("rb.moved", "new") == ("new", 1000)
    # The old name is free for a new table.
    c1.create_table("ra.src", [("id", "int64")], "id", num_buckets=3)
    assert c1.count("ra.src") == 0 and c1.count("rb.moved") == 61


def test_server_down_during_alter_catches_up(cluster: Cluster) -> None:
    c = cluster.client()
    c.create_namespace("down", if_not_exists=True)
    c.create_table("down.t", [("id", "int64"), ("v", "string")], "id", num_buckets=9)
    model = {i: (i, f"v{i}") for i in range(90)}
    c.put("down.t", list(model.values()))
    spread = servers_holding(c, "down.t", range(90))
    victim = sorted(spread)[2]
    cluster.kill_server(victim)
    cluster.wait_server(victim, up=False)
    c.add_columns("down.t", [("x", "float64")])
    c.rename_table("down.t", "down.t2")
    # A new table takes the old name while the server is away: it must not get the data.
    c.create_table("down.t", [("id", "int64")], "id", num_buckets=3)
    cluster.restart_server(victim)
    model = {k: (*v, None) for k, v in model.items()}
    assert by_key(c, "down.t2") == model
    assert c.get("down.t2", spread[victim]) == model[spread[victim]]
    assert c.count("down.t") == 0
    c.put("down.t2", [(spread[victim], "back", 2.5)])
    assert c.get("down.t2", spread[victim]) == (spread[victim], "back", 2.5)


def test_concurrent_ddl_cannot_clobber(cluster: Cluster) -> None:
    a, b = cluster.client(), cluster.client()
    a.create_namespace("cc", if_not_exists=True)
    a.create_table("cc.t", [("id", "int64")], "id", num_buckets=3)
    v = b.table("cc.t").version
    a.add_columns("cc.t", [("x", "string")], expected_version=v)
    with pytest.raises(ConflictError, match=r"table 'cc.t' changed meanwhile \(version 2, expected 1\)"):
        b.add_columns("cc.t", [("y", "string")], expected_version=v)
    with pytest.raises(ConflictError):
        b.rename_table("cc.t", "t9", expected_version=v)
    # The same column added by the second application at once: refused, named.
    with pytest.raises(BadArgumentError, match=r"table 'cc.t' already has a column 'x'; cannot add column 'x'") as e:
        b.add_columns("cc.t", [("x", "string")])
    assert e.value.details == {"table": "cc.t", "column": "x"}
    assert a.table("cc.t", refresh=True).schema.arrow_schema.names == ["id", "x"]


def test_bad_alter_input_is_refused_by_the_locator(cluster: Cluster) -> None:
    c = cluster.client()
    c.create_namespace("bad", if_not_exists=True)
    c.create_table("bad.t", [("id", "int64"), ("v", "string")], "id", num_buckets=3)
    c.put("bad.t", [(1, "a")])
    cases = [
        ([{"name": "n", "type": "int64", "nullable": False}], r"table 'bad.t', column 'n': .*must be nullable"),
        ([{"name": "d", "type": "int64", "default": 5}], r"table 'bad.t', column 'd': column defaults are not supported"),
        ([{"name": "m", "type": "array<int>"}], r"table 'bad.t', column 'm'"),
        ([{"name": "V", "type": "string"}], r"table 'bad.t' already has a column 'v'; cannot add column 'V'"),
        ([], r"at least one column"),
        ("x", r"'add_columns' \(list\)"),
    ]
    for cols, msg in cases:
        with pytest.raises(BadArgumentError, match=msg):
            cluster.request(None, Kind.ALTER_TABLE, {"namespace": ["bad"], "name": "t", "add_columns": cols})
    # The client refuses the same before sending.
    with pytest.raises(SchemaError, match=r"table 'bad.t', column 'q'"):
        c.add_columns("bad.t", [("q", "struct<a:int>")])
    info = c.table("bad.t", refresh=True)
    assert info.version == 1 and info.schema.arrow_schema.names == ["id", "v"]
    assert c.get("bad.t", 1) == (1, "a")
