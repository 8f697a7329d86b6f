"""PySpark integration: :func:`configure`, :class:`StoreTable`, ``putInto``/``deleteFrom``.

Modules:

* ``configure``    options, validation and the Spark settings of :func:`configure`;
* ``address``      where the store is (Spark conf, environment, embedded default);
* ``store_table``  :class:`StoreTable`, the direct path (no Spark job);
* ``dataframe``    ``DataFrame.putInto`` / ``DataFrame.deleteFrom`` as staged transactions;
* ``types``        Spark SQL types <-> store type names;
* ``hook``         installs the DataFrame methods when pyspark is imported;
* ``shell``        ``spark-ext shell``;
* ``testing``      helpers for tests (local sessions on a private store).

Nothing here imports pyspark at import time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["configure", "StoreTable"]

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
    raise AttributeError(f"module 'spark_ext.spark' has no attribute {name!r}")
