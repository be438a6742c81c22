"""Where `reki features` spends its time at 1e7 interactions: Spark's own job and stage times from
its REST API (the Spark UI's data), grouped by the table write each job belongs to. A profile for
`ANALYSIS.md`, not a ratio: it reuses the 1e7 lake that `bench.spark_scaling` ingested."""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from collections import defaultdict
from datetime import datetime
from typing import Any

from pyspark import SparkContext

from bench.common import RESULTS
from reki_spark.config import load_config
from reki_spark.features import build_features
from reki_spark.session import get_spark

DEFAULT_LAKE = "runs/bench-spark/n10000000-r0"


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def _seconds(job: dict[str, Any]) -> float:
    def parse(stamp: str) -> datetime:
        return datetime.strptime(stamp.replace("GMT", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z")

    return (parse(job["completionTime"]) - parse(job["submissionTime"])).total_seconds()


def jobs_by_description(context: SparkContext, job_group: str | None = None) -> dict[str, dict[str, float]]:
    """The application's finished jobs (those of `job_group` only, when given) from Spark's REST
    API, summed per job description (`reki: overwrite <table>` for a table write), slowest first."""
    api = f"{context.uiWebUrl}/api/v1/applications/{context.applicationId}"
    stages = {stage["stageId"]: stage for stage in _get(f"{api}/stages?status=complete")}
    groups: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for job in _get(f"{api}/jobs?status=succeeded"):
        if job_group is not None and job.get("jobGroup") != job_group:
            continue
        group = groups[job.get("description") or "other (reads, counts, Delta log)"]
        group["jobs"] += 1
        group["job_seconds"] += _seconds(job)
        for stage_id in job["stageIds"]:
            stage = stages.get(stage_id)
            if stage is None:  # skipped: its output was reused from an earlier job
                continue
            group["stages"] += 1
            group["task_seconds"] += stage["executorRunTime"] / 1e3
            group["shuffle_write_mib"] += stage["shuffleWriteBytes"] / 2**20
    ranked = sorted(groups.items(), key=lambda item: -item[1]["job_seconds"])
    return {name: dict(values) for name, values in ranked}


def profile(lake: str) -> dict[str, Any]:
    config = load_config("jobs/configs/sample.yaml", [f"lake={lake}", "spark.shuffle_partitions=16", "spark.ui=true"])
    spark = get_spark(config)
    start = time.perf_counter()
    build_features(spark, config)
    wall = time.perf_counter() - start
    return {"lake": lake, "features_wall_s": wall, "by_write": jobs_by_description(spark.sparkContext)}


def main(lake: str = DEFAULT_LAKE) -> None:
    result = profile(lake)
    (RESULTS / "spark_stages.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"features wall {result['features_wall_s']:.1f} s")
    print("| jobs of | jobs | job s | task s | shuffle write MiB |\n|---|---|---|---|---|")
    for name, values in result["by_write"].items():
        print(
            f"| {name} | {values['jobs']:.0f} | {values['job_seconds']:.1f} | {values['task_seconds']:.1f} "
            f"| {values['shuffle_write_mib']:.0f} |"
        )


if __name__ == "__main__":
    main(*sys.argv[1:2])
