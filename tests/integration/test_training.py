"""Training with the real components: the Spark training view, Petastorm feeding, PyTorch (in
process and over 2 TorchDistributor ranks), metrics.json and the report."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pyspark.sql import functions as F

from reki_spark.evaluation.metrics import CtrSums
from reki_spark.evaluation.report import write_report
from reki_spark.lake import PREDICTIONS, SAMPLES, SEQUENCES, Lake
from reki_spark.models import CTR_MODELS, MOSTPOP, SEQUENTIAL_MODELS
from reki_spark.provenance import code_version, config_hash
from reki_spark.training.data import CTR_FIELDS
from reki_spark.training.feeding import PetastormBatches
from reki_spark.training.loop import CRASH_AFTER_STEPS_ENV
from reki_spark.training.train import evaluate_runs, train
from tests.conftest import tiny_config
from tests.paths import REPO

pytestmark = pytest.mark.integration
ALL_MODELS = sorted(CTR_MODELS) + sorted(SEQUENTIAL_MODELS)
ONE_EPOCH = ["training.epochs=1", *[f"training.{name}.epochs=1" for name in SEQUENTIAL_MODELS]]


@pytest.fixture()
def trained_lake(knowledge_lake, tmp_path) -> Path:
    lake = tmp_path / "lake"
    shutil.copytree(knowledge_lake, lake)
    return lake


def test_every_backbone_trains_with_and_without_knowledge(spark, trained_lake):
    config = tiny_config(
        trained_lake,
        f"training.models={json.dumps(ALL_MODELS)}",  # MostPop comes with each task
        "training.batch_size=256",
        *ONE_EPOCH,
    )
    results = train(spark, config)
    assert {(r["model"], r["knowledge"]) for r in results} == {
        (m, k) for m in ALL_MODELS for k in ("none", "collective")
    } | {(MOSTPOP, "none")}
    for record in results:
        if record["task"] == "ctr":
            assert 0.0 <= record["auc"] <= 1.0 and math.isfinite(record["logloss"])
        else:
            for metric in ("ndcg@10_full", "recall@10_full", "ndcg@10_sampled99", "recall@10_sampled99"):
                assert 0.0 <= record[metric] <= 1.0
            assert record["recall@10_sampled99"] >= record["recall@10_full"]  # 100 candidates, not 48
        trained = record["model"] != MOSTPOP
        assert (record["steps"] > 0 and record["epochs_trained"] == 1) == trained
    stored = json.loads((Path(config.output) / "metrics.json").read_text())
    assert len(stored) == len(ALL_MODELS) * 2 + 2  # MostPop once per task
    # Each names the code that trained it and the settings' hash.
    assert {(record["commit"], record["config_hash"]) for record in stored} == {(code_version(), config_hash(config))}
    report = write_report(spark, config)
    text = Path(report).read_text()
    assert "| din | collective | 1 |" in text and "## Cost ledger" in text and "| extract |" in text
    assert "| mostpop | none | 1 |" in text and "× MostPop" in text
    assert (Path(config.output) / "comparison.png").stat().st_size > 1000
    _assert_tracked(config, len(ALL_MODELS) * 2 + 2, epochs=1)


def _mlflow_runs(config) -> tuple:
    from mlflow.tracking import MlflowClient

    from reki_spark.tracking import experiment_name, tracking_uri

    client = MlflowClient(tracking_uri(config))
    experiment = client.get_experiment_by_name(experiment_name(config))
    return client, client.search_runs([experiment.experiment_id], max_results=1000)


def _assert_tracked(config, trained_runs: int, epochs: int) -> None:
    """What MLflow's own client reads back: one run per job with config, histories and test
    metrics, and the report run with its artifacts."""
    client, runs = _mlflow_runs(config)
    by_name = {run.info.run_name: run for run in runs}
    assert len(runs) == trained_runs + 1 and "report" in by_name
    din = by_name["ctr-din-collective-1"]
    assert din.data.params["config.training.knowledge"] == str(config.training.knowledge)
    assert float(din.data.params["run.learning_rate"]) == config.training.learning_rate
    assert 0.0 <= din.data.metrics["test_auc"] <= 1.0
    for key in ("train_loss", "valid"):
        assert [m.step for m in client.get_metric_history(din.info.run_id, key)] == list(range(1, epochs + 1))
    artifacts = {item.path for item in client.list_artifacts(by_name["report"].info.run_id)}
    assert artifacts == {"report.md", "comparison.png", "ledger.json"}


def test_two_torchdistributor_ranks_end_in_sync(spark, trained_lake):
    config = tiny_config(
        trained_lake,
        'training.models=["dcnv2", "sasrec"]',
        'training.knowledge=["collective"]',
        "training.epochs=2",
        "training.sasrec.epochs=2",
        "training.num_processes=2",
        "training.batch_size=128",
        "training.predictions=true",
        "training.row_group_bytes=65536",  # several row groups per file, as at scale
    )
    # MostPop runs in both tasks: keyed by model alone, only the backbones are looked up.
    records = {(record["task"], record["model"]): record for record in train(spark, config)}
    predictions = _assert_predictions_match(spark, config, records)
    for key in (("ctr", "dcnv2"), ("sequential", "sasrec")):
        assert records[key]["processes"] == 2 and records[key]["epochs_trained"] == 2
        first, second = records[key]["replica_checksums"]
        assert first == second
        rank_steps = records[key]["rank_steps"]  # the shards are even: neither rank idles
        assert len(rank_steps) == 2 and max(rank_steps) <= 1.2 * min(rank_steps), rank_steps
    client, runs = _mlflow_runs(config)  # rank 0's epoch history reached the driver's tracking
    (run,) = [run for run in runs if run.info.run_name == "ctr-dcnv2-collective-1"]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "valid")] == [1, 2]
    # Each rank scored its shard of test and the sums were reduced across ranks: one process
    # re-scoring the same checkpoints over the whole split finds the same metrics.
    for rescored in evaluate_runs(spark, config):
        recorded = records[rescored["task"], rescored["model"]]
        metrics = [key for key, value in rescored.items() if isinstance(value, float)]
        assert len(metrics) >= 2
        for key in metrics:
            assert abs(rescored[key] - recorded[key]) < 1e-6, (rescored["model"], key)
    assert Lake(spark, config.lake).read(PREDICTIONS).count() == predictions  # replaced, not appended


def _assert_predictions_match(spark, config, records: dict) -> int:
    """The scored rows the two ranks staged reach `predictions` whole, with their raw ids, and give
    the recorded metrics again."""
    lake = Lake(spark, config.lake)
    stored = lake.read(PREDICTIONS).toPandas()  # a tiny test split
    assert stored["user_id"].notna().all() and stored["item_id"].notna().all()
    ctr = stored[stored["model"] == "dcnv2"]
    assert len(ctr) == lake.read(SAMPLES).where(F.col("split") == "test").count()
    sums = CtrSums()  # the same 2^20-bin histogram AUC the ranks reduced (near-equal scores tie in a bin)
    sums.add(torch.as_tensor(ctr["label"].to_numpy()), torch.as_tensor(ctr["score"].to_numpy()))
    assert abs(sums.metrics()["auc"] - records["ctr", "dcnv2"]["auc"]) < 1e-9
    ranked = stored[stored["model"] == "sasrec"]
    assert len(ranked) == ranked["user_id"].nunique() == lake.read(SEQUENCES).count()
    assert abs((ranked["rank"] < 10).mean() - records["sequential", "sasrec"]["recall@10_full"]) < 1e-9
    assert abs((ranked["sampled_rank"] < 10).mean() - records["sequential", "sasrec"]["recall@10_sampled99"]) < 1e-9
    return len(stored)


def test_ctr_mostpop_rates_are_smoothed_towards_the_overall_rate(spark):
    from reki_spark.training.data import item_positive_rates

    train_rows = spark.createDataFrame([(1, 1.0), (1, 1.0), (1, 0.0), (2, 0.0)], "item_id int, label float")
    vocab = spark.createDataFrame([("item_id", str(i), i) for i in (1, 2, 3)], "field string, value string, index int")
    rates = {r["index"]: r["count"] for r in item_positive_rates(train_rows, vocab, prior_rows=10).collect()}
    # overall rate 0.5; an item never seen in training and the unknown index 0 score it
    assert rates == pytest.approx({1: 7 / 13, 2: 5 / 11, 3: 0.5, 0: 0.5})


def test_petastorm_feeds_every_row_once_per_epoch_across_two_ranks(spark, tmp_path):
    from petastorm.spark import SparkDatasetConverter, make_spark_converter

    spark.conf.set(SparkDatasetConverter.PARENT_CACHE_DIR_URL_CONF, (tmp_path / "cache").as_uri())
    rows = 2_000
    history = [f"{prefix}{i}" for prefix in ("hist", "hrat") for i in range(5)] + [f"hcat{i}_0" for i in range(5)]
    frame = spark.range(rows).select(
        F.col("id").cast("int").alias("user_id"),
        *[F.lit(1).alias(name) for name in CTR_FIELDS if name not in ("user_id", "item_category")],
        F.lit(1).alias("cat0"),
        *[F.lit(0).alias(name) for name in history],
        F.lit(1.0).cast("float").alias("label"),
    )
    converter = make_spark_converter(frame.repartition(4))
    batches = PetastormBatches(converter, batch_size=128, task="ctr", width=5, seed=1, shuffle_buffer=500)
    orders: list[list[int]] = []
    try:
        for epoch in range(2):
            seen: list[int] = []
            for rank in range(2):
                with batches(epoch, rank, 2) as loader:
                    shard = [int(u) for batch in loader for u in batch["user_id"]]
                assert shard, f"rank {rank} got no rows"
                seen += shard
            assert len(seen) == rows and set(seen) == set(range(rows))
            orders.append(seen)
        assert orders[0] != orders[1]  # each epoch shuffles its rows anew
    finally:
        converter.delete()


def _train_cli(lake: Path, output: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    args = [
        sys.executable,
        "-m",
        "reki_spark.cli",
        "train",
        "--set",
        f"lake={lake}",
        "--set",
        f"output={output}",
        "--set",
        'training.models=["din"]',
        "--set",
        'training.knowledge=["none"]',
        "--set",
        "training.epochs=3",
        "--set",
        "training.patience=10",
        "--set",
        "training.batch_size=64",
        *extra,
    ]
    return subprocess.run(
        args, capture_output=True, text=True, timeout=600, cwd=REPO, env={**os.environ, **(env or {})}
    )


def test_killed_training_resumes_to_the_same_step_count(spark, trained_lake, tmp_path):
    from reki_spark.lake import SAMPLES, Lake

    # One process, batches of 64, the last one partial: what an uninterrupted 3-epoch run takes.
    train_rows = Lake(spark, str(trained_lake)).read(SAMPLES).where(F.col("split") == "train").count()
    per_epoch = math.ceil(train_rows / 64)
    crashed = _train_cli(trained_lake, tmp_path / "run", env={CRASH_AFTER_STEPS_ENV: str(per_epoch + 2)})
    assert crashed.returncode == 3  # died in the middle of the second epoch
    assert (tmp_path / "run" / "checkpoints").exists()
    resumed = _train_cli(trained_lake, tmp_path / "run")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming after epoch 1" in resumed.stdout
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())[0]
    assert (record["steps"], record["epochs_trained"]) == (3 * per_epoch, 3)


def test_knowledge_controls_train_beside_collective(spark, trained_lake):
    from reki_spark.lake import ITEM_CLUSTERS, USER_CLUSTERS, Lake
    from reki_spark.training.data import KEYED_BY_CLUSTER, ClusterRows, build_vocab, knowledge_arrays

    modes = ["collective", "shuffled", "cluster_only", "random_vectors", "collective_plus_ids"]
    config = tiny_config(trained_lake, 'training.models=["din"]', f"training.knowledge={json.dumps(modes)}", *ONE_EPOCH)
    lake = Lake(spark, config.lake)
    vocab = build_vocab(lake)
    real, shuffled, codes, drawn, both = (knowledge_arrays(lake, vocab, mode, config.encoder.model) for mode in modes)
    # All share the cluster rows that the examples carry: one row per cluster, vectors alone differ.
    assert {arrays.keyed_by for arrays in (real, shuffled, codes, drawn, both)} == {KEYED_BY_CLUSTER}
    assert {len(arrays.item_vectors) for arrays in (real, shuffled, codes, drawn, both)} == {len(real.item_vectors)}
    assert {len(arrays.user_vectors) for arrays in (real, shuffled, codes, drawn, both)} == {len(real.user_vectors)}
    # random_vectors: one unit vector per group, of the text vectors' width, another draw per seed
    assert drawn.item_vectors.shape == real.item_vectors.shape
    assert np.allclose(np.linalg.norm(drawn.item_vectors[1:], axis=1), 1.0) and not drawn.item_vectors[0].any()
    other = knowledge_arrays(lake, vocab, "random_vectors", config.encoder.model, seed=2)
    assert not np.allclose(other.user_vectors[1:], drawn.user_vectors[1:])
    # collective_plus_ids: the text vectors with the one-hot group codes beside them
    assert np.array_equal(both.item_vectors, np.hstack([real.item_vectors, codes.item_vectors]))
    assert np.array_equal(both.user_vectors, np.hstack([real.user_vectors, codes.user_vectors]))
    assert (np.abs(real.item_vectors[1:]).sum(axis=1) > 0).all()  # every cluster found its LLM vector
    # shuffled: the same vectors, every vector in another group
    assert sorted(map(tuple, shuffled.item_vectors.tolist())) == sorted(map(tuple, real.item_vectors.tolist()))
    assert not (shuffled.item_vectors[1:] == real.item_vectors[1:]).all(axis=1).any()
    # cluster_only: one one-hot code per group, no text
    assert (codes.item_vectors[1:].sum(axis=1) == 1).all() and (codes.user_vectors[1:].sum(axis=1) == 1).all()
    # every clustered entity carries a row of its group; users one per view
    item_rows, user_rows = ClusterRows.of(lake).entity_rows(lake)
    assert item_rows.count() == lake.read(ITEM_CLUSTERS).select("item_id").distinct().count()
    assert item_rows.where("item_knowledge = 0").isEmpty()
    views = {r["n"] for r in user_rows.selectExpr("size(user_knowledge) AS n").distinct().collect()}
    assert views == {2} and user_rows.count() == lake.read(USER_CLUSTERS).select("user_id").distinct().count()
    results = train(spark, config)
    assert {(r["model"], r["knowledge"]) for r in results} == {("din", mode) for mode in modes} | {(MOSTPOP, "none")}


def test_validation_keeps_a_fixed_sample_of_about_the_users_asked(spark):
    from reki_spark.config import load_config
    from reki_spark.training.train import validation_sample

    valid = spark.range(20_000).select((F.col("id") % 10_000).cast("int").alias("user_id"), "id")
    config = load_config(None, ["training.validation_users=1000"])
    kept = validation_sample(valid, "user_id", 10_000, config)
    users = {r["user_id"] for r in kept.select("user_id").distinct().collect()}
    assert 850 < len(users) < 1150 and kept.count() == 2 * len(users)  # whole users, both rows each
    again = {r["user_id"] for r in validation_sample(valid, "user_id", 10_000, config).collect()}
    assert again == users
    assert validation_sample(valid, "user_id", 10_000, load_config(None, [])) is valid  # unset: all
