"""Scale: the synthetic sample at 1e7 and 1e8 interactions (users = n/100, items = n/1000: 1e6
users and 1e5 items at 1e8) through the Spark stages `ingest`, `features`, `cluster` and
`prompts`, then one epoch of DIN (no knowledge: extraction is the LLM's cost, measured elsewhere)
on two TorchDistributor ranks with the sharded evaluation. Per stage: wall seconds and the peak
resident memory of the whole process tree (driver JVM, Python workers, training ranks); the growth
1e7 -> 1e8; and Spark's job profile of the slowest stage.

Each size is resumable: a finished stage's measurement is kept in `runs/bench-scale/n<size>/
stages.json` with the settings it ran under and the commit, and is not rerun while the settings
are the same, so a 1e8 run can span sessions; `--data-only` stops before training (its hours).
Peak memory is the running maximum of the process tree during the stage: the JVM keeps heap it once
took, so a later stage inherits that much."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from bench.common import Measure, PeakMemory, save
from bench.spark_stages import jobs_by_description
from reki_spark.cli import SPARK_STAGES as DATA_STAGES
from reki_spark.cli import StageFunction
from reki_spark.config import RekiConfig, load_config
from reki_spark.session import get_spark
from reki_spark.training.train import train

WORK = Path("runs/bench-scale")
# The Spark stages' partitions hold ~625k interactions at every size (16 at 1e7), as a user sizes
# spark.sql.shuffle.partitions to the data rather than keeping one number for every size.
ROWS_PER_PARTITION = 625_000


def _settings(size: int, folder: Path) -> list[str]:
    return [
        f"lake={folder / 'lake'}",
        f"output={folder / 'output'}",
        f"dataset.sample.interactions={size}",
        f"dataset.sample.users={size // 100}",
        f"dataset.sample.items={size // 1000}",
        f"spark.shuffle_partitions={max(16, size // ROWS_PER_PARTITION)}",
        "spark.driver_memory=12g",
        "spark.ui=true",
        "training.models=[din]",
        "training.knowledge=[none]",
        "training.seeds=[1]",
        "training.epochs=1",
        "training.num_processes=2",
        # Larger batches than the experiments' 1024: fewer steps per epoch at 5e7 samples.
        "training.batch_size=4096",
    ]


def _commit() -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()


def _measure(spark: SparkSession, config: RekiConfig, name: str, stage: StageFunction) -> dict[str, Any]:
    spark.sparkContext.setJobGroup(name, f"{name}: jobs outside a table write (k-means iterations, reads, counts)")
    with PeakMemory() as memory:
        start = time.perf_counter()
        result = stage(spark, config)
        seconds = time.perf_counter() - start
    record: dict[str, Any] = {"seconds": seconds, "peak_rss_gib": memory.peak / 2**30, "commit": _commit()}
    if name == "train":
        record["runs"] = result
    else:
        record["profile"] = jobs_by_description(spark.sparkContext, name)
    print(f"scale: {name} {seconds:,.0f} s, peak {record['peak_rss_gib']:.1f} GiB", flush=True)
    return record


def run_size(size: int, with_training: bool) -> dict[str, Any]:
    folder = WORK / f"n{size}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "stages.json"
    stages: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    settings = _settings(size, folder)
    config = load_config("jobs/configs/sample.yaml", settings)
    spark = get_spark(config)
    for name, stage in [*DATA_STAGES.items(), *([("train", train)] if with_training else [])]:
        if stages.get(name, {}).get("settings") != settings:
            stages[name] = {**_measure(spark, config, name, stage), "settings": settings}
            path.write_text(json.dumps(stages, indent=2) + "\n")
    spark.stop()
    return stages


def _data_seconds(stages: dict[str, Any]) -> float:
    return sum(stages[name]["seconds"] for name in DATA_STAGES)


def main(sizes: list[int], with_training: bool = True) -> None:
    if len(sizes) < 2:
        raise SystemExit("bench.scale needs two sizes to report a growth ratio (default: 1e7 1e8)")
    results = {size: run_size(size, with_training) for size in sizes}
    small, large = sorted(sizes)[-2:]
    slowest = max(DATA_STAGES, key=lambda name: results[large][name]["seconds"])
    measures = [
        Measure(
            f"data stages time growth {small:.0e} -> {large:.0e} interactions (x{large // small} data)",
            f"<= {large / small * 1.1:g}",
            [_data_seconds(results[large]) / _data_seconds(results[small])],
            {"sizes": {str(size): stages for size, stages in results.items()}, "slowest_stage": slowest},
        )
    ]
    if all("train" in results[size] for size in (small, large)):
        measures.append(
            Measure(
                f"DIN epoch + evaluation time growth {small:.0e} -> {large:.0e}",
                f"<= {large / small * 1.1:g}",
                [results[large]["train"]["seconds"] / results[small]["train"]["seconds"]],
            )
        )
    save(
        "scale",
        measures,
        notes="One run per size (the 1e8 run takes hours on 2 cores). Data stages: ingest, features, cluster, "
        "prompts. Peak memory: resident set of the whole process tree, per stage."
        + ("" if len(measures) > 1 else " Training not yet measured at both sizes (run without --data-only)."),
    )


if __name__ == "__main__":
    arguments = [arg for arg in sys.argv[1:] if arg != "--data-only"]
    main([int(float(arg)) for arg in arguments] or [10_000_000, 100_000_000], "--data-only" not in sys.argv)
