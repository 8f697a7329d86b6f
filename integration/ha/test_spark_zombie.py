"""Zombie PySpark driver: paused (SIGSTOP of its process group) past its lease, it is
fenced when it resumes, on every path it writes through.

The primary (:mod:`integration.ha.spark_driver` with ``--zombie``: it never asks its
leadership before a statement) commits Spark SQL INSERTs and ``StoreTable.put``s; its
whole process group (Python and its JVM) is stopped past the 3 s lease; the warm standby
takes over and commits; the primary is resumed. Every write it then attempts, Spark SQL
INSERT, ``StoreTable.put`` and a Spark SQL ``CREATE TABLE``, must be refused with the
fencing error naming the group and its old token, and nothing it sent may be visible.
"""

from __future__ import annotations

import signal
import time

from integration.cluster import Cluster
from integration.ha.spark_driver import acked, start_spark_driver

TTL = 3.0
GROUP = "spark-zombie"


def test_paused_pyspark_leader_is_fenced(ha_cluster: Cluster) -> None:
    prefix = "szb"
    primary = start_spark_driver(ha_cluster, GROUP, "primary", "--ttl", str(TTL), "--prefix", prefix, "--zombie",
                                 "--max-refused", "6")
    old = primary.wait_event("leader", 300)
    standby = start_spark_driver(ha_cluster, GROUP, "standby", "--ttl", str(TTL), "--prefix", prefix)
    standby.wait_event("standby", 300)
    primary.wait_for(lambda ls: {x["kind"] for x in ls if x["ev"] == "ack"} == {"sql", "put"}, 120, "primary commits")
    stopped_at = time.monotonic()
    primary.signal(signal.SIGSTOP)  # Python, its JVM and its workers
    try:
        new = standby.wait_event("leader", 60)
        standby.wait_for(lambda ls: {x["kind"] for x in ls if x["ev"] == "ack"} == {"sql", "put"}, 60,
                         "new leader commits")
    finally:
        resumed_at = time.monotonic()
        primary.signal(signal.SIGCONT)
    assert new["token"] > old["token"]
    assert primary.wait(120) == 0, primary.log_tail()
    n_acks = len(standby.events("ack"))
    standby.wait_for(lambda ls: sum(1 for x in ls if x["ev"] == "ack") >= n_acks + 4, 60, "new leader keeps committing")
    standby.kill()

    p_acks = primary.events("ack")
    fenced = primary.events("fenced")
    # Every statement the old leader sent after it was paused was refused by fencing.
    assert all(x["sent"] < stopped_at for x in p_acks), [x for x in p_acks if x["sent"] >= stopped_at]
    assert len(fenced) == 6 and {x["kind"] for x in fenced} == {"sql", "put"}, fenced
    for x in fenced:
        assert x["token"] == old["token"]
        assert f"group '{GROUP}'" in x["error"] and f"token {old['token']}" in x["error"], x["error"]
        if x["where"] == "server":
            assert f"token {old['token']} is older than token {new['token']}" in x["error"], x["error"]
    ddl = primary.wait_event("ddl", 1)
    assert ddl["refused"] is True and f"group '{GROUP}'" in ddl["error"], ddl
    ex = primary.wait_event("exit", 1)
    assert ex["lost"] is True and ex["leader"] is False, ex  # and it noticed the loss

    # Nothing the zombie sent became visible.
    c = ha_cluster.admin()
    assert f"{prefix}_zombie_ddl" not in c.list_tables("default")
    s_acked = {k: acked(standby, k) for k in ("sql", "put")}
    for kind in ("sql", "put"):
        rows = {r["id"]: r for r in c.scan(f"default.{prefix}_{kind}").to_pylist()}
        mine = acked(primary, kind)
        assert mine <= set(rows) and s_acked[kind] <= set(rows)
        for r in rows.values():
            if r["writer"] == old["holder"]:
                assert r["token"] == old["token"] and r["mono"] < stopped_at, r
            else:
                assert r["writer"] == new["holder"] and r["token"] == new["token"], r
        for x in fenced:  # the keys the zombie tried hold the new leader's rows, or nothing
            if x["kind"] == kind and x["seq"] in rows:
                assert rows[x["seq"]]["writer"] == new["holder"], rows[x["seq"]]
    where = {w: sum(1 for x in fenced if x["where"] == w) for w in ("server", "driver")}
    print(f"\nPySpark zombie: paused {resumed_at - stopped_at:.1f}s; takeover token {old['token']} -> {new['token']}; "
          f"{len(fenced)} statements refused ({where['server']} by the servers, {where['driver']} by the driver "
          f"itself), e.g. {fenced[0]['error']!r}; DDL refused: {ddl['error']!r}; loss noticed: {ex['lost_reason']!r}")
