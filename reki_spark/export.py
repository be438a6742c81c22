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
from reki_spark.lake import ITEMS, SERVING_VECTORS, USERS, Lake
from reki_spark.ledger import ledger_entry
from reki_spark.models import CTR_MODELS
from reki_spark.models.base import CTR_FIELDS, ITEM_KNOWLEDGE, RATING_FIELD, USER_KNOWLEDGE
from reki_spark.models.serving import export_torchscript, serving_inputs
from reki_spark.serving import FEATURES_FILE, ITEM_FIELDS, META_FILE, MODEL_FILE, USER_FIELDS, VECTORS_FILE
from reki_spark.training.runs import TrainedRun, load_run

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
        run = load_run(spark, config, model_name, knowledge, seed)
        model, schema = run.model, run.schema
        features_location = storage.join(folder, FEATURES_FILE)
        _write_parquet(_entity_features(run), features_location)
        if knowledge != "none":
            features = spark.read.parquet(storage.spark_uri(features_location))
            lake.overwrite(_serving_vectors(spark, model, features, run.name), SERVING_VECTORS)
            _write_parquet(lake.read(SERVING_VECTORS), storage.join(folder, VECTORS_FILE))
        batch = run.batch(run.example_rows(EXAMPLE_ROWS))
        scripted = export_torchscript(model, batch)
        buffer = io.BytesIO()
        torch.jit.save(scripted, buffer)
        storage.write_bytes(storage.join(folder, MODEL_FILE), buffer.getvalue())
        saved = io.BytesIO(storage.read_bytes(storage.join(folder, MODEL_FILE)))
        difference = _parity(model, torch.jit.load(saved), batch)
        meta = {
            "run": run.name,
            "model": model_name,
            "knowledge": knowledge,
            "seed": seed,
            "history_length": schema.history_length,
            "category_slots": schema.category_slots,
            # knowledge rows per user (an unknown user passes this many zeros)
            "user_knowledge_views": run.user_views,
            "fields": CTR_FIELDS,
            # rating value (as the data writes it, e.g. "4.0") -> the code of a history item's rating
            "rating_codes": run.value_codes(RATING_FIELD),
            "parity_max_abs_diff": difference,
            "example_rows": len(batch["label"]),
        }
        storage.write_text(storage.join(folder, META_FILE), json.dumps(meta, indent=2) + "\n")
        record.rows_out = len(batch["label"])
        record.details = meta
    print(f"export: {folder} ({run.name}, max |TorchScript - PyTorch| = {difference:.2e})")
    return folder


def _parity(model: torch.nn.Module, scripted: torch.jit.ScriptModule, batch: dict[str, torch.Tensor]) -> float:
    with torch.no_grad():
        reference = torch.sigmoid(model(batch))
        exported = scripted(*serving_inputs(batch))
    difference = float((reference - exported).abs().max())
    if difference > PARITY_TOLERANCE:
        raise RuntimeError(f"exported scores differ from PyTorch by {difference:.2e} (> {PARITY_TOLERANCE})")
    return difference


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


def _entity_features(run: TrainedRun) -> DataFrame:
    """One row per user and per item: its feature codes and its knowledge rows (the run's views per
    user)."""
    item_rows, user_rows = run.knowledge_rows
    users = run.lake.read(USERS)
    users = run.coded(
        users.select("user_id", "gender", "age", "occupation").withColumnRenamed("user_id", "entity"),
        {
            "user_id": F.col("entity"),
            "user_gender": F.col("gender"),
            "user_age": F.col("age"),
            "user_occupation": F.col("occupation"),
        },
    )
    items = run.lake.read(ITEMS).select(F.col("item_id").alias("entity"), "brand", "year")
    items = run.coded(
        items, {"item_id": F.col("entity"), "item_brand": F.col("brand"), "item_year": F.col("year")}
    ).join(
        run.item_category_codes().select(
            F.col("item_id").alias("entity"), F.col("category_codes").alias("item_category")
        ),
        "entity",
        "left",
    )
    users = users.join(user_rows.withColumnRenamed("user_id", "entity"), "entity", "left")
    no_rows = F.array_repeat(F.lit(0), run.user_views)
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
