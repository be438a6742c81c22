"""Spark scaling: `reki ingest` + `reki features` on the synthetic generator at growing sizes (time
and peak resident memory of the Spark JVM plus its Python workers), the growth between the two
largest sizes, and the same feature aggregations in DuckDB as the single-machine reference."""

from __future__ import annotations

import shutil
import sys
import threading
import time
from pathlib import Path

import psutil

from bench.common import Measure, save
from reki_spark.config import load_config
from reki_spark.data.ingest import ingest
from reki_spark.features import build_features
from reki_spark.session import get_spark

WORK = Path("runs/bench-spark")


class PeakMemory:
    """Polls the resident memory of this process tree (driver, JVM, Python workers)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for process in [me, *me.children(recursive=True)]:
                try:
                    total += process.memory_info().rss
                except psutil.Error:
                    continue
            self.peak = max(self.peak, total)
            time.sleep(0.5)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


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
        build_features(spark, config)
        total_s = time.perf_counter() - start
    return {
        "size": size,
        "ingest_s": ingest_s,
        "features_s": total_s - ingest_s,
        "total_s": total_s,
        "peak_rss_gib": memory.peak / 2**30,
        "lake": str(lake),
    }


def _duckdb_features_s(lake: str) -> float:
    """The features stage's aggregations (positions, prompt windows, user histories, previous-5
    histories, first-seen filter, by-user split, leave-one-out targets) in DuckDB over the
    interactions' Delta snapshot files, into in-memory tables."""
    import duckdb
    from deltalake import DeltaTable

    files = DeltaTable(f"{Path(lake).resolve()}/interactions").file_uris()
    listed = ", ".join(f"'{f}'" for f in files)
    sql = f"""
    create or replace table positioned as
      select *, row_number() over (partition by user_id order by ts, item_id) - 1 as position,
             count(*) over (partition by user_id) as length
      from read_parquet([{listed}]);
    create or replace table windows as
      select *, greatest(0, least(floor((length + 1) / 2), 30, length - 2)) as window_size from positioned;
    create or replace table histories as
      select user_id, list(item_id order by position) as item_ids, list(rating order by position) as ratings,
             list(ts order by position) as timestamps, any_value(length) as length,
             any_value(window_size) as window_size
      from windows group by user_id;
    create or replace table samples as
      select user_id, item_id, ts, rating > 3 as label,
             list(item_id) over (partition by user_id order by position rows between 5 preceding and 1 preceding)
               as history,
             case when hash(user_id) % 100 < 80 then 'train' when hash(user_id) % 100 < 90 then 'valid'
                  else 'test' end as split
      from windows qualify min(position) over (partition by user_id, item_id) >= window_size;
    create or replace table sequences as
      select user_id, item_ids[greatest(1, len(item_ids) - 51):len(item_ids) - 2] as prefix,
             item_ids[len(item_ids) - 1] as valid_item_id, item_ids[len(item_ids)] as test_item_id
      from histories where len(item_ids) >= 3;
    """
    connection = duckdb.connect()
    connection.execute("SET threads TO 2")
    start = time.perf_counter()
    connection.execute(sql)
    return time.perf_counter() - start


def main(sizes: list[int], repetitions: int = 3) -> None:
    runs = {size: [_run(size, r) for r in range(repetitions)] for size in sizes}
    small, large = sorted(sizes)[-2:]
    growth = [b["total_s"] / a["total_s"] for a, b in zip(runs[small], runs[large], strict=False)]
    duck = []
    for run in runs[large]:
        duck_s = _duckdb_features_s(run["lake"])
        duck.append(run["features_s"] / duck_s)
        run["duckdb_features_s"] = duck_s
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
