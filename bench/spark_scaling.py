"""Spark scaling: `reki ingest` + `reki features` on the synthetic generator at growing sizes (time
and peak resident memory of the Spark JVM plus its Python workers), the growth between the two
largest sizes, and the features stage's same work in DuckDB (`bench.duckdb_features`: the same
tables, written as Parquet, with equal row counts checked) as the single-machine reference."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from bench.common import Measure, PeakMemory, save
from bench.duckdb_features import duckdb_features
from reki_spark.config import load_config
from reki_spark.data.ingest import ingest
from reki_spark.features import build_features
from reki_spark.session import get_spark

WORK = Path("runs/bench-spark")


def _run(size: int, repetition: int) -> dict:
    lake = WORK / f"n{size}-r{repetition}"
    shutil.rmtree(lake, ignore_errors=True)
    users = max(100, size // 50)
    config = load_config(
        "jobs/configs/sample.yaml",
        [
            f"lake={lake}",
            f"dataset.sample.interactions={size}",
            f"dataset.sample.users={users}",
            f"dataset.sample.items={max(120, users // 2)}",
            "spark.shuffle_partitions=16",
        ],
    )
    spark = get_spark(config)
    with PeakMemory() as memory:
        start = time.perf_counter()
        ingest(spark, config)
        ingest_s = time.perf_counter() - start
        counts = build_features(spark, config)
        total_s = time.perf_counter() - start
    return {
        "size": size,
        "ingest_s": ingest_s,
        "features_s": total_s - ingest_s,
        "total_s": total_s,
        "peak_rss_gib": memory.peak / 2**30,
        "counts": counts,
        "lake": str(lake),
    }


def main(sizes: list[int], repetitions: int = 3) -> None:
    runs = {size: [_run(size, r) for r in range(repetitions)] for size in sizes}
    small, large = sorted(sizes)[-2:]
    growth = [b["total_s"] / a["total_s"] for a, b in zip(runs[small], runs[large], strict=False)]
    # Features settings and seed are the sample config's at every size.
    settings = load_config("jobs/configs/sample.yaml")
    duck = []
    for run in runs[large]:
        reference = duckdb_features(run["lake"], f"{run['lake']}-duckdb", settings.features, settings.seed, threads=2)
        if reference["counts"] != run["counts"]:
            raise RuntimeError(f"not the same work: DuckDB wrote {reference['counts']}, Spark {run['counts']}")
        duck.append(run["features_s"] / reference["seconds"])
        run["duckdb_features_s"] = reference["seconds"]
    save(
        "spark_scaling",
        [
            Measure(f"time growth {small:.0e} -> {large:.0e} interactions (x10 data)", "<= 11", growth, {"runs": runs}),
            Measure(f"Spark features / DuckDB features at {large:.0e}", "<= 3", duck),
        ],
        notes=f"Sizes {sizes}; repetitions per size: "
        + ", ".join(f"{s:.0e}: {len(r)}" for s, r in runs.items())
        + ". Peak memory is the resident set of the whole process tree (local mode: driver = executors).",
    )


if __name__ == "__main__":
    main([int(float(arg)) for arg in sys.argv[1:]] or [100_000, 1_000_000, 10_000_000])
