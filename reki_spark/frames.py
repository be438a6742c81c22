"""Small DataFrame helpers shared by stages, kept free of any stage's logic."""

from __future__ import annotations

from itertools import accumulate
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F


def with_row_index(frame: DataFrame, name: str) -> DataFrame:
    """Adds a dense 0-based `name` following the frame's partition order (for a single text
    file: its line order), without a single-partition window and without pulling rows through
    Python the way `RDD.zipWithIndex` does.

    monotonically_increasing_id is (partition << 33) + position within the partition; adding each
    partition's starting offset, from one small count per partition, makes it dense. The frame
    must be deterministic (a file or table scan), because it is evaluated twice."""
    tagged = frame.select("*", F.monotonically_increasing_id().alias("_row_id"), F.spark_partition_id().alias("_pid"))
    # One row per partition.
    counts = sorted((row["_pid"], row["count"]) for row in tagged.groupBy("_pid").count().collect())
    offset_frame = frame.sparkSession.createDataFrame(starts(counts) or [(0, 0)], "_pid int, _offset long")
    position = F.col("_row_id") - F.shiftleft(F.col("_pid").cast("long"), 33)
    return (
        tagged.join(F.broadcast(offset_frame), "_pid")
        .withColumn(name, F.col("_offset") + position)
        .drop("_row_id", "_pid", "_offset")
    )


def starts(counts: list[tuple[Any, int]]) -> list[tuple[Any, int]]:
    """(key, count) pairs in order -> (key, how many rows the earlier keys hold): where each
    key's rows begin in one numbering of them all."""
    before = accumulate((count for _, count in counts), initial=0)  # one more than counts: zip drops the total
    return [(key, start) for (key, _), start in zip(counts, before, strict=False)]


def union_all(frames: list[DataFrame]) -> DataFrame:
    """Union by column name of one or more frames."""
    union = frames[0]
    for frame in frames[1:]:
        union = union.unionByName(frame)
    return union


# Internal Spark SQL setting; on by default since 3.5.
_CACHED_PLAN_UNDER_AQE = "spark.sql.optimizer.canChangeCachedPlanOutputPartitioning"


def persist_keeping_partitioning(frame: DataFrame) -> DataFrame:
    """Persists `frame` with its hash partitioning visible to the plans that read it. Spark 3.5
    plans a cached frame under adaptive execution, whose output partitioning is unknown, so every
    later window or aggregation on the same key shuffles the cached rows once more; the setting is
    off only while the cache is planned."""
    conf = frame.sparkSession.conf
    previous = conf.get(_CACHED_PLAN_UNDER_AQE, None)
    conf.set(_CACHED_PLAN_UNDER_AQE, "false")
    try:
        return frame.persist()
    finally:
        if previous is None:
            conf.unset(_CACHED_PLAN_UNDER_AQE)
        else:
            conf.set(_CACHED_PLAN_UNDER_AQE, previous)
