"""Loader throughput: training samples/s of a DIN step fed by Petastorm (the product's path,
from the Spark training view) against the same step fed from in-memory tensors."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from bench.common import Measure, save
from reki_spark.config import load_config
from reki_spark.lake import Lake
from reki_spark.models import Din
from reki_spark.session import get_spark
from reki_spark.training.data import build_vocab, cardinalities, ctr_view
from reki_spark.training.feeding import PetastormBatches, ctr_batch
from reki_spark.training.train import ctr_schema

BATCH = 1024


def _epoch(model: Din, optimizer: torch.optim.Optimizer, batches) -> tuple[int, float]:
    rows, start = 0, time.perf_counter()
    for batch in batches:
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(batch), batch["label"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        rows += len(batch["label"])
    return rows, time.perf_counter() - start


def main(config_path: str = "jobs/configs/movielens-100k.yaml") -> None:
    from petastorm.spark import SparkDatasetConverter, make_spark_converter

    config = load_config(config_path)
    spark = get_spark(config)
    spark.conf.set(SparkDatasetConverter.PARENT_CACHE_DIR_URL_CONF, Path("runs/bench-petastorm").resolve().as_uri())
    lake = Lake(spark, config.lake)
    vocab = build_vocab(lake)
    schema = ctr_schema(config, cardinalities(vocab))
    train = ctr_view(lake, vocab, schema).where("split = 'train'").drop("split")
    converter = make_spark_converter(train.repartition(2))
    frame = train.toPandas()
    slots = schema.category_slots
    memory = [ctr_batch(frame.iloc[i : i + BATCH], 5, slots) for i in range(0, len(frame), BATCH)]
    feeder = PetastormBatches(converter, BATCH, "ctr", 5, seed=0, category_slots=slots)
    ratios, rates = [], []
    try:
        for repetition in range(3):
            torch.manual_seed(repetition)
            model = Din(schema)
            optimizer = torch.optim.AdamW(model.parameters())
            with feeder(repetition, 0, 1) as batches:
                petastorm_rows, petastorm_s = _epoch(model, optimizer, batches)
            memory_rows, memory_s = _epoch(model, optimizer, memory)
            assert petastorm_rows == memory_rows == len(frame)
            rates.append((petastorm_rows / petastorm_s, memory_rows / memory_s))
            ratios.append(rates[-1][0] / rates[-1][1])
    finally:
        converter.delete()
    save(
        "loader",
        [
            Measure(
                "Petastorm / in-memory samples per second",
                ">= 0.7",
                ratios,
                {"samples_per_s": rates, "rows": len(frame), "batch": BATCH},
            )
        ],
        notes=f"DIN training step on the ML-100k train split ({len(frame)} rows, batch {BATCH}); "
        "samples/s pairs (petastorm, in-memory) per repetition are in the JSON.",
    )


if __name__ == "__main__":
    main()
