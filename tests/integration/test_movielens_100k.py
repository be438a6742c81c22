"""The acceptance checks on the real MovieLens-100k (RecBole atomic files from ../shared/data):
ingest into Delta, idempotent reruns, 50 corrupted lines quarantined, features and splits."""

from __future__ import annotations

import random
import shutil

import pytest
from deltalake import DeltaTable as RustDeltaTable
from pyspark.sql import functions as F

from reki_spark.data.ingest import ingest
from reki_spark.features import build_features
from reki_spark.lake import INTERACTIONS, PROMPT_WINDOWS, QUARANTINE, SAMPLES, SEQUENCES, USERS, Lake

pytestmark = pytest.mark.integration


@pytest.fixture()
def ml_config(make_config, ml100k_folder):
    return make_config("dataset.name=movielens-100k", f"dataset.path={ml100k_folder}")


def test_ingest_is_idempotent_and_readable_by_delta_rs(spark, ml_config):
    lake = Lake(spark, ml_config.lake)
    ingest(spark, ml_config)
    first = lake.read(INTERACTIONS)
    assert first.count() == 100_000
    snapshot = sorted(first.collect())
    ingest(spark, ml_config)
    assert sorted(lake.read(INTERACTIONS).collect()) == snapshot
    assert lake.info(INTERACTIONS).version == 1  # two versions in the history, one row set
    rust = RustDeltaTable(lake.path(INTERACTIONS))
    assert rust.to_pyarrow_table().num_rows == 100_000
    assert lake.read(QUARANTINE).count() == 0


def _corrupt(lines: list[str], count: int, seed: int) -> list[str]:
    """Corrupt `count` distinct data lines in several ways, each of which must be quarantined."""
    ways = [
        lambda f: [f[0], f[1], "x", f[3]],  # rating not a number
        lambda f: [f[0], f[1], "11", f[3]],  # rating out of range
        lambda f: f[:3],  # truncated line
        lambda f: [f[0], "999999", f[2], f[3]],  # unknown item
        lambda f: [f[0], f[1], f[2], "soon"],  # bad timestamp
        lambda f: ["", f[1], f[2], f[3]],  # missing user id
    ]
    chosen = random.Random(seed).sample(range(1, len(lines)), count)
    for position, line_index in enumerate(chosen):
        fields = lines[line_index].rstrip("\n").split("\t")
        lines[line_index] = "\t".join(ways[position % len(ways)](fields)) + "\n"
    return lines


def test_fifty_corrupted_lines_are_quarantined(spark, make_config, ml100k_folder, tmp_path):
    folder = tmp_path / "ml-100k"
    shutil.copytree(ml100k_folder, folder)
    inter = folder / "ml-100k.inter"
    inter.write_text("".join(_corrupt(inter.read_text().splitlines(keepends=True), 50, seed=3)))
    config = make_config("dataset.name=movielens-100k", f"dataset.path={folder}")
    counts = ingest(spark, config)
    lake = Lake(spark, config.lake)
    assert lake.read(QUARANTINE).where(F.col("target") == INTERACTIONS).count() == 50
    assert lake.read(INTERACTIONS).count() == 99_950
    assert counts[INTERACTIONS].read == 100_000
    reasons = {r["reason"].split(":")[0] for r in lake.read(QUARANTINE).collect()}
    assert {"rating is not a number", "unknown item_id", "timestamp is not an integer", "missing user_id"} <= reasons


def test_features_give_disjoint_splits_without_prompt_window_pairs(spark, ml_config):
    ingest(spark, ml_config)
    counts = build_features(spark, ml_config)
    lake = Lake(spark, ml_config.lake)
    samples = lake.read(SAMPLES)
    assert {r["split"] for r in samples.select("split").distinct().collect()} == {"train", "valid", "test"}
    assert samples.groupBy("user_id").agg(F.countDistinct("split").alias("n")).where("n > 1").count() == 0
    window_pairs = lake.read(PROMPT_WINDOWS).select("user_id", "item_id")
    assert samples.join(window_pairs, ["user_id", "item_id"]).count() == 0
    assert counts[SEQUENCES] == lake.read(USERS).count() == 943
    assert lake.read(SEQUENCES).select("user_id").distinct().count() == 943
    # ML-100k users have at least 20 ratings, so every window is n = min((len + 1) // 2, 30).
    sizes = lake.read(PROMPT_WINDOWS).groupBy("user_id").count()
    lengths = lake.read(INTERACTIONS).groupBy("user_id").agg(F.count("*").alias("length"))
    wrong = sizes.join(lengths, "user_id").where(
        F.col("count") != F.least(F.floor((F.col("length") + 1) / 2), F.lit(30))
    )
    assert wrong.count() == 0
    # Every interaction is either in the window or a sample (ML-100k has no repeated pairs).
    assert samples.count() + lake.read(PROMPT_WINDOWS).count() == 100_000
    positive_rate = samples.agg(F.avg("label")).first()[0]
    assert 0.5 < positive_rate < 0.6  # ML-100k: about 55% of ratings are 4 or 5


def test_collective_prompts_are_at_most_ten_percent_of_individual(spark, ml_config):
    from reki_spark.knowledge.clustering import cluster_entities
    from reki_spark.knowledge.prompts import build_prompts

    ingest(spark, ml_config)
    build_features(spark, ml_config)
    cluster_entities(spark, ml_config)
    details = build_prompts(spark, ml_config)
    assert details["individual_prompts"] == 943 + 1682
    # ceil(1682 / 80) item clusters and ceil(943 / 100) per user view, as configured; a user
    # cluster gets a prompt when its members have feedback of that view
    assert details["collective_prompts"] == 22 + 2 * 10
    assert 22 + 10 <= details["prompts"] <= details["collective_prompts"]
    assert details["prompts"] <= 0.10 * details["individual_prompts"]
