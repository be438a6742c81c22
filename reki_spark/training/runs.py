"""A finished CTR run as what comes after training reads it (`reki export`): the run's best model
and the inputs it was trained on, behind one object, so that nothing outside `training/` reaches
into its views, vocabulary encoders, batches or checkpoints."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from torch import nn

from reki_spark.config import RekiConfig
from reki_spark.lake import VOCAB, Lake
from reki_spark.models import CtrSchema
from reki_spark.training.data import (
    KEYED_BY_CLUSTER,
    KnowledgeRows,
    ctr_view,
    encode_field,
    entity_knowledge_rows,
    item_codes,
)
from reki_spark.training.feeding import ctr_batch
from reki_spark.training.loop import ModelSpec, best_model
from reki_spark.training.train import model_spec, staged_ctr_view


@dataclass
class TrainedRun:
    """One trained CTR run: its spec, its best weights loaded (eval mode), the vocabulary it was
    coded with, and the knowledge rows its entities carry (item rows, user rows per view)."""

    spec: ModelSpec
    model: nn.Module
    vocab: DataFrame
    knowledge_rows: KnowledgeRows
    lake: Lake
    output: str

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def schema(self) -> CtrSchema:
        return self.spec.schema

    @property
    def user_views(self) -> int:
        """Knowledge rows per user (an unknown user passes this many zeros)."""
        arrays = self.spec.knowledge_arrays
        return 1 if arrays is None else arrays.user_views

    def example_rows(self, limit: int) -> pd.DataFrame:
        """Up to `limit` test rows of the run's CTR view: from the view the training staged (its
        joins are most of a CTR training's Spark time at scale), rebuilt only where that is gone or
        lacks the knowledge rows this run's examples carry."""
        grouped = self.spec.keyed_by == KEYED_BY_CLUSTER
        view = staged_ctr_view(self.lake.spark, self.output)
        if view is None or (grouped and "kitem" not in view.columns):
            view = ctr_view(self.lake, self.vocab, self.schema, self.knowledge_rows if grouped else None)
        return view.where(F.col("split") == "test").limit(limit).toPandas()

    def batch(self, rows: pd.DataFrame) -> dict[str, torch.Tensor]:
        """The model's input batch of CTR view rows (as training feeds them)."""
        return ctr_batch(rows, self.schema.history_length, self.schema.category_slots, self.spec.keyed_by)

    def coded(self, frame: DataFrame, columns: dict[str, Column]) -> DataFrame:
        """`frame` with each named field's vocabulary code (0 where unknown)."""
        for field, column in columns.items():
            frame = encode_field(frame, self.vocab, field, column, field)
        return frame

    def item_category_codes(self) -> DataFrame:
        """Per item id its category codes (`category_codes`, the run's slots)."""
        return item_codes(self.lake, self.vocab, self.schema.category_slots)

    def value_codes(self, field: str) -> dict[str, int]:
        """A small field's values and codes (e.g. ratings): bounded by its cardinality."""
        return {row["value"]: row["index"] for row in self.vocab.where(F.col("field") == field).collect()}


def load_run(spark: SparkSession, config: RekiConfig, model: str, knowledge: str, seed: int) -> TrainedRun:
    """The trained run (`model`, `knowledge`, `seed`) of `config`, with its best weights."""
    spec = model_spec(spark, config, model, knowledge, seed)
    lake = Lake(spark, config.lake)
    vocab = lake.read(VOCAB)
    rows = entity_knowledge_rows(lake, vocab, spec.keyed_by)
    return TrainedRun(spec, best_model(spec).eval(), vocab, rows, lake, config.output)
