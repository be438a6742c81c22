"""Incremental refresh, Spark side (`reki refresh` runs this, then extraction and encoding).

New interactions, users and items are merged in; features are rebuilt; the clusters are NOT refit:
every user and item goes to its nearest existing centroid, so new entities reuse their cluster's
knowledge with no LLM call. Only clusters whose membership changed by more than
`refresh.max_membership_change` get a new prompt (and only if its text changed, since prompt ids
hash the inputs); all other prompts, and so their answers, stay as they are."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from reki_spark.config import RekiConfig
from reki_spark.data.ingest import ingest
from reki_spark.features import build_features
from reki_spark.frames import union_all
from reki_spark.knowledge.clustering import (
    describe_clusters,
    item_embeddings,
    user_points,
    write_assignments,
)
from reki_spark.knowledge.prompts import build_prompts
from reki_spark.lake import CLUSTERS, ITEM_CLUSTERS, ITEM_EMBEDDINGS, ITEM_VIEW, ITEMS, USER_CLUSTERS, USERS, Lake


@dataclass
class RefreshPlan:
    new_users: int
    new_items: int
    new_interactions: int
    clusters: int
    changed_clusters: list[str]

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
    assigned = union_all([_nearest(item_points, centroids), _nearest(view_points, centroids)]).persist()
    write_assignments(lake, assigned)

    changed = _changed_clusters(lake, old_versions, config.refresh.max_membership_change)
    if changed:
        # Changed clusters get their members' new mean and representatives; the rest keep theirs.
        members = assigned.where(F.col("cluster_id").isin(changed))
        described = describe_clusters(members, config.clustering.representatives)
        kept = lake.read(CLUSTERS).where(~F.col("cluster_id").isin(changed))
        lake.overwrite(kept.unionByName(described).localCheckpoint(), CLUSTERS)
        build_prompts(spark, config, only_clusters=changed)
    assigned.unpersist()
    return RefreshPlan(
        new_users=after[USERS] - before[USERS],
        new_items=after[ITEMS] - before[ITEMS],
        new_interactions=after["interactions"] - before["interactions"],
        clusters=lake.read(CLUSTERS).count(),
        changed_clusters=sorted(changed),
    )


def _embed_new_items(lake: Lake, config: RekiConfig) -> None:
    known = lake.read(ITEM_EMBEDDINGS).select("item_id")
    new_items = lake.read(ITEMS).join(known, "item_id", "left_anti")
    if not new_items.isEmpty():
        lake.merge(item_embeddings(new_items, config.encoder), ITEM_EMBEDDINGS, ["item_id"])


def _nearest(points: DataFrame, centroids: DataFrame) -> DataFrame:
    """Each point's nearest existing centroid of its own view (ties: the smaller cluster id). The
    centroids travel to the executors as one broadcast and each batch of points is scored against
    its view's centroid matrix, so no (point, centroid) pair ever becomes a row. A point whose view
    has no centroids (the view was absent when `reki cluster` ran) is left out, and said so."""
    # One row per cluster: bounded by clustering.k per view, a few thousand at most.
    rows = centroids.orderBy("cluster_id").collect()
    by_view = {
        view: (
            np.array([r["cluster_id"] for r in rows if r["view"] == view]),
            np.array([r["centroid"] for r in rows if r["view"] == view], dtype=np.float64),
        )
        for view in {r["view"] for r in rows}
    }
    orphans = points.where(~F.col("view").isin(list(by_view))).groupBy("view").count().collect()  # one per view
    for row in orphans:
        print(f"refresh: {row['count']:,} points of view {row['view']!r} have no clusters: run `reki cluster`")
    shared = points.sparkSession.sparkContext.broadcast(by_view)

    @F.pandas_udf("string")
    def nearest(view: pd.Series, vector: pd.Series) -> pd.Series:
        chosen = pd.Series(None, index=view.index, dtype=object)
        for name, members in view.groupby(view).groups.items():
            ids, matrix = shared.value[name]
            batch = np.stack(vector[members].to_numpy()).astype(np.float64)
            # |p - c|^2 without the (points, centroids, dimension) cube: |p|^2 is the same for
            # every centroid of a point, so it drops out of the argmin.
            distances = (matrix * matrix).sum(1) - 2.0 * batch @ matrix.T
            chosen[members] = ids[distances.argmin(1)]
        return chosen

    return (
        points.where(F.col("view").isin(list(by_view)))
        .withColumn("cluster_id", nearest("view", "vector"))
        .select("entity_id", "view", "vector", "imputed", "cluster_id")
    )


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


def _changed_clusters(lake: Lake, old_versions: dict[str, int], threshold: float) -> list[str]:
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
    # One row per changed cluster: bounded by the cluster count.
    return sorted(
        r["cluster_id"] for r in fractions.where(F.col("old_size").isNull() | (F.col("fraction") > threshold)).collect()
    )
