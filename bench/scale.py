"""Scale: the synthetic sample at 1e7 and 1e8 interactions (users = n/100, items = n/1000: 1e6
users and 1e5 items at 1e8) through the Spark stages `ingest`, `features`, `cluster` and
`prompts`, then one epoch of DIN (no knowledge: extraction is the LLM's cost, measured elsewhere)
on two TorchDistributor ranks with the sharded evaluation. Per stage: wall seconds and the peak
resident memory of the whole process tree (driver JVM, Python workers, training ranks); the growth
1e7 -> 1e8; and Spark's job profile of the slowest stage.

Resumable across sessions: every stage's measurement (its settings, commit, profile) goes into the
committed `bench/results/scale.json` as soon as it finishes, and a stage recorded with the same
settings is not measured again unless `--measure` names it. The lake under `runs/bench-scale/`
rarely outlives a session, so a stage that must run reruns (and re-measures) the stages it reads
first (`--reuse-lake` trusts instead the lake a finished run left, for its recorded stages).
Training reads only what ingest and features write, so it runs before the cluster stage:
the 1e8 ingest + features + training fit one session, clustering's 40 min another.
`--data-only` leaves training out.
Peak memory is the running maximum of the process tree during the stage: the JVM keeps heap it once
took, so a later stage inherits that much."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from bench.common import RESULTS, Measure, PeakMemory, save
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
        # Skew as real logs have it (issue 28): 30% light users with ~3 interactions each (some
        # cold), so empty user views occur, beside the heavy tail and Zipf popularity.
        "dataset.sample.light_users=0.3",
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


# In the order they run: training needs only ingest and features (knowledge `none`).
STAGES: dict[str, StageFunction] = {
    "ingest": DATA_STAGES["ingest"],
    "features": DATA_STAGES["features"],
    "train": train,
    "cluster": DATA_STAGES["cluster"],
    "prompts": DATA_STAGES["prompts"],
}
READS: dict[str, tuple[str, ...]] = {
    "ingest": (),
    "features": ("ingest",),
    "train": ("ingest", "features"),
    "cluster": ("ingest", "features"),
    "prompts": ("ingest", "features", "cluster"),
}


def _committed() -> dict[str, dict[str, Any]]:
    """Every recorded stage by size, from the committed results (earlier variants' keys included)."""
    path = RESULTS / "scale.json"
    if not path.exists():
        return {}
    return json.loads(path.read_text())["measures"][0]["details"]["sizes"]


def run_size(
    size: int,
    stages: dict[str, Any],
    wanted: list[str],
    measure: set[str],
    recorded: Callable[[], None],
    reuse_lake: bool = False,
) -> None:
    """Measures each wanted stage of one size that is not recorded under these settings (or that
    `measure` names) into `stages`, calling `recorded` after each; first reruns what it reads,
    unless the lake already holds it: this process's lake, or with `reuse_lake` the one a finished
    run left, whose stages recorded under these settings (and not named by `measure`) are trusted."""
    folder = WORK / f"n{size}"
    settings = _settings(size, folder)
    todo = [n for n in wanted if n in measure or stages.get(n, {}).get("settings") != settings]
    if not todo:
        return
    in_lake: set[str] = set()
    if reuse_lake and folder.exists():
        in_lake = {n for n, record in stages.items() if record.get("settings") == settings and n not in measure}
        # Only the lake: a finished training's checkpoints would make `train` resume, not train.
        shutil.rmtree(folder / "output", ignore_errors=True)
    else:
        shutil.rmtree(folder, ignore_errors=True)  # a lake left by a stopped run holds unknown stages
    config = load_config("jobs/configs/sample.yaml", settings)
    spark = get_spark(config)
    for name in todo:
        for needed in [*READS[name], name]:
            if needed not in in_lake:
                stages[needed] = {**_measure(spark, config, needed, STAGES[needed]), "settings": settings}
                in_lake.add(needed)
                recorded()
    spark.stop()


def _data_seconds(stages: dict[str, Any]) -> float:
    return sum(stages[name]["seconds"] for name in DATA_STAGES)


def main(sizes: list[int], with_training: bool, measure: set[str], reuse_lake: bool = False) -> None:
    if len(sizes) < 2:
        raise SystemExit("bench.scale needs two sizes to report a growth ratio (default: 1e7 1e8)")
    committed = _committed()
    results = {size: committed.get(str(size), {}) for size in sizes}
    wanted = [name for name in STAGES if with_training or name != "train"]
    for size in sorted(sizes):
        run_size(size, results[size], wanted, measure, lambda: _save(results), reuse_lake)
    _save(results)


def _save(results: dict[int, dict[str, Any]]) -> None:
    small, large = sorted(results)[-2:]
    if not all(name in results[size] for size in (small, large) for name in DATA_STAGES):
        return  # a growth ratio needs every data stage at both sizes
    slowest = max(DATA_STAGES, key=lambda name: results[large][name]["seconds"])
    measures = [
        Measure(
            f"data stages time growth {small:.0e} -> {large:.0e} interactions (x{large // small} data)",
            f"<= {large / small * 1.1:g}",
            [_data_seconds(results[large]) / _data_seconds(results[small])],
            {"sizes": {str(size): stages for size, stages in results.items()}, "slowest_stage": slowest},
        )
    ]
    trained = all("train" in results[size] for size in (small, large))
    if trained:
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
        "prompts. Peak memory: resident set of the whole process tree, per stage. Each record carries its commit."
        + ("" if trained else " Training not yet measured at both sizes."),
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sizes", nargs="*", type=float, default=[1e7, 1e8])
    parser.add_argument("--data-only", action="store_true", help="leave training out")
    parser.add_argument(
        "--measure", default="", help="comma-separated stages to measure again though recorded, e.g. train,cluster"
    )
    parser.add_argument(
        "--reuse-lake",
        action="store_true",
        help="keep the lake a finished run left under runs/bench-scale and trust its recorded stages "
        "(e.g. --measure cluster,prompts after the training run, without redoing ingest and features)",
    )
    arguments = parser.parse_args()
    measure = {name for name in arguments.measure.split(",") if name}
    if unknown := measure - set(STAGES):
        parser.error(f"unknown stages {sorted(unknown)}; known: {list(STAGES)}")
    main([int(size) for size in arguments.sizes], not arguments.data_only, measure, arguments.reuse_lake)
