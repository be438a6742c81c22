"""The leakage mechanism at matched granularity (issue 30, item 4): do user groups built from whole
histories help for the wrong reason, with the grouping method and granularity held fixed?

    python -m bench.matched_granularity --data ../shared/data/movielens_1m

The product's clustering at the REKI release's group counts (`clustering.item_clusters=107`,
`user_clusters=135` per view), twice on one ML-1M lake (`jobs/configs/movielens-1m.yaml`, KAR's
order): once from the prompt windows, as the product clusters, and once, for this experiment only,
with every user's whole history in place of the window (the `prompt_windows` table overwritten by
all of a user's interactions, so the positive and negative views see the samples' own ratings,
test users' included: how the release's user groups were built). Items are clustered by their
text in both, so only the user groups differ. DIN trains `cluster_only` (a learned embedding of
the group ids, no LLM text) on seeds 1-5; `none` comes from the knowledge-effect table beside it
(`bench.knowledge_effect ml-1m`: the same lake settings and seeds; `none` reads no clusters). If
the whole-history groups beat the window groups, the gain comes from what the groups saw, not from
their number or the method. Results: bench/results/knowledge_effect/ml-1m/matched_granularity/
(metrics.json, comparison.json).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from pyspark.sql import functions as F

from bench.common import RESULTS
from bench.compare_runs import comparison_text
from bench.knowledge_effect import EXPERIMENTS, _config, _once, copy_lake
from reki_spark.data.ingest import ingest
from reki_spark.evaluation.metrics import METRICS_FILE
from reki_spark.evaluation.report import welch
from reki_spark.features import build_features
from reki_spark.knowledge.clustering import cluster_entities
from reki_spark.lake import PROMPT_WINDOWS, USER_HISTORIES, Lake
from reki_spark.session import get_spark
from reki_spark.training.train import train, write_metrics

# The release's group counts on ML-1M (its README): 107 item groups, 135 per user view.
RELEASE_COUNTS = ("clustering.item_clusters=107", "clustering.user_clusters=135")
GROUPINGS = ("windows", "histories")
TABLE = RESULTS / "knowledge_effect" / "ml-1m"
TARGET = TABLE / "matched_granularity"


def whole_histories(lake: Lake) -> None:
    """`prompt_windows` replaced by every interaction of every user (this experiment only)."""
    events = F.posexplode(F.arrays_zip("item_ids", "ratings", "timestamps")).alias("position", "event")
    rows = lake.read(USER_HISTORIES).select("user_id", events)
    lake.overwrite(
        rows.select(
            "user_id",
            F.col("event.item_ids").alias("item_id"),
            F.col("position").cast("int").alias("position"),
            F.col("event.ratings").alias("rating"),
            F.col("event.timestamps").alias("ts"),
        ),
        PROMPT_WINDOWS,
    )


def run(data: str, work: Path, seeds: tuple[int, ...]) -> None:
    experiment = EXPERIMENTS["ml-1m"]

    def config_of(grouping: str, arms: tuple[str, ...]):
        return _config(experiment, data, work / grouping, arms, ("din",), seeds, *RELEASE_COUNTS)

    base = config_of("base", ("none",))
    spark = get_spark(base)
    _once(spark, base, work / "base" / "marks", (("ingest", ingest), ("features", build_features)))
    fresh: list[dict] = []
    for grouping in GROUPINGS:
        config = config_of(grouping, ("cluster_only",))
        copy_lake(work / "base" / "lake", work / grouping / "lake")
        stages = (("cluster", cluster_entities),)
        if grouping == "histories":
            stages = (("whole-histories", lambda s, c: whole_histories(Lake(s, c.lake))), *stages)
        _once(spark, config, work / grouping / "marks", stages)
        train(spark, config)
        records = json.loads((Path(config.output) / METRICS_FILE).read_text())
        fresh += [{**r, "knowledge": f"cluster_only_{grouping}"} for r in records if r["model"] == "din"]
    TARGET.mkdir(parents=True, exist_ok=True)
    write_metrics(str(TARGET), fresh)
    compare()


def compare() -> None:
    """Welch tests of the three pairs from the committed records (`none`: the table's DIN runs),
    printed and written."""
    table = json.loads((TABLE / METRICS_FILE).read_text())
    none = [r for r in table if r["model"] == "din" and r["knowledge"] == "none"]
    records = json.loads((TARGET / METRICS_FILE).read_text()) + none
    auc = {arm: [r["auc"] for r in records if r["knowledge"] == arm] for arm in {r["knowledge"] for r in records}}
    pairs = [
        ("cluster_only_histories", "cluster_only_windows"),
        ("cluster_only_histories", "none"),
        ("cluster_only_windows", "none"),
    ]
    rows = []
    for arm, baseline in pairs:
        result = welch(auc[arm], auc[baseline])
        text = comparison_text(result)
        rows.append({"arm": arm, "baseline": baseline, **asdict(result), "verdict": result.verdict, "text": text})
        mean = {name: sum(auc[name]) / len(auc[name]) for name in (arm, baseline)}
        print(f"{arm} {mean[arm]:.4f} vs {baseline} {mean[baseline]:.4f}: {text}")
    (TARGET / "comparison.json").write_text(json.dumps(rows, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="the ML-1M folder (ratings.dat, movies.dat, users.dat)")
    parser.add_argument("--work", default="runs/matched-granularity")
    parser.add_argument("--seeds", default="1,2,3,4,5")
    args = parser.parse_args()
    run(args.data, Path(args.work), tuple(int(seed) for seed in args.seeds.split(",")))


if __name__ == "__main__":
    main()
