"""Serving export (`reki export`): one trained CTR run becomes (1) per-entity HEIN outputs (32-d per
user view and per item), in the `serving_vectors` Delta table and a Parquet file for an online feature
store, (2) a TorchScript module of backbone + precomputed knowledge whose scores are checked
against the PyTorch model, (3) the entity feature codes the scoring API needs.

Reads `vocab`, `users`, `items`, `samples`, knowledge tables and the run's checkpoint; writes
`serving_vectors`, `<output>/serving/`."""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Iterator

import numpy as np
import pandas as pd
import torch
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from reki_spark import storage
from reki_spark.config import RekiConfig
from reki_spark.lake import ITEMS, SERVING_VECTORS, USERS, VOCAB, Lake
from reki_spark.ledger import ledger_entry
from reki_spark.models import CTR_MODELS
from reki_spark.models.base import CTR_FIELDS, ITEM_KNOWLEDGE, RATING_FIELD, USER_KNOWLEDGE
from reki_spark.models.serving import export_torchscript, serving_inputs
from reki_spark.serving import FEATURES_FILE, ITEM_FIELDS, META_FILE, MODEL_FILE, USER_FIELDS, VECTORS_FILE
from reki_spark.training.data import (
    KEYED_BY_CLUSTER,
    KnowledgeRows,
    ctr_view,
    encode_field,
    entity_knowledge_rows,
    item_codes,
)
from reki_spark.training.feeding import ctr_batch
from reki_spark.training.loop import ModelSpec
from reki_spark.training.train import best_model, model_spec, staged_ctr_view

PARITY_TOLERANCE = 1e-5
EXAMPLE_ROWS = 512


def export(spark: SparkSession, config: RekiConfig) -> str:
    """Returns the bundle's location (`<output>/serving`)."""
    lake = Lake(spark, config.lake)
    training, chosen = config.training, config.export
    model_name = chosen.model or next((m for m in training.models if m in CTR_MODELS), None)
    if model_name is None:
        raise ValueError("nothing to export: training.models has no CTR backbone (set export.model)")
    knowledge = chosen.knowledge or config.knowledge.mode
    seed = chosen.seed if chosen.seed is not None else training.seeds[0]
    folder = storage.join(config.output, "serving")
    with ledger_entry(lake, "export") as record:
        spec = model_spec(spark, config, model_name, knowledge, seed)
        model = best_model(spec).eval()
        vocab = lake.read(VOCAB)
        schema = spec.schema
        rows = entity_knowledge_rows(lake, vocab, spec.keyed_by)
        features_location = storage.join(folder, FEATURES_FILE)
        _write_parquet(_entity_features(lake, vocab, schema.category_slots, rows, _user_views(spec)), features_location)
        if knowledge != "none":
            features = spark.read.parquet(storage.spark_uri(features_location))
            lake.overwrite(_serving_vectors(spark, model, features, spec.name), SERVING_VECTORS)
            _write_parquet(lake.read(SERVING_VECTORS), storage.join(folder, VECTORS_FILE))
        example = _example_rows(spark, config.output, lake, vocab, spec, rows)
        batch = ctr_batch(example, schema.history_length, schema.category_slots, spec.keyed_by)
        scripted = export_torchscript(model, batch)
        buffer = io.BytesIO()
        torch.jit.save(scripted, buffer)
        storage.write_bytes(storage.join(folder, MODEL_FILE), buffer.getvalue())
        saved = io.BytesIO(storage.read_bytes(storage.join(folder, MODEL_FILE)))
        difference = _parity(model, torch.jit.load(saved), batch)
        meta = {
            "run": spec.name,
            "model": model_name,
            "knowledge": knowledge,
            "seed": seed,
            "history_length": schema.history_length,
            "category_slots": schema.category_slots,
            # knowledge rows per user (an unknown user passes this many zeros)
            "user_knowledge_views": _user_views(spec),
            "fields": CTR_FIELDS,
            # rating value (as the data writes it, e.g. "4.0") -> the code of a history item's rating
            "rating_codes": _codes_of(vocab, RATING_FIELD),
            "parity_max_abs_diff": difference,
            "example_rows": len(batch["label"]),
        }
        storage.write_text(storage.join(folder, META_FILE), json.dumps(meta, indent=2) + "\n")
        record.rows_out = len(batch["label"])
        record.details = meta
    print(f"export: {folder} ({spec.name}, max |TorchScript - PyTorch| = {difference:.2e})")
    return folder


def _example_rows(
    spark: SparkSession, output: str, lake: Lake, vocab: DataFrame, spec: ModelSpec, rows: KnowledgeRows
) -> pd.DataFrame:
    """EXAMPLE_ROWS test rows for the TorchScript trace and the parity check: from the view the
    training staged (its joins are most of a CTR training's Spark time at scale), rebuilt only
    where that is gone or lacks the knowledge rows this run's examples carry."""
    grouped = spec.keyed_by == KEYED_BY_CLUSTER
    view = staged_ctr_view(spark, output)
    if view is None or (grouped and "kitem" not in view.columns):
        view = ctr_view(lake, vocab, spec.schema, rows if grouped else None)
    return view.where(F.col("split") == "test").limit(EXAMPLE_ROWS).toPandas()


def _parity(model: torch.nn.Module, scripted: torch.jit.ScriptModule, batch: dict[str, torch.Tensor]) -> float:
    with torch.no_grad():
        reference = torch.sigmoid(model(batch))
        exported = scripted(*serving_inputs(batch))
    difference = float((reference - exported).abs().max())
    if difference > PARITY_TOLERANCE:
        raise RuntimeError(f"exported scores differ from PyTorch by {difference:.2e} (> {PARITY_TOLERANCE})")
    return difference


def _user_views(spec: ModelSpec) -> int:
    return 1 if spec.knowledge_arrays is None else spec.knowledge_arrays.user_views


def _serving_vectors(spark: SparkSession, model: torch.nn.Module, features: DataFrame, run: str) -> DataFrame:
    """HEIN's output per user and item, computed on the executors from each entity's knowledge rows
    (in the entity features): the knowledge adapter (HEIN and the knowledge-vector tables) goes out
    as one broadcast, and each partition runs it over its own entities."""
    adapter = spark.sparkContext.broadcast(copy.deepcopy(model.adapter).eval())

    def vectors(parts: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for part in parts:
            for entity_type, rows in part.groupby("entity_type"):
                with torch.no_grad():
                    if entity_type == "user":
                        out = adapter.value.users(torch.as_tensor(np.stack(rows[USER_KNOWLEDGE].to_numpy())).long())
                    else:
                        out = adapter.value.items(torch.as_tensor(rows[ITEM_KNOWLEDGE].to_numpy()).long())
                yield rows[["entity_type", "entity_id"]].assign(vector=list(out.numpy()), model=run)

    schema = "entity_type string, entity_id string, vector array<float>, model string"
    return features.select("entity_type", "entity_id", USER_KNOWLEDGE, ITEM_KNOWLEDGE).mapInPandas(vectors, schema)


def _write_parquet(frame: DataFrame, location: str) -> None:
    """Parquet parts written by the executors into the bundle folder (pandas and pyarrow read the
    folder as one table); never gathered on the driver."""
    frame.write.mode("overwrite").parquet(storage.spark_uri(location))


def _codes(frame: DataFrame, vocab: DataFrame, columns: dict[str, F.Column]) -> DataFrame:
    """Each named column's vocabulary code (0 where unknown)."""
    for field, column in columns.items():
        frame = encode_field(frame, vocab, field, column, field)
    return frame


def _codes_of(vocab: DataFrame, field: str) -> dict[str, int]:
    # A handful of distinct rating values: bounded by the rating scale.
    return {row["value"]: row["index"] for row in vocab.where(F.col("field") == field).collect()}


def _entity_features(
    lake: Lake, vocab: DataFrame, category_slots: int, knowledge: KnowledgeRows, views: int
) -> DataFrame:
    """One row per user and per item: its feature codes and its knowledge rows (`views` per user)."""
    item_rows, user_rows = knowledge
    users = lake.read(USERS)
    users = _codes(
        users.select("user_id", "gender", "age", "occupation").withColumnRenamed("user_id", "entity"),
        vocab,
        {
            "user_id": F.col("entity"),
            "user_gender": F.col("gender"),
            "user_age": F.col("age"),
            "user_occupation": F.col("occupation"),
        },
    )
    items = lake.read(ITEMS).select(F.col("item_id").alias("entity"), "brand", "year")
    items = _codes(
        items, vocab, {"item_id": F.col("entity"), "item_brand": F.col("brand"), "item_year": F.col("year")}
    ).join(
        item_codes(lake, vocab, category_slots).select(
            F.col("item_id").alias("entity"), F.col("category_codes").alias("item_category")
        ),
        "entity",
        "left",
    )
    users = users.join(user_rows.withColumnRenamed("user_id", "entity"), "entity", "left")
    no_rows = F.array_repeat(F.lit(0), views)
    user_features = users.select(
        F.lit("user").alias("entity_type"),
        F.col("entity").alias("entity_id"),
        *USER_FIELDS,
        F.coalesce(USER_KNOWLEDGE, no_rows).alias(USER_KNOWLEDGE),
    )
    items = items.join(item_rows.withColumnRenamed("item_id", "entity"), "entity", "left")
    item_features = items.select(
        F.lit("item").alias("entity_type"),
        F.col("entity").alias("entity_id"),
        *ITEM_FIELDS,
        F.coalesce(ITEM_KNOWLEDGE, F.lit(0)).alias(ITEM_KNOWLEDGE),
    )
    return user_features.unionByName(item_features, allowMissingColumns=True)
