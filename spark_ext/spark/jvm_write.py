"""putInto through the JVM bridge's DSv2 writer (``io.sparkext.spark.StoreWriteBuilder``).

Python's ``mapInArrow`` path costs a Python worker per task and an Arrow round trip
through it (a no-op ``mapInArrow`` over a million rows alone takes longer than rebuilding
and caching the DataFrame). When the session has the bridge, putInto instead runs
``df.writeTo(<catalog>.<table>).option("mode", "upsert").append()``: the executors' JVMs
stage the rows on the owning servers and the driver's ``StoreBatchWrite`` commits them in
one or two phases, carrying the driver's fencing token. The Python checks
(:func:`~spark_ext.spark.dataframe.plan_columns`) run first, so bad input fails the same
way on both paths, before any JVM call.

Which path runs is chosen by :func:`choose` from the keyword ``path=`` or the conf
``spark.sparkext.putInto.path`` (``auto``, ``jvm`` or ``python``; default ``auto``).
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any, Sequence

from spark_ext import exceptions as X
from spark_ext.exceptions import BadArgumentError, SparkExtError

logger = logging.getLogger(__name__)

CONF_PATH = "spark.sparkext.putInto.path"
PATHS = ("auto", "jvm", "python")
_INT_RANK = {"int8": 0, "int16": 1, "int32": 2, "int64": 3}
_CODE = re.compile(r"\[spark-ext ([A-Z_]+)\] ([^\n]*)")


def requested_path(spark: Any, path: str | None) -> str:
    """The path asked for: the keyword if given, else the conf, else ``"auto"``."""
    where = "putInto(path=...)"
    if path is None:
        where = f"conf {CONF_PATH}"
        try:
            path = spark.conf.get(CONF_PATH, None)
        except Exception:  # pragma: no cover - a closed session
            path = None
        if path in (None, ""):
            return "auto"
    if not isinstance(path, str) or path.strip().lower() not in PATHS:
        raise BadArgumentError(f"{where}: expected one of {', '.join(PATHS)}, got {path!r}")
    return path.strip().lower()


def jvm_castable(source: str, target: str) -> bool:
    """Whether the JVM path writes a ``source`` column into a ``target`` one as Python would.

    Widening casts cannot fail; an integer narrowed into a smaller integer is range-checked
    here first (:func:`_range_checked`), failing like the Python path. Other conversions the
    Python path accepts (integers into floats or decimals, decimals of another scale) are
    checked value by value by Arrow there, so they stay on that path.
    """
    if source in ("null", target):
        return True
    if source in _INT_RANK and target in _INT_RANK:
        return True
    return source == "float32" and target == "float64"


def catalog_of(spark: Any) -> str | None:
    """The session's store catalog name if it is backed by the bridge's catalog, else None."""
    from spark_ext.spark import address as A
    from spark_ext.spark.configure import CATALOG_CLASS

    cat = A.catalog_name(spark)
    if cat is None:
        return None
    try:
        impl = spark.conf.get(f"spark.sql.catalog.{cat}", None)
    except Exception:  # pragma: no cover - a closed session
        return None
    return cat if impl == CATALOG_CLASS else None


def why_not(spark: Any, client: Any, fields: Sequence[tuple[str, str | None, str]], cols: list[tuple[str, str]],
            schema: Any) -> str | None:
    """Why the JVM writer cannot take this statement (None if it can)."""
    from spark_ext.spark import address as A

    if catalog_of(spark) is None:
        return "the session has no spark-ext catalog (jar missing, or spark_ext.configure not used)"
    addr = A.from_spark(spark)
    if addr is None or tuple(addr.locator) != tuple(client.locator_address):
        return "the table is in another store than the session's catalog"
    stypes = {name: stype for name, stype, _ in fields}
    names = list(schema.arrow_schema.names)
    for src, tcol in cols:
        ttype = schema.type_names[names.index(tcol)]
        if not jvm_castable(str(stypes[src]), ttype):
            return f"column {src!r} ({stypes[src]}) into {ttype}: the value checks are Python's"
    return None


def _quoted(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def translate(e: BaseException, table: str) -> BaseException | None:
    """The spark_ext error behind a failed JVM write (tagged ``[spark-ext CODE]``), if any.

    The code is the wire error's name, so the class is the one the Python client raises
    for it (:func:`~spark_ext.client.connection.typed_error`). A retried task's
    ``TXN_STATE`` is passed over for the violation that poisoned the transaction.
    """
    from spark_ext.client.connection import typed_error
    from spark_ext.wire.errors import WireError

    found = _CODE.findall(str(e))
    if not found:
        return None
    code, msg = next(((c, m) for c, m in found if c != "TXN_STATE"), found[0])
    return typed_error(WireError(0, msg.strip(), {"table": table}, name=code))


def _null_checked(column: Any, table: str, name: str, key: bool) -> Any:
    """``column``, failing the task with the Python path's error on a NULL.

    Spark's own check of a NOT NULL target (``NOT_NULL_ASSERT_VIOLATION``) does not name
    the column; this runs first and raises the store's error, tagged like the JVM's.
    """
    from pyspark.sql import functions as F

    if key:
        code, msg = X.NullKeyError.code, f"table {table!r}: key column {name!r} cannot be NULL"
    else:
        code, msg = X.NotNullViolationError.code, f"table {table!r}: column {name!r} is NOT NULL"
    return F.when(column.isNull(), F.raise_error(F.lit(f"[spark-ext {code}] {msg}"))).otherwise(column)


def _range_checked(column: Any, table: str, name: str, target: str) -> Any:
    """``column`` (an integer) failing the task with ValueOutOfRangeError if it does not fit ``target``.

    Spark's ANSI cast would fail too, but without naming the table; the message names the
    table, the column and the value, like the Python path's.
    """
    from pyspark.sql import functions as F

    bits = 8 << _INT_RANK[target]
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    msg = F.concat(F.lit(f"[spark-ext {X.ValueOutOfRangeError.code}] table {table!r}, column {name!r}: value "),
                   column.cast("string"), F.lit(f" does not fit {target} (range {lo}..{hi})"))
    return F.when((column < F.lit(lo)) | (column > F.lit(hi)), F.raise_error(msg)).otherwise(column)


def write(df: Any, info: Any, cols: list[tuple[str, str]], catalog: str) -> int:
    """Upsert ``df`` (columns ``cols``: ``[(df column, table column)]``) through the JVM writer.

    Table columns the DataFrame lacks are sent as typed NULLs (the Python path's meaning).
    Returns the rows the servers prepared, as the Python path does.
    """
    from pyspark.sql import functions as F

    from spark_ext.spark.types import spark_type_of

    from spark_ext.spark.types import store_type_of

    schema = info.schema
    sources = {f.name: store_type_of(f.dataType) for f in df.schema.fields}
    given = {t for _, t in cols}
    by_table = {t: s for s, t in cols}
    select = []
    for i, n in enumerate(schema.arrow_schema.names):
        if n in given:
            c = F.col(_quoted(by_table[n]))
            src_type = sources.get(by_table[n])
            if src_type in _INT_RANK and schema.type_names[i] in _INT_RANK \
                    and _INT_RANK[src_type] > _INT_RANK[schema.type_names[i]]:
                c = _range_checked(c, info.full_name, n, schema.type_names[i])
            if not schema.nullable[i]:
                c = _null_checked(c, info.full_name, n, n in schema.primary_key)
            select.append(c.alias(n))
        else:
            select.append(F.lit(None).cast(spark_type_of(schema.type_names[i])).alias(n))
    target = ".".join(_quoted(p) for p in [catalog, *info.full_name.split(".")])
    statement = uuid.uuid4().hex
    try:
        df.select(*select).writeTo(target).option("mode", "upsert").option("statement", statement).append()
    except SparkExtError:
        raise
    except Exception as e:
        t = translate(e, info.full_name)
        if t is not None:
            raise t from e
        raise
    jvm = df.sparkSession.sparkContext._jvm
    n = int(jvm.io.sparkext.spark.StoreBatchWrite.takeCommittedRows(statement))
    if n < 0:  # pragma: no cover - the write returned without committing
        raise SparkExtError(f"putInto: the JVM write into {info.full_name!r} returned without a commit",
                            table=info.full_name)
    return n
