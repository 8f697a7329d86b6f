"""Failover of PySpark application drivers: ``kill -9`` the leader's process group.

Two PySpark applications (:mod:`integration.ha.spark_driver`, each a Python process with
its own Spark JVM, ``local[2]``) are configured with ``spark_ext.configure(builder,
ha_group=..., ha_ttl=3)``. The primary commits statements in a loop through both paths:
Spark SQL ``INSERT INTO`` a store table (a store transaction committed by the JVM bridge)
and ``StoreTable.put`` (Python client), and reports each acknowledged one; the standby
waits inside ``getOrCreate()`` with its session warm. After ``kill -9`` of the primary's
process group the standby must lead with a newer token, find every acknowledged row of
both kinds, and continue. The time from the kill to the new leader's first committed
statement is printed (the median of several runs is ``bench/ha_bench.py --spark``).
"""

from __future__ import annotations

from integration.cluster import Cluster
from integration.ha.spark_driver import measure_spark_failover

TTL = 3.0


def test_pyspark_failover_kill9_primary(ha_cluster: Cluster) -> None:
    m = measure_spark_failover(ha_cluster, "spark-failover", "sfo", ttl=TTL)
    print(f"\nPySpark failover: kill -> leader {m['kill_to_leader_s']:.2f}s, kill -> first commit "
          f"{m['kill_to_first_commit_s']:.2f}s, kill -> first SQL commit {m['kill_to_first_sql_commit_s']:.2f}s "
          f"(TTL {TTL}s; primary had {m['primary_acks']} acknowledged statements; tokens {m['tokens']})")
