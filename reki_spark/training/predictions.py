"""Scored test rows, from the ranks to the `predictions` table: each evaluating rank writes its
shard's rows as one Parquet file under a staging folder, batch by batch, and Spark decodes the
integer codes and replaces the run's rows in the table. No scored row passes the driver."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from reki_spark import storage
from reki_spark.lake import PREDICTIONS, VOCAB, Lake
from reki_spark.training.data import vocab_codes

# Columns of a staged file: the row's user and item codes, then the task's scores.
CTR_COLUMNS = ("user_code", "item_code", "label", "score")
RANKING_COLUMNS = ("user_code", "item_code", "rank", "sampled_rank")


ScoredRowsSink = Callable[..., None]  # one batch: an array per column, in the task's column order


@contextmanager
def scored_rows(folder: str | None, rank: int, columns: tuple[str, ...]) -> Iterator[ScoredRowsSink | None]:
    """A sink for this rank's scored rows (per batch an array for each of `columns`), or None when
    the run keeps no predictions."""
    if folder is None:
        yield None
        return
    filesystem, path = storage.filesystem(storage.join(folder, f"rank-{rank}.parquet"))
    filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
    writer: pq.ParquetWriter | None = None

    def write(*arrays: object) -> None:
        nonlocal writer
        table = pa.table(dict(zip(columns, arrays, strict=True)))
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema, filesystem=filesystem)
        writer.write_table(table)

    try:
        yield write
    finally:
        if writer is not None:
            writer.close()


@contextmanager
def predictions_kept(lake: Lake, folder: str | None, identity: dict[str, Any]) -> Iterator[None]:
    """Around the scoring of one run (`identity`: task, model, knowledge, seed): files an earlier
    scoring left (maybe from more ranks) go first; afterwards the staged rows replace the run's
    rows in `predictions`. A finished run that was not scored again stages nothing and keeps its
    rows."""
    if folder is None:
        yield
        return
    storage.delete_tree(folder)
    yield
    if storage.list_files(folder, ".parquet"):
        lake.replace(_decoded_rows(lake, folder, identity), PREDICTIONS, _matching(identity))


def _decoded_rows(lake: Lake, folder: str, identity: dict[str, Any]) -> DataFrame:
    rows = lake.spark.read.parquet(storage.spark_uri(folder))
    vocab = lake.read(VOCAB)
    for field, code in (("user_id", "user_code"), ("item_id", "item_code")):
        rows = rows.join(vocab_codes(vocab, field, key=field).withColumnRenamed("index", code), code, "left")
    for column in sorted({*CTR_COLUMNS, *RANKING_COLUMNS} - set(rows.columns)):
        rows = rows.withColumn(column, F.lit(None))
    return rows.select("*", *[F.lit(value).alias(name) for name, value in identity.items()])


def _matching(identity: dict[str, Any]) -> str:
    return " AND ".join(f"{name} = {value!r}" for name, value in identity.items())
