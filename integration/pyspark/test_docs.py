"""The examples of docs/quickstart.md and docs/python-api.md run as written."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path
from typing import Any

import spark_ext
from spark_ext import StoreTable

DOCS = Path(__file__).resolve().parents[2] / "docs"


def blocks(name: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (DOCS / name).read_text(), re.S)


def _orders(spark: Any) -> Any:
    t = StoreTable.create(spark, "shop.orders", "id long, item string, qty int", primaryKey="id", ifNotExists=True)
    t.delete([r["id"] for r in t.toArrow(["id"]).to_pylist()])
    t.put([(1, "apple", 3), (2, "pear", 5)])
    return t


def test_quickstart_next_steps(spark: Any) -> None:
    t = _orders(spark)
    (code,) = [b for b in blocks("quickstart.md") if "createIndex" in b]
    out = io.StringIO()
    ns = {"spark": spark, "spark_ext": spark_ext, "t": t}
    with contextlib.redirect_stdout(out):
        exec(code, ns)
    assert t.lookup("by_item", "fig") == [{"id": 3, "item": "fig", "qty": 1}]
    assert t.count() == 1 and t.get(3) is not None  # keys 0, 1, 2 were deleted
    assert ns["svc"].get(3) == {"id": 3, "item": "fig", "qty": 1}
    assert "fig" in out.getvalue()


def test_python_api_examples(spark: Any) -> None:
    t = _orders(spark)
    t.delete([1, 2])
    (writes,) = [b for b in blocks("python-api.md") if "t.getAll([1, 2, 3])" in b]
    ns = {"spark": spark, "t": t}
    exec(writes, ns)
    assert t.count() == 0  # the block ends with t.delete([1, 2])
    (df_block,) = [b for b in blocks("python-api.md") if "deleteFrom(t)" in b]
    ns = {"spark": spark, "t": t, "df": spark.createDataFrame([(5, "kiwi", 1)], "id long, item string, qty int")}
    exec(df_block, ns)
    assert t.get(5) is None  # putInto wrote it, then the keys 0..99 were deleted
    (forname,) = [b for b in blocks("python-api.md") if "StoreTable.forName(\"shop.orders\")" in b and "create(" in b]
    first_two = "\n".join(forname.splitlines()[:3])
    exec(first_two, {"spark": spark})
