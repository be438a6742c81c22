"""Knowledge encoding (`reki encode`, REKI stage 2): each accepted answer of the current prompts
becomes one vector from the frozen text encoder, in a Ray Data actor pool. Item and cluster text is
the answer; an individual user's text is profile + history + answer. In collective mode one
vector per cluster is stored; `item_clusters` / `user_clusters` map entities to them.

Reads `prompts`, `knowledge`, and for the coverage report `items`, `users`, `*_clusters`;
writes `knowledge_vectors`, `ledger`."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from ray_workers.backends import model_id
from ray_workers.ray_session import start_ray
from ray_workers.staging import RunFolder, read_input, recover, staged_input, staged_tallies
from reki_spark import console
from reki_spark.config import EncoderConfig, RekiConfig
from reki_spark.lake import (
    ITEM_CLUSTERS,
    ITEMS,
    KNOWLEDGE,
    KNOWLEDGE_VECTORS,
    PROMPTS,
    USER_CLUSTERS,
    USERS,
    Lake,
    source_hash,
)
from reki_spark.ledger import ledger_entry
from reki_spark.session import get_spark
from reki_spark.text_encoder import TextEncoder

VECTOR_KEYS = ["entity_type", "entity_id", "view", "source", "encoder_id"]
# A vector with these and the encoder's id needs no new encoding.
UNCHANGED_KEYS = ("entity_type", "entity_id", "view", "source", "source_hash")


@dataclass
class Coverage:
    items: int
    items_covered: int
    users: int
    users_covered: int
    encoded: int = 0  # vectors this run encoded (the others' text had not changed)

    @property
    def complete(self) -> bool:
        return self.items == self.items_covered and self.users == self.users_covered


def texts_to_encode(lake: Lake, model: str, encoder_id: str) -> DataFrame:
    """One row per current prompt whose vector is missing or was encoded from other text (its
    `source_hash` differs) for `encoder_id`, with its text: the answer (plus the user's context
    for individual users), or the prompt itself where the answer failed validation."""
    prompts = lake.read(PROMPTS).select("prompt_id", "mode", "entity_type", "entity_id", "view", "prompt", "context")
    answers = lake.read(KNOWLEDGE).where(F.col("model_id") == model).select("prompt_id", "text", "status")
    ok = F.col("status") == "ok"
    joined = F.concat_ws(" ", F.coalesce("context", F.lit("")), F.coalesce("text", F.lit("")))
    answer_text = F.regexp_replace(joined, r"^\s+|\s+$", "")  # as Python's str.strip
    texts = prompts.join(answers, "prompt_id").select(
        "prompt_id",
        F.col("mode").alias("source"),
        "entity_type",
        "entity_id",
        "view",
        F.when(ok, answer_text).otherwise(F.col("prompt")).alias("encode_text"),
        F.when(ok, F.lit("answer")).otherwise(F.lit("prompt")).alias("text_source"),
        source_hash(),
    )
    if not lake.exists(KNOWLEDGE_VECTORS) or "source_hash" not in lake.read(KNOWLEDGE_VECTORS).columns:
        return texts
    encoded = lake.read(KNOWLEDGE_VECTORS).where(F.col("encoder_id") == encoder_id)
    return texts.join(encoded.select(*UNCHANGED_KEYS), list(UNCHANGED_KEYS), "left_anti")


class EncoderActor:
    def __init__(self, settings: dict[str, Any], model: str) -> None:
        config = EncoderConfig.model_validate(settings)
        self.encoder = TextEncoder(config.model, config.device, config.batch_size)
        self.provenance = {"encoder_id": config.model, "model_id": model}

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        vectors = self.encoder.encode(batch["encode_text"].tolist())
        return batch.drop(columns=["encode_text"]).assign(vector=list(vectors), **self.provenance)


def encode(config: RekiConfig) -> Coverage:
    lake = Lake(get_spark(config), config.lake)
    encoder = config.encoder
    model = model_id(config.llm)
    with ledger_entry(lake, "encode") as record:
        recovered = recover(lake, KNOWLEDGE_VECTORS, VECTOR_KEYS)
        with staged_input(texts_to_encode(lake, model, encoder.model), lake.root, "encode") as (inputs, count):
            if count:
                _encode_rows(config, inputs, count, lake)
        coverage = replace(knowledge_coverage(lake, encoder.model, config.knowledge.mode), encoded=count)
        record.rows_in, record.rows_out = count, count
        record.details = {
            "encoder_id": encoder.model,
            "model_id": model,
            "recovered_from_staging": recovered,
            **coverage.__dict__,
        }
    handed = f" (+{recovered} handed over)" if recovered else ""
    print(
        f"encode [{encoder.model}]: {count} vectors{handed}; items covered {coverage.items_covered}/{coverage.items}, "
        f"users covered {coverage.users_covered}/{coverage.users}"
    )
    return coverage


def _encode_rows(config: RekiConfig, inputs: RunFolder, count: int, lake: Lake) -> None:
    encoder = config.encoder
    vectors = encoded_vectors(config, inputs, count)
    commit = (encoder.commit_rows, encoder.commit_seconds)
    with console.progress(count, "encode", "text") as progress:
        for tally in staged_tallies(lake, vectors, KNOWLEDGE_VECTORS, VECTOR_KEYS, commit):
            progress.update(tally["rows"])


def encoded_vectors(config: RekiConfig, inputs: RunFolder, count: int) -> Any:
    """The Ray dataset of the `count` texts staged in `inputs`, each with its vector, encoded by a
    pool of encoder actors (Ray started or joined here)."""
    import ray

    encoder = config.encoder
    start_ray(config.ray)
    return read_input(inputs, count, encoder.batch_size).map_batches(
        EncoderActor,
        fn_constructor_kwargs={"settings": encoder.model_dump(), "model": model_id(config.llm)},
        batch_size=encoder.batch_size,
        compute=ray.data.ActorPoolStrategy(size=encoder.actors),
        num_cpus=encoder.cpus_per_actor,
        batch_format="pandas",
    )


def knowledge_coverage(lake: Lake, encoder_id: str, mode: str) -> Coverage:
    """How many items and users have a vector, directly (individual) or through their cluster."""
    vectors = None
    if lake.exists(KNOWLEDGE_VECTORS):
        vectors = lake.read(KNOWLEDGE_VECTORS).where((F.col("encoder_id") == encoder_id) & (F.col("source") == mode))
    return Coverage(
        *_covered(lake, vectors, mode, "item", ITEMS, ITEM_CLUSTERS, "item_id"),
        *_covered(lake, vectors, mode, "user", USERS, USER_CLUSTERS, "user_id"),
    )


def _covered(
    lake: Lake, vectors: DataFrame | None, mode: str, entity_type: str, entities: str, clusters: str, key: str
) -> tuple[int, int]:
    """(entities, entities with a vector), counted by Spark."""
    ids = lake.read(entities).select(key)
    total = ids.count()
    if vectors is None:
        return total, 0
    mine = vectors.where(F.col("entity_type") == entity_type).select("entity_id")
    if mode == "collective":
        covered = lake.read(clusters).join(mine.withColumnRenamed("entity_id", "cluster_id"), "cluster_id", "left_semi")
    else:
        covered = mine.withColumnRenamed("entity_id", key)
    return total, ids.join(covered.select(key), key, "left_semi").count()
