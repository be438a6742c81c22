"""Training and evaluation stages (`reki train`, `reki evaluate`): every configured model x
knowledge setting x seed, trained on the Petastorm-fed train split (in-process, or over
`training.num_processes` ranks with Spark's TorchDistributor) and scored on test. Results go to
`<output>/metrics.json`, one record per (task, model, knowledge, seed).

Reads `samples`, `sequences`, `user_histories`, `users`, `items`, `knowledge_vectors`,
`*_clusters`; writes `vocab`, `ledger`, checkpoints and metrics under `output`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from reki_spark.config import RekiConfig
from reki_spark.lake import VOCAB, Lake
from reki_spark.ledger import ledger_entry
from reki_spark.models import CTR_MODELS, CtrSchema, HeinSettings, SeqSchema
from reki_spark.training.data import (
    build_vocab,
    cardinalities,
    ctr_view,
    knowledge_arrays,
    seen_items,
    sequence_view,
)
from reki_spark.training.feeding import PetastormBatches
from reki_spark.training.loop import ModelSpec, TrainJob, best_model, evaluate, train_worker

METRICS_FILE = "metrics.json"


def train(spark: SparkSession, config: RekiConfig) -> list[dict[str, Any]]:
    lake = Lake(spark, config.lake)
    with ledger_entry(lake, "train") as record:
        results: list[dict[str, Any]] = []
        path = Path(config.output) / METRICS_FILE
        for job in _jobs(spark, config):
            results.append(_run(spark, config, job))
            write_metrics(config.output, results[-1:])  # a later crash keeps the finished runs
        record.rows_out = len(results)
        record.details = {"runs": [f"{r['task']}/{r['model']}/{r['knowledge']}/{r['seed']}" for r in results]}
    print(f"metrics: {path}")
    return results


def evaluate_runs(spark: SparkSession, config: RekiConfig) -> list[dict[str, Any]]:
    """Re-score the best checkpoint of every configured run on test."""
    results = []
    for job in _jobs(spark, config):
        metrics = evaluate(job, best_model(job), job.test, "test")
        results.append({"task": job.task, "model": job.model, "knowledge": job.knowledge, "seed": job.seed, **metrics})
    print(f"metrics: {write_metrics(config.output, results)}")
    return results


def _run(spark: SparkSession, config: RekiConfig, job: TrainJob) -> dict[str, Any]:
    processes = config.training.num_processes
    print(f"== train {job.name} on {processes} process(es)", flush=True)
    if processes == 1:
        return train_worker(job)
    from pyspark.ml.torch.distributor import TorchDistributor

    distributor = TorchDistributor(
        num_processes=processes, local_mode=config.training.distributor_local_mode, use_gpu=config.training.use_gpu
    )
    return distributor.run(train_worker, job)


def _jobs(spark: SparkSession, config: RekiConfig) -> Iterator[TrainJob]:
    lake = Lake(spark, config.lake)
    training = config.training
    output = Path(config.output).resolve()
    from petastorm.spark import SparkDatasetConverter, make_spark_converter

    spark.conf.set(SparkDatasetConverter.PARENT_CACHE_DIR_URL_CONF, (output / "petastorm").as_uri())
    vocab = build_vocab(lake)
    sizes = cardinalities(vocab)
    arrays = {
        mode: None if mode == "none" else knowledge_arrays(lake, vocab, mode, config.encoder.model)
        for mode in training.knowledge
    }
    hein = HeinSettings(training.hein.shared_experts, training.hein.dedicated_experts)
    common = {
        "checkpoint_dir": str(output / "checkpoints"),
        "epochs": training.epochs,
        "patience": training.patience,
        "eval_batch_size": training.eval_batch_size,
        "learning_rate": training.learning_rate,
        "weight_decay": training.weight_decay,
        "embedding_dim": training.embedding_dim,
        "sequence_hidden": training.sequence_hidden,
        "hein": hein,
    }
    for task, models in _tasks(training.models).items():
        view, schema, width, seen = _task_view(lake, vocab, sizes, task, config)
        # Whole row groups are the shards: at least two files per process keeps every rank busy.
        train_rows = view.where(F.col("split") == "train").drop("split")
        converter = make_spark_converter(train_rows.repartition(2 * training.num_processes))
        valid, test = (view.where(F.col("split") == split).drop("split").toPandas() for split in ("valid", "test"))
        try:
            for model in models:
                for mode, knowledge in arrays.items():
                    for seed in training.seeds:
                        batch_size = training.batch_size if task == "ctr" else training.sequence_batch_size
                        loader = PetastormBatches(converter, batch_size, task, width, seed)
                        yield TrainJob(
                            task=task,
                            model=model,
                            knowledge=mode,
                            seed=seed,
                            schema=schema,
                            knowledge_arrays=knowledge,
                            open_loader=loader,
                            train_rows=len(converter),
                            batch_size=batch_size,
                            valid=valid,
                            test=test,
                            seen=seen,
                            **common,
                        )
        finally:
            converter.delete()


def _tasks(models: list[str]) -> dict[str, list[str]]:
    tasks: dict[str, list[str]] = {}
    for model in models:
        tasks.setdefault("ctr" if model in CTR_MODELS else "sequential", []).append(model)
    return tasks


def _task_view(lake: Lake, vocab: DataFrame, sizes: dict[str, int], task: str, config: RekiConfig) -> tuple:
    if task == "ctr":
        length = config.features.history_length
        schema = CtrSchema(fields=sizes, history_length=length)
        return ctr_view(lake, vocab, length), schema, length, None
    length = config.features.sequence_max_length
    schema = SeqSchema(items=sizes["item_id"], users=sizes["user_id"], max_length=length)
    sequences = sequence_view(lake, vocab, length)
    # Leave-one-out: every user trains on its prefix and is scored on its valid and test items.
    view = union_splits(sequences)
    return view, schema, length + 1, seen_items(lake, vocab)


def union_splits(sequences: DataFrame) -> DataFrame:
    return (
        sequences.withColumn("split", F.lit("train"))
        .unionByName(sequences.withColumn("split", F.lit("valid")))
        .unionByName(sequences.withColumn("split", F.lit("test")))
    )


def write_metrics(output: str, results: list[dict[str, Any]]) -> Path:
    """Merge `results` into metrics.json by (task, model, knowledge, seed)."""
    path = Path(output) / METRICS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    records = json.loads(path.read_text()) if path.exists() else []
    key = lambda r: (r["task"], r["model"], r["knowledge"], r["seed"])  # noqa: E731
    merged = {key(r): r for r in records}
    for result in results:
        merged[key(result)] = {**merged.get(key(result), {}), **result}
    path.write_text(json.dumps(sorted(merged.values(), key=key), indent=2) + "\n")
    return path


def model_spec(spark: SparkSession, config: RekiConfig, model: str, knowledge: str, seed: int) -> ModelSpec:
    """Rebuilds a trained CTR run's spec (vocabulary, schema, knowledge) to load its checkpoint."""
    if model not in CTR_MODELS:
        raise ValueError(f"export supports the CTR backbones {sorted(CTR_MODELS)}, not {model}")
    lake = Lake(spark, config.lake)
    vocab = lake.read(VOCAB)
    training = config.training
    return ModelSpec(
        task="ctr",
        model=model,
        knowledge=knowledge,
        seed=seed,
        schema=CtrSchema(fields=cardinalities(vocab), history_length=config.features.history_length),
        knowledge_arrays=None
        if knowledge == "none"
        else knowledge_arrays(lake, vocab, knowledge, config.encoder.model),
        checkpoint_dir=str(Path(config.output).resolve() / "checkpoints"),
        embedding_dim=training.embedding_dim,
        sequence_hidden=training.sequence_hidden,
        hein=HeinSettings(training.hein.shared_experts, training.hein.dedicated_experts),
    )
