"""The training views, assembled in Spark: vocabularies (`vocab` table), integer-encoded CTR samples
and sequences whose train split Petastorm feeds to PyTorch, and the frozen knowledge tables the
model holds (knowledge vectors never travel with the samples)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from reki_spark.config import KNOWLEDGE_CONTROLS
from reki_spark.frames import starts, union_all, with_row_index
from reki_spark.lake import (
    INTERACTIONS,
    ITEM_CLUSTERS,
    ITEM_VIEW,
    ITEMS,
    KNOWLEDGE_VECTORS,
    SAMPLES,
    SEQUENCES,
    USER_CLUSTERS,
    USERS,
    VOCAB,
    Lake,
)
from reki_spark.models.base import CTR_FIELDS, ITEM_KNOWLEDGE, RATING_FIELD, USER_KNOWLEDGE, CtrSchema

VOCAB_FIELDS = [*CTR_FIELDS, RATING_FIELD]

USER_VIEWS = ["positive", "negative"]
KEYED_BY_CLUSTER, KEYED_BY_ENTITY = "cluster", "entity"


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
    values = union_all(
        [
            (sources[field] if field in sources else samples.select(F.col(field).alias("value"))).select(
                F.lit(field).alias("field"), F.col("value").cast("string").alias("value")
            )
            for field in VOCAB_FIELDS
        ]
    )
    # Every field in one distinct, one sort and one numbering (a sort and a numbering per field
    # were 39 Spark jobs, most of a small training's time); each field's numbers then start at 1
    # by its offset in (field, value) order, from one count per field.
    distinct = values.where(F.col("value").isNotNull()).distinct().orderBy("field", "value").persist()
    try:
        counts = sorted((row["field"], row["count"]) for row in distinct.groupBy("field").count().collect())
        offset_frame = lake.spark.createDataFrame(starts(counts) or [("", 0)], "field string, _offset long")
        numbered = with_row_index(distinct, "_position").join(F.broadcast(offset_frame), "field")
        lake.overwrite(
            numbered.select("field", "value", (F.col("_position") - F.col("_offset") + 1).cast("int").alias("index")),
            VOCAB,
        )
    finally:
        distinct.unpersist()
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


def vocab_codes(vocab: DataFrame, field: str, key: str = "_item") -> DataFrame:
    """(key, index): the vocabulary codes of `field`; the default key is the shape `_mapped_array` joins on."""
    return vocab.where(F.col("field") == field).select(F.col("value").alias(key), F.col("index"))


def _mapped_array(frame: DataFrame, key: str, array_column: str, alias: str, codes: DataFrame) -> DataFrame:
    """Adds `alias`: the array `array_column` with each value replaced by its `index` in `codes`
    (columns _item, index), order kept, 0 where a value has none."""
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
    coded = _mapped_array(items, "item_id", "_kept", "category_codes", vocab_codes(vocab, "item_category"))
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


KnowledgeRows = tuple[DataFrame, DataFrame]
"""Per item id its knowledge row, per user id its rows per view (`ClusterRows.entity_rows`)."""


def _user_row_columns(rows: Column) -> list[Column]:
    return [
        F.coalesce(F.element_at(rows, v + 1), F.lit(0)).cast("int").alias(f"kuser{v}") for v in range(len(USER_VIEWS))
    ]


def ctr_view(lake: Lake, vocab: DataFrame, schema: CtrSchema, knowledge: KnowledgeRows | None = None) -> DataFrame:
    """Integer-coded samples: one column per single-valued field, the item's category codes
    cat0..cat{C-1}, the history's items hist{i}, ratings hrat{i} and categories hcat{i}_{j}, label
    (float), split; with `knowledge`, the item's cluster row `kitem` and the user's per view,
    kuser0..kuser{V-1}."""
    length, slots = schema.history_length, schema.category_slots
    samples = lake.read(SAMPLES).withColumn("_sample", F.monotonically_increasing_id())
    items = item_codes(lake, vocab, slots)
    encoded = samples
    for field in CTR_FIELDS:
        if field != schema.category_field:
            encoded = encode_field(encoded, vocab, field, F.col(field), f"{field}__idx")
    encoded = encoded.join(items.select("item_id", "category_codes"), "item_id", "left")
    encoded = encoded.join(_history_codes(samples, vocab, items), "_sample", "left")
    rows: list[Column] = []
    if knowledge is not None:
        item_rows, user_rows = knowledge
        encoded = encoded.join(item_rows, "item_id", "left").join(user_rows, "user_id", "left")
        rows = [
            F.coalesce(ITEM_KNOWLEDGE, F.lit(0)).cast("int").alias("kitem"),
            *_user_row_columns(F.col(USER_KNOWLEDGE)),
        ]
    empty = F.array().cast("array<int>")
    return encoded.select(
        *[F.col(f"{field}__idx").cast("int").alias(field) for field in CTR_FIELDS if field != schema.category_field],
        *_slot_columns(F.col("category_codes"), slots, "cat"),
        *_padded_columns(F.coalesce("history_idx", empty), length, "hist"),
        *_padded_columns(F.coalesce("history_rating_idx", empty), length, "hrat"),
        *_padded_nested(F.coalesce("history_category_idx", F.array().cast("array<array<int>>")), length, slots, "hcat"),
        *rows,
        F.col("label").cast("float").alias("label"),
        "split",
    )


def _coded_sequences(lake: Lake, vocab: DataFrame, knowledge: KnowledgeRows | None) -> DataFrame:
    """`sequences` with the user's code (`user`) and the prefix as item indices (`prefix`); with
    `knowledge`, the prefix's item knowledge rows (`prefix_rows`), the valid item's (`valid_row`)
    and the user's rows per view (`user_knowledge`)."""
    encoded = encode_field(lake.read(SEQUENCES), vocab, "user_id", F.col("user_id"), "user")
    coded = _mapped_array(encoded, "user_id", "item_ids", "prefix", vocab_codes(vocab, "item_id"))
    if knowledge is None:
        return coded
    item_rows, user_rows = knowledge
    rows = item_rows.select(F.col("item_id").alias("_item"), F.col(ITEM_KNOWLEDGE).alias("index"))
    coded = _mapped_array(coded, "user_id", "item_ids", "prefix_rows", rows).join(user_rows, "user_id", "left")
    valid = rows.select(F.col("_item").alias("valid_item_id"), F.col("index").alias("valid_row"))
    return coded.join(valid, "valid_item_id", "left")


def _window(array: str, end: Column, start: Column) -> Column:
    return F.slice(array, start, end - start + 1)


def sequence_windows(
    lake: Lake, vocab: DataFrame, max_length: int, knowledge: KnowledgeRows | None = None
) -> DataFrame:
    """Training rows of the sequential task: every user's prefix cut, from its end, into windows of
    `max_length` + 1 items that overlap by one item, so each transition (item t -> item t + 1) of
    every prefix is a target exactly once per epoch. Columns `user`, seq0..seq{max_length}; with
    `knowledge`, each position's item knowledge row kseq0..kseq{max_length} and the user's kuser{v}."""
    encoded = _coded_sequences(lake, vocab, knowledge)
    transitions = F.size("prefix") - 1
    windows = encoded.where(transitions > 0).withColumn(
        "k", F.explode(F.sequence(F.lit(0), F.ceil(transitions / max_length).cast("int") - 1))
    )
    end = F.size("prefix") - F.col("k") * max_length  # 1-based, inclusive
    start = F.greatest(F.lit(1), end - max_length)
    rows: list[Column] = []
    if knowledge is not None:
        rows = [
            *_padded_columns(_window("prefix_rows", end, start), max_length + 1, "kseq"),
            *_user_row_columns(F.col(USER_KNOWLEDGE)),
        ]
    return windows.select(
        F.col("user").cast("int").alias("user"),
        *_padded_columns(_window("prefix", end, start), max_length + 1, "seq"),
        *rows,
    )


def sequence_targets(
    lake: Lake, vocab: DataFrame, max_length: int, split: str, knowledge: KnowledgeRows | None = None
) -> DataFrame:
    """Evaluation rows, one per user: the last `max_length` items before the `split` target
    (valid: the prefix; test: the prefix and the valid item) as in0..in{max_length-1}, the target,
    and `seen`, every distinct item before the target (full ranking leaves them out); with
    `knowledge`, the inputs' item knowledge rows kin{i} and the user's kuser{v}."""
    encoded = _coded_sequences(lake, vocab, knowledge)
    encoded = encode_field(encoded, vocab, "item_id", F.col("valid_item_id"), "valid_target")
    encoded = encode_field(encoded, vocab, "item_id", F.col("test_item_id"), "test_target")
    inputs = _with_valid(F.col("prefix"), F.col("valid_target"), split)
    rows: list[Column] = []
    if knowledge is not None:
        input_rows = _with_valid(F.col("prefix_rows"), F.coalesce("valid_row", F.lit(0)), split)
        rows = [*_padded_columns(input_rows, max_length, "kin"), *_user_row_columns(F.col(USER_KNOWLEDGE))]
    return encoded.select(
        F.col("user").cast("int").alias("user"),
        *_padded_columns(inputs, max_length, "in"),
        *rows,
        F.col(f"{split}_target").cast("int").alias("target"),
        F.array_distinct(inputs).alias("seen"),
    )


def _with_valid(prefix: Column, valid: Column, split: str) -> Column:
    """The inputs before the `split` target: the prefix (valid), the prefix and the valid item (test)."""
    return prefix if split == "valid" else F.concat(prefix, F.array(valid.cast("int")))


def item_popularity(lake: Lake, vocab: DataFrame) -> DataFrame:
    """(index, count): how often each item occurs in the training prefixes (MostPop's scores)."""
    items = vocab_codes(vocab, "item_id", key="item_id")
    counts = lake.read(SEQUENCES).select(F.explode("item_ids").alias("item_id")).groupBy("item_id").count()
    return counts.join(items, "item_id").select(F.col("index").cast("long"), F.col("count").cast("float"))


def item_positive_rates(train_rows: DataFrame, vocab: DataFrame, prior_rows: float = 10.0) -> DataFrame:
    """(index, count): every item's positive rate in the CTR training rows (CTR MostPop's scores),
    pulled towards the overall rate by `prior_rows` pseudo-rows, so that a rarely seen item is not
    scored 0 or 1, and an item never seen in training (or unknown: index 0) scores the overall rate."""
    counts = train_rows.groupBy(F.col("item_id").cast("long").alias("index")).agg(
        F.sum("label").alias("positives"), F.count(F.lit(1)).alias("rows")
    )
    unknown = train_rows.sparkSession.range(1).select(F.lit(0).cast("long").alias("index"))
    items = vocab_codes(vocab, "item_id").select(F.col("index").cast("long")).unionByName(unknown)
    # The overall rate: one row aggregated from the per-item counts (a window over the whole
    # catalogue would move every item to one task, and Spark warns about it at every training).
    overall = counts.agg((F.sum("positives") / F.sum("rows")).alias("overall"))
    rate = (F.coalesce("positives", F.lit(0.0)) + F.col("overall") * prior_rows) / (
        F.coalesce("rows", F.lit(0)) + prior_rows
    )
    scored = items.join(counts, "index", "left").crossJoin(F.broadcast(overall))
    return scored.select("index", rate.cast("float").alias("count"))


@dataclass
class KnowledgeArrays:
    """The numpy content of `models.KnowledgeTables` (row 0 is the zero vector) and what its rows
    are: clusters (collective and its controls) or entity indices (individual)."""

    item_vectors: np.ndarray
    user_vectors: np.ndarray
    user_views: int
    keyed_by: str


# Knowledge controls of collective knowledge, all on the same groups: its vectors dealt to the wrong
# groups of their view (`shuffled`); the groups alone as one-hot codes, a learned embedding of the
# group id through HEIN's first layer (`cluster_only`); one fixed random unit vector per group,
# membership in well-conditioned vectors that mean nothing (`random_vectors`); and the text vectors
# with the one-hot codes beside them (`collective_plus_ids`: does the text add to membership?).
SHUFFLED, CLUSTER_ONLY, RANDOM_VECTORS, COLLECTIVE_PLUS_IDS = KNOWLEDGE_CONTROLS
GROUPED_MODES = {"collective", *KNOWLEDGE_CONTROLS}
# Drawn anew for every training seed (so the seeds also sample the draws), from the collective arrays.
PER_SEED_MODES = (SHUFFLED, RANDOM_VECTORS)
SHUFFLE_SEED = 20240817
RANDOM_VECTORS_SEED = 20261205
# Individual knowledge is one vector per entity, held in the model: a small-data comparison only.
INDIVIDUAL_MAX_ENTITIES = 200_000


def keyed_by(mode: str) -> str | None:
    """What an example's knowledge rows index: None (no knowledge), clusters or entities."""
    return None if mode == "none" else KEYED_BY_CLUSTER if mode in GROUPED_MODES else KEYED_BY_ENTITY


@dataclass(frozen=True)
class ClusterRows:
    """Cluster ids in knowledge-row order (row i + 1; row 0 is no knowledge): every grouped mode
    (collective, shuffled, cluster_only) shares them, so one training view serves all three."""

    items: list[str]
    users: list[str]
    user_views: list[str]  # the view each of `users` groups (positive, negative)

    @classmethod
    def of(cls, lake: Lake) -> ClusterRows:
        def ids(table: str) -> list[tuple[str, str]]:
            # One row per cluster: a cluster groups one view. The ids' own form is not read
            # (imported ones are `imported-<view>-<group>`, the product's `user:<view>:<n>`).
            return sorted(
                (r["cluster_id"], r["view"]) for r in lake.read(table).select("cluster_id", "view").distinct().collect()
            )

        users = ids(USER_CLUSTERS)
        return cls([cluster for cluster, _ in ids(ITEM_CLUSTERS)], [c for c, _ in users], [v for _, v in users])

    def entity_rows(self, lake: Lake) -> tuple[DataFrame, DataFrame]:
        """(item_id, item_knowledge) and (user_id, user_knowledge: array<int>, one row per view of
        USER_VIEWS, 0 where the user lacks the view), computed by Spark."""
        spark = lake.spark
        item_rows = spark.createDataFrame(list(enumerate(self.items, 1)), "row int, cluster_id string")
        user_rows = spark.createDataFrame(list(enumerate(self.users, 1)), "row int, cluster_id string")
        items = lake.read(ITEM_CLUSTERS).join(F.broadcast(item_rows), "cluster_id")
        per_view = [F.max(F.when(F.col("view") == view, F.col("row"))).alias(view) for view in USER_VIEWS]
        users = lake.read(USER_CLUSTERS).join(F.broadcast(user_rows), "cluster_id").groupBy("user_id").agg(*per_view)
        return (
            items.groupBy("item_id").agg(F.min("row").alias(ITEM_KNOWLEDGE)),
            users.select(
                "user_id", F.array(*[F.coalesce(view, F.lit(0)) for view in USER_VIEWS]).alias(USER_KNOWLEDGE)
            ),
        )


def entity_knowledge_rows(lake: Lake, vocab: DataFrame, keyed: str | None) -> KnowledgeRows:
    """Per item id its knowledge row and per user id its rows per view, for a run keyed by `keyed`:
    cluster rows, the entity's own vocabulary index (individual), or 0 with one view (no knowledge)."""
    if keyed == KEYED_BY_CLUSTER:
        return ClusterRows.of(lake).entity_rows(lake)
    index = F.col("index") if keyed == KEYED_BY_ENTITY else F.lit(0)
    items = vocab_codes(vocab, "item_id", key="item_id").select("item_id", index.alias(ITEM_KNOWLEDGE))
    users = vocab_codes(vocab, "user_id", key="user_id").select("user_id", F.array(index).alias(USER_KNOWLEDGE))
    return items, users


def knowledge_arrays(
    lake: Lake, vocab: DataFrame, mode: str, encoder_id: str, clusters: ClusterRows | None = None, seed: int = 0
) -> KnowledgeArrays:
    """The knowledge tables of `mode`; grouped modes align them to `clusters` (read from the lake
    when the caller has not already). `shuffled` deals its vectors out by the training `seed`."""
    if mode in GROUPED_MODES:
        return _cluster_arrays(lake, mode, encoder_id, clusters or ClusterRows.of(lake), seed)
    sizes = cardinalities(vocab)
    if sizes["item_id"] + sizes["user_id"] > INDIVIDUAL_MAX_ENTITIES:
        raise ValueError(
            f"individual knowledge holds one vector per entity in the model: {sizes['item_id']} items and "
            f"{sizes['user_id']} users exceed its bound of {INDIVIDUAL_MAX_ENTITIES}; use knowledge mode collective"
        )
    vectors = _source_vectors(lake, mode, encoder_id)
    return KnowledgeArrays(
        _entity_table(vectors, vocab, "item", sizes["item_id"]),
        _entity_table(vectors, vocab, "user", sizes["user_id"]),
        1,
        KEYED_BY_ENTITY,
    )


def _source_vectors(lake: Lake, source: str, encoder_id: str) -> DataFrame:
    vectors = lake.read(KNOWLEDGE_VECTORS).where((F.col("source") == source) & (F.col("encoder_id") == encoder_id))
    if vectors.isEmpty():
        raise FileNotFoundError(
            f"no {source} knowledge vectors from encoder {encoder_id}: run `reki encode` with knowledge.mode={source}"
        )
    return vectors


def _cluster_arrays(lake: Lake, mode: str, encoder_id: str, rows: ClusterRows, seed: int) -> KnowledgeArrays:
    codes = group_codes(len(rows.items), len(rows.users))
    if mode == CLUSTER_ONLY:
        return KnowledgeArrays(*codes, len(USER_VIEWS), KEYED_BY_CLUSTER)
    vectors = _source_vectors(lake, "collective", encoder_id)
    item_vectors = _cluster_table(vectors.where(F.col("entity_type") == "item"), rows.items)
    user_vectors = _cluster_table(vectors.where(F.col("entity_type") == "user"), rows.users)
    collective = KnowledgeArrays(item_vectors, user_vectors, len(USER_VIEWS), KEYED_BY_CLUSTER)
    if mode == COLLECTIVE_PLUS_IDS:
        return replace(
            collective,
            item_vectors=np.hstack([item_vectors, codes[0]]),
            user_vectors=np.hstack([user_vectors, codes[1]]),
        )
    return seeded_arrays(mode, collective, rows, seed) if mode in PER_SEED_MODES else collective


def seeded_arrays(mode: str, collective: KnowledgeArrays, rows: ClusterRows, seed: int) -> KnowledgeArrays:
    """`shuffled` or `random_vectors` for one training seed, from the collective arrays (read once
    for every seed)."""
    if mode == SHUFFLED:
        return replace(
            collective,
            item_vectors=deranged(collective.item_vectors, [ITEM_VIEW] * len(rows.items), seed),
            user_vectors=deranged(collective.user_vectors, rows.user_views, seed),
        )
    rng = np.random.default_rng([RANDOM_VECTORS_SEED, seed])
    return replace(
        collective,
        item_vectors=random_unit_rows(collective.item_vectors, rng),
        user_vectors=random_unit_rows(collective.user_vectors, rng),
    )


def random_unit_rows(vectors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`random_vectors`: a Gaussian direction of unit length for every row that holds a vector
    (row 0, no knowledge, and groups without a vector stay zero)."""
    drawn = rng.standard_normal(vectors.shape).astype(np.float32)
    drawn /= np.linalg.norm(drawn, axis=1, keepdims=True)
    return np.where(np.abs(vectors).sum(axis=1, keepdims=True) > 0, drawn, 0.0).astype(np.float32)


def _stacked(vectors: dict[object, np.ndarray], keys: list, rows: int) -> np.ndarray:
    """Row i holds the vector of keys[i - 1] (zero where it has none); row 0 is the zero vector."""
    dimension = len(next(iter(vectors.values()))) if vectors else 1
    table = np.zeros((rows, dimension), dtype=np.float32)
    for row, key in enumerate(keys, 1):
        if key in vectors:
            table[row] = vectors[key]
    return table


def _cluster_table(vectors: DataFrame, cluster_ids: list[str]) -> np.ndarray:
    # One row per cluster.
    found = {r["entity_id"]: np.asarray(r["vector"], dtype=np.float32) for r in vectors.collect()}
    return _stacked(found, cluster_ids, len(cluster_ids) + 1)


def _entity_table(vectors: DataFrame, vocab: DataFrame, entity_type: str, size: int) -> np.ndarray:
    """Individual mode: the vector of each entity at its vocabulary index."""
    codes = vocab_codes(vocab, f"{entity_type}_id", key="entity_id")
    typed = vectors.where(F.col("entity_type") == entity_type).join(codes, "entity_id")
    # One row per entity, at most INDIVIDUAL_MAX_ENTITIES (checked by the caller).
    found = {r["index"]: np.asarray(r["vector"], dtype=np.float32) for r in typed.select("index", "vector").collect()}
    return _stacked(found, list(range(1, size)), size)


def group_codes(item_groups: int, user_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """`cluster_only`: one one-hot code per item group and per user group, in one shared space.
    HEIN's first layer on a one-hot code is a learned embedding of the group id: the capacity of
    group membership, with no LLM text."""
    codes = np.eye(item_groups + user_groups, dtype=np.float32)
    zero = np.zeros((1, codes.shape[1]), dtype=np.float32)
    return np.vstack([zero, codes[:item_groups]]), np.vstack([zero, codes[item_groups:]])


def deranged(vectors: np.ndarray, views: list[str], seed: int) -> np.ndarray:
    """`shuffled`: the same rows, each moved to another group of its own view (row i + 1 holds a
    group of views[i]; row 0, no knowledge, stays): an item group's text goes to another item group,
    what one group liked to another group's liked view, never a dislike where a like stood. Each
    training seed deals another permutation, so the seeds also sample the permutations. A view with
    a single group keeps its text (there is no other group to give it to)."""
    rng = np.random.default_rng([SHUFFLE_SEED, seed])
    view_of_row = np.asarray(views)
    moved = vectors.copy()
    for view in sorted(set(views)):
        rows = np.flatnonzero(view_of_row == view) + 1
        if len(rows) > 1:
            order = rng.permutation(rows)
            moved[order] = vectors[np.roll(order, -1)]  # a cycle through a random order: nothing stays put
    return moved
