"""Ingestion (bronze -> silver): one loader per public format, then one place that types the
fields, checks them, drops exact duplicates and sends every rejected line to `quarantine` with
its reason. For every target table: rows read = clean + quarantined + duplicates dropped."""

from __future__ import annotations

from dataclasses import dataclass

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from reki_spark.config import DatasetConfig, RekiConfig
from reki_spark.data.amazon import load_amazon_2014, load_amazon_2018
from reki_spark.data.bronze import BronzeTables, blank_to_null
from reki_spark.data.movielens import load_movielens_1m, load_movielens_100k
from reki_spark.data.sample import generate_sample
from reki_spark.data.tables import load_tables
from reki_spark.data.titles import clean_title_udf
from reki_spark.frames import union_all
from reki_spark.lake import INTERACTIONS, ITEMS, QUARANTINE, USERS, Lake
from reki_spark.ledger import ledger_entry

CLEAN, QUARANTINED, DUPLICATE = "clean", "quarantined", "duplicate"
ENTITY_KEYS = {USERS: ["user_id"], ITEMS: ["item_id"], INTERACTIONS: ["user_id", "item_id", "ts"]}
# Timestamps are seconds since the epoch; later than 2100-01-01 means a unit or parsing error.
MAX_TIMESTAMP = 4_102_444_800


@dataclass(frozen=True)
class TableCounts:
    read: int
    clean: int
    quarantined: int
    duplicates: int

    def balanced(self) -> bool:
        return self.read == self.clean + self.quarantined + self.duplicates

    def summary(self, table: str) -> str:
        return (
            f"{table}: read {self.read:,} = clean {self.clean:,} + quarantined "
            f"{self.quarantined:,} + duplicates {self.duplicates:,}"
        )


def load_bronze(spark: SparkSession, dataset: DatasetConfig, seed: int) -> BronzeTables:
    if dataset.name == "sample":
        return generate_sample(spark, dataset.sample, seed)
    assert dataset.path is not None  # the config validator guarantees it
    if dataset.name == "movielens-100k":
        return load_movielens_100k(spark, dataset.path)
    if dataset.name == "movielens-1m":
        return load_movielens_1m(spark, dataset.path)
    if dataset.name == "table":
        return load_tables(spark, dataset)
    assert dataset.category is not None
    if dataset.name == "amazon-2014":
        return load_amazon_2014(spark, dataset.path, dataset.category)
    return load_amazon_2018(spark, dataset.path, dataset.category)


def ingest(spark: SparkSession, config: RekiConfig, merge: bool = False) -> dict[str, TableCounts]:
    """Read the configured dataset and (re)write `users`, `items`, `interactions`, `quarantine`.
    With `merge`, clean rows are merged by key instead (incremental refresh: only new keys are
    added, and the tables' history shows a MERGE)."""
    lake = Lake(spark, config.lake)

    def write(frame: DataFrame, table: str) -> None:
        if merge:
            lake.merge(frame, table, ENTITY_KEYS[table])
        else:
            lake.overwrite(frame, table)

    with ledger_entry(lake, "refresh-ingest" if merge else "ingest") as record:
        bronze = load_bronze(spark, config.dataset, config.seed)
        items = _classify(_typed_items(bronze.items), ENTITY_KEYS[ITEMS])
        users = _classify(_typed_users(bronze.users), ENTITY_KEYS[USERS]) if bronze.users is not None else None
        interactions = _classify(
            _typed_interactions(bronze.interactions, config.dataset, items, users), ENTITY_KEYS[INTERACTIONS]
        )
        classified = {ITEMS: items, INTERACTIONS: interactions}
        sources = {ITEMS: bronze.items, INTERACTIONS: bronze.interactions}
        if users is not None:
            classified[USERS], sources[USERS] = users, bronze.users
        counts = {table: _counts(table, sources[table], frame) for table, frame in classified.items()}

        for table, frame in classified.items():
            write(frame.where(F.col("_status") == CLEAN), table)
        if users is None:
            write(_users_from_interactions(lake.read(INTERACTIONS)), USERS)
        lake.overwrite(_quarantine_rows(classified), QUARANTINE)
        for frame in classified.values():
            frame.unpersist()

        record.rows_in = sum(c.read for c in counts.values())
        record.rows_out = sum(c.clean for c in counts.values())
        record.details = {"dataset": config.dataset.name, **{t: c.__dict__ for t, c in counts.items()}}
    for table, table_counts in counts.items():
        print(table_counts.summary(table))
    return counts


def _typed_items(bronze: DataFrame) -> DataFrame:
    reason = F.coalesce(F.col("_reason"), _missing("item_id"))
    return bronze.select(
        blank_to_null("item_id").alias("item_id"),
        clean_title_udf(blank_to_null("title")).alias("title"),
        F.col("year_text").cast("int").alias("year"),
        F.coalesce(F.col("categories"), F.array().cast("array<string>")).alias("categories"),
        blank_to_null("brand").alias("brand"),
        blank_to_null("description").alias("description"),
        F.col("price_text").cast("double").alias("price"),
        "_source_file",
        "_line",
        "_raw",
        reason.alias("_reason"),
    )


def _typed_users(bronze: DataFrame) -> DataFrame:
    reason = F.coalesce(F.col("_reason"), _missing("user_id"))
    return bronze.select(
        blank_to_null("user_id").alias("user_id"),
        blank_to_null("gender").alias("gender"),
        F.col("age_text").cast("int").alias("age"),
        blank_to_null("occupation").alias("occupation"),
        blank_to_null("location").alias("location"),
        "_source_file",
        "_line",
        "_raw",
        reason.alias("_reason"),
    )


def _typed_interactions(
    bronze: DataFrame, dataset: DatasetConfig, items: DataFrame, users: DataFrame | None
) -> DataFrame:
    rating_text = blank_to_null("rating_text")
    rating = rating_text.cast("double")
    ts_text = blank_to_null("ts_text")
    ts = ts_text.cast("double")
    reason = F.coalesce(
        F.col("_reason"),
        _missing("user_id"),
        _missing("item_id"),
        F.when(rating_text.isNotNull() & rating.isNull(), F.format_string("rating is not a number: %s", rating_text)),
        F.when(
            rating.isNotNull() & ~rating.between(dataset.rating_min, dataset.rating_max),
            F.format_string(f"rating %s outside [{dataset.rating_min:g}, {dataset.rating_max:g}]", rating_text),
        ),
        F.when(ts_text.isNull(), F.lit("missing timestamp")),
        F.when(ts.isNull() | (ts != F.floor(ts)), F.format_string("timestamp is not an integer: %s", ts_text)),
        F.when((ts < 0) | (ts > MAX_TIMESTAMP), F.format_string("timestamp out of range: %s", ts_text)),
    )
    typed = bronze.select(
        blank_to_null("user_id").alias("user_id"),
        blank_to_null("item_id").alias("item_id"),
        rating.alias("rating"),
        ts.cast("long").alias("ts"),
        F.col("_line").alias("source_line"),
        "_source_file",
        "_line",
        "_raw",
        reason.alias("_reason"),
    )
    typed = _flag_unknown(typed, items, "item_id")
    return _flag_unknown(typed, users, "user_id") if users is not None else typed


def _flag_unknown(frame: DataFrame, entities: DataFrame, key: str) -> DataFrame:
    known = entities.where(F.col("_status") == CLEAN).select(
        F.col(key).alias("_known_key"), F.lit(True).alias("_known")
    )
    joined = frame.join(known, frame[key] == known["_known_key"], "left")
    unknown = F.when(F.col("_known").isNull(), F.format_string(f"unknown {key}: %s", F.col(key)))
    return joined.withColumn("_reason", F.coalesce(F.col("_reason"), unknown)).drop("_known_key", "_known")


def _missing(column: str) -> Column:
    return F.when(F.col(column).isNull() | (F.trim(F.col(column)) == ""), F.lit(f"missing {column}"))


def _classify(typed: DataFrame, keys: list[str]) -> DataFrame:
    """Adds `_status`: quarantined (has a reason), duplicate (a later copy of a clean key), clean.
    Persisted, because counting and writing both read it."""
    valid = F.col("_reason").isNull()
    # Ranking only among valid rows keeps a quarantined first copy from hiding a good second one.
    rank = F.row_number().over(Window.partitionBy(*keys, valid).orderBy("_source_file", "_line"))
    status = F.when(~valid, QUARANTINED).when(rank > 1, DUPLICATE).otherwise(CLEAN)
    return typed.withColumn("_status", status).persist(StorageLevel.MEMORY_AND_DISK)


def _counts(table: str, bronze: DataFrame, classified: DataFrame) -> TableCounts:
    """Counts the source lines independently of the classification, so that a row lost or
    multiplied on the way (a bad join, a filter) fails the ingest instead of passing unseen."""
    # One row per status (clean, quarantined, duplicate).
    by_status = {row["_status"]: row["count"] for row in classified.groupBy("_status").count().collect()}
    counts = TableCounts(
        read=bronze.count(),
        clean=by_status.get(CLEAN, 0),
        quarantined=by_status.get(QUARANTINED, 0),
        duplicates=by_status.get(DUPLICATE, 0),
    )
    if not counts.balanced():
        raise RuntimeError(f"row accounting does not balance, nothing written: {counts.summary(table)}")
    return counts


def _quarantine_rows(classified: dict[str, DataFrame]) -> DataFrame:
    frames = [
        frame.where(F.col("_status") == QUARANTINED).select(
            F.lit(table).alias("target"),
            F.col("_source_file").alias("source_file"),
            F.col("_line").alias("line"),
            F.col("_raw").alias("raw"),
            F.col("_reason").alias("reason"),
        )
        for table, frame in classified.items()
    ]
    return union_all(frames)


def _users_from_interactions(interactions: DataFrame) -> DataFrame:
    none = F.lit(None).cast("string")
    return (
        interactions.select("user_id")
        .distinct()
        .select(
            "user_id",
            none.alias("gender"),
            F.lit(None).cast("int").alias("age"),
            none.alias("occupation"),
            none.alias("location"),
        )
    )
