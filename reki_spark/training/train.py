"""Training and evaluation stages (`reki train`, `reki evaluate`): every configured model x
knowledge setting x seed, trained on the Petastorm-fed train split (in-process, or over
`training.num_processes` ranks with Spark's TorchDistributor) and scored on test. Results go to
`<output>/metrics.json`, one record per (task, model, knowledge, seed).

Reads `samples`, `sequences`, `user_histories`, `users`, `items`, `knowledge_vectors`,
`*_clusters`; writes `vocab`, `ledger`, checkpoints and metrics under `output`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from reki_spark import console, storage, tracking
from reki_spark.config import RekiConfig
from reki_spark.evaluation.metrics import METRICS_FILE, PRIMARY
from reki_spark.lake import VOCAB, Lake
from reki_spark.ledger import ledger_entry
from reki_spark.models import CTR_MODELS, MOSTPOP, CtrSchema, HeinSettings, SeqSchema
from reki_spark.provenance import run_provenance
from reki_spark.training.data import (
    KEYED_BY_CLUSTER,
    PER_SEED_MODES,
    ClusterRows,
    KnowledgeArrays,
    KnowledgeRows,
    build_vocab,
    cardinalities,
    ctr_view,
    item_popularity,
    item_positive_rates,
    keyed_by,
    knowledge_arrays,
    seeded_arrays,
    sequence_targets,
    sequence_windows,
)
from reki_spark.training.feeding import PetastormBatches, SplitFiles
from reki_spark.training.loop import (
    ModelSpec,
    TrainJob,
    best_model,
    check_settings,
    evaluate,
    identity,
    train_worker,
)
from reki_spark.training.predictions import predictions_kept


def train(spark: SparkSession, config: RekiConfig) -> list[dict[str, Any]]:
    lake = Lake(spark, config.lake)
    with ledger_entry(lake, "train") as record:
        results: list[dict[str, Any]] = []
        path = storage.join(config.output, METRICS_FILE)
        for job in _jobs(spark, config):
            with predictions_kept(lake, job.predictions_dir, identity(job)):
                result = _run(spark, config, job)
            tracking.log_training_run(config, result, result.pop("history", []))
            results.append(result)
            write_metrics(config.output, results[-1:])  # a later crash keeps the finished runs
        record.rows_out = len(results)
        record.details = {"runs": [f"{r['task']}/{r['model']}/{r['knowledge']}/{r['seed']}" for r in results]}
    print(f"metrics: {path}")
    return results


def evaluate_runs(spark: SparkSession, config: RekiConfig) -> list[dict[str, Any]]:
    """Re-score the best checkpoint of every configured run on test."""
    lake = Lake(spark, config.lake)
    results = []
    for job in _jobs(spark, config):
        with predictions_kept(lake, job.predictions_dir, identity(job)):
            metrics = evaluate(job, best_model(job), "test")
        results.append({**identity(job), **metrics})
    print(f"metrics: {write_metrics(config.output, results)}")
    return results


def _run(spark: SparkSession, config: RekiConfig, job: TrainJob) -> dict[str, Any]:
    processes = config.training.num_processes
    check_settings(job)
    console.detail(f"== train {job.name} on {processes} process(es)")
    # MostPop is counted, not trained: one process scores it (rank 0 alone did under DDP too), so
    # it needs no ranks started on the cluster.
    if processes == 1 or job.model == MOSTPOP:
        result = train_worker(job)
    else:
        from pyspark.ml.torch.distributor import TorchDistributor

        distributor = TorchDistributor(
            num_processes=processes, local_mode=distributor_local_mode(spark, config), use_gpu=config.training.use_gpu
        )
        result = distributor.run(train_worker, job)
    print(f"train {job.name}: {_summary(result)}", flush=True)
    return result


def distributor_local_mode(spark: SparkSession, config: RekiConfig) -> bool:
    """The ranks on the driver machine for a local master, on the executors of a cluster, unless
    `training.distributor_local_mode` says otherwise."""
    chosen = config.training.distributor_local_mode
    return spark.sparkContext.master.startswith("local") if chosen is None else chosen


def _summary(result: dict[str, Any]) -> str:
    metric = PRIMARY[result["task"]]
    trained = f"{result['epochs_trained']} epochs (best {result['best_epoch']}), " if result["epochs_trained"] else ""
    seconds, processes = result["train_seconds"], result["processes"]
    return f"{trained}test {metric} {result[metric]:.4f}, {seconds:.0f} s on {processes} process(es)"


def _jobs(spark: SparkSession, config: RekiConfig) -> Iterator[TrainJob]:
    lake = Lake(spark, config.lake)
    training = config.training
    output = storage.resolve(config.output)
    console.quiet_petastorm()
    from petastorm.spark import SparkDatasetConverter, make_spark_converter

    spark.conf.set(
        SparkDatasetConverter.PARENT_CACHE_DIR_URL_CONF, storage.spark_uri(storage.join(output, "petastorm"))
    )
    vocab = build_vocab(lake)
    sizes = cardinalities(vocab)
    # Every grouped mode's examples carry their cluster rows, joined once into the shared view.
    grouped = any(keyed_by(mode) == KEYED_BY_CLUSTER for mode in training.knowledge)
    clusters = ClusterRows.of(lake) if grouped else None
    arrays = {
        mode: None if mode == "none" else knowledge_arrays(lake, vocab, mode, config.encoder.model, clusters)
        for mode in training.knowledge
        if mode not in PER_SEED_MODES
    }
    # shuffled and random_vectors derive from the collective vectors (read once), anew for every seed.
    seeded: dict[tuple[str, int], KnowledgeArrays] = {}
    per_seed = set(PER_SEED_MODES) & set(training.knowledge)
    if clusters is not None and per_seed:
        collective = arrays.get("collective") or knowledge_arrays(
            lake, vocab, "collective", config.encoder.model, clusters
        )
        for mode in per_seed:
            seeded |= {(mode, seed): seeded_arrays(mode, collective, clusters, seed) for seed in training.seeds}
    rows = clusters.entity_rows(lake) if clusters is not None else None
    provenance = run_provenance(config)  # one git call for every job of the run
    for task, models in _tasks(training.models).items():
        view = _task_view(lake, vocab, sizes, task, config, rows, _evaluation_folder(output, task))
        # Whole row groups are the shards (see training.row_group_bytes).
        converter = make_spark_converter(
            view.train.repartition(2 * training.num_processes), parquet_row_group_size_bytes=training.row_group_bytes
        )
        try:
            for model in models:
                # MostPop carries no knowledge: it is counted once per seed, beside every setting.
                for mode in ["none"] if model == MOSTPOP else training.knowledge:
                    for seed in training.seeds:
                        knowledge = seeded[mode, seed] if mode in PER_SEED_MODES else arrays.get(mode)
                        yield _train_job(config, view, converter, model, mode, knowledge, seed, provenance)
        finally:
            converter.delete()


def _train_job(
    config: RekiConfig,
    view: TaskView,
    converter: Any,
    model: str,
    mode: str,
    knowledge: KnowledgeArrays | None,
    seed: int,
    provenance: dict[str, str],
) -> TrainJob:
    training = config.training
    settings = training.optimisation(model)
    loader = PetastormBatches(
        converter,
        settings["batch_size"],
        view.task,
        view.width,
        seed,
        training.shuffle_buffer,
        category_slots=getattr(view.schema, "category_slots", 1),
        keyed_by=None if knowledge is None else knowledge.keyed_by,
    )
    return TrainJob(
        **_spec_fields(config, view.task, model, mode, seed, view.schema, knowledge),
        popularity=view.popularity,
        open_loader=loader,
        train_rows=len(converter),
        splits=SplitFiles(view.splits, training.eval_batch_size),
        eval_item_chunk=training.eval_item_chunk,
        predictions_root=storage.join(config.output, "predictions") if training.predictions else None,
        storage_settings=storage.current(),
        use_gpu=training.use_gpu,
        provenance=provenance,
        **settings,
    )


def _spec_fields(
    config: RekiConfig,
    task: str,
    model: str,
    mode: str,
    seed: int,
    schema: CtrSchema | SeqSchema,
    knowledge: KnowledgeArrays | None,
) -> dict[str, Any]:
    training = config.training
    params = training.block(model).architecture() if model != MOSTPOP else {}
    if task == "ctr":
        params["embedding_dim"] = training.embedding_dim
        params["sparse_ids"] = training.sparse_tables()
    elif model != MOSTPOP and training.sparse_tables():
        # Only when on: sequential checkpoints written before the option record no such setting.
        params["sparse_ids"] = True
    return {
        "task": task,
        "model": model,
        "knowledge": mode,
        "seed": seed,
        "schema": schema,
        "knowledge_arrays": knowledge,
        "checkpoint_dir": storage.join(config.output, "checkpoints"),
        "params": params,
        "hein": HeinSettings(training.hein.shared_experts, training.hein.dedicated_experts),
    }


def _tasks(models: list[str]) -> dict[str, list[str]]:
    """Models per task; every task carries MostPop, so that every report can show each backbone
    against it."""
    tasks: dict[str, list[str]] = {}
    for model in models:
        tasks.setdefault("ctr" if model in CTR_MODELS else "sequential", []).append(model)
    for models_of_task in tasks.values():
        if MOSTPOP not in models_of_task:
            models_of_task.append(MOSTPOP)
    return tasks


def ctr_schema(config: RekiConfig, sizes: dict[str, int]) -> CtrSchema:
    features = config.features
    return CtrSchema(fields=sizes, history_length=features.history_length, category_slots=features.category_slots)


@dataclass
class TaskView:
    """One task's data: the train rows Petastorm feeds, the valid and test rows as Parquet part
    files, and what the task's evaluation needs besides."""

    task: str
    schema: CtrSchema | SeqSchema
    width: int  # CTR: history length; sequential: window length (max_length + 1)
    train: DataFrame
    splits: dict[str, list[str]]  # valid / test -> part files
    # MostPop's item counts (sequential) or positive rates (CTR): part files of (index, count).
    popularity: list[str] | None = None


def _task_view(
    lake: Lake,
    vocab: DataFrame,
    sizes: dict[str, int],
    task: str,
    config: RekiConfig,
    rows: KnowledgeRows | None,
    folder: str,
) -> TaskView:
    """The task's views; valid and test are written by the executors under `folder` (at least two
    files per training process, so that every rank scores a shard) and never pass the driver."""
    parts = 2 * config.training.num_processes
    if task == "ctr":
        schema = ctr_schema(config, sizes)
        # Written once: its joins (the history codes above all) are most of a CTR training's Spark
        # time at scale, and valid, test, MostPop's rates and Petastorm's copy would each redo them.
        view = _staged_by_split(ctr_view(lake, vocab, schema, rows), storage.join(folder, "view"))
        splits = {split: view.where(F.col("split") == split).drop("split") for split in ("valid", "test")}
        splits["valid"] = validation_sample(splits["valid"], "user_id", sizes["user_id"], config)
        train_rows = view.where(F.col("split") == "train").drop("split")
        popularity = part_files(item_positive_rates(train_rows, vocab), storage.join(folder, "popularity"), 1)
        return TaskView(task, schema, schema.history_length, train_rows, _written(splits, folder, parts), popularity)
    length = config.features.sequence_max_length
    # Leave-one-out: every user trains on its prefix and is scored on its valid and test items.
    splits = {split: sequence_targets(lake, vocab, length, split, rows) for split in ("valid", "test")}
    splits["valid"] = validation_sample(splits["valid"], "user", sizes["user_id"], config)
    return TaskView(
        task,
        SeqSchema(items=sizes["item_id"], users=sizes["user_id"], max_length=length),
        length + 1,
        sequence_windows(lake, vocab, length, rows),
        _written(splits, folder, parts),
        popularity=part_files(item_popularity(lake, vocab), storage.join(folder, "popularity"), 1),
    )


VALIDATION_BUCKETS = 1_000_000


def validation_sample(valid: DataFrame, user: str, users: int, config: RekiConfig) -> DataFrame:
    """`valid`'s rows of about `training.validation_users` of its `users` users (all if unset or
    not fewer): those whose hash of (seed, user code) falls in that share of buckets, the same
    users every epoch and every run of the seed."""
    wanted = config.training.validation_users
    if wanted is None or wanted >= users:
        return valid
    bucket = F.pmod(F.xxhash64(F.lit(config.seed), F.col(user)), F.lit(VALIDATION_BUCKETS))
    return valid.where(bucket < round(VALIDATION_BUCKETS * wanted / users))


def _evaluation_folder(output: str, task: str) -> str:
    return storage.join(storage.resolve(output), "evaluation", task)


def staged_ctr_view(spark: SparkSession, output: str) -> DataFrame | None:
    """The CTR view the last training staged under `output` (with `split`), or None where it is gone."""
    folder = storage.join(_evaluation_folder(output, "ctr"), "view")
    return spark.read.parquet(storage.spark_uri(folder)) if storage.exists(folder) else None


def _staged_by_split(view: DataFrame, folder: str) -> DataFrame:
    """`view` written by the executors as Parquet partitioned by `split`, read back (a split's
    filter then reads only its own folder)."""
    view.write.mode("overwrite").partitionBy("split").parquet(storage.spark_uri(folder))
    return view.sparkSession.read.parquet(storage.spark_uri(folder))


def _written(frames: dict[str, DataFrame], folder: str, parts: int) -> dict[str, list[str]]:
    return {name: part_files(frame, storage.join(folder, name), parts) for name, frame in frames.items()}


def part_files(frame: DataFrame, folder: str, parts: int) -> list[str]:
    """`frame` written as Parquet by the executors; its part files in a fixed order."""
    frame.repartition(parts).write.mode("overwrite").parquet(storage.spark_uri(folder))
    # One name per part file (`parts` of them): bounded by the configured parallelism.
    return sorted(frame.sparkSession.read.parquet(storage.spark_uri(folder)).inputFiles())


def write_metrics(output: str, results: list[dict[str, Any]]) -> str:
    """Merge `results` into metrics.json by (task, model, knowledge, seed); returns its location."""
    path = storage.join(output, METRICS_FILE)
    records = json.loads(storage.read_text(path)) if storage.exists(path) else []
    key = lambda r: (r["task"], r["model"], r["knowledge"], r["seed"])  # noqa: E731
    merged = {key(r): r for r in records}
    for result in results:
        merged[key(result)] = {**merged.get(key(result), {}), **result}
    storage.write_text(path, json.dumps(sorted(merged.values(), key=key), indent=2) + "\n")
    return path


def model_spec(spark: SparkSession, config: RekiConfig, model: str, knowledge: str, seed: int) -> ModelSpec:
    """Rebuilds a trained CTR run's spec (vocabulary, schema, knowledge) to load its checkpoint."""
    if model not in CTR_MODELS:
        raise ValueError(f"export supports the CTR backbones {sorted(CTR_MODELS)}, not {model}")
    lake = Lake(spark, config.lake)
    vocab = lake.read(VOCAB)
    schema = ctr_schema(config, cardinalities(vocab))
    arrays = None if knowledge == "none" else knowledge_arrays(lake, vocab, knowledge, config.encoder.model, seed=seed)
    return ModelSpec(**_spec_fields(config, "ctr", model, knowledge, seed, schema, arrays))
