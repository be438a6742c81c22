"""Incremental refresh, Spark side (`reki refresh` runs this, then extraction and encoding).

New interactions, users and items are merged in; features are rebuilt; the clusters are NOT refit:
every user and item goes to its nearest existing centroid, so new entities reuse their cluster's
knowledge with no LLM call. Only clusters whose membership changed by more than
`refresh.max_membership_change` get a new prompt (and only if its text changed, since prompt ids
hash the inputs); all other prompts, and so their answers, stay as they are."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from reki_spark.config import RekiConfig
from reki_spark.data.ingest import ingest
from reki_spark.features import build_features
from reki_spark.frames import union_all
from reki_spark.knowledge.cluster_ids import NO_WINDOW_ITEMS, fitted_clusters, no_window_items_cluster
from reki_spark.knowledge.clustering import describe_clusters, item_embeddings, user_points, write_assignments
from reki_spark.knowledge.prompts import build_prompts
from reki_spark.lake import CLUSTERS, ITEM_CLUSTERS, ITEM_EMBEDDINGS, ITEM_VIEW, ITEMS, USER_CLUSTERS, USERS, Lake
from reki_spark.parquet_files import read_parquet_files

# Changed cluster ids named in the plan (the count is whole; at scale the ids are not).
CHANGED_EXAMPLES = 20


@dataclass
class RefreshPlan:
    new_users: int
    new_items: int
    new_interactions: int
    clusters: int  # those with a prompt (not the fixed ones of users without window items)
    changed_clusters: int
    changed_examples: list[str]  # the first CHANGED_EXAMPLES ids, in order

    def as_dict(self) -> dict:
        return asdict(self)


def refresh_clusters(spark: SparkSession, config: RekiConfig) -> RefreshPlan:
    lake = Lake(spark, config.lake)
    before = {table: lake.read(table).count() for table in (USERS, ITEMS, "interactions")}
    old_versions = {table: lake.version(table) for table in (ITEM_CLUSTERS, USER_CLUSTERS)}
    ingest(spark, config, merge=True)
    build_features(spark, config)
    after = {table: lake.read(table).count() for table in before}

    _embed_new_items(lake, config)
    embeddings = lake.read(ITEM_EMBEDDINGS)
    centroids = lake.read(CLUSTERS).select("cluster_id", "view", "centroid")
    item_points = embeddings.select(
        F.col("item_id").alias("entity_id"), F.lit(ITEM_VIEW).alias("view"), "vector", F.lit(False).alias("imputed")
    )
    view_points, _ = user_points(lake, embeddings, config.features.label_threshold)
    # Users with nothing in a view keep to its fixed cluster (no one else's nearest: _nearest).
    fixed = view_points.where("imputed").withColumn("cluster_id", no_window_items_cluster(F.col("view")))
    nearest = [_nearest(item_points, centroids), _nearest(view_points.where(~F.col("imputed")), centroids)]
    assigned = union_all([*nearest, fixed]).persist()
    write_assignments(lake, assigned)

    # Pinned: the writes below change the tables it is computed from.
    changed = _changed_clusters(lake, old_versions, config.refresh.max_membership_change).localCheckpoint()
    changed_count = changed.count()
    if changed_count:
        # Changed clusters get their members' new mean and representatives; the rest keep theirs.
        members = assigned.join(changed, "cluster_id", "left_semi")
        described = describe_clusters(members, config.clustering.representatives)
        kept = lake.read(CLUSTERS).join(changed, "cluster_id", "left_anti")
        lake.overwrite(kept.unionByName(described).localCheckpoint(), CLUSTERS)
        build_prompts(spark, config, only_clusters=changed)
    assigned.unpersist()
    return RefreshPlan(
        new_users=after[USERS] - before[USERS],
        new_items=after[ITEMS] - before[ITEMS],
        new_interactions=after["interactions"] - before["interactions"],
        clusters=fitted_clusters(lake.read(CLUSTERS)).count(),
        changed_clusters=changed_count,
        changed_examples=[r["cluster_id"] for r in changed.orderBy("cluster_id").limit(CHANGED_EXAMPLES).collect()],
    )


def _embed_new_items(lake: Lake, config: RekiConfig) -> None:
    known = lake.read(ITEM_EMBEDDINGS).select("item_id")
    new_items = lake.read(ITEMS).join(known, "item_id", "left_anti")
    if not new_items.isEmpty():
        lake.merge(item_embeddings(new_items, config.encoder), ITEM_EMBEDDINGS, ["item_id"])


def _nearest(points: DataFrame, centroids: DataFrame) -> DataFrame:
    """Each point's nearest fitted centroid of its own view (ties: the smaller cluster id). Each
    task reads the centroids from the `clusters` table's files itself (the driver holds only their
    names: at scale, hundreds of MB of centroids) and scores each batch of points against its
    view's centroid matrix, so no (point, centroid) pair ever becomes a row. A point whose view has
    no centroids (the view was absent when `reki cluster` ran) is left out, and said so."""
    views = [r["view"] for r in centroids.select("view").distinct().collect()]  # a row per view
    orphans = points.where(~F.col("view").isin(views)).groupBy("view").count().collect()  # a row per view
    for row in orphans:
        print(f"refresh: {row['count']:,} points of view {row['view']!r} have no clusters: run `reki cluster`")
    files = tuple(centroids.inputFiles())

    @F.pandas_udf("string")
    def nearest(view: pd.Series, vector: pd.Series) -> pd.Series:
        by_view = _fitted_centroids(files)
        chosen = pd.Series(None, index=view.index, dtype=object)
        for name, members in view.groupby(view).groups.items():
            ids, matrix = by_view[name]
            batch = np.stack(vector[members].to_numpy()).astype(np.float64)
            # |p - c|^2 without the (points, centroids, dimension) cube: |p|^2 is the same for
            # every centroid of a point, so it drops out of the argmin.
            distances = (matrix * matrix).sum(1) - 2.0 * batch @ matrix.T
            chosen[members] = ids[distances.argmin(1)]
        return chosen

    return (
        points.where(F.col("view").isin(views))
        .withColumn("cluster_id", nearest("view", "vector"))
        .select("entity_id", "view", "vector", "imputed", "cluster_id")
    )


@lru_cache(maxsize=1)  # per Python worker, which Spark reuses across tasks: read once, not per task
def _fitted_centroids(files: tuple[str, ...]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per view: the fitted clusters' ids (sorted) and centroids, from the `clusters` files. The
    fixed clusters of users without window items are no one's nearest (their centroid is the
    view's mean)."""
    frame = read_parquet_files(files, ["cluster_id", "view", "centroid"]).to_pandas()
    frame = frame[~frame["cluster_id"].str.endswith(f":{NO_WINDOW_ITEMS}")].sort_values("cluster_id")
    return {
        view: (group["cluster_id"].to_numpy(), np.stack(group["centroid"].to_numpy()).astype(np.float64))
        for view, group in frame.groupby("view")
    }


def _entity_clusters(lake: Lake, versions: dict[str, int] | None = None) -> DataFrame:
    """(entity_id, view, cluster_id) of items and users, now or at the given table versions."""

    def read(table: str) -> DataFrame:
        return lake.read_at(table, versions[table]) if versions else lake.read(table)

    return union_all(
        [
            read(ITEM_CLUSTERS).select(F.col("item_id").alias("entity_id"), "view", "cluster_id"),
            read(USER_CLUSTERS).select(F.col("user_id").alias("entity_id"), "view", "cluster_id"),
        ]
    )


def _changed_clusters(lake: Lake, old_versions: dict[str, int], threshold: float) -> DataFrame:
    """Clusters whose members changed (joined or left) by more than `threshold` of their old size."""
    old = _entity_clusters(lake, old_versions)
    moves = (
        old.withColumnRenamed("cluster_id", "old_cluster")
        .join(
            _entity_clusters(lake).withColumnRenamed("cluster_id", "new_cluster"), ["entity_id", "view"], "full_outer"
        )
        .where(
            F.col("old_cluster").isNull()
            | F.col("new_cluster").isNull()
            | (F.col("old_cluster") != F.col("new_cluster"))
        )
    )
    touched = (
        union_all(
            [
                moves.where(F.col("old_cluster").isNotNull()).select(F.col("old_cluster").alias("cluster_id")),
                moves.where(F.col("new_cluster").isNotNull()).select(F.col("new_cluster").alias("cluster_id")),
            ]
        )
        .groupBy("cluster_id")
        .count()
    )
    sizes = old.groupBy("cluster_id").agg(F.count("*").alias("old_size"))
    fractions = touched.join(sizes, "cluster_id", "left").withColumn(
        "fraction", F.col("count") / F.col("old_size").cast("double")
    )
    return fractions.where(F.col("old_size").isNull() | (F.col("fraction") > threshold)).select("cluster_id")
