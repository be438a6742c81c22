"""Knowledge encoding (`reki encode`, REKI stage 2): each accepted answer of the current prompts
becomes one vector from the frozen text encoder, in a Ray Data actor pool. Item and cluster text is
the answer; an individual user's text is profile + history + answer. In collective mode one
vector per cluster is stored; `item_clusters` / `user_clusters` map entities to them.

Reads `prompts`, `knowledge`, and for the coverage report `items`, `users`, `*_clusters`;
writes `knowledge_vectors`, `ledger`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from ray_workers.backends import model_id
from ray_workers.delta_io import RsLake
from ray_workers.ray_session import start_ray
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
)
from reki_spark.ledger import ledger_entry
from reki_spark.session import get_spark
from reki_spark.text_encoder import TextEncoder

VECTOR_KEYS = ["entity_type", "entity_id", "view", "source", "encoder_id"]


@dataclass
class Coverage:
    items: int
    items_covered: int
    users: int
    users_covered: int

    @property
    def complete(self) -> bool:
        return self.items == self.items_covered and self.users == self.users_covered


def texts_to_encode(lake: RsLake, model: str) -> pd.DataFrame:
    """One row per current prompt with its text: the answer (plus the user's context for
    individual users), or the prompt itself where the answer failed validation."""
    prompts = lake.read(PROMPTS, ["prompt_id", "mode", "entity_type", "entity_id", "view", "prompt", "context"])
    answers = lake.read(KNOWLEDGE, ["prompt_id", "model_id", "text", "status"])
    answers = answers.filter(pc.equal(answers["model_id"], model)).drop_columns(["model_id"])
    rows = prompts.join(answers, "prompt_id", join_type="inner").to_pandas()
    ok = rows["status"] == "ok"
    answer_text = rows["context"].fillna("").str.cat(rows["text"].fillna(""), sep=" ").str.strip()
    rows["encode_text"] = answer_text.where(ok, rows["prompt"])
    rows["text_source"] = ["answer" if good else "prompt" for good in ok]
    return rows.rename(columns={"mode": "source"})


class EncoderActor:
    def __init__(self, settings: dict[str, Any]) -> None:
        config = EncoderConfig.model_validate(settings)
        self.encoder = TextEncoder(config.model, config.device, config.batch_size)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        vectors = self.encoder.encode(batch["encode_text"].tolist())
        return batch.drop(columns=["encode_text"]).assign(vector=list(vectors))


def encode(config: RekiConfig) -> Coverage:
    lake = Lake(get_spark(config), config.lake)
    reader = RsLake(config.lake)
    encoder = config.encoder
    model = model_id(config.llm)
    with ledger_entry(lake, "encode") as record:
        rows = texts_to_encode(reader, model)
        if len(rows):
            _encode_rows(config, rows, lake)
        coverage = knowledge_coverage(reader, encoder.model, config.knowledge.mode)
        record.rows_in, record.rows_out = len(rows), len(rows)
        record.details = {"encoder_id": encoder.model, "model_id": model, **coverage.__dict__}
    print(
        f"encode [{encoder.model}]: {len(rows)} vectors; items covered {coverage.items_covered}/{coverage.items}, "
        f"users covered {coverage.users_covered}/{coverage.users}"
    )
    return coverage


def _encode_rows(config: RekiConfig, rows: pd.DataFrame, lake: Lake) -> None:
    import ray

    encoder = config.encoder
    start_ray(config.ray)
    columns = ["prompt_id", "source", "entity_type", "entity_id", "view", "encode_text", "text_source"]
    dataset = ray.data.from_pandas(rows[columns]).repartition(max(1, len(rows) // encoder.batch_size))
    vectors = dataset.map_batches(
        EncoderActor,
        fn_constructor_kwargs={"settings": encoder.model_dump()},
        batch_size=encoder.batch_size,
        compute=ray.data.ActorPoolStrategy(size=encoder.actors),
        num_cpus=encoder.cpus_per_actor,
        batch_format="pandas",
    )
    with tqdm(total=len(rows), desc="encode", unit="text") as progress:
        for batch in vectors.iter_batches(batch_size=1024, batch_format="pandas"):
            batch = batch.assign(encoder_id=encoder.model, model_id=model_id(config.llm))
            lake.merge_rows(KNOWLEDGE_VECTORS, batch.to_dict("records"), VECTOR_KEYS)
            progress.update(len(batch))


def knowledge_coverage(lake: RsLake, encoder_id: str, mode: str) -> Coverage:
    """How many items and users have a vector, directly (individual) or through their cluster."""
    vectors = (
        lake.read(KNOWLEDGE_VECTORS, ["entity_type", "entity_id", "source", "encoder_id"])
        if lake.exists(KNOWLEDGE_VECTORS)
        else None
    )
    return Coverage(
        *_covered(lake, vectors, encoder_id, mode, "item", ITEMS, ITEM_CLUSTERS, "item_id"),
        *_covered(lake, vectors, encoder_id, mode, "user", USERS, USER_CLUSTERS, "user_id"),
    )


def _covered(
    lake: RsLake,
    vectors: pa.Table | None,
    encoder_id: str,
    mode: str,
    entity_type: str,
    entities: str,
    clusters: str,
    key: str,
) -> tuple[int, int]:
    ids = lake.read(entities, [key])[key]
    if vectors is None:
        return len(ids), 0
    mine = vectors.filter(
        pc.and_(
            pc.and_(pc.equal(vectors["entity_type"], entity_type), pc.equal(vectors["encoder_id"], encoder_id)),
            pc.equal(vectors["source"], mode),
        )
    )["entity_id"]
    if mode == "collective":
        membership = lake.read(clusters, [key, "cluster_id"])
        covered_ids = membership.filter(pc.is_in(membership["cluster_id"], value_set=mine))[key]
    else:
        covered_ids = mine
    return len(ids), int(pc.sum(pc.is_in(ids, value_set=pc.unique(covered_ids))).as_py() or 0)
