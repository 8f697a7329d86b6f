"""Argument checks of the PySpark face that need no Spark session and no server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from spark_ext.exceptions import BadArgumentError, TypeMismatchError, UnknownColumnError
from spark_ext.spark import address as A
from spark_ext.spark import configure as C
from spark_ext.spark.dataframe import _translate, plan_columns
from spark_ext.spark.store_table import parse_columns
from spark_ext.spark.types import writable
from spark_ext.store.schema import TableSchema


# --- configure options ----------------------------------------------------------------


def test_defaults() -> None:
    o = C.validate_options()
    assert (o.locator, o.secret_file, o.catalog_name, o.session_catalog, o.executor_start_server, o.ha_group) == (
        None, None, "store", False, False, None)


@pytest.mark.parametrize("value", ["nohost", "host:", ":7100", "h:0", "h:70000", "h:abc", "a b:1", 7100, ("h", "1")])
def test_bad_locator(value: Any) -> None:
    with pytest.raises(BadArgumentError, match="option locator="):
        C.validate_options(locator=value)


def test_good_locator_and_secret(tmp_path: Path) -> None:
    f = tmp_path / "secret"
    f.write_bytes(b"s3cret\n")
    o = C.validate_options(locator="10.0.0.1:7100", secret_file=str(f))
    assert o.locator == ("10.0.0.1", 7100) and o.secret_file == str(f.resolve())
    assert C.validate_options(locator="[::1]:7100").locator == ("::1", 7100)
    assert C.validate_options(locator=("h", 1)).locator == ("h", 1)


def test_bad_secret_file(tmp_path: Path) -> None:
    with pytest.raises(BadArgumentError, match="option secret_file=.*no such file"):
        C.validate_options(locator="h:1", secret_file=str(tmp_path / "missing"))
    empty = tmp_path / "empty"
    empty.write_bytes(b"  \n")
    with pytest.raises(BadArgumentError, match="empty"):
        C.validate_options(locator="h:1", secret_file=str(empty))
    ok = tmp_path / "ok"
    ok.write_bytes(b"x")
    with pytest.raises(BadArgumentError, match="needs a locator"):
        C.validate_options(secret_file=str(ok))
    with pytest.raises(BadArgumentError, match="secret_file=3"):
        C.validate_options(locator="h:1", secret_file=3)


@pytest.mark.parametrize("value", ["", "1abc", "a-b", "a.b", None, 3, "spark_catalog", "SPARK_CATALOG"])
def test_bad_catalog_name(value: Any) -> None:
    with pytest.raises(BadArgumentError, match="catalog_name"):
        C.validate_options(catalog_name=value)


@pytest.mark.parametrize("name", ["session_catalog", "executor_start_server"])
@pytest.mark.parametrize("value", ["true", 1, None, "yes"])
def test_bad_bools(name: str, value: Any) -> None:
    with pytest.raises(BadArgumentError, match=f"option {name}="):
        C.validate_options(**{name: value})


def test_bad_jar(tmp_path: Path) -> None:
    with pytest.raises(BadArgumentError, match="option jar=.*no such file"):
        C.validate_options(jar=str(tmp_path / "x.jar"))
    with pytest.raises(BadArgumentError, match=r"option jar=.*\.jar"):
        C.validate_options(jar=str(tmp_path))
    j = tmp_path / "a.jar"
    j.write_bytes(b"not a zip")
    assert C.validate_options(jar=str(j)).jar == str(j.resolve())
    assert C.jar_classes(str(j)) == set()


def test_ha_group_and_unknown_options() -> None:
    assert C.validate_options(ha_group="orders-ha").ha_group == "orders-ha"
    for bad in ("", "has space", "x" * 101, 5):
        with pytest.raises(BadArgumentError, match="ha_group"):
            C.validate_options(ha_group=bad)
    with pytest.raises(BadArgumentError, match="unknown option 'locater'"):
        C.validate_options(locater="h:1")


def test_configure_rejects_before_any_jvm_call() -> None:
    import spark_ext

    class Builder:
        calls: list[Any] = []

        def config(self, k: str, v: str) -> "Builder":
            self.calls.append((k, v))
            return self

    with pytest.raises(BadArgumentError, match="option locator='x'"):
        spark_ext.configure(Builder(), locator="x")
    with pytest.raises(BadArgumentError, match="SparkSession builder"):
        spark_ext.configure(object(), locator="h:1")
    assert Builder.calls == []


def test_settings_with_a_jar_holding_the_classes(tmp_path: Path) -> None:
    import zipfile

    jar = tmp_path / "spark-ext.jar"
    with zipfile.ZipFile(jar, "w") as z:
        for c in (C.CATALOG_CLASS, C.SESSION_CATALOG_CLASS, C.PLUGIN_CLASS, C.EXTENSIONS_CLASS):
            z.writestr(c.replace(".", "/") + ".class", b"")
    o = C.validate_options(locator="h:7100", jar=str(jar), session_catalog=True, catalog_name="rows",
                           executor_start_server=True, ha_group="g1")
    s = C.settings(o, A.StoreAddress(("h", 7100), b"x", "/etc/secret"),
                   {"spark.jars": "/other.jar", "spark.plugins": "a.B", "spark.sql.extensions": "x.Ext"})
    assert s["spark.jars"] == f"/other.jar,{jar.resolve()}"
    assert s["spark.sql.catalog.rows"] == C.CATALOG_CLASS
    assert s["spark.sql.catalog.rows.locator"] == "h:7100" and s["spark.sql.catalog.rows.secretFile"] == "/etc/secret"
    assert s["spark.sql.catalog.spark_catalog"] == C.SESSION_CATALOG_CLASS
    assert s["spark.plugins"] == f"a.B,{C.PLUGIN_CLASS}"
    assert s["spark.sql.extensions"] == f"x.Ext,{C.EXTENSIONS_CLASS}"
    again = C.settings(o, A.StoreAddress(("h", 7100)), {"spark.sql.extensions": f"{C.EXTENSIONS_CLASS}, x.Ext"})
    assert again["spark.sql.extensions"] == f"{C.EXTENSIONS_CLASS},x.Ext"  # appended once only
    assert s["spark.sparkext.locator"] == "h:7100" and s["spark.sparkext.embedded"] == "false"
    assert s["spark.sparkext.executorStartServer"] == "true" and s["spark.sparkext.haGroup"] == "g1"
    assert s["spark.sparkext.catalogName"] == "rows"


def test_settings_without_jar_classes(tmp_path: Path, caplog: Any) -> None:
    j = tmp_path / "empty.jar"
    import zipfile

    with zipfile.ZipFile(j, "w") as z:
        z.writestr("README", b"")
    s = C.settings(C.validate_options(jar=str(j)), A.StoreAddress(("h", 1)))
    assert "spark.sql.catalog.store" not in s and "spark.plugins" not in s and "spark.sql.extensions" not in s
    assert s["spark.jars"] == str(j.resolve()) and s["spark.sparkext.locator"] == "h:1"
    assert "lacks" in caplog.text


# --- store schemas, DataFrame column plans --------------------------------------------


def _schema(**kw: Any) -> TableSchema:
    cols = kw.pop("cols", [("id", "int64"), ("name", "string"), ("qty", "int32"), ("price", "decimal(10,2)")])
    from spark_ext.store.types import arrow_type

    fields = [pa.field(n, arrow_type(t), nullable=not n.startswith("nn_")) for n, t in cols]
    return TableSchema("ns.t", pa.schema(fields), kw.pop("pk", ["id"]))


def test_plan_columns_upsert() -> None:
    s = _schema()
    assert plan_columns("ns.t", s, [("QTY", "int16", "smallint"), ("Id", "int32", "int")], "upsert") == [
        ("QTY", "qty"), ("Id", "id")]
    with pytest.raises(UnknownColumnError, match="no column 'QTY'"):
        plan_columns("ns.t", s, [("QTY", "int16", "smallint"), ("id", "int64", "bigint")], "upsert", case_sensitive=True)
    with pytest.raises(UnknownColumnError, match="no column 'colour'"):
        plan_columns("ns.t", s, [("id", "int64", "bigint"), ("colour", "string", "string")], "upsert")
    with pytest.raises(BadArgumentError, match="lacks key column"):
        plan_columns("ns.t", s, [("name", "string", "string")], "upsert")
    with pytest.raises(TypeMismatchError, match="column 'qty' is double in the DataFrame but int32"):
        plan_columns("ns.t", s, [("id", "int64", "bigint"), ("qty", "float64", "double")], "upsert")
    with pytest.raises(TypeMismatchError, match="cannot be stored"):
        plan_columns("ns.t", s, [("id", "int64", "bigint"), ("name", None, "array<int>")], "upsert")
    with pytest.raises(BadArgumentError, match="both matching"):
        plan_columns("ns.t", s, [("id", "int64", "bigint"), ("name", "string", "string"), ("NAME", "string", "string")],
                     "upsert")
    assert plan_columns("ns.t", s, [("id", "int64", "bigint"), ("price", "int64", "bigint")], "upsert")[1] == ("price", "price")
    assert plan_columns("ns.t", s, [("id", "int64", "bigint"), ("name", "null", "void")], "upsert")[1] == ("name", "name")


def test_plan_columns_delete_and_no_key() -> None:
    s = _schema(cols=[("a", "string"), ("b", "int32"), ("v", "float64")], pk=["a", "b"])
    assert plan_columns("ns.t", s, [("v", "float64", "double"), ("b", "int32", "int"), ("a", "string", "string")],
                        "delete") == [("b", "b"), ("a", "a")]
    with pytest.raises(BadArgumentError, match=r"lacks key column\(s\) b"):
        plan_columns("ns.t", s, [("a", "string", "string")], "delete")
    with pytest.raises(BadArgumentError, match="no primary key"):
        plan_columns("ns.t", _schema(pk=[]), [("id", "int64", "bigint")], "upsert")
    nn = _schema(cols=[("id", "int64"), ("nn_v", "string")])
    with pytest.raises(BadArgumentError, match="lacks column 'nn_v', which is NOT NULL"):
        plan_columns("ns.t", nn, [("id", "int64", "bigint")], "upsert")


@pytest.mark.parametrize("src,dst,ok", [
    ("int32", "int64", True), ("int64", "int8", True), ("int16", "float64", True), ("int64", "decimal(10,2)", True),
    ("float64", "float32", True), ("float64", "int64", False), ("decimal(38,10)", "decimal(5,2)", True),
    ("decimal(5,2)", "float64", False), ("string", "binary", False), ("timestamp_tz", "timestamp_ntz", False),
    ("date", "timestamp_tz", False), ("bool", "int8", False), ("null", "date", True), ("string", "string", True),
])
def test_writable(src: str, dst: str, ok: bool) -> None:
    assert writable(src, dst) is ok


def test_parse_columns() -> None:
    s = parse_columns("id long, price decimal(10, 2), name string not null, `when` timestamp")
    assert [(f.name, str(f.type), f.nullable) for f in s] == [
        ("id", "int64", True), ("price", "decimal128(10, 2)", True), ("name", "string", False),
        ("when", "timestamp[us, tz=UTC]", True)]
    assert parse_columns([("a", "int"), ("b", pa.string())]).names == ["a", "b"]
    for bad in ("id", 5, [], [("a",)]):
        with pytest.raises(BadArgumentError):
            parse_columns(bad)


def test_translate_task_errors() -> None:
    text = ("PythonException: Traceback ...\nspark_ext.exceptions.TransactionStateError: failed earlier\n"
            "spark_ext.exceptions.NullKeyError: table 't': key column 'id' cannot be NULL\n SQLSTATE")
    e = _translate(RuntimeError(text))
    assert type(e).__name__ == "NullKeyError" and str(e) == "table 't': key column 'id' cannot be NULL"
    assert _translate(RuntimeError("java.lang.OutOfMemoryError")) is None


def test_import_is_light_and_installs_methods() -> None:
    code = ("import sys, spark_ext\n"
            "assert 'pyspark' not in sys.modules and 'pyarrow' not in sys.modules, sorted(sys.modules)\n"
            "assert callable(spark_ext.configure) and spark_ext.StoreTable.__name__ == 'StoreTable'\n"
            "from pyspark.sql import DataFrame\n"
            "assert DataFrame.putInto.__name__ == 'putInto' and DataFrame.deleteFrom.__name__ == 'deleteFrom'\n")
    subprocess.run([sys.executable, "-c", code], check=True)
    # Either import order works.
    subprocess.run([sys.executable, "-c", "from pyspark.sql import DataFrame\nimport spark_ext\n"
                    "assert DataFrame.putInto.__name__ == 'putInto'"], check=True)


def test_settings_name_the_python_of_executor_started_servers(monkeypatch: Any) -> None:
    import sys

    addr = A.StoreAddress(("h", 1))
    monkeypatch.delenv("PYSPARK_PYTHON", raising=False)
    on = C.settings(C.validate_options(executor_start_server=True), addr)
    assert on["spark.sparkext.executor.python"] == sys.executable
    given = C.settings(C.validate_options(executor_start_server=True, python="/opt/py/bin/python3"), addr)
    assert given["spark.sparkext.executor.python"] == "/opt/py/bin/python3"
    monkeypatch.setenv("PYSPARK_PYTHON", "/usr/bin/python3.11")
    env = C.settings(C.validate_options(executor_start_server=True), addr)
    assert env["spark.sparkext.executor.python"] == "/usr/bin/python3.11"
    off = C.settings(C.validate_options(), addr)
    assert "spark.sparkext.executor.python" not in off and off["spark.sparkext.executorStartServer"] == "false"
