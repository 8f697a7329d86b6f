"""A PySpark application driver for the HA tests, run as its own process (group).

    python -m integration.ha.spark_driver --group G --name primary --locator 127.0.0.1:PORT \
        [--secret-file F] [--ttl 3] [--prefix p] [--master local[2]] [--zombie --max-refused 6]

It builds its session with ``spark_ext.configure(builder, locator=..., ha_group=G,
ha_ttl=...)``: ``getOrCreate()`` starts Spark, warms it, and returns only once this
driver leads ``G`` (a standby blocks inside it). Then it creates its two tables if
missing (Spark SQL DDL), reads back what is there, and loops committing statements
after the highest id found, alternating two paths:

* ``sql``: ``INSERT INTO store.default.<prefix>_sql VALUES (seq, writer, token, mono)``,
  a Spark job committed by the JVM bridge (a store transaction);
* ``put``: ``StoreTable.put`` of the same row into ``default.<prefix>_put`` (Python client).

Events, one JSON line each on stdout (``mono`` is ``time.monotonic()``, one clock for all
processes of a Linux machine):

    {"ev": "contending"}        the session is up and warm; contending for the lease
    {"ev": "standby"}           the library logged that it stands by
    {"ev": "leader", "token": T, "holder": H}
    {"ev": "found", "sql": [...ids], "put": [...ids]}
    {"ev": "ack", "kind": "sql"|"put", "seq": S, "token": T, "sent": ...}
    {"ev": "fenced", "kind", "seq", "token", "sent", "error", "where": "server"|"driver"}
    {"ev": "lost", "reason"}    (not --zombie) the lease was lost: exit code 3
    {"ev": "ddl", "refused": bool, "error": ...}   (--zombie) a CREATE TABLE after the refusals
    {"ev": "exit", "lost": bool, "leader": bool, "lost_reason": ...}

With ``--zombie`` the driver sends every statement without asking its leadership first
(the library still refuses locally once it knows the lease is lost) and, after
``--max-refused`` refused statements, tries one DDL and exits 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from integration.ha.driver import Child, driver_args, emit, kill_and_take_over

if TYPE_CHECKING:
    from integration.cluster import Cluster

COLUMNS = "id BIGINT, writer STRING, token BIGINT, mono DOUBLE"


class _LibraryEvents(logging.Handler):
    """Turns the library's own HA log lines into events (what an operator would see)."""

    def emit(self, record: logging.LogRecord) -> None:  # noqa: A003 - logging's name
        msg = record.getMessage()
        if msg.startswith("standing by"):
            emit("standby")
        elif "contending for the lease" in msg:
            emit("contending")


def fencing_error(e: BaseException) -> str | None:
    """The FENCED message inside a (Python or Spark) error, or None if it is another error."""
    from spark_ext.exceptions import FencedError

    if isinstance(e, FencedError):
        return str(e)
    text = str(e)
    for line in text.splitlines():
        if "FENCED" in line:
            return line.strip()
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--group", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--locator", required=True)
    ap.add_argument("--secret-file")
    ap.add_argument("--ttl", type=float, default=3.0)
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--prefix", default="sp")
    ap.add_argument("--interval", type=float, default=0.02)
    ap.add_argument("--max-iterations", type=int, default=1_000_000)
    ap.add_argument("--zombie", action="store_true")
    ap.add_argument("--max-refused", type=int, default=6)
    ap.add_argument("--check-table", help="after taking over, also count this table's rows")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for name in ("spark_ext.ha.leadership", "spark_ext.spark.ha"):
        logging.getLogger(name).addHandler(_LibraryEvents())
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

    from pyspark.sql import SparkSession

    import spark_ext
    from spark_ext import StoreTable
    from spark_ext.spark import address as A

    opts: dict[str, Any] = {"locator": a.locator, "ha_group": a.group, "ha_ttl": a.ttl}
    if a.secret_file:
        opts["secret_file"] = a.secret_file
    emit("starting")
    b = (SparkSession.builder.master(a.master).appName(f"ha-{a.group}-{a.name}")
         .config("spark.sql.shuffle.partitions", "4").config("spark.ui.enabled", "false")
         .config("spark.ui.showConsoleProgress", "false").config("spark.driver.bindAddress", "127.0.0.1")
         .config("spark.sparkext.haWarmTables", f"default.{a.prefix}_sql,default.{a.prefix}_put"))
    spark = spark_ext.configure(b, **opts).getOrCreate()  # returns once this driver leads
    spark.sparkContext.setLogLevel("ERROR")
    lead = spark._spark_ext_leadership
    holder = lead.holder
    emit("leader", token=lead.token, holder=holder)

    sql_table, put_table = f"store.default.{a.prefix}_sql", f"default.{a.prefix}_put"
    have = set(A.client_for(A.resolve(spark)).list_tables("default"))
    if f"{a.prefix}_sql" not in have:  # the first leader creates the tables (fenced DDL)
        spark.sql(f"CREATE TABLE IF NOT EXISTS {sql_table} ({COLUMNS}, PRIMARY KEY (id)) TBLPROPERTIES ('buckets'='6')")
    if f"{a.prefix}_put" not in have:
        StoreTable.create(spark, put_table, COLUMNS.lower(), primaryKey="id", numBuckets=6, ifNotExists=True)
    put = StoreTable.forName(spark, put_table)
    sql_t = StoreTable.forName(spark, f"default.{a.prefix}_sql")
    found = {"sql": sorted(sql_t.toArrow(["id"]).column("id").to_pylist()),
             "put": sorted(put.toArrow(["id"]).column("id").to_pylist())}
    emit("found", **found, checked_rows=StoreTable.forName(spark, a.check_table).count() if a.check_table else None)

    seq = max(found["sql"] + found["put"], default=-1) + 1
    refused = 0
    for _ in range(a.max_iterations):
        for kind in ("sql", "put"):
            if not a.zombie and not lead.is_leader:
                emit("lost", reason=lead.lost_reason or "lease expired", token=lead.held.token if lead.held else None)
                return 3
            token = lead.held.token if lead.held else None
            sent = time.monotonic()
            try:
                if kind == "sql":
                    spark.sql(f"INSERT INTO {sql_table} VALUES ({seq}, '{holder}', {token}, {sent!r})")
                else:
                    put.put([(seq, holder, token, sent)])
            except Exception as e:
                err = fencing_error(e)
                if err is None:
                    raise
                refused += 1
                emit("fenced", kind=kind, seq=seq, token=token, sent=sent, error=err,
                     where="server" if "is older than token" in err else "driver")
                if refused >= a.max_refused:
                    return zombie_exit(spark, lead, a.ttl, f"store.default.{a.prefix}_zombie_ddl")
                continue
            emit("ack", kind=kind, seq=seq, token=token, sent=sent)
        seq += 1
        if a.interval:
            time.sleep(a.interval)
    spark.stop()
    return 0


def zombie_exit(spark: Any, lead: Any, ttl: float, ddl_table: str) -> int:
    """After the refused statements: one Spark SQL DDL, then whether the loss was noticed."""
    try:
        spark.sql(f"CREATE TABLE {ddl_table} ({COLUMNS}, PRIMARY KEY (id))")
        emit("ddl", refused=False)
    except Exception as e:
        err = fencing_error(e)
        emit("ddl", refused=err is not None, error=err or str(e)[:2000])
    lead.lost.wait(ttl)
    emit("exit", leader=lead.is_leader, lost=lead.lost.is_set(), lost_reason=lead.lost_reason)
    sys.stdout.flush()
    os._exit(0)  # no orderly Spark stop: the test only needs the events


def start_spark_driver(cluster: "Cluster", group: str, name: str, *extra: str) -> Child:
    """A PySpark driver process (this module) in its own process group, with its JVM."""
    env = cluster.app_env()
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    return Child("integration.ha.spark_driver", driver_args(cluster, group, name, *extra), env,
                 cluster.logs / f"spark-driver-{group}-{name}.log", group=True)


def acked(child: Child, kind: str) -> set[int]:
    return {x["seq"] for x in child.events("ack") if x["kind"] == kind}


def measure_spark_failover(cluster: "Cluster", group: str, prefix: str, ttl: float = 3.0, min_acks: int = 20,
                           kill_delay: float = 0.0, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """One failover of PySpark application drivers: ``kill -9`` the leader's process group.

    The primary leads and commits (Spark SQL INSERTs and ``StoreTable.put``s, alternating),
    a warm standby waits, the primary (Python and its JVM) is killed. Asserts the takeover
    is complete and lossless: the standby leads with a newer token, found every statement
    of both kinds the primary had acknowledged, and continues after them with its own
    token (checked again by reading the tables independently). Returns times measured
    from the kill (``time.monotonic()``, one clock for every process here).
    """
    def first_sql_commit(standby: Child) -> dict[str, Any]:
        return {"first_sql": standby.wait_for(
            lambda ls: [x for x in ls if x["ev"] == "ack" and x["kind"] == "sql"], 60, "the standby's first SQL commit")[0]}

    t = kill_and_take_over(start_spark_driver, cluster, group, prefix, ttl=ttl, extra=extra, min_acks=min_acks,
                           kill_delay=kill_delay, ready_event="standby", start_timeout=300, takeover_timeout=60,
                           standby_acks=6, after_lead=first_sql_commit)
    primary, standby, lead, new, first, found, killed_at = (t.primary, t.standby, t.lead, t.new, t.first, t.found,
                                                            t.killed_at)
    first_sql = t.more["first_sql"]

    assert new["token"] > lead["token"], (lead, new)
    p_sql, p_put = acked(primary, "sql"), acked(primary, "put")
    assert p_sql and p_put, "the primary committed through both paths"
    assert p_sql <= set(found["sql"]), f"acknowledged SQL rows the new leader did not find: {sorted(p_sql - set(found['sql']))}"
    assert p_put <= set(found["put"]), f"acknowledged puts the new leader did not find: {sorted(p_put - set(found['put']))}"
    c = cluster.admin()  # read back independently of the drivers
    rows = {k: {r["id"]: r for r in c.scan(f"default.{prefix}_{k}").to_pylist()} for k in ("sql", "put")}
    s_sql, s_put = acked(standby, "sql"), acked(standby, "put")
    assert s_sql and min(s_sql | s_put) > max(p_sql | p_put), "the new leader did not continue after the old one"
    for kind, mine, theirs in (("sql", s_sql, p_sql), ("put", s_put, p_put)):
        assert theirs <= set(rows[kind]) and mine <= set(rows[kind])
        assert all(rows[kind][s]["token"] == new["token"] and rows[kind][s]["writer"] == new["holder"] for s in mine)
        assert all(rows[kind][s]["writer"] == lead["holder"] for s in theirs)
    return {"kill_to_leader_s": new["mono"] - killed_at, "kill_to_first_commit_s": first["mono"] - killed_at,
            "kill_to_first_sql_commit_s": first_sql["mono"] - killed_at,
            "primary_acks": len(p_sql) + len(p_put), "tokens": (lead["token"], new["token"]), "found": found}


if __name__ == "__main__":
    sys.exit(main())
