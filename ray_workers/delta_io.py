"""Reading the lake's Delta tables on the Ray side without Spark. Writes go through Spark's
MERGE (`reki_spark.lake.Lake`): delta-rs 1.6 MERGE writes Parquet whose embedded Arrow schema
uses view types that pyarrow 14 (pinned for petastorm) cannot open."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError
from pyspark.sql import types as T

from reki_spark import storage
from reki_spark.lake import SCHEMAS, absolute_root

_SIMPLE = {
    T.StringType: pa.string(),
    T.IntegerType: pa.int32(),
    T.LongType: pa.int64(),
    T.DoubleType: pa.float64(),
    T.FloatType: pa.float32(),
    T.BooleanType: pa.bool_(),
    T.TimestampType: pa.timestamp("us", tz="UTC"),
}


def _arrow_type(dtype: T.DataType) -> pa.DataType:
    if isinstance(dtype, T.ArrayType):
        return pa.list_(_arrow_type(dtype.elementType))
    return _SIMPLE[type(dtype)]


def arrow_schema(table: str) -> pa.Schema:
    return pa.schema([pa.field(f.name, _arrow_type(f.dataType), f.nullable) for f in SCHEMAS[table].fields])


class RsLake:
    """The lake's Delta tables, read through delta-rs's snapshot and pyarrow."""

    def __init__(self, root: str) -> None:
        self.root = absolute_root(root)

    def path(self, table: str) -> str:
        return f"{self.root}/{table}"

    def _table(self, table: str) -> DeltaTable:
        location = self.path(table)
        return DeltaTable(storage.delta_uri(location), storage_options=storage.delta_storage_options(location))

    def exists(self, table: str) -> bool:
        try:
            self._table(table)
        except TableNotFoundError:
            return False
        return True

    def read(self, table: str, columns: list[str] | None = None) -> pa.Table:
        files = self.files(table)
        schema = arrow_schema(table)
        if not files:
            return schema.empty_table().select(columns or schema.names)
        filesystem, _ = storage.filesystem(files[0])
        paths = [storage.filesystem(uri)[1] for uri in files]
        return pq.read_table(paths, columns=columns, schema=schema, filesystem=filesystem)

    def read_in_parts(self, table: str, columns: list[str] | None = None) -> Iterator[pa.Table]:
        """The table one data file at a time: what a single process can hold of a large table."""
        for uri in self.files(table):
            filesystem, path = storage.filesystem(uri)
            yield pq.read_table(path, columns=columns, schema=arrow_schema(table), filesystem=filesystem)

    def files(self, table: str) -> list[str]:
        """The URIs of the snapshot's live files: our tables use neither deletion vectors nor
        column mapping, so these files are exactly the table (never the raw folder, which holds
        removed files)."""
        if not self.exists(table):
            raise FileNotFoundError(f"Delta table {table!r} not found under {self.root}: run the stage that writes it")
        return self._table(table).file_uris()
