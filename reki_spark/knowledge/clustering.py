"""Clustering for collective extraction (`reki cluster`, REKI stage 1b).

Items are placed by the encoder's vector of their text (title, brand, categories); users twice, by
the mean vector of the items they liked (positive view) and disliked (negative view) inside their
prompt window, so nothing from the samples leaks. The number of clusters follows a target cluster
size. Reads `items`, `prompt_windows`; writes `item_embeddings`, `item_clusters`, `user_clusters`,
`clusters`. Only cluster centres of the flat k-means ever reach the driver."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache, partial

import numpy as np
import pandas as pd
from pyspark.ml.clustering import BisectingKMeans, KMeans
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.ml.stat import Summarizer
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from scipy import sparse

from reki_spark.config import ClusteringConfig, EncoderConfig, RekiConfig
from reki_spark.frames import union_all
from reki_spark.knowledge.cluster_ids import NO_WINDOW_ITEMS, fitted_clusters, no_window_items_cluster
from reki_spark.lake import (
    CLUSTERS,
    ITEM_CLUSTERS,
    ITEM_EMBEDDINGS,
    ITEM_VIEW,
    ITEMS,
    NEGATIVE,
    POSITIVE,
    PROMPT_WINDOWS,
    USER_CLUSTERS,
    USERS,
    Lake,
)
from reki_spark.ledger import ledger_entry
from reki_spark.parquet_files import read_parquet_files
from reki_spark.text_encoder import TextEncoder


def item_text(title: Column, brand: Column, categories: Column) -> Column:
    """What the encoder reads for an item: "<title>. <brand>. <category, category>"."""
    return F.concat_ws(". ", F.coalesce(title, F.lit("untitled item")), brand, F.array_join(categories, ", "))


def cluster_entities(spark: SparkSession, config: RekiConfig) -> dict[str, int]:
    lake = Lake(spark, config.lake)
    with ledger_entry(lake, "cluster") as record:
        items = lake.read(ITEMS)
        lake.overwrite(item_embeddings(items, config.encoder), ITEM_EMBEDDINGS)
        embeddings = lake.read(ITEM_EMBEDDINGS)
        item_points = embeddings.select(
            F.col("item_id").alias("entity_id"), F.lit(ITEM_VIEW).alias("view"), "vector", F.lit(False).alias("imputed")
        )
        users_view_points, views = user_points(lake, embeddings, config.features.label_threshold)
        users_view_points = users_view_points.persist()
        clustering, seed = config.clustering, config.seed
        assigned = [_assign(item_points, "item", ClusterCount.of_items(clustering), clustering, seed)]
        assigned += [
            _assign(
                users_view_points.where(F.col("view") == view),
                f"user:{view}",
                ClusterCount.of_users(clustering),
                clustering,
                seed,
            )
            for view in views
        ]
        # Computed once for the split and the three writes: each would otherwise redo the
        # assignment (at 1e8, the `clusters` write alone shuffled 30 GB doing so).
        everyone = union_all(assigned).persist()
        balanced = split_oversized(everyone, clustering, seed).persist()
        write_assignments(lake, balanced)
        everyone.unpersist()  # the first write cached `balanced`, which holds the points
        users_view_points.unpersist()
        lake.overwrite(describe_clusters(balanced, clustering.representatives), CLUSTERS)
        balanced.unpersist()
        # One row per view.
        described = lake.read(CLUSTERS)
        # One row per view each.
        counts = {row["view"]: row["count"] for row in fitted_clusters(described).groupBy("view").count().collect()}
        fixed = described.where(F.col("cluster_id").endswith(f":{NO_WINDOW_ITEMS}"))
        without = {row["view"]: row["size"] for row in fixed.select("view", "size").collect()}
        record.rows_in = items.count() + lake.read(USERS).count()
        record.rows_out = sum(counts.values()) + len(without)
        record.details = {"clusters_per_view": counts, "users_without_window_items": without, "user_views": views}
    print(
        "clusters per view: "
        + ", ".join(f"{view} {n}" for view, n in sorted(counts.items()))
        + "".join(
            f"; {n:,} users without {view} window items (a fixed cluster, no prompt)"
            for view, n in sorted(without.items())
        )
    )
    return counts


def write_assignments(lake: Lake, assigned: DataFrame) -> None:
    """`item_clusters` and `user_clusters` from the points of every view with their `cluster_id`."""
    is_item = F.col("view") == ITEM_VIEW
    items, users = assigned.where(is_item), assigned.where(~is_item)
    lake.overwrite(items.select(F.col("entity_id").alias("item_id"), "view", "cluster_id"), ITEM_CLUSTERS)
    lake.overwrite(users.select(F.col("entity_id").alias("user_id"), "view", "cluster_id", "imputed"), USER_CLUSTERS)


def item_embeddings(items: DataFrame, encoder: EncoderConfig) -> DataFrame:
    texts = items.select("item_id", item_text(F.col("title"), F.col("brand"), F.col("categories")).alias("text"))

    def encode(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        model = TextEncoder(encoder.model, encoder.device, encoder.batch_size)
        for batch in batches:
            vectors = model.encode(batch["text"].tolist())
            yield batch.assign(vector=list(vectors), encoder_id=encoder.model)

    return texts.mapInPandas(encode, "item_id string, text string, vector array<float>, encoder_id string")


def user_points(lake: Lake, embeddings: DataFrame, label_threshold: float) -> tuple[DataFrame, list[str]]:
    """One row per (user, view): the mean vector of the view's window items, or the view's mean
    over all window rows where the user has none (`imputed`: such users go to the view's fixed
    cluster, `no_window_items_cluster`), so every user lands in a cluster.

    Item vectors never travel once per interaction (at 1e8 interactions that shuffle wrote over
    60 GB): window rows move as ids, grouped by user, and each task reads the item vectors from
    the embeddings' files itself (the driver holds only their names); the view means are weighted
    sums over per-item counts."""
    window = lake.read(PROMPT_WINDOWS)
    has_ratings = window.where(F.col("rating").isNotNull()).limit(1).count() > 0
    view = F.when(F.col("rating") > label_threshold, POSITIVE).otherwise(NEGATIVE) if has_ratings else F.lit(POSITIVE)
    rows = window.select("user_id", view.alias("view"), "item_id")
    views = sorted(r["view"] for r in rows.select("view").distinct().collect())  # positive, negative
    if NEGATIVE not in views:
        print("user clustering: no negative feedback in the prompt windows, so the negative view is absent")
    vectors = embeddings.select("item_id", array_to_vector("vector").alias("features"))
    per_view = (
        rows.groupBy("item_id", "view")
        .agg(F.count("*").cast("double").alias("weight"))
        .join(vectors, "item_id")
        .groupBy("view")
        .agg(vector_to_array(Summarizer.mean(F.col("features"), F.col("weight")), "float32").alias("view_mean"))
    )
    # Every user once per view, marked by a null item: users without window rows get the view mean.
    listed = lake.read(USERS).select("user_id", F.explode(F.array(*map(F.lit, views))).alias("view"))
    keyed = rows.unionByName(listed.withColumn("item_id", F.lit(None).cast("string")))
    # Delta's snapshot files of the embeddings (as many as the write's partitions, not per item).
    files = embeddings.inputFiles()
    means = keyed.repartition("user_id").mapInPandas(
        partial(_window_means, files), "user_id string, view string, mean array<float>"
    )
    points = means.join(F.broadcast(per_view), "view").select(  # per_view: a row per view
        F.col("user_id").alias("entity_id"),
        "view",
        F.coalesce(F.col("mean"), F.col("view_mean")).alias("vector"),
        F.col("mean").isNull().alias("imputed"),
    )
    return points, views


@lru_cache(maxsize=1)  # per Python worker, which Spark reuses across tasks: read once, not per task
def _item_matrix(files: tuple[str, ...]) -> tuple[pd.Index, np.ndarray]:
    """The item ids and their vectors (items x dimension, float32) from Parquet files."""
    table = read_parquet_files(files, ["item_id", "vector"])
    flat = table["vector"].combine_chunks().flatten().to_numpy().astype(np.float32)
    return pd.Index(table["item_id"].to_numpy(zero_copy_only=False)), flat.reshape(table.num_rows, -1)


def _window_means(files: list[str], batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Per listed (user, view) of this partition: the mean vector of its window items, or null
    when it has none. A partition holds whole users (ids only), so one sparse product does it."""
    parts = list(batches)
    if not parts:
        return
    frame = pd.concat(parts, ignore_index=True)
    index, matrix = _item_matrix(tuple(files))
    codes, keys = pd.MultiIndex.from_frame(frame[["user_id", "view"]]).factorize()
    rows = index.get_indexer(frame["item_id"])  # -1: the listing marker (or an item without a vector)
    present = rows >= 0
    counts = sparse.csr_matrix(
        (np.ones(int(present.sum()), dtype=np.float32), (codes[present], rows[present])), shape=(len(keys), len(index))
    )
    sums = np.asarray(counts @ matrix)
    sizes = np.asarray(counts.sum(axis=1)).ravel()
    listed = np.unique(codes[frame["item_id"].isna().to_numpy()])
    means = [sums[code] / sizes[code] if sizes[code] else None for code in listed]
    yield pd.DataFrame(
        {"user_id": keys.get_level_values(0)[listed], "view": keys.get_level_values(1)[listed], "mean": means}
    )


@dataclass(frozen=True)
class ClusterCount:
    """How many clusters a view gets: `fixed` where the config sets a count, else one per
    `target_size` entities."""

    target_size: int
    fixed: int | None

    @classmethod
    def of_items(cls, clustering: ClusteringConfig) -> ClusterCount:
        return cls(clustering.item_cluster_size, clustering.item_clusters)

    @classmethod
    def of_users(cls, clustering: ClusteringConfig) -> ClusterCount:
        return cls(clustering.user_cluster_size, clustering.user_clusters)

    def for_points(self, points: int) -> tuple[int, int]:
        """(clusters, members per cluster) for this many points."""
        if self.fixed is None:
            return max(1, math.ceil(points / self.target_size)), self.target_size
        k = max(1, min(self.fixed, points))
        return k, math.ceil(points / k)

    @property
    def split_target(self) -> int | None:
        """The size `split_oversized` holds clusters to; none where the count is fixed."""
        return None if self.fixed else self.target_size


def _assign(points: DataFrame, prefix: str, count: ClusterCount, clustering: ClusteringConfig, seed: int) -> DataFrame:
    """Adds `cluster_id` ("<prefix>:<n>") with `count`'s number of clusters; imputed points
    (users with nothing in the view) go to the view's fixed cluster, unfitted."""
    fixed = points.where("imputed").select(
        "entity_id", "view", "vector", "imputed", no_window_items_cluster(F.col("view")).alias("cluster_id")
    )
    return _fitted(points.where(~F.col("imputed")), prefix, count, clustering, seed).unionByName(fixed)


def _fitted(points: DataFrame, prefix: str, count: ClusterCount, clustering: ClusteringConfig, seed: int) -> DataFrame:
    points = points.withColumn("features", array_to_vector("vector"))
    k, target_size = count.for_points(points.count())
    if k == 1:
        label = F.lit("0")
    elif k <= clustering.max_flat_clusters:
        points = _fit_predict(points, k, clustering, seed, "cluster")
        label = F.col("cluster").cast("string")
    else:
        points = _two_level(points, k, target_size, clustering, seed)
        label = F.concat_ws("-", F.col("coarse").cast("string"), F.col("fine").cast("string"))
    return points.select(
        "entity_id", "view", "vector", "imputed", F.concat_ws(":", F.lit(prefix), label).alias("cluster_id")
    )


def _fit_predict(points: DataFrame, k: int, clustering: ClusteringConfig, seed: int, column: str) -> DataFrame:
    algorithm = KMeans if clustering.algorithm == "kmeans" else BisectingKMeans
    model = algorithm(
        k=k, seed=seed, maxIter=clustering.max_iterations, featuresCol="features", predictionCol=column
    ).fit(_in_fixed_layout(points))
    return model.transform(points)


def _in_fixed_layout(points: DataFrame) -> DataFrame:
    """The points in partitions that depend on their ids alone. MLlib's k-means|| start draws per
    partition, seeded by the partition's index, row by row: the same points laid out otherwise
    (another executor count, a retried task, shuffle blocks fetched in another order) gave other
    clusters, so a rerun on a cluster rendered other prompts and asked the LLM again. An explicit
    partition count is one adaptive execution leaves alone."""
    partitions = int(points.sparkSession.conf.get("spark.sql.shuffle.partitions"))
    return points.repartition(partitions, "entity_id").sortWithinPartitions("entity_id")


FINE_SCHEMA = "entity_id string, view string, vector array<float>, imputed boolean, coarse int, fine long"


def _two_level(points: DataFrame, k: int, target_size: int, clustering: ClusteringConfig, seed: int) -> DataFrame:
    coarse = _fit_predict(points, math.ceil(math.sqrt(k)), clustering, seed, "coarse")

    def fine(group: pd.DataFrame) -> pd.DataFrame:
        from sklearn.cluster import KMeans as LocalKMeans

        group = group.sort_values("entity_id", ignore_index=True)  # rows arrive in shuffle-fetch order
        vectors = np.stack(group["vector"].to_numpy())
        n_clusters = max(1, math.ceil(len(vectors) / target_size))
        labels = (
            np.zeros(len(vectors), dtype=np.int64)
            if n_clusters == 1
            else LocalKMeans(
                n_clusters=n_clusters, random_state=seed, n_init=1, max_iter=clustering.max_iterations
            ).fit_predict(vectors)
        )
        return group.assign(fine=labels)

    # The group's rows come back whole with their label: joining labels back would shuffle every
    # vector once more.
    columns = ["entity_id", "view", "vector", "imputed", "coarse"]
    return coarse.select(*columns).groupBy("coarse").applyInPandas(fine, FINE_SCHEMA)


def split_oversized(assigned: DataFrame, clustering: ClusteringConfig, seed: int) -> DataFrame:
    """Every fitted cluster above `clustering.max_cluster_ratio` x its target size split into
    parts of about the target size ("<cluster_id>/<part>"): k-means leaves dense regions whole (at
    scale, popular tastes), and one prompt cannot speak for thousands of users. Only the oversized
    clusters' points move (a broadcast list of their ids marks them); the fixed clusters of users
    without window items stay whole (identical points, no prompt), as do the clusters of a view
    whose count the config fixes (that count is what was asked for)."""
    items, users = ClusterCount.of_items(clustering), ClusterCount.of_users(clustering)
    target = F.when(F.col("view") == ITEM_VIEW, F.lit(items.split_target)).otherwise(F.lit(users.split_target))
    target = target.cast("int")
    sizes = assigned.where(~F.col("imputed")).groupBy("cluster_id", "view").count()
    oversized = sizes.where(F.col("count") > F.ceil(target * clustering.max_cluster_ratio))
    marked = assigned.join(F.broadcast(oversized.select("cluster_id", target.alias("target"))), "cluster_id", "left")
    kept = marked.where(F.col("target").isNull()).drop("target")
    split = partial(_split_cluster, clustering.max_cluster_ratio, clustering.max_iterations, seed)
    parts = marked.where(F.col("target").isNotNull()).groupBy("cluster_id").applyInPandas(split, SPLIT_SCHEMA)
    return kept.unionByName(parts)


SPLIT_SCHEMA = "cluster_id string, entity_id string, view string, vector array<float>, imputed boolean"


def _split_cluster(ratio: float, iterations: int, seed: int, cluster: pd.DataFrame) -> pd.DataFrame:
    """One oversized cluster in ceil(size / target) k-means parts; a part still above the ratio
    (identical points cannot be told apart by distance) is cut into equal runs in id order."""
    cluster = cluster.sort_values("entity_id", ignore_index=True)  # rows arrive in shuffle-fetch order
    target = int(cluster["target"].iloc[0])
    vectors = np.stack(cluster["vector"].to_numpy())
    parts = math.ceil(len(cluster) / target)
    labels = np.zeros(len(cluster), dtype=np.int64)
    if len(np.unique(vectors, axis=0)) >= parts:
        from sklearn.cluster import KMeans as LocalKMeans

        labels = LocalKMeans(n_clusters=parts, random_state=seed, n_init=1, max_iter=iterations).fit_predict(vectors)
    part = np.empty(len(cluster), dtype=np.int64)
    start = 0
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        runs = math.ceil(len(members) / target) if len(members) > ratio * target else 1
        part[members] = start + np.arange(len(members)) * runs // len(members)
        start += runs
    named = cluster["cluster_id"] + "/" + pd.Series(part).astype(str)
    return cluster.drop(columns="target").assign(cluster_id=named)


def describe_clusters(assigned: DataFrame, representatives: int) -> DataFrame:
    """Per cluster: size, centroid (the members' mean) and the members nearest to it."""
    centroids = (
        assigned.withColumn("features", array_to_vector("vector"))
        .groupBy("cluster_id", "view")
        .agg(F.count("*").alias("size"), Summarizer.mean(F.col("features")).alias("centroid_vector"))
    )
    centroids = centroids.select("cluster_id", "view", "size", vector_to_array("centroid_vector").alias("centroid"))
    squared = F.zip_with("vector", "centroid", lambda a, b: (a - b) * (a - b))
    # Rounded: a vector computed in another batch differs in its last bits, which must not reorder
    # near-equidistant members (the item prompts list the representatives in this order).
    distance = F.round(F.aggregate(squared, F.lit(0.0).cast("double"), lambda total, x: total + x), 6)
    nearest = Window.partitionBy("cluster_id").orderBy("distance", "entity_id")
    ranked = (
        assigned.select("cluster_id", "entity_id", "vector")
        .join(centroids.select("cluster_id", "centroid"), "cluster_id")
        .select("cluster_id", "entity_id", distance.alias("distance"))
        .withColumn("rank", F.row_number().over(nearest))
        .where(F.col("rank") <= representatives)
    )
    members = ranked.groupBy("cluster_id").agg(
        F.array_sort(F.collect_list(F.struct("rank", "entity_id"))).getField("entity_id").alias("representatives")
    )
    entity_type = F.when(F.col("view") == ITEM_VIEW, "item").otherwise("user")
    return centroids.join(members, "cluster_id").select(
        "cluster_id", entity_type.alias("entity_type"), "view", "size", "centroid", "representatives"
    )
