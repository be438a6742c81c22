"""Prompt building (`reki prompts`): individual prompts per user and item, or collective prompts
per cluster, rendered from the templates and written to `prompts` with stable ids. The ledger
records both how many prompts were made and how many the other mode would make.

Reads `users`, `items`, `prompt_windows`, `clusters`; writes `prompts`."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from reki_spark.config import RekiConfig
from reki_spark.frames import union_all
from reki_spark.knowledge import templates as tpl
from reki_spark.knowledge.cluster_ids import fitted_clusters
from reki_spark.lake import CLUSTERS, ITEM_VIEW, ITEMS, POSITIVE, PROMPT_WINDOWS, PROMPTS, USER_CLUSTERS, USERS, Lake
from reki_spark.ledger import ledger_entry

INDIVIDUAL, COLLECTIVE = "individual", "collective"
_INPUT_COLUMNS = [
    "kind",
    "entity_type",
    "entity_id",
    "view",
    "title",
    "brand",
    "titles",
    "ratings",
    "gender",
    "age",
    "occupation",
]


def build_prompts(spark: SparkSession, config: RekiConfig, only_clusters: DataFrame | None = None) -> dict[str, int]:
    """All prompts of `knowledge.mode`; with `only_clusters` (incremental refresh: a frame of
    `cluster_id`s, joined, never collected), only those clusters' prompts are rebuilt and every
    other row of `prompts` is kept as it is."""
    lake = Lake(spark, config.lake)
    knowledge = config.knowledge
    style = tpl.PromptStyle.for_domain(
        knowledge.domain, knowledge.factors, knowledge.max_entity_chars, knowledge.template_version
    )
    with ledger_entry(lake, "prompts") as record:
        items, users = lake.read(ITEMS), lake.read(USERS)
        if knowledge.mode == INDIVIDUAL:
            inputs = union_all([_item_inputs(items), _user_inputs(lake, items, users, knowledge.max_history_items)])
        else:
            inputs = union_all([_item_cluster_inputs(lake, items), _user_cluster_inputs(lake, items, config)])
        if only_clusters is None:
            lake.overwrite(_render(inputs, style, knowledge.mode), PROMPTS)
        else:
            chosen = only_clusters.select(F.col("cluster_id").alias("entity_id"))
            rebuilt = _render(inputs.join(chosen, "entity_id", "left_semi"), style, knowledge.mode)
            kept = lake.read(PROMPTS).join(chosen, "entity_id", "left_anti")
            lake.overwrite(kept.unionByName(rebuilt).localCheckpoint(), PROMPTS)
        made = lake.read(PROMPTS).count()
        individual = items.count() + users.count()
        collective = fitted_clusters(lake.read(CLUSTERS)).count() if lake.exists(CLUSTERS) else None
        record.rows_in = individual
        record.rows_out = made
        record.details = {
            "mode": knowledge.mode,
            "prompts": made,
            "individual_prompts": individual,
            "collective_prompts": collective,
        }
    share = (
        f" ({made / individual:.1%} of the {individual:,} individual prompts)" if knowledge.mode == COLLECTIVE else ""
    )
    print(f"prompts: {made:,} {knowledge.mode}{share}")
    return record.details


def _columns(**given: Column) -> list[Column]:
    return [given.get(name, F.lit(None)).alias(name) for name in _INPUT_COLUMNS]


def _item_inputs(items: DataFrame) -> DataFrame:
    return items.select(
        *_columns(
            kind=F.lit("item"),
            entity_type=F.lit("item"),
            entity_id=F.col("item_id"),
            view=F.lit(ITEM_VIEW),
            title=F.col("title"),
            brand=F.col("brand"),
        )
    )


def _ordered_titles(rows: DataFrame, keys: list[str], order: str, limit: int) -> DataFrame:
    """Per key: the first `limit` titles (and ratings) in `order`."""
    ordered = F.array_sort(F.collect_list(F.struct(order, "title", "rating")))
    return (
        rows.groupBy(*keys)
        .agg(F.slice(ordered, 1, limit).alias("events"))
        .select(*keys, F.col("events.title").alias("titles"), F.col("events.rating").alias("ratings"))
    )


def _user_inputs(lake: Lake, items: DataFrame, users: DataFrame, max_history: int) -> DataFrame:
    window = lake.read(PROMPT_WINDOWS).join(items.select("item_id", "title"), "item_id")
    histories = _ordered_titles(window, ["user_id"], "position", max_history)
    joined = users.join(histories, "user_id", "left")
    return joined.select(
        *_columns(
            kind=F.lit("user"),
            entity_type=F.lit("user"),
            entity_id=F.col("user_id"),
            view=F.lit("profile"),
            titles=F.coalesce("titles", F.array()),
            ratings=F.coalesce("ratings", F.array()),
            gender=F.col("gender"),
            age=F.col("age"),
            occupation=F.col("occupation"),
        )
    )


def _item_representatives(lake: Lake) -> DataFrame:
    clusters = lake.read(CLUSTERS).where(F.col("entity_type") == "item")
    return clusters.select("cluster_id", "view", F.posexplode("representatives").alias("rank", "member_id"))


def _item_cluster_inputs(lake: Lake, items: DataFrame) -> DataFrame:
    members = _item_representatives(lake).join(
        items.select(F.col("item_id").alias("member_id"), "title", F.lit(None).cast("double").alias("rating")),
        "member_id",
    )
    return _cluster_inputs(_ordered_titles(members, ["cluster_id", "view"], "rank", 10_000), "item")


def _user_cluster_inputs(lake: Lake, items: DataFrame, config: RekiConfig) -> DataFrame:
    """Per user cluster and view: the titles its members liked (or disliked) in their prompt
    windows, the most shared first. All members count, so a cluster whose most central members
    stood at the view's mean (no such feedback) still gets the titles of the others."""
    threshold = config.features.label_threshold
    members = lake.read(USER_CLUSTERS).select("cluster_id", "view", "user_id")
    liked = F.col("rating").isNull() | (F.col("rating") > threshold)
    in_view = F.when(F.col("view") == POSITIVE, liked).otherwise(~liked)
    counted = (
        members.join(lake.read(PROMPT_WINDOWS), "user_id")
        .where(in_view)
        .groupBy("cluster_id", "view", "item_id")
        .agg(F.count("*").alias("members"))
    )
    top = Window.partitionBy("cluster_id").orderBy(F.desc("members"), "item_id")
    ranked = (
        counted.withColumn("rank", F.row_number().over(top))
        .where(F.col("rank") <= config.clustering.representatives)
        .join(items.select("item_id", "title"), "item_id")
        .withColumn("rating", F.lit(None).cast("double"))
    )
    limit = config.clustering.representatives
    return _cluster_inputs(_ordered_titles(ranked, ["cluster_id", "view"], "rank", limit), "user")


def _cluster_inputs(titles: DataFrame, entity_type: str) -> DataFrame:
    return titles.select(
        *_columns(
            kind=F.lit(f"{entity_type}_cluster"),
            entity_type=F.lit(entity_type),
            entity_id=F.col("cluster_id"),
            view=F.col("view"),
            titles=F.col("titles"),
        )
    )


def render_row(style: tpl.PromptStyle, row: dict) -> tuple[str, str | None]:
    """The prompt text and, for individual users, the profile + history context."""
    kind = row["kind"]
    if kind == "item":
        return tpl.item_prompt(style, row["title"], row["brand"]), None
    if kind == "user":
        age = None if pd.isna(row["age"]) else int(row["age"])
        profile = tpl.profile_sentence(row["gender"], age, row["occupation"], style.max_entity_chars)
        ratings = [None if pd.isna(r) else float(r) for r in row["ratings"]]
        history = tpl.history_list(list(row["titles"]), ratings, style.max_entity_chars) or "none yet"
        return tpl.user_prompt(style, profile, history), f"{profile} History: {history}".strip()
    if kind == "item_cluster":
        return tpl.item_cluster_prompt(style, list(row["titles"])), None
    return tpl.user_cluster_prompt(style, row["view"], list(row["titles"])), None


def _render(inputs: DataFrame, style: tpl.PromptStyle, mode: str) -> DataFrame:
    def render(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            rows = []
            for row in batch.to_dict("records"):
                prompt, context = render_row(style, row)
                rows.append(
                    {
                        "prompt_id": tpl.prompt_id(
                            style.template_version, row["kind"], row["entity_id"], row["view"], style.system, prompt
                        ),
                        "kind": row["kind"],
                        "mode": mode,
                        "entity_type": row["entity_type"],
                        "entity_id": row["entity_id"],
                        "view": row["view"],
                        "system": style.system,
                        "prompt": prompt,
                        "context": context,
                        "template_version": style.template_version,
                    }
                )
            yield pd.DataFrame(
                rows,
                columns=[
                    "prompt_id",
                    "kind",
                    "mode",
                    "entity_type",
                    "entity_id",
                    "view",
                    "system",
                    "prompt",
                    "context",
                    "template_version",
                ],
            )

    typed = inputs.select(
        "kind",
        "entity_type",
        "entity_id",
        "view",
        F.col("title").cast("string"),
        F.col("brand").cast("string"),
        F.col("titles").cast("array<string>"),
        F.col("ratings").cast("array<double>"),
        F.col("gender").cast("string"),
        F.col("age").cast("int"),
        F.col("occupation").cast("string"),
    )
    return typed.mapInPandas(
        render,
        (
            "prompt_id string, kind string, mode string, entity_type string, entity_id string, view string, "
            "system string, prompt string, context string, template_version string"
        ),
    )
