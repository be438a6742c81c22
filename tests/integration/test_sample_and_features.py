"""The synthetic `sample` dataset and the features stage on it."""

from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from reki_spark.config import SampleSize
from reki_spark.data.ingest import ingest
from reki_spark.data.sample import GENRE_NAMES, drawn_user, planted_tastes
from reki_spark.features import build_features
from reki_spark.lake import (
    INTERACTIONS,
    ITEMS,
    LEDGER,
    PROMPT_WINDOWS,
    SAMPLES,
    SCHEMAS,
    SEQUENCES,
    USER_HISTORIES,
    USERS,
    Lake,
)
from tests.paths import FIXTURES

pytestmark = pytest.mark.integration
SMALL = ["dataset.sample.users=150", "dataset.sample.items=120", "dataset.sample.interactions=6000"]


@pytest.fixture()
def sample_lake(spark, make_config):
    config = make_config(*SMALL)
    ingest(spark, config)
    build_features(spark, config)
    return config, Lake(spark, config.lake)


def test_sample_sizes_and_attributes(sample_lake):
    _, lake = sample_lake
    assert lake.read(USERS).count() == 150
    assert lake.read(ITEMS).count() == 120
    interactions = lake.read(INTERACTIONS)
    # 6,000 draws, each (user, item) pair kept once: heavy users exhaust this small catalogue.
    assert 3000 < interactions.count() <= 6000
    assert interactions.count() == interactions.select("user_id", "item_id").distinct().count()
    user = lake.read(USERS).first()
    assert user["gender"] in {"F", "M"} and user["age"] and user["occupation"]
    items = lake.read(ITEMS).collect()
    assert len({r["title"] for r in items}) == 120  # titles are distinct
    assert all(r["brand"] and r["categories"][0] in GENRE_NAMES for r in items)


def test_sample_is_deterministic_for_a_seed(spark, make_config, sample_lake, tmp_path):
    _, lake = sample_lake
    other = make_config(*SMALL, f"lake={tmp_path / 'again'}")
    ingest(spark, other)
    again = Lake(spark, other.lake)
    for table in (USERS, ITEMS, INTERACTIONS):
        assert sorted(lake.read(table).collect()) == sorted(again.read(table).collect())
    reseeded = make_config(*SMALL, f"lake={tmp_path / 'seed7'}", "seed=7")
    ingest(spark, reseeded)
    assert sorted(Lake(spark, reseeded.lake).read(INTERACTIONS).collect()) != sorted(lake.read(INTERACTIONS).collect())


def test_item_genre_carries_rating_signal(sample_lake):
    """Latent tastes: a user's most-watched genre is rated higher than the genres they avoid."""
    _, lake = sample_lake
    rated = lake.read(INTERACTIONS).join(
        lake.read(ITEMS).select("item_id", F.col("categories")[0].alias("genre")), "item_id"
    )
    per_genre = rated.groupBy("user_id", "genre").agg(F.count("*").alias("n"), F.avg("rating").alias("mean"))
    top = per_genre.orderBy(F.desc("n")).dropDuplicates(["user_id"])
    top_mean = top.agg(F.avg("mean")).first()[0]
    overall = lake.read(INTERACTIONS).agg(F.avg("rating")).first()[0]
    assert top_mean > overall + 0.5


def test_sample_activity_and_popularity_are_skewed(sample_lake):
    """Heavy-tailed activity and Zipf popularity: the busiest user and the most watched item stand
    well above the median ones (with uniform draws both stay within 1.5x). Items saturate on this
    small sample (an item meets each of the 150 users at most once), hence the lower bar."""
    _, lake = sample_lake
    for key, above_median in (("user_id", 4), ("item_id", 2)):
        counts = sorted(r["count"] for r in lake.read(INTERACTIONS).groupBy(key).count().collect())
        assert counts[-1] > above_median * counts[len(counts) // 2], (key, counts[-1], counts[len(counts) // 2])


def test_planted_tastes_are_what_users_watch_and_like(sample_lake):
    """planted_tastes names the genres the generator planted: users watch their favourite genre
    most and rate it above their disliked one."""
    config, lake = sample_lake
    genre = lake.read(ITEMS).select("item_id", F.col("categories")[0].alias("genre"))
    rated = planted_tastes(lake.read(INTERACTIONS).join(genre, "item_id"), config.seed)
    favourite = rated.where(F.col("genre") == F.col("favourite"))
    disliked = rated.where(F.col("genre") == F.col("disliked"))
    # 45% of the draws against 8%; fewer land, as users exhaust this sample's 10 items a genre
    assert favourite.count() > 2 * disliked.count()
    assert favourite.agg(F.avg("rating")).first()[0] > disliked.agg(F.avg("rating")).first()[0] + 2


def test_features_tables_and_invariants(sample_lake):
    config, lake = sample_lake
    samples = lake.read(SAMPLES)
    assert samples.where(F.size("history_item_ids") > config.features.history_length).count() == 0
    assert samples.join(lake.read(PROMPT_WINDOWS).select("user_id", "item_id"), ["user_id", "item_id"]).count() == 0
    assert samples.groupBy("user_id").agg(F.countDistinct("split").alias("n")).where("n > 1").count() == 0
    assert samples.where(F.col("user_gender").isNull() | (F.size("item_categories") == 0)).count() == 0
    # Every history item carries its rating (the sample data is all explicit feedback).
    unrated = samples.where(F.size("history_ratings") != F.size("history_item_ids"))
    assert unrated.count() == 0 and samples.where(F.exists("history_ratings", lambda r: r.isNull())).count() == 0
    histories = lake.read(USER_HISTORIES)
    assert histories.count() == 150
    ordered = histories.where(F.col("timestamps") != F.array_sort("timestamps")).count()
    assert ordered == 0
    sequences = lake.read(SEQUENCES)
    assert sequences.count() == 150
    # The training prefix is the whole history but the two leave-one-out targets.
    with_length = sequences.join(histories.select("user_id", F.col("length").alias("all")), "user_id")
    assert with_length.where(F.col("length") != F.col("all") - 2).count() == 0
    # The last interaction of each user is its test target.
    last = histories.select("user_id", F.element_at("item_ids", -1).alias("last"))
    assert sequences.join(last, "user_id").where(F.col("test_item_id") != F.col("last")).count() == 0


def test_features_rerun_is_idempotent(spark, sample_lake):
    config, lake = sample_lake
    before = sorted(lake.read(SAMPLES).collect())
    build_features(spark, config)
    assert sorted(lake.read(SAMPLES).collect()) == before
    stages = [r["stage"] for r in lake.read(LEDGER).collect()]
    assert stages.count("features") == 2 and stages.count("ingest") == 1


def test_implicit_feedback_gets_sampled_negatives(spark, make_config, tmp_path):
    config = make_config(
        "dataset.name=amazon-2018",
        "dataset.category=Beauty",
        f"dataset.path={FIXTURES / 'amazon2018'}",
        "features.negatives_per_positive=3",
    )
    ingest(spark, config)
    build_features(spark, config)
    samples = Lake(spark, config.lake).read(SAMPLES)
    negatives = samples.where("is_sampled_negative")
    assert negatives.where(F.col("label") != 0).count() == 0
    seen = Lake(spark, config.lake).read(INTERACTIONS).select("user_id", "item_id")
    assert negatives.join(seen, ["user_id", "item_id"]).count() == 0


def test_an_item_seen_in_the_prompt_window_never_becomes_a_sample(spark, make_config):
    """Repeat consumption: u1 rates a b c d e | a f g f h (the window is the first five). The
    second `a` was seen in the window, so it is no sample; `f`, repeated after the window, is two.
    u2 rates a a: two interactions leave no window (both are the leave-one-out targets), so both
    are samples, the repeat too."""
    config = make_config()
    sequence = ["a", "b", "c", "d", "e", "a", "f", "g", "f", "h"]
    rows = [("u1", item, 4.0, 1_000 + position, position) for position, item in enumerate(sequence)]
    rows += [("u2", "a", 2.0, 1_000, 20), ("u2", "a", 5.0, 2_000, 21)]
    lake = _features_of(spark, config, rows)
    samples = sorted((r["user_id"], r["position"], r["item_id"]) for r in lake.read(SAMPLES).collect())
    assert samples == [("u1", 6, "f"), ("u1", 7, "g"), ("u1", 8, "f"), ("u1", 9, "h"), ("u2", 0, "a"), ("u2", 1, "a")]
    windows = sorted((r["position"], r["item_id"]) for r in lake.read(PROMPT_WINDOWS).collect())
    assert windows == list(enumerate(["a", "b", "c", "d", "e"]))


def _features_of(spark, config, interactions: list[tuple]) -> Lake:
    """Features built from these (user, item, rating, ts, source_line) rows alone."""
    lake = Lake(spark, config.lake)
    lake.overwrite(spark.createDataFrame(interactions, SCHEMAS[INTERACTIONS]), INTERACTIONS)
    users = [(user, "F", 30, "writer", None) for user in sorted({row[0] for row in interactions})]
    lake.overwrite(spark.createDataFrame(users, SCHEMAS[USERS]), USERS)
    items = [(item, item.upper(), 2000, ["Drama"], None, None, None) for item in sorted({r[1] for r in interactions})]
    lake.overwrite(spark.createDataFrame(items, SCHEMAS[ITEMS]), ITEMS)
    build_features(spark, config)
    return lake


@pytest.mark.parametrize(
    ("order", "expected"),
    [("timestamp", ["b", "c", "a", "d", "e", "f"]), ("kar", ["a", "b", "c", "e", "d", "f"])],
)
def test_kar_order_sorts_by_utc_day_and_keeps_the_file_order_within_a_day(spark, make_config, order, expected):
    """KAR sorts ML-1M by calendar date (UTC), stably: within a day the file's order stands, not
    the clock's. Day 0 holds a (file line 1, 23:00), b (line 2, 01:00), c (line 3, 02:00); day 1
    holds e (line 4, 00:00:05) and d (line 5, 00:00:01); f is on day 2 at file line 0."""
    day = 86_400
    clock = {"a": 23 * 3_600, "b": 3_600, "c": 2 * 3_600, "e": day + 5, "d": day + 1, "f": 2 * day}
    lines = {"f": 0, "a": 1, "b": 2, "c": 3, "e": 4, "d": 5}
    rows = [("u1", item, 4.0, clock[item], line) for item, line in lines.items()]
    lake = _features_of(spark, make_config(f"features.order={order}"), rows)
    (history,) = lake.read(USER_HISTORIES).collect()
    assert history["item_ids"] == expected
    window = [r["item_id"] for r in lake.read(PROMPT_WINDOWS).orderBy("position").collect()]
    assert window == expected[:3]  # the half rule: (6 + 1) // 2


def test_the_user_draw_reaches_every_user_at_a_million_users(spark):
    """3e6 draws over 1e6 users: a user of the upper half expects 1.7 draws (82% drawn at least
    once). One hash's 1,000,003 levels reach at most 58% of them (56% measured)."""
    size = SampleSize(users=1_000_000, items=1000, interactions=3_000_000)
    users = spark.range(size.interactions).select(drawn_user(42, size, F.col("id")).alias("user"))
    upper = users.where(F.col("user") >= size.users // 2).distinct().count()
    assert upper / (size.users // 2) > 0.75


def test_light_users_bring_cold_and_few_interaction_users_beside_heavy_ones(spark, make_config):
    """Half the users light (3 draws each on average): most of them hold 1-5 interactions, some
    none (cold users, in `users` only), while the heavy-tailed half reaches hundreds (the busiest
    user meets most of the 400 items)."""
    light = ["dataset.sample.light_users=0.5", "dataset.sample.light_interactions=3"]
    config = make_config("dataset.sample.users=2000", "dataset.sample.items=400", *light)
    ingest(spark, config)
    lake = Lake(spark, config.lake)
    counts = {r["user_id"]: r["count"] for r in lake.read(INTERACTIONS).groupBy("user_id").count().collect()}
    light_ids = [str(user) for user in range(1001, 2001)]
    few = sum(1 <= counts.get(user, 0) <= 5 for user in light_ids)
    cold = sum(user not in counts for user in light_ids)
    assert few > 700 and 10 < cold < 150  # Poisson(3): 81% with 1-5, 5% with none
    assert max(counts.values()) > 200 and lake.read(USERS).count() == 2000
