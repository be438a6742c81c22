"""Clustering gives the same clusters however Spark laid the points out: a rerun on a cluster
(other executors, a retried task) must render the same prompts, or it asks the LLM again."""

import numpy as np
import pytest
from pyspark.sql import functions as F

from reki_spark.config import ClusteringConfig
from reki_spark.knowledge.clustering import _assign


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
            for row in _assign(_points(spark, layout), "user:positive", 40, clustering, 1).collect()
        }
        for layout in (1, 5)
    ]
    assert len(set(assignments[0].values())) >= 8
    assert assignments[0] == assignments[1]
