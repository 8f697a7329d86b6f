"""Normalize the row inputs users give (dicts, tuples, pandas, Arrow) for one table."""

from __future__ import annotations

from typing import Any, Sequence

import pyarrow as pa

from spark_ext.exceptions import BadArgumentError
from spark_ext.store.schema import TableSchema

#: Arrow inputs with at least this many rows take the vectorized (bulk) path.
BULK_MIN_ROWS = 128


def normalize_rows(schema: TableSchema, data: Any) -> list[list[Any]] | pa.RecordBatch:
    """Return coerced Python rows (user layout) or a conformed Arrow batch.

    Accepts one dict, one tuple, a list of dicts or tuples, a pandas DataFrame, a
    ``pyarrow.RecordBatch`` or ``pyarrow.Table``. Small Arrow inputs become Python rows
    (cheaper than the vectorized path for a handful of rows). O(rows x columns).
    """
    try:
        import pandas as pd

        if isinstance(data, pd.DataFrame):
            data = pa.Table.from_pandas(data, preserve_index=False)
    except ImportError:  # pragma: no cover - pandas is a dependency
        pass
    if isinstance(data, (pa.RecordBatch, pa.Table)):
        batch = schema.conform_batch(data)
        if batch.num_rows >= BULK_MIN_ROWS:
            return batch
        cols = [c.to_pylist() for c in batch.columns]
        return [schema.coerce_row(list(r)) for r in zip(*cols)]
    if isinstance(data, dict):
        return [schema.coerce_row(schema.dict_to_values(data))]
    if isinstance(data, tuple):
        return [schema.coerce_row(data)]
    if isinstance(data, (list, Sequence)) and not isinstance(data, (str, bytes)):
        out = []
        for r in data:
            if isinstance(r, dict):
                out.append(schema.coerce_row(schema.dict_to_values(r)))
            elif isinstance(r, (tuple, list)):
                out.append(schema.coerce_row(r))
            else:
                raise BadArgumentError(
                    f"table {schema.name!r}: a row must be a dict, tuple or list, got {type(r).__name__}",
                    table=schema.name,
                )
        return out
    raise BadArgumentError(
        f"table {schema.name!r}: cannot read rows from a {type(data).__name__}; "
        "give dicts, tuples, a pandas DataFrame or Arrow data",
        table=schema.name,
    )
