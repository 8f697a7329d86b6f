"""docs/sql.md runs as written: every ``sql`` block in order, each ``text`` block checked.

The rules are those the page states at its top: a ``text`` block right after a ``sql``
block is the output of that block's last statement (its ``show()`` table; the text of
``EXPLAIN`` and ``SHOW CREATE TABLE``; or ``error: <message>`` for a statement that must
fail). Spark's expression ids (``#123``) are written ``#N`` on the page.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "sql.md"
_BLOCK = re.compile(r"```(sql|text)\n(.*?)```", re.S)
_SINGLE_TEXT_COLUMNS = {"plan", "createtab_stmt"}


def doc_steps() -> list[tuple[str, str | None]]:
    """(sql block, the text block after it or None), in page order."""
    blocks = _BLOCK.findall(DOC.read_text())
    steps: list[tuple[str, str | None]] = []
    for i, (lang, body) in enumerate(blocks):
        if lang == "sql":
            nxt = blocks[i + 1] if i + 1 < len(blocks) else None
            steps.append((body, nxt[1] if nxt is not None and nxt[0] == "text" else None))
    return steps


def statements(block: str) -> list[str]:
    """A block's statements: they end with ``;`` at the end of a line."""
    return [s.strip() for s in re.split(r";\s*$", block, flags=re.M) if s.strip()]


def rendered(df: Any) -> str:
    cols = df.columns
    if len(cols) == 1 and cols[0] in _SINGLE_TEXT_COLUMNS:
        (row,) = df.collect()
        return re.sub(r"#\d+L?", "#N", row[0])
    return df._jdf.showString(20, 20, False)


def test_the_page_has_checks() -> None:
    steps = doc_steps()
    assert len(steps) >= 10 and sum(1 for _, t in steps if t is not None) >= 8


def test_sql_reference_runs_as_written(spark: Any) -> None:
    spark.sql("DROP NAMESPACE IF EXISTS store.shop CASCADE")
    try:
        for block, expected in doc_steps():
            stmts = statements(block)
            for q in stmts[:-1]:
                spark.sql(q)
            last = stmts[-1]
            if expected is not None and expected.startswith("error: "):
                with pytest.raises(Exception) as err:
                    spark.sql(last).collect()
                assert expected[len("error: "):].strip() in str(err.value), (last, str(err.value)[:2000])
                continue
            df = spark.sql(last)
            if expected is None:
                df.collect()
            else:
                assert rendered(df).rstrip() == expected.rstrip(), (last, rendered(df))
    finally:
        spark.sql("DROP NAMESPACE IF EXISTS store.shop CASCADE")
    assert "shop" not in {r.namespace for r in spark.sql("SHOW NAMESPACES IN store").collect()}


def test_merge_into_dataframe_api(spark: Any, tname: str) -> None:
    """PySpark's ``df.mergeInto`` (Spark 4) on a store table, as the page says."""
    from pyspark.sql.functions import col

    spark.sql(f"CREATE TABLE {tname} (id INT PRIMARY KEY, v STRING, n INT) TBLPROPERTIES ('buckets'='3')")
    spark.sql(f"INSERT INTO {tname} VALUES (1, 'a', 1), (2, 'b', 2), (3, 'c', 3)")
    src = spark.createDataFrame([(2, "B", 20), (4, "D", 40)], "id INT, v STRING, n INT").alias("s")
    (src.mergeInto(tname, col("s.id") == col(f"{tname}.id"))
        .whenMatched().updateAll()
        .whenNotMatched().insertAll()
        .whenNotMatchedBySource(col(f"{tname}.n") > 2).delete()
        .merge())
    got = sorted(tuple(r) for r in spark.table(tname).collect())
    assert got == [(1, "a", 1), (2, "B", 20), (4, "D", 40)]
