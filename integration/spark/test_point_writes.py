"""Single-row UPDATE / DELETE by full primary key (the SQL extension's fast path).

``io.sparkext.spark.SparkExtSessionExtensions`` turns such a statement into one request to
the key's store server (``SparkExtPointWrite`` in EXPLAIN) instead of Spark's row-level
job. Each statement here runs twice, on two tables with the same rows: once with the fast
path on, once with it off (``spark.sparkext.pointWrites=false``, Spark's row-level path);
the tables must then hold the same rows, row by row, and the fast path must have been
taken exactly for the statements that qualify. Errors must be the row-level path's.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

FAST = "spark.sparkext.pointWrites"
COLS = ("id INT PRIMARY KEY, b TINYINT, i INT, l BIGINT, f FLOAT, d DOUBLE, dec DECIMAL(10,2), s STRING, "
        "bin BINARY, flag BOOLEAN, day DATE, ts TIMESTAMP, tsn TIMESTAMP_NTZ, nn INT NOT NULL")
ROWS = ", ".join(
    f"({k}, {k}, {k * 10}, {k * 100}, {k}.5, {k}.25, {k}.75, 's{k}', X'0{k}', {str(k % 2 == 0).lower()}, "
    f"DATE'2024-01-0{k}', TIMESTAMP'2024-01-0{k} 0{k}:00:00', TIMESTAMP_NTZ'2024-01-0{k} 00:00:0{k}', {k})"
    for k in range(1, 8))


def executed(spark: Any) -> int:
    return int(spark._jvm.io.sparkext.spark.PointWriteCommand.executed())


def rows(spark: Any, t: str) -> list[tuple[Any, ...]]:
    """All rows, sorted; NaN as a string so that equal rows compare equal."""
    def norm(x: Any) -> Any:
        return "NaN" if isinstance(x, float) and x != x else x
    return sorted((tuple(norm(x) for x in r) for r in spark.table(t).collect()), key=repr)


def fast_path_taken(spark: Any, sql: str) -> bool:
    """Run ``sql``; whether it ran as a SparkExtPointWrite (checked by the plan and the counter)."""
    before = executed(spark)
    df = spark.sql(sql)
    planned = df._jdf.queryExecution().analyzed().nodeName() == "SparkExtPointWrite"
    assert (executed(spark) - before) == (1 if planned else 0), sql
    assert df.columns == [] and df.collect() == []  # what the row-level path returns
    return planned


@pytest.fixture
def pair(spark: Any):
    """Two store tables with the same rows: (fast path on, fast path off)."""
    names = [f"store.default.pw_{uuid.uuid4().hex[:8]}" for _ in range(2)]
    for t in names:
        spark.sql(f"CREATE TABLE {t} ({COLS}) TBLPROPERTIES ('buckets'='4')")
        spark.sql(f"INSERT INTO {t} VALUES {ROWS}")
    yield names
    spark.conf.unset(FAST)
    for t in names:
        spark.sql(f"DROP TABLE IF EXISTS {t}")


def both(spark: Any, pair: list[str], sql: str, **args: Any) -> bool:
    """``sql`` ({T} = the table) on both tables, with and without the fast path; same rows after."""
    fast_t, slow_t = pair
    spark.conf.set(FAST, "false")
    before = executed(spark)
    spark.sql(sql.replace("{T}", slow_t), args=args or None)
    assert executed(spark) == before
    spark.conf.set(FAST, "true")
    if args:
        before = executed(spark)
        df = spark.sql(sql.replace("{T}", fast_t), args=args)
        taken = df._jdf.queryExecution().analyzed().nodeName() == "SparkExtPointWrite"
        assert executed(spark) - before == (1 if taken else 0)
    else:
        taken = fast_path_taken(spark, sql.replace("{T}", fast_t))
    assert rows(spark, fast_t) == rows(spark, slow_t), sql
    return taken


QUALIFYING = [
    "UPDATE {T} SET s = 'x', d = 2.5 WHERE id = 1",
    "UPDATE {T} SET b = 7, i = -3, l = 9000000000, f = 1.25, dec = 3.14, bin = X'00FF', flag = true, "
    "day = DATE'2024-02-29', ts = TIMESTAMP'2024-01-01 10:00:00.123456', tsn = TIMESTAMP_NTZ'2024-01-01 10:00:00' "
    "WHERE id = 2",
    "UPDATE {T} SET s = NULL, d = NULL, bin = NULL, day = NULL WHERE id = 3",
    "UPDATE {T} SET s = 'a' || 'b', l = 2 * 21, day = date_add(DATE'2024-01-01', 1), d = CAST('1e3' AS DOUBLE) "
    "WHERE 4 = id",
    "UPDATE {T} SET f = CAST('NaN' AS FLOAT), d = double('-Infinity'), s = 'h\u00e9 \U0001F600' WHERE id = 5",
    "UPDATE {T} SET s = 'twice' WHERE id = 5",
    "UPDATE {T} AS x SET x.l = 77 WHERE x.id = 6",
    "UPDATE {T} SET s = 'missing' WHERE id = 999",
    "UPDATE {T} SET s = 'null key' WHERE id = NULL",
    "UPDATE {T} SET i = 1 WHERE id = CAST('6' AS INT)",
    "UPDATE {T} SET nn = NULL WHERE id = 998",
    "DELETE FROM {T} WHERE id = 7",
    "DELETE FROM {T} WHERE id = 997",
]

FALLING_BACK = [
    "UPDATE {T} SET i = i + 1 WHERE id = 1",
    "UPDATE {T} SET s = 'y' WHERE id = 1 AND s = 'x'",
    "UPDATE {T} SET s = 'y' WHERE id IN (1, 2)",
    "UPDATE {T} SET s = 'y' WHERE id < 3",
    "UPDATE {T} SET s = 'y' WHERE id = 1 OR id = 2",
    "UPDATE {T} SET s = 'z' WHERE id = 1 AND id = 1",
    "UPDATE {T} SET s = s WHERE id = 2",
    "UPDATE {T} SET id = 50 WHERE id = 1",
    "UPDATE {T} SET s = 'float key side' WHERE CAST(id AS DOUBLE) = 2.0",
    "DELETE FROM {T} WHERE id = 2 AND s = 'zz'",
    "DELETE FROM {T} WHERE id >= 6",
]


def test_qualifying_statements_take_the_fast_path_with_the_same_results(spark: Any, pair: list[str]) -> None:
    for sql in QUALIFYING:
        assert both(spark, pair, sql), sql
    got = {r.id: r for r in spark.table(pair[0]).collect()}
    assert 7 not in got and got[1].s == "x" and got[1].d == 2.5 and got[5].s == "twice"
    assert got[2].bin == bytearray(b"\x00\xff") and str(got[2].dec) == "3.14" and got[2].l == 9000000000
    assert got[3].s is None and got[4].s == "ab" and got[4].l == 42 and got[6].i == 1
    import math

    assert math.isnan(got[5].f) and got[5].d == float("-inf")
    assert sorted(got) == [1, 2, 3, 4, 5, 6]


def test_parameterized_statement_takes_the_fast_path(spark: Any, pair: list[str]) -> None:
    assert both(spark, pair, "UPDATE {T} SET s = :s, l = :l WHERE id = :k", s="param", l=-5, k=3)
    assert spark.sql(f"SELECT s, l FROM {pair[0]} WHERE id = 3").collect()[0][:] == ("param", -5)


def test_other_statements_fall_back_with_the_same_results(spark: Any, pair: list[str]) -> None:
    for sql in FALLING_BACK:
        assert not both(spark, pair, sql), sql
        assert "SparkExtPointWrite" not in spark.sql("EXPLAIN " + sql.replace("{T}", pair[0])).collect()[0][0]
    assert sorted(r.id for r in spark.table(pair[0]).collect()) == [2, 3, 4, 5]  # 50 went with id >= 6


def test_composite_and_keyless_tables(spark: Any, tname: str) -> None:
    spark.sql(f"CREATE TABLE {tname} (tenant STRING, d DATE, k DECIMAL(10,2), v INT, PRIMARY KEY (tenant, d, k))")
    spark.sql(f"""INSERT INTO {tname} VALUES ('x', DATE'2024-01-01', 1.50, 1), ('x', DATE'2024-01-02', 2.00, 2),
                  ('y', DATE'2024-01-01', 1.50, 3)""")
    assert fast_path_taken(spark, f"UPDATE {tname} SET v = 20 WHERE tenant = 'x' AND d = DATE'2024-01-02' AND k = 2.00")
    assert fast_path_taken(spark, f"DELETE FROM {tname} WHERE k = 1.5 AND tenant = 'y' AND d = DATE'2024-01-01'")
    assert not fast_path_taken(spark, f"UPDATE {tname} SET v = 10 WHERE tenant = 'x' AND d = DATE'2024-01-01'")
    assert sorted(tuple(r) for r in spark.sql(f"SELECT tenant, v FROM {tname}").collect()) == [("x", 10), ("x", 20)]
    keyless = tname + "_nk"
    spark.sql(f"CREATE TABLE {keyless} (a INT, b STRING)")
    spark.sql(f"INSERT INTO {keyless} VALUES (1, 'x'), (1, 'x'), (2, 'y')")
    assert not fast_path_taken(spark, f"UPDATE {keyless} SET b = 'X' WHERE a = 1")
    assert sorted(tuple(r) for r in spark.table(keyless).collect()) == [(1, "X"), (1, "X"), (2, "y")]


def error_of(spark: Any, sql: str) -> str:
    with pytest.raises(Exception) as e:
        spark.sql(sql)
    return f"{type(e.value).__name__}: {e.value}"


def test_bad_values_fail_as_on_the_row_level_path(spark: Any, pair: list[str]) -> None:
    fast_t, slow_t = pair
    for bad in ("UPDATE {T} SET nn = NULL WHERE id = 1", "UPDATE {T} SET b = 1000 WHERE id = 1",
                "UPDATE {T} SET dec = 123456789.5 WHERE id = 1"):
        spark.conf.set(FAST, "false")
        slow = error_of(spark, bad.replace("{T}", slow_t))
        spark.conf.set(FAST, "true")
        before = executed(spark)
        fast = error_of(spark, bad.replace("{T}", fast_t))
        assert executed(spark) == before + 1  # the fast path ran, and failed as the row-level path does
        slow_class, fast_class = (re.search(r"\[([A-Z_.]+)\]", x) for x in (slow, fast))
        assert slow_class and fast_class and slow_class.group(1) == fast_class.group(1), (slow, fast)
        assert slow.split(":")[0] == fast.split(":")[0], (slow, fast)  # the same exception type
        assert rows(spark, fast_t) == rows(spark, slow_t)
    assert spark.sql(f"SELECT nn, b FROM {fast_t} WHERE id = 1").collect()[0][:] == (1, 1)


def test_a_locked_row_is_refused_as_on_the_row_level_path(spark: Any, pair: list[str], client: Any) -> None:
    """A transaction holding the row (a prepared part): both paths fail with [spark-ext CONFLICT]."""
    from spark_ext.wire.kinds import Kind

    fast_t, slow_t = pair
    held = []
    for t in pair:
        info = client.table(t.split(".", 1)[1])
        pool = client._server_pool(info, info.schema.bucket_of_key(1))
        txn = f"test-lock-{uuid.uuid4().hex}"
        pool.request(Kind.TXN_STAGE, {"txn": txn, "table": info.full_name, "op": "update", "keys": [[1]],
                                      "values": {"s": "locked"}})
        pool.request(Kind.TXN_PREPARE, {"txn": txn, "part": ""})
        held.append((pool, txn))
    try:
        spark.conf.set(FAST, "false")
        slow = error_of(spark, f"UPDATE {slow_t} SET s = 'y' WHERE id = 1")
        spark.conf.set(FAST, "true")
        before = executed(spark)
        fast = error_of(spark, f"UPDATE {fast_t} SET s = 'y' WHERE id = 1")
        assert executed(spark) == before + 1
        assert "[spark-ext CONFLICT]" in slow and "[spark-ext CONFLICT]" in fast, (slow, fast)
        assert fast_path_taken(spark, f"UPDATE {fast_t} SET s = 'free' WHERE id = 2")  # other rows are not locked
    finally:
        for pool, txn in held:
            pool.request(Kind.TXN_ABORT, {"txn": txn})
    assert spark.sql(f"SELECT s FROM {fast_t} WHERE id = 1").collect()[0].s == "s1"
    assert fast_path_taken(spark, f"UPDATE {fast_t} SET s = 'after' WHERE id = 1")
    assert spark.sql(f"SELECT s FROM {fast_t} WHERE id = 1").collect()[0].s == "after"


def test_cached_table_is_refreshed(spark: Any, tname: str) -> None:
    spark.sql(f"CREATE TABLE {tname} (id INT PRIMARY KEY, v STRING)")
    spark.sql(f"INSERT INTO {tname} VALUES (1, 'a'), (2, 'b')")
    df = spark.table(tname)
    df.cache()
    assert df.count() == 2
    try:
        assert fast_path_taken(spark, f"UPDATE {tname} SET v = 'new' WHERE id = 1")
        assert fast_path_taken(spark, f"DELETE FROM {tname} WHERE id = 2")
        assert sorted(tuple(r) for r in spark.table(tname).collect()) == [(1, "new")]
    finally:
        df.unpersist()


def test_flush_policy_and_durability(spark: Any, tname: str, client: Any) -> None:
    """The write is the server's plain UPDATE: visible to the Python client at once, under the table's flush."""
    spark.sql(f"CREATE TABLE {tname} (id BIGINT PRIMARY KEY, x DOUBLE) TBLPROPERTIES ('flush'='off')")
    spark.sql(f"INSERT INTO {tname} VALUES (1, 1.0)")
    assert fast_path_taken(spark, f"UPDATE {tname} SET x = 9.5 WHERE id = 1")
    assert client.get(tname.split(".", 1)[1], 1) == (1, 9.5)


PROGRAM = r"""
import json, sys, time
from spark_ext.spark.testing import local_session
master, table = sys.argv[1:3]
spark = local_session(master, "point-writes")
executors = lambda: spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() - 1
deadline = time.monotonic() + 180
while master.startswith("local-cluster") and executors() < 2 and time.monotonic() < deadline:
    time.sleep(0.5)
count = spark._jvm.io.sparkext.spark.PointWriteCommand.executed
out = {"executors": executors(), "extensions": spark.conf.get("spark.sql.extensions")}
spark.sql(f"CREATE TABLE {table} (id INT PRIMARY KEY, v STRING, n BIGINT) TBLPROPERTIES ('buckets'='6')")
spark.range(0, 100, numPartitions=4).selectExpr("CAST(id AS INT) id", "CONCAT('v', id) v", "id n").writeTo(table).append()
c0 = count()
for k in range(0, 100, 7):
    spark.sql(f"UPDATE {table} SET v = 'p{k}', n = {k * 1000} WHERE id = {k}")
spark.sql(f"DELETE FROM {table} WHERE id = 99")
spark.sql(f"UPDATE {table} SET v = 'missing' WHERE id = 1000")
out["fast"] = count() - c0
spark.sql(f"UPDATE {table} SET n = n + 1 WHERE id < 3")  # falls back: a Spark job on the executors
out["after_fallback"] = count() - c0
out["rows"] = sorted([list(r) for r in spark.table(table).collect()])
print("RESULT " + json.dumps(out), flush=True)
spark.stop()
"""


@pytest.mark.parametrize("master", ["local[2]", pytest.param("local-cluster[2,1,1024]", marks=pytest.mark.slow)])
def test_configured_session(sx_home: Path, tmp_path: Path, master: str) -> None:
    """``configure()`` registers the extension; it works with executors in other JVMs too."""
    from integration.spark.test_apps import spark_home
    from spark_ext.spark.configure import EXTENSIONS_CLASS

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1",
           "SPARK_HOME": spark_home(tmp_path), "PYTHONPATH": str(root)}
    table = f"store.default.pw_app_{uuid.uuid4().hex[:6]}"
    r = subprocess.run([sys.executable, "-c", PROGRAM, master, table], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=900)
    lines = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
    assert r.returncode == 0 and lines, r.stdout[-3000:] + r.stderr[-6000:]
    out = json.loads(lines[-1][len("RESULT "):])
    assert out["executors"] == (2 if master.startswith("local-cluster") else 0)
    assert EXTENSIONS_CLASS in out["extensions"].split(",")
    assert out["fast"] == len(range(0, 100, 7)) + 2 and out["after_fallback"] == out["fast"]
    expect = []
    for k in range(99):
        v, n = (f"p{k}", k * 1000) if k % 7 == 0 else (f"v{k}", k)
        expect.append([k, v, n + (1 if k < 3 else 0)])
    assert out["rows"] == expect
