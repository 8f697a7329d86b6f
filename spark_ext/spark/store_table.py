"""``StoreTable``: the direct path to a store table, for point work without Spark jobs.

Every method goes straight to the store servers through the Python client (one TCP
request per server involved, on pooled connections); none starts a Spark job, so point
reads and writes take microseconds instead of the scheduler's tens of milliseconds.
Arguments are checked in Python first, so bad input fails before anything is sent and
nothing changes. Method names follow PySpark's camelCase.

Rows come back as dicts ``{column: value}``; bulk results as Arrow, pandas or Spark.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping, Sequence

from spark_ext.exceptions import BadArgumentError, NoSuchTableError, UnknownColumnError
from spark_ext.spark import address as A

_DECIMAL = re.compile(r"decimal\s*\(\s*\d+\s*,\s*\d+\s*\)", re.I)


def _is_spark_session(obj: Any) -> bool:
    return hasattr(obj, "sparkContext") and hasattr(obj, "createDataFrame") or type(obj).__name__ == "SparkSession"


def _is_spark_dataframe(obj: Any) -> bool:
    return type(obj).__name__ == "DataFrame" and type(obj).__module__.startswith("pyspark.")


def parse_columns(schema: Any) -> Any:
    """A ``pyarrow.Schema`` from ``"id long, name string not null"``, ``[(name, type)]``, an
    Arrow schema or a Spark StructType (nullability kept). Types are store or Spark SQL names."""
    import pyarrow as pa

    from spark_ext.store.types import arrow_type

    if isinstance(schema, pa.Schema):
        return schema
    cols: list[tuple[str, Any, bool]] = []
    if isinstance(schema, str):
        # Protect the comma inside decimal(p,s) before splitting on commas.
        text = _DECIMAL.sub(lambda m: m.group(0).replace(",", ";"), schema)
        for part in text.split(","):
            bits = part.strip().split()
            if len(bits) < 2:
                raise BadArgumentError(f"schema {schema!r}: expected 'name type, name type, ...', got {part.strip()!r}")
            name, typ = bits[0].strip("`"), " ".join(bits[1:]).replace(";", ",")
            not_null = typ.lower().endswith(" not null")
            cols.append((name, typ[: -len(" not null")].strip() if not_null else typ, not not_null))
    elif type(schema).__name__ == "StructType":
        from spark_ext.spark.types import store_type_of

        for f in schema.fields:
            t = store_type_of(f.dataType)
            if t is None or t == "null":
                raise BadArgumentError(f"column {f.name!r}: Spark type {f.dataType.simpleString()} is not supported by the store")
            cols.append((f.name, t, f.nullable))
    elif isinstance(schema, Sequence) and schema and all(isinstance(c, (tuple, list)) and len(c) == 2 for c in schema):
        cols = [(str(n), t, True) for n, t in schema]
    else:
        raise BadArgumentError(
            f"cannot read a schema from {type(schema).__name__}: give 'id long, name string', "
            "a list of (name, type), a pyarrow.Schema or a Spark StructType")
    fields = []
    for name, typ, nullable in cols:
        t = arrow_type(typ) if isinstance(typ, str) else typ
        fields.append(pa.field(name, t, nullable=nullable))
    return pa.schema(fields)


def _resolve_args(cls_name: str, sparkOrName: Any, name: Any) -> tuple[Any, str]:
    if isinstance(sparkOrName, str):
        if name is not None:
            raise BadArgumentError(f"{cls_name}: give (spark, name) or (name), not two names")
        spark, name = None, sparkOrName
    elif sparkOrName is None or _is_spark_session(sparkOrName):
        spark = sparkOrName
    else:
        raise BadArgumentError(
            f"{cls_name}: the first argument must be a SparkSession or a table name, got {type(sparkOrName).__name__}")
    if not isinstance(name, str) or not name.strip():
        raise BadArgumentError(f"{cls_name}: table name must be a non-empty string like 'ns.table', got {name!r}")
    parts = name.strip().split(".")
    if not all(p.strip() for p in parts):
        raise BadArgumentError(f"{cls_name}: bad table name {name!r} (empty part)")
    cat = A.catalog_name(spark)
    if cat and len(parts) > 1 and parts[0] == cat:
        parts = parts[1:]
    return spark, ".".join(parts)


def _explicit(locator: str | None, secret_file: str | None) -> A.StoreAddress | None:
    if locator is None:
        if secret_file is not None:
            raise BadArgumentError("secretFile needs a locator too")
        return None
    loc = A.parse_locator(locator, "locator")
    return A.StoreAddress(loc, A.read_secret_file(secret_file, "secretFile") if secret_file else None, secret_file)


class StoreTable:
    """A handle on one store table. Thread-safe; cheap to keep and share.

    Get one with :meth:`forName` (existing table) or :meth:`create`.
    """

    def __init__(self, client: Any, name: str, spark: Any = None, address: A.StoreAddress | None = None) -> None:
        self._client = client
        self._spark = spark
        self._address = address
        info = client.table(name, refresh=True)
        self._full = info.full_name
        self._load(info)

    def _load(self, info: Any) -> None:
        s = info.schema
        self._schema = s
        self._names = list(s.arrow_schema.names)
        self._index_defs = list(info.indexes)

    # --- construction ---------------------------------------------------------------

    @classmethod
    def forName(cls, sparkOrName: Any, name: str | None = None, *, locator: str | None = None,
                secretFile: str | None = None) -> "StoreTable":
        """The table called ``name``: ``forName(spark, "ns.t")`` or ``forName("ns.t")``.

        With a Spark session, the store is the one :func:`spark_ext.configure` recorded in
        its conf; without, ``$SPARK_EXT_LOCATOR`` or the embedded default; ``locator``
        (``"host:port"``) and ``secretFile`` name another cluster explicitly. A bare name
        is in namespace ``default``; a leading catalog name (``store.ns.t``) is dropped.
        One round trip to the locator.

        Raises:
            NoSuchTableError: the table does not exist (the message lists the namespace's tables).
        """
        spark, full = _resolve_args("StoreTable.forName", sparkOrName, name)
        addr = _explicit(locator, secretFile) or A.resolve(spark)
        client = A.client_for(addr)
        try:
            return cls(client, full, spark, addr)
        except NoSuchTableError as e:
            ns = full.rsplit(".", 1)[0] if "." in full else "default"
            try:
                have = client.list_tables(ns)
            except Exception:
                have = None
            hint = f" (tables in {ns!r}: {', '.join(sorted(have)) or 'none'})" if have is not None else f" (no namespace {ns!r})"
            raise NoSuchTableError(f"no store table {full!r}{hint}", table=full) from e

    @classmethod
    def create(cls, sparkOrName: Any, name: Any = None, schema: Any = None, primaryKey: str | Sequence[str] | None = None,
               numBuckets: int = 8, ifNotExists: bool = False, options: Mapping[str, str] | None = None,
               *, locator: str | None = None, secretFile: str | None = None) -> "StoreTable":
        """Create a table (and its namespace) and return it.

        ``StoreTable.create(spark, "shop.orders", "id long, item string", primaryKey="id")``
        or without Spark ``StoreTable.create("shop.orders", schema, ...)``. The schema is a
        DDL-like string, a list of ``(name, type)``, a pyarrow.Schema or a Spark StructType;
        types are store names or Spark SQL names (``long``, ``int``, ``decimal(10,2)``...).
        Two round trips to the locator.
        """
        if isinstance(sparkOrName, str):  # create(name, schema, ...)
            if schema is not None and primaryKey is None and isinstance(schema, (str, list, tuple)):
                primaryKey = schema
            sparkOrName, name, schema = None, sparkOrName, name
        spark, full = _resolve_args("StoreTable.create", sparkOrName, name)
        if schema is None:
            raise BadArgumentError("StoreTable.create: a schema is needed, e.g. 'id long, name string'")
        cols = parse_columns(schema)
        if not isinstance(numBuckets, int) or isinstance(numBuckets, bool) or numBuckets < 1:
            raise BadArgumentError(f"StoreTable.create: numBuckets={numBuckets!r}: expected a positive integer")
        if not isinstance(ifNotExists, bool):
            raise BadArgumentError(f"StoreTable.create: ifNotExists={ifNotExists!r}: expected True or False")
        addr = _explicit(locator, secretFile) or A.resolve(spark)
        client = A.client_for(addr)
        ns = full.rsplit(".", 1)[0] if "." in full else "default"
        if ns != "default":
            client.create_namespace(ns, if_not_exists=True)
        client.create_table(full, cols, primary_key=primaryKey, num_buckets=numBuckets, options=options,
                            if_not_exists=ifNotExists)
        return cls(client, full, spark, addr)

    # --- description ----------------------------------------------------------------

    @property
    def name(self) -> str:
        """The full name, ``namespace.table``."""
        return self._full

    @property
    def schema(self) -> Any:
        """The columns as a ``pyarrow.Schema`` (key columns NOT NULL)."""
        return self._schema.arrow_schema

    @property
    def columns(self) -> list[str]:
        return list(self._names)

    @property
    def primaryKey(self) -> list[str]:
        """Key column names (empty for a table with a hidden row id)."""
        return list(self._schema.primary_key)

    @property
    def indexes(self) -> list[dict[str, Any]]:
        """Secondary indexes: ``[{name, columns, kind}]``."""
        return [dict(ix) for ix in self._index_defs]

    def __repr__(self) -> str:
        return f"StoreTable({self._full!r}, columns={self._names}, primaryKey={self.primaryKey})"

    def refresh(self) -> "StoreTable":
        """Re-read the definition and placement from the locator. One round trip."""
        self._load(self._client.table(self._full, refresh=True))
        return self

    # --- checks ---------------------------------------------------------------------

    def _need_key(self, what: str) -> None:
        if not self._schema.primary_key:
            raise BadArgumentError(
                f"table {self._full!r} has no primary key, so {what} by key is not possible; "
                "use lookup/range or Spark SQL", table=self._full)

    def _key(self, key: Any, what: str) -> Any:
        pk = self._schema.primary_key
        if isinstance(key, Mapping):
            missing = [k for k in pk if k not in key]
            extra = [k for k in key if k not in pk]
            if missing or extra:
                raise BadArgumentError(
                    f"table {self._full!r}: {what}: a key dict needs exactly the key columns {pk}, got {sorted(key)}",
                    table=self._full)
            key = key[pk[0]] if len(pk) == 1 else tuple(key[k] for k in pk)
        if len(pk) > 1:
            if not isinstance(key, (tuple, list)) or len(key) != len(pk):
                raise BadArgumentError(
                    f"table {self._full!r}: {what}: the key has {len(pk)} columns ({', '.join(pk)}); "
                    f"give a tuple of {len(pk)} values, got {key!r}", table=self._full)
            key = tuple(key)
            if any(v is None for v in key):
                raise BadArgumentError(f"table {self._full!r}: {what}: key {key!r} has a NULL part", table=self._full)
        else:
            if key is None:
                raise BadArgumentError(f"table {self._full!r}: {what}: the key ({pk[0]}) cannot be None", table=self._full)
            if isinstance(key, (list, tuple, set, dict)):
                raise BadArgumentError(
                    f"table {self._full!r}: {what}: expected one value of key column {pk[0]!r}, got {key!r}",
                    table=self._full)
        return self._schema.coerce_key(key)

    def _keys(self, keys: Any, what: str) -> list[Any]:
        """One key or an iterable of keys -> a list of coerced keys."""
        pk = self._schema.primary_key
        many: list[Any]
        if isinstance(keys, (str, bytes, Mapping)) or keys is None:
            many = [keys]
        elif len(pk) > 1 and isinstance(keys, tuple) and len(keys) == len(pk) and not any(
                isinstance(v, (tuple, list)) for v in keys):
            many = [keys]
        elif hasattr(keys, "to_pylist"):  # Arrow array or column
            many = keys.to_pylist()
        elif hasattr(keys, "tolist") and not isinstance(keys, (int, float)):  # numpy / pandas
            many = keys.tolist()
        elif isinstance(keys, Iterable):
            many = list(keys)
        else:
            many = [keys]
        return [self._key(k, what) for k in many]

    def _column(self, name: Any, what: str) -> int:
        if not isinstance(name, str):
            raise BadArgumentError(f"table {self._full!r}: {what}: a column name is a string, got {name!r}", table=self._full)
        if name not in self._names:
            raise UnknownColumnError(
                f"table {self._full!r} has no column {name!r} (columns: {', '.join(self._names)})",
                table=self._full, column=name)
        return self._names.index(name)

    def _value(self, i: int, v: Any) -> Any:
        return None if v is None else self._schema.coercers[i](v)

    def _rows_in(self, rows: Any, what: str) -> Any:
        if rows is None:
            raise BadArgumentError(f"table {self._full!r}: {what}: no rows given (None)", table=self._full)
        if _is_spark_dataframe(rows):
            raise BadArgumentError(
                f"table {self._full!r}: {what} takes local rows; for a Spark DataFrame use "
                f"df.putInto({self._full!r}) (a distributed, atomic write)", table=self._full)
        if isinstance(rows, (str, bytes)):
            raise BadArgumentError(
                f"table {self._full!r}: {what}: rows must be dicts, tuples, pandas or Arrow, got a {type(rows).__name__}",
                table=self._full)
        return rows

    @staticmethod
    def _empty(rows: Any) -> bool:
        if isinstance(rows, (list, tuple)) and len(rows) == 0:
            return True
        n = getattr(rows, "num_rows", None)
        if n is None and hasattr(rows, "shape") and hasattr(rows, "columns"):
            n = rows.shape[0]
        return n == 0

    def _dict(self, row: Any) -> dict[str, Any] | None:
        return None if row is None else dict(zip(self._names, row))

    # --- reads ----------------------------------------------------------------------

    def get(self, key: Any) -> dict[str, Any] | None:
        """The row with this primary key as a dict, or None.

        ``key`` is the key value (a tuple for a composite key, or a dict of the key
        columns). One round trip to the owning server; O(1) there (key index).
        """
        self._need_key("get")
        row = self._client.get(self._full, self._key(key, "get"))
        return None if row is None else dict(zip(self._names, row))

    def getAll(self, keys: Iterable[Any]) -> list[dict[str, Any] | None]:
        """Rows for many keys, in order (None where absent).

        One round trip per server holding any of the keys; O(len(keys)).
        """
        self._need_key("getAll")
        if isinstance(keys, (str, bytes)) or not isinstance(keys, Iterable) and not hasattr(keys, "tolist"):
            raise BadArgumentError(f"table {self._full!r}: getAll: expected a list of keys, got {keys!r}", table=self._full)
        ks = self._keys(keys, "getAll")
        if not ks:
            return []
        return [self._dict(r) for r in self._client.get_many(self._full, ks)]

    def lookup(self, columnOrIndex: str, value: Any) -> list[dict[str, Any]]:
        """Rows whose column (or index columns) equal ``value``.

        ``columnOrIndex`` is a column name or the name of a secondary index (for an index
        on several columns, ``value`` is a tuple). One scan request per server; with an
        index on the column it examines only the matching rows (O(matches)), else O(rows).
        """
        from spark_ext.store import predicate as P

        if not isinstance(columnOrIndex, str):
            raise BadArgumentError(f"table {self._full!r}: lookup: expected a column or index name, got {columnOrIndex!r}",
                                   table=self._full)
        if columnOrIndex in self._names:
            cols = [columnOrIndex]
        else:
            ix = next((i for i in self._index_defs if i["name"] == columnOrIndex), None)
            if ix is None:
                raise UnknownColumnError(
                    f"table {self._full!r} has no column or index {columnOrIndex!r} (columns: {', '.join(self._names)}; "
                    f"indexes: {', '.join(i['name'] for i in self._index_defs) or 'none'})",
                    table=self._full, column=columnOrIndex)
            cols = list(ix["columns"])
        vals = [value] if len(cols) == 1 else value
        if len(cols) > 1 and (not isinstance(vals, (tuple, list)) or len(vals) != len(cols)):
            raise BadArgumentError(
                f"table {self._full!r}: lookup: index {columnOrIndex!r} has columns {cols}; give a tuple of {len(cols)} values",
                table=self._full)
        terms = []
        for c, v in zip(cols, vals):
            if v is None:
                raise BadArgumentError(f"table {self._full!r}: lookup: a value of None matches nothing (use toArrow and "
                                       "filter for IS NULL)", table=self._full)
            terms.append(P.Compare("=", c, self._value(self._names.index(c), v)))
        where = terms[0] if len(terms) == 1 else P.And(tuple(terms))
        return self._client.scan(self._full, where=where).to_pylist()

    def range(self, column: str, low: Any = None, high: Any = None) -> list[dict[str, Any]]:
        """Rows with ``low <= column <= high`` (a None bound is open), as dicts.

        One scan request per server; an ordered index on the column makes it
        O(log rows + matches), else O(rows).
        """
        i = self._column(column, "range")
        if low is None and high is None:
            raise BadArgumentError(f"table {self._full!r}: range({column!r}): give low, high or both "
                                   "(toArrow() reads everything)", table=self._full)
        lo, hi = self._value(i, low), self._value(i, high)
        if lo is not None and hi is not None:
            try:
                bad = lo > hi
            except TypeError:
                bad = False
            if bad:
                raise BadArgumentError(f"table {self._full!r}: range({column!r}): low {low!r} is above high {high!r}",
                                       table=self._full)
        return self._client.range(self._full, column, lo, hi).to_pylist()

    def count(self) -> int:
        """Number of rows. One request per server, O(1) each."""
        return int(self._client.count(self._full))

    def toArrow(self, columns: Sequence[str] | None = None) -> Any:
        """The whole table (or some columns) as a ``pyarrow.Table``: a consistent snapshot
        per server, streamed as Arrow batches; O(rows)."""
        if columns is not None:
            if isinstance(columns, str):
                columns = [columns]
            for c in columns:
                self._column(c, "toArrow")
        return self._client.scan(self._full, columns=list(columns) if columns is not None else None)

    def toPandas(self, columns: Sequence[str] | None = None) -> Any:
        """The table as a pandas DataFrame (through :meth:`toArrow`); O(rows)."""
        return self.toArrow(columns).to_pandas()

    def toDF(self, spark: Any = None) -> Any:
        """A Spark DataFrame of the table's current rows.

        Built on the driver from :meth:`toArrow` with ``spark.createDataFrame`` (no JVM
        bridge needed): a snapshot, not a live view. For a live, pushed-down view of a big
        table use ``spark.table("store.<name>")`` once the jar is configured.
        """
        spark = spark or self._spark
        if spark is None:
            try:
                from pyspark.sql import SparkSession

                spark = SparkSession.getActiveSession()
            except ImportError:
                spark = None
        if spark is None:
            raise BadArgumentError(
                f"table {self._full!r}: toDF needs a Spark session: use StoreTable.forName(spark, name) "
                "or toDF(spark)", table=self._full)
        from spark_ext.spark.types import spark_schema

        data = self.toArrow()
        return spark.createDataFrame(data, schema=spark_schema(data.schema))

    # --- writes ---------------------------------------------------------------------

    def put(self, rows: Any) -> int:
        """Upsert rows by primary key (dicts, tuples, lists of them, pandas or Arrow).

        Atomic: one request per server when the rows live on one server, else one staged
        transaction (stage, prepare, commit on each server). O(rows). Returns the row count.
        """
        self._need_key("put (upsert)")
        rows = self._rows_in(rows, "put")
        if self._empty(rows):
            return 0
        return int(self._client.put(self._full, rows))

    def insert(self, rows: Any) -> int:
        """Insert rows; an existing (or repeated) key fails the whole call, nothing written.

        Same round trips as :meth:`put`. Returns the row count.
        """
        rows = self._rows_in(rows, "insert")
        if self._empty(rows):
            return 0
        return int(self._client.insert(self._full, rows))

    def update(self, key: Any, values: Mapping[str, Any]) -> bool:
        """Set some columns of the row with this key; True if the row existed.

        One round trip to the owning server; O(columns set). A key column may be changed
        (the row moves; the new key must be free).
        """
        self._need_key("update")
        k = self._key(key, "update")
        if not isinstance(values, Mapping) or not values:
            raise BadArgumentError(
                f"table {self._full!r}: update: values must be a non-empty dict of column: value, got {values!r}",
                table=self._full)
        vals = {}
        for c, v in values.items():
            i = self._column(c, "update")
            if v is None and not self._schema.nullable[i]:
                raise BadArgumentError(f"table {self._full!r}: update: column {c!r} is NOT NULL", table=self._full)
            vals[c] = self._value(i, v)
        return int(self._client.update(self._full, [k], vals)) > 0

    def delete(self, keys: Any) -> int:
        """Delete by key: one key, or a list of keys. Returns how many rows existed.

        One round trip per server holding any of the keys (atomic across servers).
        """
        self._need_key("delete")
        ks = self._keys(keys, "delete")
        if not ks:
            return 0
        return int(self._client.delete(self._full, ks))

    def createIndex(self, indexName: str, columns: str | Sequence[str], kind: str = "hash") -> "StoreTable":
        """Create a secondary index (``kind`` "hash" for equality, "ordered" for ranges)."""
        if not isinstance(indexName, str) or not indexName:
            raise BadArgumentError(f"createIndex: bad index name {indexName!r}")
        cols = [columns] if isinstance(columns, str) else list(columns)
        for c in cols:
            self._column(c, "createIndex")
        if kind not in ("hash", "ordered"):
            raise BadArgumentError(f"createIndex: kind={kind!r}: expected 'hash' or 'ordered'")
        self._load(self._client.create_index(self._full, indexName, cols, kind))
        return self
