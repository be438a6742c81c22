"""Clustering gives the same clusters however Spark laid the points out: a rerun on a cluster
(other executors, a retried task) must render the same prompts, or it asks the LLM again. Skew:
users without a view get a fixed cluster, and oversized clusters are split."""

import numpy as np
import pytest
from pyspark.sql import functions as F

from reki_spark.config import ClusteringConfig
from reki_spark.knowledge.clustering import ClusterCount, _assign, split_oversized


def _points(spark, layout: int):
    # No clear structure: where k-means|| starts decides the clusters.
    vectors = np.random.default_rng(7).normal(size=(400, 8)).astype(float)
    rows = [(f"u{i:03d}", "positive", vector.tolist(), False) for i, vector in enumerate(vectors)]
    frame = spark.createDataFrame(rows, "entity_id string, view string, vector array<float>, imputed boolean")
    # The same rows in another number of partitions, in another order.
    return (
        frame.repartition(layout).orderBy(F.xxhash64("entity_id", F.lit(layout))) if layout > 1 else frame.coalesce(1)
    )


@pytest.mark.parametrize("max_flat_clusters", [1_000, 3], ids=["flat", "two-level"])
def test_the_same_points_in_another_layout_get_the_same_clusters(spark, max_flat_clusters):
    clustering = ClusteringConfig(max_flat_clusters=max_flat_clusters)
    assignments = [
        {
            row["entity_id"]: row["cluster_id"]
            for row in _assign(_points(spark, layout), "user:positive", ClusterCount(40, None), clustering, 1).collect()
        }
        for layout in (1, 5)
    ]
    assert len(set(assignments[0].values())) >= 8
    assert assignments[0] == assignments[1]


def _skewed_points(spark):
    """150 users with nothing in the view (imputed: all at the view's mean), a dense taste shared
    by 200 users (one point), 100 scattered users."""
    rng = np.random.default_rng(3)
    mean, dense = np.zeros(8), np.eye(8)[0] * 5
    planted = [("cold", 150, lambda: mean, True), ("fan", 200, lambda: dense, False)]
    planted.append(("other", 100, lambda: rng.normal(size=8) * 3, False))
    rows = [
        (f"{name}{i:03d}", "negative", point().tolist(), imputed)
        for name, n, point, imputed in planted
        for i in range(n)
    ]
    return rows, spark.createDataFrame(rows, "entity_id string, view string, vector array<float>, imputed boolean")


def test_users_without_the_view_get_a_fixed_cluster_and_oversized_clusters_are_split(spark):
    """Planted skew (`_skewed_points`). Target 20, ratio 3: no fitted cluster may pass 60
    members, and the imputed users sit alone in the fixed cluster."""
    rows, points = _skewed_points(spark)
    clustering = ClusteringConfig(user_cluster_size=20, max_cluster_ratio=3.0)
    count = ClusterCount.of_users(clustering)
    assigned = split_oversized(_assign(points, "user:negative", count, clustering, 1), clustering, 1).collect()
    clusters: dict[str, list[str]] = {}
    for row in assigned:
        clusters.setdefault(row["cluster_id"], []).append(row["entity_id"])
    assert sorted(row["entity_id"] for row in assigned) == sorted(row[0] for row in rows)  # each user once
    fixed = clusters.pop("user:negative:no-window-items")
    assert sorted(fixed) == sorted(row[0] for row in rows if row[3])
    assert max(len(members) for members in clusters.values()) <= 60
    fan_parts = {cluster for cluster, members in clusters.items() if any(m.startswith("fan") for m in members)}
    assert len(fan_parts) >= 4 and all("/" in cluster for cluster in fan_parts)  # 200 identical: split by id


def test_a_fixed_cluster_count_gives_that_many_clusters_and_none_is_split(spark):
    """`clustering.user_clusters` (KAR's way): exactly that many fitted clusters, the 200 identical
    points kept whole although they pass the size ratio, the imputed users still apart."""
    _, points = _skewed_points(spark)
    clustering = ClusteringConfig(user_cluster_size=20, user_clusters=7, max_cluster_ratio=3.0)
    count = ClusterCount.of_users(clustering)
    assigned = split_oversized(_assign(points, "user:negative", count, clustering, 1), clustering, 1).toPandas()
    sizes = assigned[~assigned["imputed"]].groupby("cluster_id").size()
    assert len(sizes) == 7 and sizes.max() >= 200 and not sizes.index.str.contains("/").any()
    assert (assigned[assigned["imputed"]]["cluster_id"] == "user:negative:no-window-items").all()
