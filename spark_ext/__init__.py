"""spark-ext: a hybrid transactional and analytical store for Apache Spark 4.x.

Importing this package is cheap: nothing heavy (pyspark, pyarrow, the client) is loaded
until it is used. It exposes:

* :func:`configure` - switch the extension on for a ``SparkSession.builder``;
* :class:`StoreTable` - the direct path to a table for point work (no Spark job);
* ``DataFrame.putInto(table)`` and ``DataFrame.deleteFrom(table)`` - installed on
  PySpark's DataFrame as soon as both ``spark_ext`` and ``pyspark.sql`` are imported (in
  either order).

Example::

    from pyspark.sql import SparkSession
    import spark_ext
    spark = spark_ext.configure(SparkSession.builder.master("local[2]")).getOrCreate()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["configure", "StoreTable", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from spark_ext.spark.configure import configure
    from spark_ext.spark.store_table import StoreTable


def __getattr__(name: str) -> Any:
    if name == "configure":
        from spark_ext.spark.configure import configure

        return configure
    if name == "StoreTable":
        from spark_ext.spark.store_table import StoreTable

        return StoreTable
    raise AttributeError(f"module 'spark_ext' has no attribute {name!r}")


def _install_dataframe_methods() -> None:
    # Lightweight: patches pyspark now if it is already imported, else when it is.
    from spark_ext.spark import hook

    hook.install_when_imported()


_install_dataframe_methods()
