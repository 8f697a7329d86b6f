"""Install ``putInto`` and ``deleteFrom`` on PySpark's DataFrame, without importing pyspark.

If ``pyspark.sql.dataframe`` is already imported, the methods are added at once;
otherwise a meta-path hook adds them right after pyspark imports it. The methods are thin
wrappers: the real work (and its imports) lives in :mod:`spark_ext.spark.dataframe`.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any, Sequence

TARGET = "pyspark.sql.dataframe"


def putInto(self: Any, table: Any, path: str | None = None) -> int:
    """Upsert this DataFrame's rows into a store table by its primary key.

    Columns are matched by name (case-insensitively when Spark is); table columns the
    DataFrame lacks become NULL. Atomic: one staged transaction over every store server
    of the table, committed by the driver after all tasks prepared; if anything fails,
    nothing is visible. Runs one Spark job whose tasks send their rows straight to the
    owning servers: with the JVM bridge (the jar and the store's catalog configured), the
    catalog's DSv2 writer in ``upsert`` mode (JVM tasks, no Python workers); without it, a
    ``mapInArrow`` job through Python workers. Both check the input the same way first
    and raise the same errors.

    Args:
        table: a table name (``"ns.t"``, optionally prefixed by the catalog name) or a
            :class:`~spark_ext.StoreTable`.
        path: ``"auto"`` (the JVM writer when the session has it, the table is in the
            session's store and every column converts on the JVM as Python would: the
            same type, float into double, or an integer into any integer column - a
            narrowed one, e.g. long into int, is range-checked by the JVM job first,
            failing with the Python path's error; a conversion Arrow checks value by
            value - an integer into a double or decimal column, a decimal of another
            scale - takes the Python path), ``"jvm"`` (the
            JVM writer, or BadArgumentError saying why not), ``"python"`` (the
            ``mapInArrow`` job). None: the conf ``spark.sparkext.putInto.path``, default
            ``"auto"``.

    Returns:
        the number of rows written.

    Raises:
        NoSuchTableError, UnknownColumnError (a column the table lacks, or a missing key
        column), TypeMismatchError, BadArgumentError (no primary key), all before any job
        runs; constraint errors (NULL key, value out of range...) from the job.
    """
    from spark_ext.spark.dataframe import put_into

    return put_into(self, table, path)


def deleteFrom(self: Any, table: Any) -> int:
    """Delete the rows of a store table whose primary keys appear in this DataFrame.

    The DataFrame must have the key columns; other columns of the table are ignored.
    Atomic like :meth:`putInto`. Returns how many rows were deleted.
    """
    from spark_ext.spark.dataframe import delete_from

    return delete_from(self, table)


def install(module: ModuleType | None = None) -> bool:
    """Add the methods to ``pyspark.sql.dataframe.DataFrame``; False if pyspark is absent."""
    if module is None:
        try:
            import pyspark.sql.dataframe as module
        except ImportError:
            return False
    cls = getattr(module, "DataFrame", None)
    if cls is None:
        return False
    if getattr(cls, "putInto", None) is not putInto:
        cls.putInto = putInto
    if getattr(cls, "deleteFrom", None) is not deleteFrom:
        cls.deleteFrom = deleteFrom
    return True


class _Loader:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def create_module(self, spec: Any) -> ModuleType | None:
        return self.inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.inner.exec_module(module)
        install(module)


class _Finder:
    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None) -> Any:
        if fullname != TARGET:
            return None
        for f in sys.meta_path:
            if f is self or not hasattr(f, "find_spec"):
                continue
            spec = f.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Loader(spec.loader)  # type: ignore[assignment]
                return spec
        return None


def install_when_imported() -> None:
    """Install now if pyspark's DataFrame is loaded, else as soon as it is. O(1)."""
    mod = sys.modules.get(TARGET)
    if mod is not None and getattr(mod, "DataFrame", None) is not None:
        install(mod)
        return
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
