"""Parquet files read with pyarrow where Spark is not at hand (a training rank, a pandas UDF on an
executor): part files that the executors wrote, or the data files of a Delta snapshot as
`DataFrame.inputFiles()` names them. Any location the storage layer reaches."""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from reki_spark import storage


def read_parquet_files(uris: Iterable[str], columns: list[str] | None = None) -> pa.Table:
    """The files' rows as one table, in the order of `uris` (at least one)."""
    tables = []
    for uri in uris:
        filesystem, path = storage.filesystem(uri)
        tables.append(pq.read_table(path, columns=columns, filesystem=filesystem))
    return pa.concat_tables(tables)
