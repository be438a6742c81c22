"""Features and splits (`reki features`): time-ordered user histories, the prompt window that
feeds the LLM (and never becomes a sample), CTR samples with a by-user split, and leave-one-out
sequences. Reads `users`, `items`, `interactions`; writes `prompt_windows`, `user_histories`,
`samples`, `sequences`."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from reki_spark.config import FeaturesConfig, RekiConfig
from reki_spark.frames import persist_keeping_partitioning, with_row_index
from reki_spark.lake import (
    INTERACTIONS,
    ITEMS,
    PROMPT_WINDOWS,
    SAMPLES,
    SEQUENCES,
    USER_HISTORIES,
    USERS,
    Lake,
)
from reki_spark.ledger import ledger_entry

# The last two interactions are the leave-one-out valid and test targets: they stay out of the
# prompt window whatever the window rule says, so the LLM never sees a target.
RESERVED_TAIL = 2


def build_features(spark: SparkSession, config: RekiConfig) -> dict[str, int]:
    lake = Lake(spark, config.lake)
    settings = config.features
    with ledger_entry(lake, "features") as record:
        interactions = lake.read(INTERACTIONS)
        positioned = persist_keeping_partitioning(_positioned(interactions, settings))
        window_rows = positioned.where(F.col("position") < F.col("prompt_window_size"))
        lake.overwrite(window_rows, PROMPT_WINDOWS)
        lake.overwrite(_histories(positioned), USER_HISTORIES)
        samples = _samples(positioned, lake.read(ITEMS), settings, config.seed)
        lake.overwrite(_with_side_features(samples, lake.read(USERS), lake.read(ITEMS)), SAMPLES)
        lake.overwrite(_sequences(lake.read(USER_HISTORIES)), SEQUENCES)
        positioned.unpersist()
        counts = {table: lake.read(table).count() for table in (PROMPT_WINDOWS, USER_HISTORIES, SAMPLES, SEQUENCES)}
        record.rows_in = interactions.count()
        record.rows_out = counts[SAMPLES]
        record.details = counts
    print(
        f"features: {record.rows_in:,} interactions -> {counts[PROMPT_WINDOWS]:,} prompt-window rows, "
        f"{counts[SAMPLES]:,} samples, {counts[SEQUENCES]:,} sequences"
    )
    return counts


def prompt_window_size(length: Column, settings: FeaturesConfig) -> Column:
    window = settings.prompt_window
    by_rule = F.floor((length + 1) / 2) if window.rule == "half" else length
    return F.greatest(F.lit(0), F.least(by_rule, F.lit(window.cap), length - RESERVED_TAIL)).cast("int")


SECONDS_PER_DAY = 86_400


def interaction_order(settings: FeaturesConfig) -> list[Column]:
    """The sort keys of a user's interactions (`features.order`). Ties keep the source order: many
    MovieLens users rate several movies within one second."""
    # ts is in seconds since the epoch (ingest's range check), so the UTC day needs no time zone.
    first = F.floor(F.col("ts") / SECONDS_PER_DAY) if settings.order == "kar" else F.col("ts")
    return [first, F.col("source_line"), F.col("item_id")]


def _positioned(interactions: DataFrame, settings: FeaturesConfig) -> DataFrame:
    """Each interaction with its 0-based position in the user's order (`interaction_order`)."""
    order = Window.partitionBy("user_id").orderBy(*interaction_order(settings))
    length = F.count(F.lit(1)).over(Window.partitionBy("user_id"))
    return interactions.select(
        "*",
        (F.row_number().over(order) - 1).cast("int").alias("position"),
        length.cast("int").alias("length"),
    ).withColumn("prompt_window_size", prompt_window_size(F.col("length"), settings))


def _histories(positioned: DataFrame) -> DataFrame:
    ordered = F.array_sort(F.collect_list(F.struct("position", "item_id", "rating", "ts")))
    return (
        positioned.groupBy("user_id")
        .agg(
            ordered.alias("events"),
            F.first("length").alias("length"),
            F.first("prompt_window_size").alias("prompt_window_size"),
        )
        .select(
            "user_id",
            F.col("events.item_id").alias("item_ids"),
            F.col("events.rating").alias("ratings"),
            F.col("events.ts").alias("timestamps"),
            "length",
            "prompt_window_size",
        )
    )


def _samples(positioned: DataFrame, items: DataFrame, settings: FeaturesConfig, seed: int) -> DataFrame:
    """Interactions after the prompt window, each with the previous items as its history. One
    pass over the user-partitioned frame: both windows reuse its partitioning (no shuffle)."""
    previous = Window.partitionBy("user_id").orderBy("position").rowsBetween(-settings.history_length, -1)
    # History may reach back into the prompt window (it is input, not a label); an item seen in
    # the window and again later must not become a sample, though: a sample comes after the window
    # and its item is not one of the window's. Both windows partition by user alone, so one sort
    # by (user, position) serves them (a min over (user, item) would sort every row once more).
    window_items = F.collect_set(F.when(F.col("position") < F.col("prompt_window_size"), F.col("item_id")))
    # One list of (item, rating) structs: one window pass for both columns, and collect_list
    # would drop a null rating where a struct keeps its place.
    history = F.collect_list(F.struct("item_id", "rating")).over(previous)
    observed = (
        positioned.withColumn("history", history)
        .withColumn("history_item_ids", F.col("history.item_id"))
        .withColumn("history_ratings", F.col("history.rating"))
        .withColumn("window_items", window_items.over(Window.partitionBy("user_id")))
        .where(
            (F.col("position") >= F.col("prompt_window_size"))
            & ~F.array_contains(F.col("window_items"), F.col("item_id"))
        )
    )
    explicit_label = (F.col("rating") > settings.label_threshold).cast("int")
    positives = observed.select(
        "user_id",
        "item_id",
        "ts",
        "position",
        "rating",
        "history_item_ids",
        "history_ratings",
        F.coalesce(explicit_label, F.lit(1)).alias("label"),
        F.lit(False).alias("is_sampled_negative"),
    )
    if _has_implicit(positioned):
        implicit = positives.where(F.col("rating").isNull())
        negatives = _sampled_negatives(implicit, positioned, items, settings.negatives_per_positive, seed)
        positives = positives.unionByName(negatives)
    return positives.withColumn("split", _split_of(F.col("user_id"), settings, seed))


def _has_implicit(positioned: DataFrame) -> bool:
    """Whether any interaction lacks a rating. The negative branch filters only after its history
    windows, so on explicit data it would compute every sample's history a second time for nothing.
    Collects at most one row."""
    return bool(positioned.where(F.col("rating").isNull()).limit(1).collect())


def _sampled_negatives(
    implicit: DataFrame, positioned: DataFrame, items: DataFrame, ratio: int, seed: int
) -> DataFrame:
    """For implicit feedback: `ratio` random catalogue items per positive that the user never
    interacted with (collisions are dropped rather than redrawn, so the ratio is an upper bound)."""
    catalogue = with_row_index(items.select("item_id"), "item_index")
    size = items.count()
    draws = implicit.select(
        "user_id",
        "ts",
        "position",
        "history_item_ids",
        "history_ratings",
        F.explode(F.sequence(F.lit(1), F.lit(ratio))).alias("draw"),
    ).where(F.col("draw") <= ratio)  # sequence(1, 0) would count down to [1, 0]
    draws = draws.withColumn(
        "item_index", F.pmod(F.xxhash64(F.lit(seed), F.lit("negative"), "user_id", "position", "draw"), F.lit(size))
    )
    seen = positioned.select("user_id", "item_id").distinct()
    return (
        draws.join(F.broadcast(catalogue) if size < 5_000_000 else catalogue, "item_index")
        .join(seen, ["user_id", "item_id"], "left_anti")
        .dropDuplicates(["user_id", "item_id", "position"])
        .select(
            "user_id",
            "item_id",
            "ts",
            "position",
            F.lit(None).cast("double").alias("rating"),
            "history_item_ids",
            "history_ratings",
            F.lit(0).alias("label"),
            F.lit(True).alias("is_sampled_negative"),
        )
    )


def _split_of(user_id: Column, settings: FeaturesConfig, seed: int) -> Column:
    """train/valid/test by a seeded hash of the user: disjoint by user, stable across reruns."""
    draw = F.pmod(F.xxhash64(F.lit(seed), F.lit("split"), user_id), F.lit(1_000_000)) / 1_000_000.0
    split = settings.split
    return F.when(draw < split.train, "train").when(draw < split.train + split.valid, "valid").otherwise("test")


def _with_side_features(samples: DataFrame, users: DataFrame, items: DataFrame) -> DataFrame:
    user_features = users.select(
        "user_id",
        F.col("gender").alias("user_gender"),
        F.col("age").alias("user_age"),
        F.col("occupation").alias("user_occupation"),
    )
    item_features = items.select(
        "item_id",
        F.col("categories").alias("item_categories"),
        F.col("brand").alias("item_brand"),
        F.col("year").alias("item_year"),
    )
    return samples.join(user_features, "user_id", "left").join(item_features, "item_id", "left")


def _sequences(histories: DataFrame) -> DataFrame:
    """Leave-one-out: the last item is the test target, the one before it the valid target, the
    rest the training prefix. Users with fewer than 3 are left out. Built from the user histories
    (one row per user) rather than regrouping the interactions."""
    per_user = histories.select("user_id", F.col("item_ids").alias("all_items")).where(F.size("all_items") >= 3)
    prefix = F.slice("all_items", 1, F.size("all_items") - 2)
    return per_user.select(
        "user_id",
        prefix.alias("item_ids"),
        F.element_at("all_items", -2).alias("valid_item_id"),
        F.element_at("all_items", -1).alias("test_item_id"),
        F.size(prefix).alias("length"),
    )
