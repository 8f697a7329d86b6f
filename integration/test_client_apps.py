"""Several client applications (separate Python processes) sharing one cluster, and
everything still there after the applications exit and after the cluster restarts."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from integration.cluster import Cluster, wait_until

# Application A: creates the data, then keeps running (client open) until B is done,
# then reports what it sees of B's changes.
APP_A = r'''
import time, pathlib
import pyarrow as pa, numpy as np
d = pathlib.Path(PARAMS["dir"])
c = cluster_client()
c.create_namespace("apps")
c.create_table("apps.orders", [("id", "int64"), ("item", "string"), ("qty", "int32")], primary_key="id", num_buckets=6)
c.put("apps.orders", pa.table({"id": np.arange(500), "item": [f"a{i}" for i in range(500)],
                               "qty": pa.array(np.arange(500) % 7, pa.int32())}))
c.insert("apps.orders", [(900, "from-a", 1)])
(d / "a_ready").write_text("1")
while not (d / "b_done").exists():
    time.sleep(0.05)
emit({"count": c.count("apps.orders"), "b_rows": c.get_many("apps.orders", [1000, 1049]),
      "updated": c.get("apps.orders", 10), "deleted": c.get("apps.orders", 11),
      "tables": c.list_tables("apps"), "by_index": c.lookup("apps.orders", "item", "from-b").num_rows})
'''

# Application B: started while A runs; sees A's table and rows, changes them.
APP_B = r'''
import pathlib
d = pathlib.Path(PARAMS["dir"])
c = cluster_client()
seen = {"tables": c.list_tables("apps"), "count": c.count("apps.orders"), "row": c.get("apps.orders", 499),
        "a_insert": c.get("apps.orders", 900), "qty3": c.count("apps.orders", ["=", "qty", 3])}
c.put("apps.orders", [(1000 + i, "from-b", 2) for i in range(50)])
c.update("apps.orders", [10], {"item": "changed-by-b"})
c.delete("apps.orders", [11])
c.create_index("apps.orders", "item_ix", "item", "hash")
c.create_table("apps.audit", [("k", "string"), ("n", "int64")], primary_key="k", num_buckets=3)
c.put("apps.audit", [("b", 1)])
(d / "b_done").write_text("1")
emit(seen)
'''

# Any later application: reports the whole state.
APP_CHECK = r'''
c = cluster_client()
rows = sorted(tuple(r.values()) for r in c.scan("apps.orders").to_pylist())
info = c.table("apps.orders")
emit({"namespaces": c.list_namespaces(), "tables": c.list_tables("apps"), "rows": rows,
      "indexes": [ix["name"] for ix in info.indexes], "audit": c.get("apps.audit", "b"),
      "by_index": c.lookup("apps.orders", "item", "from-b").num_rows,
      "servers": sorted((s["server_id"], s["up"]) for s in c.servers()),
      "placement": sorted(set(info.placement))})
'''


def expected_rows() -> list[list[Any]]:
    rows = {i: [i, f"a{i}", i % 7] for i in range(500)}
    rows[900] = [900, "from-a", 1]
    rows.update({1000 + i: [1000 + i, "from-b", 2] for i in range(50)})
    rows[10][1] = "changed-by-b"
    del rows[11]
    return [rows[k] for k in sorted(rows)]


def check_state(cl: Cluster) -> None:
    got = cl.run_app(APP_CHECK)
    assert got["tables"] == ["audit", "orders"]
    assert ["apps"] in got["namespaces"]
    assert got["rows"] == expected_rows()
    assert got["indexes"] == ["item_ix"] and got["by_index"] == 50
    assert got["audit"] == ["b", 1]
    assert got["servers"] == [["s0", True], ["s1", True], ["s2", True]]
    assert got["placement"] == ["s0", "s1", "s2"]


@pytest.fixture(scope="module")
def apps_cluster(make_cluster: Any) -> Cluster:
    return make_cluster("apps")


def test_second_application_sees_the_first_while_it_runs(apps_cluster: Cluster, tmp_path: Path) -> None:
    cl = apps_cluster
    a = cl.spawn_app(APP_A, dir=str(tmp_path))
    wait_until(lambda: (tmp_path / "a_ready").exists() or a.popen.poll() is not None, 60, "application A to write its rows")
    assert a.popen.poll() is None, a.result()
    seen_by_b = cl.run_app(APP_B, dir=str(tmp_path))
    assert seen_by_b["tables"] == ["orders"]
    assert seen_by_b["count"] == 501
    assert seen_by_b["row"] == [499, "a499", 499 % 7]
    assert seen_by_b["a_insert"] == [900, "from-a", 1]
    assert seen_by_b["qty3"] == sum(1 for i in range(500) if i % 7 == 3)
    seen_by_a = a.result()  # A, still running, sees B's changes (its table cache is no obstacle)
    assert seen_by_a["count"] == 501 + 50 - 1
    assert seen_by_a["b_rows"] == [[1000, "from-b", 2], [1049, "from-b", 2]]
    assert seen_by_a["updated"] == [10, "changed-by-b", 3] and seen_by_a["deleted"] is None
    assert seen_by_a["tables"] == ["audit", "orders"] and seen_by_a["by_index"] == 50
    # Both have exited: a new application still finds everything.
    check_state(cl)


def test_everything_survives_a_clean_restart_of_the_whole_cluster(apps_cluster: Cluster) -> None:
    cl = apps_cluster
    for sid in cl.server_ids:
        assert cl.stop_server(sid) == 0  # SIGTERM: clean shutdown, everything flushed
    assert cl.locator is not None and cl.locator.terminate() == 0
    cl.start_locator()  # same port, same catalog directory
    for sid in cl.server_ids:
        cl.start_server(sid)
    check_state(cl)


def test_everything_survives_kill_9_of_the_whole_cluster(apps_cluster: Cluster) -> None:
    cl = apps_cluster
    assert cl.locator is not None
    cl.locator.kill(signal.SIGKILL)
    for sid in cl.server_ids:
        cl.kill_server(sid)
    cl.start_locator()
    for sid in cl.server_ids:
        cl.start_server(sid)
    check_state(cl)


def test_locator_restart_alone_while_servers_run(apps_cluster: Cluster) -> None:
    """Servers notice a restarted locator through their heartbeats and register again."""
    cl = apps_cluster
    assert cl.locator is not None
    cl.locator.kill(signal.SIGKILL)
    cl.start_locator()
    for sid in cl.server_ids:
        cl.wait_server(sid, up=True)
    check_state(cl)
    # DDL works again and places buckets on every server.
    info = cl.admin().create_table("apps.after", [("id", "int64")], primary_key="id", num_buckets=3)
    assert sorted(info.placement) == ["s0", "s1", "s2"]
    cl.admin().put("apps.after", [(1,), (2,), (3,)])
    assert cl.admin().count("apps.after") == 3
