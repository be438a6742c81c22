"""Incremental refresh on MovieLens-100k with 5% new data, and the serving export."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pyspark.sql import functions as F

from ray_workers.encode import encode
from ray_workers.extract import extract
from reki_spark.cli import main
from reki_spark.data.ingest import ingest
from reki_spark.export import export
from reki_spark.features import build_features
from reki_spark.knowledge.clustering import cluster_entities
from reki_spark.knowledge.prompts import build_prompts
from reki_spark.lake import ITEM_CLUSTERS, LEDGER, SERVING_VECTORS, USER_CLUSTERS, USERS, Lake
from reki_spark.models.serving import row_outputs
from reki_spark.serving import Scorer
from reki_spark.training.loop import best_model
from reki_spark.training.train import model_spec, train
from tests.conftest import tiny_config

pytestmark = pytest.mark.integration
FAST_LLM = ["llm.max_tokens=16", "llm.min_chars=10", "llm.max_attempts=1", "llm.batch_size=2", "llm.commit_rows=8"]


def _hold_out(source: Path, target: Path, share: float = 0.05, seed: int = 5) -> dict[str, set[str]]:
    """Copy ML-100k without 5% of its interactions: every line of a few users and items, then
    the most recent lines. Returns the held-out user and item ids."""
    rng = random.Random(seed)
    target.mkdir(parents=True)
    inter = (source / "ml-100k.inter").read_text().splitlines(keepends=True)
    header, rows = inter[0], [line.split("\t") for line in inter[1:]]
    users = sorted({r[0] for r in rows})
    items = sorted({r[1] for r in rows})
    new_users, new_items = set(rng.sample(users, 15)), set(rng.sample(items, 20))
    held = {i for i, r in enumerate(rows) if r[0] in new_users or r[1] in new_items}
    for i in sorted(range(len(rows)), key=lambda i: -float(rows[i][3])):
        if len(held) >= share * len(rows):
            break
        held.add(i)
    (target / "ml-100k.inter").write_text(header + "".join(inter[i + 1] for i in range(len(rows)) if i not in held))
    for name, ids in (("ml-100k.user", new_users), ("ml-100k.item", new_items)):
        lines = (source / name).read_text().splitlines(keepends=True)
        (target / name).write_text(lines[0] + "".join(line for line in lines[1:] if line.split("\t")[0] not in ids))
    return {"users": new_users, "items": new_items}


def test_refresh_asks_only_changed_clusters(spark, ray_local, make_config, ml100k_folder, tmp_path):
    held_out = _hold_out(ml100k_folder, tmp_path / "ml-95")
    config = make_config("dataset.name=movielens-100k", f"dataset.path={tmp_path / 'ml-95'}", *FAST_LLM)
    for stage in (ingest, build_features, cluster_entities, build_prompts):
        stage(spark, config)
    first = extract(config)
    encode(config)
    full_clusters = first.pending
    lake = Lake(spark, config.lake)
    overrides = [
        "--set",
        f"lake={config.lake}",
        "--set",
        f"output={config.output}",
        "--set",
        "dataset.name=movielens-100k",
        "--set",
        f"dataset.path={ml100k_folder}",
    ]
    for override in FAST_LLM:
        overrides += ["--set", override]
    assert main(["refresh", *overrides]) == 0
    refresh = json.loads(lake.read(LEDGER).where(F.col("stage") == "refresh").first()["details"])
    assert refresh["new_users"] == 15 and refresh["new_items"] == 20
    assert refresh["new_interactions"] == 100_000 - lake.read_at("interactions", 0).count()
    assert refresh["prompts_asked"] <= refresh["changed_clusters"] < refresh["clusters"] == full_clusters
    assert len(refresh["changed_examples"]) == min(refresh["changed_clusters"], 20)
    assert refresh["calls_saved_vs_collective_rerun"] == full_clusters - refresh["prompts_asked"] > 0
    # New entities joined existing clusters and are covered by their knowledge.
    assert lake.read(ITEM_CLUSTERS).where(F.col("item_id").isin(held_out["items"])).count() == 20
    assert lake.read(USER_CLUSTERS).where(F.col("user_id").isin(held_out["users"])).count() == 15 * 2
    assert lake.read(USERS).count() == 943
    coverage = json.loads(
        lake.read(LEDGER).where(F.col("stage") == "encode").orderBy(F.desc("started_at")).first()["details"]
    )
    assert coverage["users_covered"] == 943 and coverage["items_covered"] == 1682


def test_export_vectors_torchscript_parity_and_scoring(spark, knowledge_lake, tmp_path):
    lake_path = tmp_path / "lake"
    shutil.copytree(knowledge_lake, lake_path)
    # Small batches at a high rate: one default batch of this data left every embedding at its
    # 1e-4 initial scale, and the history's effect on a score at float32's last digit.
    fast = ("training.epochs=1", "training.batch_size=64", "training.learning_rate=0.05")
    config = tiny_config(lake_path, 'training.models=["din"]', 'training.knowledge=["collective"]', *fast)
    train(spark, config)
    folder = Path(export(spark, config))
    meta = json.loads((folder / "export.json").read_text())
    assert meta["parity_max_abs_diff"] <= 1e-5 and meta["example_rows"] > 0
    # Its example rows came from the view training staged; with that gone, export rebuilds it.
    shutil.rmtree(Path(config.output) / "evaluation")
    rebuilt = json.loads((Path(export(spark, config)) / "export.json").read_text())
    assert rebuilt["parity_max_abs_diff"] <= 1e-5 and rebuilt["example_rows"] == meta["example_rows"]
    lake = Lake(spark, config.lake)
    vectors = lake.read(SERVING_VECTORS)
    assert vectors.where("entity_type = 'user'").count() == 60 and vectors.where("entity_type = 'item'").count() == 48
    widths = {(r["entity_type"], len(r["vector"])) for r in vectors.collect()}
    assert widths == {("user", 64), ("item", 32)}  # a user's positive and negative views stay apart
    assert len(pd.read_parquet(folder / "serving_vectors.parquet")) == 108
    # The executors' vectors are the ones the folded TorchScript model was built from: HEIN's output
    # of each entity's knowledge rows, which travel in the entity features.
    model = best_model(model_spec(spark, config, "din", "collective", 1))
    user_out, item_out = row_outputs(model.adapter)
    features = pd.read_parquet(folder / "entity_features.parquet").set_index(["entity_type", "entity_id"])
    for row in vectors.collect():
        entity = features.loc[(row["entity_type"], row["entity_id"])]
        if row["entity_type"] == "user":
            expected = user_out[list(entity["user_knowledge"])].flatten()
        else:
            expected = item_out[int(entity["item_knowledge"])]
        assert np.allclose(row["vector"], expected.detach().numpy(), atol=1e-6), row["entity_id"]
    # The exported model holds HEIN's terms per cluster row, not per entity.
    clusters = {t: lake.read(t).select("cluster_id").distinct().count() for t in (ITEM_CLUSTERS, USER_CLUSTERS)}
    buffers = dict(torch.jit.load(str(folder / "model.pt")).named_buffers())
    assert len(buffers["model.head.item_terms"]) == clusters[ITEM_CLUSTERS] + 1
    assert len(buffers["model.head.user_terms"]) == 2 * (clusters[USER_CLUSTERS] + 1)  # per view
    scorer = Scorer(folder)
    ranked = scorer.rank("1", ["1", "2", "3", "unknown-item"], history=["4", "5"])
    assert sorted(item for item, _ in ranked) == ["1", "2", "3", "unknown-item"]
    assert [score for _, score in ranked] == sorted((score for _, score in ranked), reverse=True)
    assert all(0.0 < score < 1.0 for _, score in ranked)
    # Without history the item's score changes: the history really reaches the exported model.
    (alone,), (after_history,) = scorer.score("1", ["1"], []), scorer.score("1", ["1"], ["4", "5"])
    assert abs(alone - after_history) > 1e-4


def test_nearest_centroid_matches_brute_force_and_says_which_views_have_no_clusters(spark, capsys, tmp_path):
    from reki_spark.knowledge.refresh import _nearest

    rng = np.random.default_rng(2)
    centroids = [(f"c{i:02d}", "item" if i < 6 else "positive", rng.normal(size=4).tolist()) for i in range(10)]
    centroids.append(("c99", "item", centroids[0][2]))  # a tie with c00: the smaller id wins
    views = ["item"] * 30 + ["positive"] * 20 + ["negative"] * 3
    points = [(f"e{n}", view, rng.normal(size=4).astype("float32").tolist(), False) for n, view in enumerate(views)]
    points.append(("tied", "item", centroids[0][2], False))
    # The fixed cluster of users without window items is no one's nearest, even at a point itself.
    fixed = ("user:positive:no-window-items", "positive", points[49][2])  # e49: a positive-view point
    frame = spark.createDataFrame(points, "entity_id string, view string, vector array<float>, imputed boolean")
    # Each task reads the centroids from the table's files, as from `clusters`.
    rows = spark.createDataFrame([*centroids, fixed], "cluster_id string, view string, centroid array<double>")
    rows.write.parquet(str(tmp_path / "clusters"))
    table = spark.read.parquet(str(tmp_path / "clusters"))
    assigned = {r["entity_id"]: r["cluster_id"] for r in _nearest(frame, table).collect()}
    for entity, view, vector, _ in points:
        if view == "negative":
            assert entity not in assigned
            continue
        candidates = [
            (sum((a - b) ** 2 for a, b in zip(vector, c, strict=True)), cid) for cid, v, c in centroids if v == view
        ]
        assert assigned[entity] == min(candidates)[1], entity
    assert assigned["tied"] == "c00"
    assert "3 points of view 'negative' have no clusters" in capsys.readouterr().out
