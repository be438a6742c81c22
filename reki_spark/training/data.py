"""The training views, assembled in Spark: vocabularies (`vocab` table), integer-encoded CTR samples
and sequences whose train split Petastorm feeds to PyTorch, and the frozen knowledge tables the
model holds (knowledge vectors never travel with the samples)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from reki_spark.config import KNOWLEDGE_CONTROLS
from reki_spark.frames import union_all, with_row_index
from reki_spark.lake import (
    INTERACTIONS,
    ITEM_CLUSTERS,
    ITEMS,
    KNOWLEDGE_VECTORS,
    SAMPLES,
    SEQUENCES,
    USER_CLUSTERS,
    USERS,
    VOCAB,
    Lake,
)
from reki_spark.models.base import CTR_FIELDS, RATING_FIELD, CtrSchema

VOCAB_FIELDS = [*CTR_FIELDS, RATING_FIELD]

USER_VIEWS = ["positive", "negative"]


def build_vocab(lake: Lake) -> DataFrame:
    """(field, value, index) with index 1.. in value order; 0 is padding and unknown values. User
    and item ids and categories come from the entity tables, so every entity has an index even
    without samples; history ratings from the interactions."""
    samples = lake.read(SAMPLES)
    items = lake.read(ITEMS)
    sources = {
        "user_id": lake.read(USERS).select(F.col("user_id").alias("value")),
        "item_id": items.select(F.col("item_id").alias("value")),
        "item_category": items.select(F.explode("categories").alias("value")),
        RATING_FIELD: lake.read(INTERACTIONS).select(F.col("rating").alias("value")),
    }
    frames = []
    for field in VOCAB_FIELDS:
        source = sources[field] if field in sources else samples.select(F.col(field).alias("value"))
        values = source.select(F.col("value").cast("string").alias("value")).where(F.col("value").isNotNull())
        ordered = values.distinct().orderBy("value")
        frames.append(
            with_row_index(ordered, "index").select(
                F.lit(field).alias("field"), "value", (F.col("index") + 1).cast("int").alias("index")
            )
        )
    lake.overwrite(union_all(frames), VOCAB)
    return lake.read(VOCAB)


def cardinalities(vocab: DataFrame) -> dict[str, int]:
    # One row per vocabulary field.
    sizes = {row["field"]: row["n"] + 1 for row in vocab.groupBy("field").agg(F.max("index").alias("n")).collect()}
    return {field: sizes.get(field, 1) for field in VOCAB_FIELDS}


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


def _item_indices(
    frame: DataFrame, vocab: DataFrame, key: str, array_column: str, alias: str, field: str = "item_id"
) -> DataFrame:
    """Replaces an array of `field` values (item ids by default) with the array of their codes,
    order kept (0 where unknown)."""
    codes = vocab.where(F.col("field") == field).select(F.col("value").alias("_item"), F.col("index"))
    exploded = frame.select(key, F.posexplode(array_column).alias("_pos", "_item"))
    mapped = exploded.join(codes, "_item", "left").select(key, "_pos", F.coalesce("index", F.lit(0)).alias("index"))
    collected = mapped.groupBy(key).agg(
        F.array_sort(F.collect_list(F.struct("_pos", "index"))).getField("index").alias(alias)
    )
    return frame.join(collected, key, "left").withColumn(alias, F.coalesce(alias, F.array().cast("array<int>")))


def item_codes(lake: Lake, vocab: DataFrame, category_slots: int) -> DataFrame:
    """Per item id: its index and the codes of its first `category_slots` categories."""
    items = encode_field(lake.read(ITEMS), vocab, "item_id", F.col("item_id"), "item_index").withColumn(
        "_kept", F.slice("categories", 1, category_slots)
    )
    coded = _item_indices(items, vocab, "item_id", "_kept", "category_codes", field="item_category")
    return coded.select("item_id", "item_index", "category_codes")


def _history_codes(samples: DataFrame, vocab: DataFrame, items: DataFrame) -> DataFrame:
    """(_sample, history_idx, history_rating_idx, history_category_idx): each history item's index,
    rating code and category codes, in history order."""
    ratings = vocab.where(F.col("field") == RATING_FIELD).select(F.col("value").alias("_r"), F.col("index"))
    exploded = samples.select(
        "_sample", F.posexplode(F.arrays_zip("history_item_ids", "history_ratings")).alias("_pos", "_h")
    )
    coded = (
        exploded.join(items, F.col("_h.history_item_ids") == items["item_id"], "left")
        .join(ratings, F.col("_h.history_ratings").cast("string") == F.col("_r"), "left")
        .select(
            "_sample",
            "_pos",
            F.coalesce("item_index", F.lit(0)).alias("i"),
            F.coalesce("index", F.lit(0)).alias("r"),
            F.coalesce("category_codes", F.array().cast("array<int>")).alias("c"),
        )
    )
    events = F.array_sort(F.collect_list(F.struct("_pos", "i", "r", "c")))
    return coded.groupBy("_sample").agg(
        events.getField("i").alias("history_idx"),
        events.getField("r").alias("history_rating_idx"),
        events.getField("c").alias("history_category_idx"),
    )


def _padded_nested(arrays: Column, length: int, slots: int, prefix: str) -> list[Column]:
    """A left-padded array of code arrays as length x slots scalar columns prefix{i}_{j}."""
    tail = F.slice(arrays, F.greatest(F.size(arrays) - length + 1, F.lit(1)), length)
    empty = F.array().cast("array<int>")
    padded = F.concat(F.array_repeat(empty, F.greatest(F.lit(0), length - F.size(tail))), tail)
    return [
        F.coalesce(F.element_at(F.element_at(padded, i + 1), j + 1), F.lit(0)).cast("int").alias(f"{prefix}{i}_{j}")
        for i in range(length)
        for j in range(slots)
    ]


def _slot_columns(codes: Column, slots: int, prefix: str) -> list[Column]:
    return [F.coalesce(F.element_at(codes, j + 1), F.lit(0)).cast("int").alias(f"{prefix}{j}") for j in range(slots)]


def ctr_view(lake: Lake, vocab: DataFrame, schema: CtrSchema) -> DataFrame:
    """Integer-coded samples: one column per single-valued field, the item's category codes
    cat0..cat{C-1}, the history's items hist{i}, ratings hrat{i} and categories hcat{i}_{j}, label
    (float), split."""
    length, slots = schema.history_length, schema.category_slots
    samples = lake.read(SAMPLES).withColumn("_sample", F.monotonically_increasing_id())
    items = item_codes(lake, vocab, slots)
    encoded = samples
    for field in CTR_FIELDS:
        if field != schema.category_field:
            encoded = encode_field(encoded, vocab, field, F.col(field), f"{field}__idx")
    encoded = encoded.join(items.select("item_id", "category_codes"), "item_id", "left")
    encoded = encoded.join(_history_codes(samples, vocab, items), "_sample", "left")
    empty = F.array().cast("array<int>")
    return encoded.select(
        *[F.col(f"{field}__idx").cast("int").alias(field) for field in CTR_FIELDS if field != schema.category_field],
        *_slot_columns(F.col("category_codes"), slots, "cat"),
        *_padded_columns(F.coalesce("history_idx", empty), length, "hist"),
        *_padded_columns(F.coalesce("history_rating_idx", empty), length, "hrat"),
        *_padded_nested(F.coalesce("history_category_idx", F.array().cast("array<array<int>>")), length, slots, "hcat"),
        F.col("label").cast("float").alias("label"),
        "split",
    )


def _coded_sequences(lake: Lake, vocab: DataFrame) -> DataFrame:
    """`sequences` with the user's code (`user`) and the prefix as item indices (`prefix`)."""
    encoded = encode_field(lake.read(SEQUENCES), vocab, "user_id", F.col("user_id"), "user")
    return _item_indices(encoded, vocab, "user_id", "item_ids", "prefix")


def sequence_windows(lake: Lake, vocab: DataFrame, max_length: int) -> DataFrame:
    """Training rows of the sequential task: every user's prefix cut, from its end, into windows of
    `max_length` + 1 items that overlap by one item, so each transition (item t -> item t + 1) of
    every prefix is a target exactly once per epoch. Columns `user`, seq0..seq{max_length}."""
    encoded = _coded_sequences(lake, vocab)
    transitions = F.size("prefix") - 1
    windows = encoded.where(transitions > 0).select(
        "user", "prefix", F.explode(F.sequence(F.lit(0), F.ceil(transitions / max_length).cast("int") - 1)).alias("k")
    )
    end = F.size("prefix") - F.col("k") * max_length  # 1-based, inclusive
    start = F.greatest(F.lit(1), end - max_length)
    window = F.slice("prefix", start, end - start + 1)
    return windows.select(F.col("user").cast("int").alias("user"), *_padded_columns(window, max_length + 1, "seq"))


def sequence_targets(lake: Lake, vocab: DataFrame, max_length: int, split: str) -> DataFrame:
    """Evaluation rows, one per user: the last `max_length` items before the `split` target
    (valid: the prefix; test: the prefix and the valid item) as in0..in{max_length-1}, the target,
    and `seen`, every distinct item before the target (full ranking leaves them out)."""
    encoded = _coded_sequences(lake, vocab)
    encoded = encode_field(encoded, vocab, "item_id", F.col("valid_item_id"), "valid_target")
    encoded = encode_field(encoded, vocab, "item_id", F.col("test_item_id"), "test_target")
    inputs = F.col("prefix") if split == "valid" else F.concat("prefix", F.array(F.col("valid_target").cast("int")))
    return encoded.select(
        F.col("user").cast("int").alias("user"),
        *_padded_columns(inputs, max_length, "in"),
        F.col(f"{split}_target").cast("int").alias("target"),
        F.array_distinct(inputs).alias("seen"),
    )


def item_popularity(lake: Lake, vocab: DataFrame) -> np.ndarray:
    """Per item index: how often the item occurs in the training prefixes (MostPop's scores)."""
    sizes = cardinalities(vocab)
    items = vocab.where(F.col("field") == "item_id").select(F.col("value").alias("item_id"), "index")
    counts = lake.read(SEQUENCES).select(F.explode("item_ids").alias("item_id")).groupBy("item_id").count()
    popularity = np.zeros(sizes["item_id"], dtype=np.float32)
    # One row per item of the catalogue: bounded like the vocabulary.
    for row in counts.join(items, "item_id").select("index", "count").collect():
        popularity[row["index"]] = row["count"]
    return popularity


@dataclass
class KnowledgeArrays:
    """The numpy content of `models.KnowledgeTables` (row 0 is the zero vector)."""

    item_vectors: np.ndarray
    item_rows: np.ndarray
    user_vectors: np.ndarray
    user_rows: np.ndarray


# Knowledge controls: collective vectors dealt to the wrong groups (same vectors, wrong assignment),
# and the groups alone with no LLM text. Collective knowledge is the LLM's only if it beats both.
SHUFFLED, CLUSTER_ONLY = KNOWLEDGE_CONTROLS
GROUPED_MODES = {"collective", *KNOWLEDGE_CONTROLS}
SHUFFLE_SEED = 20240817


def knowledge_arrays(lake: Lake, vocab: DataFrame, mode: str, encoder_id: str) -> KnowledgeArrays:
    if mode == CLUSTER_ONLY:
        item_vectors, item_keys, user_vectors, user_keys = group_codes(lake)
    else:
        source = "collective" if mode == SHUFFLED else mode
        vectors = lake.read(KNOWLEDGE_VECTORS).where((F.col("source") == source) & (F.col("encoder_id") == encoder_id))
        if vectors.isEmpty():
            raise FileNotFoundError(
                f"no {source} knowledge vectors from encoder {encoder_id}: "
                f"run `reki encode` with knowledge.mode={source}"
            )
        item_vectors, item_keys = _vector_rows(vectors.where(F.col("entity_type") == "item"))
        user_vectors, user_keys = _vector_rows(vectors.where(F.col("entity_type") == "user"))
        if mode == SHUFFLED:
            item_vectors, user_vectors = deranged(item_vectors), deranged(user_vectors)
    sizes = cardinalities(vocab)
    items = vocab.where(F.col("field") == "item_id").select(F.col("value").alias("item_id"), "index")
    users = vocab.where(F.col("field") == "user_id").select(F.col("value").alias("user_id"), "index")
    grouped = mode in GROUPED_MODES
    if grouped:
        item_map = lake.read(ITEM_CLUSTERS).select("item_id", F.col("cluster_id").alias("key"))
        user_map = lake.read(USER_CLUSTERS).select("user_id", "view", F.col("cluster_id").alias("key"))
    else:
        item_map = items.select("item_id", F.col("item_id").alias("key"))
        user_map = users.select("user_id", F.lit("profile").alias("view"), F.col("user_id").alias("key"))
    item_rows = np.zeros(sizes["item_id"], dtype=np.int64)
    for row in items.join(item_map, "item_id").collect():
        item_rows[row["index"]] = item_keys.get(row["key"], 0)
    views = USER_VIEWS if grouped else ["profile"]
    user_rows = np.zeros((sizes["user_id"], len(views)), dtype=np.int64)
    for row in users.join(user_map, "user_id").collect():
        if row["view"] in views:
            user_rows[row["index"], views.index(row["view"])] = user_keys.get(row["key"], 0)
    return KnowledgeArrays(item_vectors, item_rows, user_vectors, user_rows)


def group_codes(lake: Lake) -> tuple[np.ndarray, dict[str, int], np.ndarray, dict[str, int]]:
    """`cluster_only`: one one-hot code per item group and per user group, in one shared space.
    HEIN's first layer on a one-hot code is a learned embedding of the group id: the capacity of
    group membership, with no LLM text."""
    # One row per cluster.
    item_groups = sorted(r["cluster_id"] for r in lake.read(ITEM_CLUSTERS).select("cluster_id").distinct().collect())
    user_groups = sorted(r["cluster_id"] for r in lake.read(USER_CLUSTERS).select("cluster_id").distinct().collect())
    codes = np.eye(len(item_groups) + len(user_groups), dtype=np.float32)
    zero = np.zeros((1, codes.shape[1]), dtype=np.float32)
    item_vectors = np.vstack([zero, codes[: len(item_groups)]])
    user_vectors = np.vstack([zero, codes[len(item_groups) :]])
    return (
        item_vectors,
        {key: i + 1 for i, key in enumerate(item_groups)},
        user_vectors,
        {key: i + 1 for i, key in enumerate(user_groups)},
    )


def deranged(vectors: np.ndarray, seed: int = SHUFFLE_SEED) -> np.ndarray:
    """`shuffled`: the same rows, each moved to another group (row 0, no knowledge, stays)."""
    count = len(vectors) - 1
    if count < 2:
        return vectors.copy()
    order = np.random.default_rng(seed).permutation(count) + 1
    moved = vectors.copy()
    moved[order] = vectors[np.roll(order, -1)]  # a cycle through a random order: nothing stays put
    return moved


def _vector_rows(vectors: DataFrame) -> tuple[np.ndarray, dict[str, int]]:
    """Stacked vectors with a zero row 0, and each entity/cluster id's row."""
    ordered = vectors.select("entity_id", "vector").orderBy("entity_id").toPandas()
    keys = {key: i + 1 for i, key in enumerate(ordered["entity_id"])}
    if ordered.empty:
        return np.zeros((1, 1), dtype=np.float32), keys
    stacked = np.stack([np.asarray(v, dtype=np.float32) for v in ordered["vector"]])
    return np.vstack([np.zeros((1, stacked.shape[1]), dtype=np.float32), stacked]), keys
