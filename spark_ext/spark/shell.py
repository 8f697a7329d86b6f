"""``spark-ext shell``: an interactive PySpark session with spark-ext switched on.

Starts a SparkSession through :func:`spark_ext.configure`, prints the store it talks to
and the tables it sees, then hands over to IPython when it is installed (else the
standard ``code.interact``) with ``spark``, ``sc``, ``spark_ext`` and ``StoreTable`` defined.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--master", default=os.environ.get("MASTER", "local[*]"), help="Spark master (default local[*])")
    p.add_argument("--locator", help="HOST:PORT of the locator (default: the embedded server, started if needed)")
    p.add_argument("--secret-file", help="file holding the cluster's secret (with --locator)")
    p.add_argument("--catalog-name", default="store", help="name of the store catalog (default store)")
    p.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE", help="extra Spark setting (repeatable)")
    p.add_argument("--no-ipython", action="store_true", help="use the plain Python console even if IPython is installed")


def table_listing(client: Any) -> list[str]:
    """``ns.table  (rows, key, columns)`` lines for every table of the cluster."""
    out = []
    for ns in sorted(client.list_namespaces()):
        for t in sorted(client.list_tables(ns)):
            name = ".".join([*ns, t])
            try:
                info = client.table(name, refresh=True)
                cols = ", ".join(f"{f.name} {tn}" for f, tn in zip(info.schema.arrow_schema, info.schema.type_names))
                pk = ",".join(info.schema.primary_key) or "-"
                out.append(f"  {name:<30} {client.count(name):>12,} rows  key {pk:<12} ({cols})")
            except Exception as e:  # a table on a lost server should not stop the shell
                out.append(f"  {name:<30} (unavailable: {e})")
    return out


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    import spark_ext
    from spark_ext.exceptions import SparkExtError
    from spark_ext.spark import address as A
    from spark_ext.spark.store_table import StoreTable

    options: dict[str, Any] = {"catalog_name": args.catalog_name}
    if args.locator:
        options["locator"] = args.locator
    if args.secret_file:
        options["secret_file"] = args.secret_file
    conf = []
    for kv in args.conf:
        k, sep, v = kv.partition("=")
        if not sep or not k:
            print(f"spark-ext shell: --conf expects KEY=VALUE, got {kv!r}", file=sys.stderr)
            return 2
        conf.append((k, v))
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.master(args.master).appName("spark-ext shell")
    for k, v in conf:
        builder = builder.config(k, v)
    try:
        builder = spark_ext.configure(builder, **options)
    except SparkExtError as e:
        print(f"spark-ext shell: {e}", file=sys.stderr)
        return 2
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    addr = A.resolve(spark)
    client = A.client_for(addr)
    where = "embedded server" if addr.embedded else "locator"
    print(f"spark-ext {spark_ext.__version__} on Spark {spark.version} ({args.master}); {where} {addr.locator_string}")
    lines = table_listing(client)
    print(f"tables ({len(lines)}):" if lines else "tables: none yet (StoreTable.create(spark, 'ns.t', 'id long, v string', primaryKey='id'))")
    for line in lines:
        print(line)
    print("defined: spark, sc, spark_ext, StoreTable;  df.putInto(name), df.deleteFrom(name), StoreTable.forName(spark, name)")
    ns = {"spark": spark, "sc": spark.sparkContext, "spark_ext": spark_ext, "StoreTable": StoreTable}
    try:
        if not args.no_ipython and sys.stdin.isatty():
            try:
                from IPython import start_ipython

                start_ipython(argv=[], user_ns=ns)
                return 0
            except ImportError:
                pass
        import code

        try:
            code.interact(banner="", local=ns, exitmsg="")
        except SystemExit:
            pass
    finally:
        spark.stop()
    return 0
