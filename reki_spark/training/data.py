"""The training views, assembled in Spark: vocabularies (`vocab` table), integer-encoded CTR samples
and sequences whose train split Petastorm feeds to PyTorch, and the frozen knowledge tables the
model holds (knowledge vectors never travel with the samples)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from reki_spark.frames import union_all, with_row_index
from reki_spark.lake import (
    ITEM_CLUSTERS,
    ITEMS,
    KNOWLEDGE_VECTORS,
    SAMPLES,
    SEQUENCES,
    USER_CLUSTERS,
    USER_HISTORIES,
    USERS,
    VOCAB,
    Lake,
)
from reki_spark.models.base import CTR_FIELDS

USER_VIEWS = ["positive", "negative"]


def build_vocab(lake: Lake) -> DataFrame:
    """(field, value, index) with index 1.. in value order; 0 is padding and unknown values. User
    and item ids come from the entity tables, so every entity has an index even without samples."""
    samples = lake.read(SAMPLES)
    sources = {"user_id": lake.read(USERS).select("user_id"), "item_id": lake.read(ITEMS).select("item_id")}
    frames = []
    for field in CTR_FIELDS:
        source = sources.get(field, samples.select(field))
        values = source.select(F.col(field).cast("string").alias("value")).where(F.col("value").isNotNull())
        ordered = values.distinct().orderBy("value")
        frames.append(
            with_row_index(ordered, "index").select(
                F.lit(field).alias("field"), "value", (F.col("index") + 1).cast("int").alias("index")
            )
        )
    lake.overwrite(union_all(frames), VOCAB)
    return lake.read(VOCAB)


def cardinalities(vocab: DataFrame) -> dict[str, int]:
    sizes = {row["field"]: row["n"] + 1 for row in vocab.groupBy("field").agg(F.max("index").alias("n")).collect()}
    return {field: sizes.get(field, 1) for field in CTR_FIELDS}


def encode_field(frame: DataFrame, vocab: DataFrame, field: str, column: Column, alias: str) -> DataFrame:
    """Adds `alias`: the vocabulary code of `column` as values of `field` (0 where unknown)."""
    codes = vocab.where(F.col("field") == field).select(F.col("value").alias("_v"), F.col("index").alias(alias))
    joined = frame.join(codes, column.cast("string") == F.col("_v"), "left").drop("_v")
    return joined.withColumn(alias, F.coalesce(F.col(alias), F.lit(0)))


def _padded_columns(items: Column, length: int, prefix: str) -> list[Column]:
    """A left-padded array of indices as `length` scalar columns (Petastorm feeds scalars)."""
    # slice() with a start before the array's beginning returns nothing, hence the greatest().
    tail = F.slice(items, F.greatest(F.size(items) - length + 1, F.lit(1)), length)
    padded = F.concat(F.array_repeat(F.lit(0), F.greatest(F.lit(0), length - F.size(tail))), tail)
    return [F.element_at(padded, i + 1).cast("int").alias(f"{prefix}{i}") for i in range(length)]


def _item_indices(frame: DataFrame, vocab: DataFrame, key: str, array_column: str, alias: str) -> DataFrame:
    """Replaces an array of item ids with the array of their indices, order kept."""
    items = vocab.where(F.col("field") == "item_id").select(F.col("value").alias("_item"), F.col("index"))
    exploded = frame.select(key, F.posexplode(array_column).alias("_pos", "_item"))
    mapped = exploded.join(items, "_item", "left").select(key, "_pos", F.coalesce("index", F.lit(0)).alias("index"))
    collected = mapped.groupBy(key).agg(
        F.array_sort(F.collect_list(F.struct("_pos", "index"))).getField("index").alias(alias)
    )
    return frame.join(collected, key, "left").withColumn(alias, F.coalesce(alias, F.array().cast("array<int>")))


def ctr_view(lake: Lake, vocab: DataFrame, history_length: int) -> DataFrame:
    """Integer-coded samples: one column per field, hist0..hist{L-1}, label (float), split."""
    samples = lake.read(SAMPLES).withColumn("_sample", F.monotonically_increasing_id())
    encoded = samples
    for field in CTR_FIELDS:
        encoded = encode_field(encoded, vocab, field, F.col(field), f"{field}__idx")
    encoded = _item_indices(encoded, vocab, "_sample", "history_item_ids", "history_idx")
    return encoded.select(
        *[F.col(f"{field}__idx").cast("int").alias(field) for field in CTR_FIELDS],
        *_padded_columns(F.col("history_idx"), history_length, "hist"),
        F.col("label").cast("float").alias("label"),
        "split",
    )


def sequence_view(lake: Lake, vocab: DataFrame, max_length: int) -> DataFrame:
    """Per user: the training sequence (last L+1 prefix items), the valid and test inputs and
    targets, and the full history length (for excluding seen items when ranking)."""
    sequences = lake.read(SEQUENCES)
    encoded = encode_field(sequences, vocab, "user_id", F.col("user_id"), "user")
    encoded = encode_field(encoded, vocab, "item_id", F.col("valid_item_id"), "valid_target")
    encoded = encode_field(encoded, vocab, "item_id", F.col("test_item_id"), "test_target")
    encoded = _item_indices(encoded, vocab, "user_id", "item_ids", "prefix")
    with_valid = F.concat("prefix", F.array(F.col("valid_target").cast("int")))
    return encoded.select(
        F.col("user").cast("int").alias("user"),
        *_padded_columns(F.col("prefix"), max_length + 1, "seq"),
        *_padded_columns(F.col("prefix"), max_length, "valid_in"),
        *_padded_columns(with_valid, max_length, "test_in"),
        F.col("valid_target").cast("int").alias("valid_target"),
        F.col("test_target").cast("int").alias("test_target"),
    )


def seen_items(lake: Lake, vocab: DataFrame) -> pd.DataFrame:
    """Per user index: the item indices seen before the valid target and before the test target."""
    histories = encode_field(lake.read(USER_HISTORIES), vocab, "user_id", F.col("user_id"), "user")
    histories = _item_indices(histories, vocab, "user_id", "item_ids", "items")
    before_valid = F.slice("items", 1, F.greatest(F.lit(0), F.size("items") - 2))
    before_test = F.slice("items", 1, F.greatest(F.lit(0), F.size("items") - 1))
    return histories.select(
        F.col("user").alias("user"), before_valid.alias("before_valid"), before_test.alias("before_test")
    ).toPandas()


@dataclass
class KnowledgeArrays:
    """The numpy content of `models.KnowledgeTables` (row 0 is the zero vector)."""

    item_vectors: np.ndarray
    item_rows: np.ndarray
    user_vectors: np.ndarray
    user_rows: np.ndarray


def knowledge_arrays(lake: Lake, vocab: DataFrame, mode: str, encoder_id: str) -> KnowledgeArrays:
    vectors = lake.read(KNOWLEDGE_VECTORS).where((F.col("source") == mode) & (F.col("encoder_id") == encoder_id))
    if vectors.isEmpty():
        raise FileNotFoundError(
            f"no {mode} knowledge vectors from encoder {encoder_id}: run `reki encode` with knowledge.mode={mode}"
        )
    sizes = cardinalities(vocab)
    item_vectors, item_keys = _vector_rows(vectors.where(F.col("entity_type") == "item"))
    user_vectors, user_keys = _vector_rows(vectors.where(F.col("entity_type") == "user"))
    items = vocab.where(F.col("field") == "item_id").select(F.col("value").alias("item_id"), "index")
    users = vocab.where(F.col("field") == "user_id").select(F.col("value").alias("user_id"), "index")
    if mode == "collective":
        item_map = lake.read(ITEM_CLUSTERS).select("item_id", F.col("cluster_id").alias("key"))
        user_map = lake.read(USER_CLUSTERS).select("user_id", "view", F.col("cluster_id").alias("key"))
    else:
        item_map = items.select("item_id", F.col("item_id").alias("key"))
        user_map = users.select("user_id", F.lit("profile").alias("view"), F.col("user_id").alias("key"))
    item_rows = np.zeros(sizes["item_id"], dtype=np.int64)
    for row in items.join(item_map, "item_id").collect():
        item_rows[row["index"]] = item_keys.get(row["key"], 0)
    views = USER_VIEWS if mode == "collective" else ["profile"]
    user_rows = np.zeros((sizes["user_id"], len(views)), dtype=np.int64)
    for row in users.join(user_map, "user_id").collect():
        if row["view"] in views:
            user_rows[row["index"], views.index(row["view"])] = user_keys.get(row["key"], 0)
    return KnowledgeArrays(item_vectors, item_rows, user_vectors, user_rows)


def _vector_rows(vectors: DataFrame) -> tuple[np.ndarray, dict[str, int]]:
    """Stacked vectors with a zero row 0, and each entity/cluster id's row."""
    ordered = vectors.select("entity_id", "vector").orderBy("entity_id").toPandas()
    keys = {key: i + 1 for i, key in enumerate(ordered["entity_id"])}
    if ordered.empty:
        return np.zeros((1, 1), dtype=np.float32), keys
    stacked = np.stack([np.asarray(v, dtype=np.float32) for v in ordered["vector"]])
    return np.vstack([np.zeros((1, stacked.shape[1]), dtype=np.float32), stacked]), keys
