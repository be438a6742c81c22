"""Cluster ids that more than one stage reads: the fixed cluster of users without window items.
Spark SQL only, so the prompts stage imports it on the slim executor environment."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

# The fixed cluster of a view's users whose prompt window holds nothing of that view ("user:
# negative:no-window-items"): their points are all the view's mean, which k-means piled into one
# cluster beside real members (at scale one huge fit of the two-level path), and with no titles
# to show, no prompt is rendered for it.
NO_WINDOW_ITEMS = "no-window-items"


def fitted_clusters(frame: DataFrame) -> DataFrame:
    """The rows of `frame` (with `cluster_id`) outside the fixed clusters: the clusters that get a
    collective prompt."""
    return frame.where(~F.col("cluster_id").endswith(f":{NO_WINDOW_ITEMS}"))


def no_window_items_cluster(view: Column) -> Column:
    """The fixed cluster of a view's users with nothing of that view in their prompt window."""
    return F.concat(F.lit("user:"), view, F.lit(f":{NO_WINDOW_ITEMS}"))
