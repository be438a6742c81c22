"""Bronze layer: raw source lines with their provenance, and the parsed-but-untyped frames that
loaders hand to ingestion. Everything stays in Spark so that files of billions of lines work.

A loader returns, per target table, a frame whose columns are the target's fields as text plus
`_source_file`, `_line`, `_raw` and `_reason` (null when the line parsed). Typing, range checks and
quarantine happen once, in `reki_spark.data.ingest`, whatever the source format."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from reki_spark import storage
from reki_spark.frames import with_row_index

PROVENANCE = ["_source_file", "_line", "_raw", "_reason"]
REPLACEMENT_CHAR = "\ufffd"


@dataclass(frozen=True)
class BronzeTables:
    users: DataFrame | None
    items: DataFrame
    interactions: DataFrame
    # False where the dataset has no user file and users are derived from interactions.
    users_from_file: bool = True


def read_lines(spark: SparkSession, path: str, encoding: str = "UTF-8", skip_header: bool = False) -> DataFrame:
    """One row per line of `path` (.gz read transparently): `_source_file`, `_line` (1-based),
    `_raw`, and `_reason` set where the bytes are not valid in `encoding`."""
    # Spark's text source keeps each line's raw bytes; decoding them ourselves is what makes
    # latin-1 files (MovieLens) readable and undecodable UTF-8 detectable.
    text = spark.read.text(path).select(F.decode(F.col("value").cast("binary"), encoding).alias("_raw"))
    numbered = with_row_index(text, "_line").withColumn("_line", F.col("_line") + 1)
    if skip_header:
        numbered = numbered.where(F.col("_line") > 1)
    undecodable = F.when(F.instr("_raw", REPLACEMENT_CHAR) > 0, F.lit(f"bytes not valid {encoding}"))
    return numbered.select(F.lit(Path(path).name).alias("_source_file"), "_line", "_raw", undecodable.alias("_reason"))


def split_fields(lines: DataFrame, separator: str, names: list[str], min_fields: int | None = None) -> DataFrame:
    """Split delimited lines into text columns `names`; a wrong field count sets `_reason`."""
    parts = F.split(F.col("_raw"), regex_quote(separator), -1)
    expected = len(names)
    low = min_fields if min_fields is not None else expected
    bad_count = (F.size(parts) < low) | (F.size(parts) > expected)
    reason = F.coalesce(
        F.col("_reason"),
        F.when(
            bad_count,
            F.format_string(
                f"expected {expected} fields separated by %s, got %d", F.lit(repr(separator)), F.size(parts)
            ),
        ),
    )
    fields = [F.trim(F.get(parts, i)).alias(name) for i, name in enumerate(names)]
    return lines.select(*fields, "_source_file", "_line", "_raw", reason.alias("_reason"))


def regex_quote(separator: str) -> str:
    return "".join(f"\\{c}" if not c.isalnum() else c for c in separator)


def blank_to_null(column: str) -> Column:
    return F.when(F.trim(F.col(column)) == "", None).otherwise(F.col(column))


def find_file(folder: str, *candidates: str) -> str:
    """The first of `candidates` present in `folder` (a path or any URI the storage layer reaches),
    as Spark reads it, or a clear error naming all of them."""
    for name in candidates:
        location = storage.join(folder, name)
        if storage.exists(location):
            return storage.spark_uri(location)
    raise FileNotFoundError(f"none of {', '.join(candidates)} found in {folder}")
