"""The storage engine: mutable, indexed, snapshot-consistent tables on Arrow.

No sockets and no Spark here: the server, the client and the Spark bridge build on it.
"""

from spark_ext.store.predicate import col
from spark_ext.store.scan import Scan
from spark_ext.store.schema import TableSchema
from spark_ext.store.store import Store
from spark_ext.store.table import Table
from spark_ext.store.txn import ChangeSet

__all__ = ["ChangeSet", "Scan", "Store", "Table", "TableSchema", "col"]
