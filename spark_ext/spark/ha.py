"""Driver HA for a Spark application: ``spark_ext.configure(builder, ha_group="orders")``.

``getOrCreate()`` then returns only once this driver holds the group's lease:

1. **Warm standby.** The Spark session is created first (the JVM starts) and warmed by
   read-only work (:func:`warm_up`: the store catalog, the query engine, the write plan
   and a read of the store tables, the connections to every server), and only then does
   the driver contend for the lease. A standby thus waits with everything started, and a
   takeover costs the lease's lapse plus a few statements, not a JVM start (10-30 s on a
   busy machine). The price: a standby holds its driver JVM (and, on a cluster, its
   executors) while it waits. A standby never writes or sends DDL: it has no token yet.
2. **Takeover.** Once the lease is granted: the Python client gets the token (every
   ``StoreTable`` / ``putInto`` write carries it), the JVM gets it
   (``io.sparkext.wire.Fence.lead``: every Spark SQL DDL and write job carries it, also
   from executor JVMs), and the token is announced to every store server (a fenced
   PING), so a paused former leader is refused everywhere from now on.
3. **Loss.** The lease is renewed in the background. When it is lost the Python client
   refuses writes at once (:meth:`Leadership.check`), the JVM is told
   (``Fence.lose``) and refuses every Spark SQL write at once, and an error is logged.
   The servers refuse the old token anyway once the new leader announced itself.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Callable

from spark_ext.spark import address as A

logger = logging.getLogger(__name__)

FENCE_CLASS = "io.sparkext.wire.Fence"
#: Spark conf: the store tables a standby warms up (comma-separated, ``ns.table`` or
#: ``catalog.ns.table``); default: the first few of the catalog's ``default`` namespace.
CONF_WARM_TABLES = "spark.sparkext.haWarmTables"


def jvm_fence(spark: Any) -> Any:
    """The JVM's ``io.sparkext.wire.Fence`` class, or None when the jar lacks it."""
    try:
        from py4j.java_gateway import JavaClass

        cls = spark.sparkContext._jvm.io.sparkext.wire.Fence
        return cls if isinstance(cls, JavaClass) else None
    except Exception:  # no JVM (a stopped session) or no jar
        return None


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _warm_tables(spark: Any, catalog: str, max_tables: int) -> list[str]:
    """The tables to warm up, quoted: the conf's list, else the first of ``<catalog>.default``."""
    given = [t.strip() for t in str(spark.conf.get(CONF_WARM_TABLES, "") or "").split(",") if t.strip()]
    if given:
        out = []
        for t in given:
            parts = t.split(".")
            parts = parts if len(parts) == 3 else [catalog, *parts]
            out.append(".".join(_quote(p) for p in parts))
        return out
    try:
        rows = spark.sql(f"SHOW TABLES IN {_quote(catalog)}.default").collect()
    except Exception as e:  # no catalog (jar missing) or no default namespace yet
        logger.info("warm standby: no store tables to warm up (%s)", str(e).splitlines()[0] if str(e) else e)
        return []
    return [f"{_quote(catalog)}.{_quote(r['namespace'])}.{_quote(r['tableName'])}" for r in rows[:max_tables]]


def warm_up(spark: Any, catalog: str, store: A.StoreAddress, max_tables: int = 2) -> None:
    """Read-only work that loads and connects what the first statements after a takeover
    need, so they do not pay for it then. Nothing is written, no DDL is sent.

    * the catalog: loaded and connected to the locator (``SHOW TABLES``);
    * the query engine: one tiny job;
    * the store tables named by ``spark.sparkext.haWarmTables`` (else the first
      ``max_tables`` of ``<catalog>.default``): an INSERT of no rows (``INSERT INTO t
      SELECT * FROM t WHERE false``: the whole write path runs, from the parser to the
      job commit, and writes nothing: no row is staged, so the servers only see the abort
      of a transaction they never began) and a one-row read (the scan path and the JVM's
      connections to the store servers);
    * the Python client: connected to the locator and to every store server.
    """
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("engine", lambda: spark.range(2).selectExpr("sum(id)").collect()),
        ("python client", lambda: _connect_servers(store)),
    ]
    for t in _warm_tables(spark, catalog, max_tables):
        steps.append((f"write path of {t}", functools.partial(_collect, spark, f"INSERT INTO {t} SELECT * FROM {t} WHERE false")))
        steps.append((f"read of {t}", functools.partial(_collect, spark, f"SELECT * FROM {t} LIMIT 1")))
    for what, run in steps:
        try:
            run()
        except Exception as e:  # a warm-up is an optimisation; the takeover works without it
            logger.info("warm standby: the warm-up of the %s failed (%s); going on", what, str(e).splitlines()[0] if str(e) else e)


def _collect(spark: Any, sql: str) -> Any:
    return spark.sql(sql).collect()


def _connect_servers(store: A.StoreAddress) -> None:
    client = A.client_for(store)
    for srv in client.servers():
        if srv.get("up"):
            client.server_status(srv["host"], srv["port"])


def take_over(spark: Any, lead: Any, store: A.StoreAddress) -> None:
    """Give this session the leadership ``lead`` (just acquired): Python client, JVM, servers."""
    group, token = lead.group, lead.token
    client = A.client_for(store)
    client.leadership = lead
    client.fence = lead.fence
    fence = jvm_fence(spark)
    if fence is not None:
        fence.lead(group, token)
    else:
        logger.warning("HA group %s: the JVM has no %s (jar missing or old): Spark SQL writes are not fenced",
                       group, FENCE_CLASS)

    def lost(reason: str) -> None:
        logger.error("HA group %s: this driver lost its leadership (%s); its writes are refused from now on",
                     group, reason)
        if fence is not None:
            fence.lose(group, token, reason)

    lead.on_lost(lost)
    _release_on_stop(spark, lead, client, fence)
    unreached = client.announce()  # every server refuses the previous leader from now on
    if unreached:
        logger.warning("HA group %s: servers %s did not get the new token yet; they learn it from the "
                       "locator within a heartbeat", group, ", ".join(unreached))
    spark._spark_ext_leadership = lead


def _release_on_stop(spark: Any, lead: Any, client: Any, fence: Any) -> None:
    """Make ``spark.stop()`` give the leadership up: the lease is released (a standby
    takes over at once instead of after the TTL), and neither the JVM, which outlives
    the session in a PySpark process, nor the Python client carries the token any more."""
    stop = spark.stop

    def stop_and_release() -> None:
        try:
            if fence is not None:
                fence.clear()
        except Exception as e:  # the JVM may be gone already
            logger.debug("HA group %s: could not clear the JVM's fence: %s", lead.group, e)
        if client.leadership is lead:
            client.leadership = None
            client.fence = None
        lead.release()
        logger.info("HA group %s: session stopped; lease released", lead.group)
        stop()

    spark.stop = stop_and_release


def lead_before_create(builder: Any, group: str, ttl: float, store: A.StoreAddress, catalog: str) -> None:
    """Make ``builder.getOrCreate()`` return only once this driver leads ``group``.

    A second ``getOrCreate()`` while this driver leads returns the session at once; after
    a loss it stands by again and takes over with a new token.
    """
    original: Callable[[], Any] = builder.getOrCreate
    state: dict[str, Any] = {}

    def getOrCreate() -> Any:  # noqa: N802 - mirrors PySpark
        from spark_ext.ha.backends import LocatorLeases
        from spark_ext.ha.leadership import Leadership

        held = state.get("lead")
        if held is not None and held.is_leader:
            return original()
        spark = original()
        warm_up(spark, catalog, store)
        logger.info("HA group %s: Spark session ready (warm standby); contending for the lease", group)
        lead = Leadership(group, ttl=ttl, backend=LocatorLeases(store.locator, store.secret)).acquire()
        if held is not None:
            held.release()
        take_over(spark, lead, store)
        state["lead"] = lead
        return spark

    builder.getOrCreate = getOrCreate
