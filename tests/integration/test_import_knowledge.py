"""`reki import-knowledge`: knowledge produced elsewhere lands in the tables extraction writes, and
`reki encode` turns it into vectors unchanged (real Spark, Delta, Ray and encoder)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pyspark.sql import functions as F

from reki_spark.config import ConfigError
from reki_spark.data.ingest import ingest
from reki_spark.knowledge.importing import import_knowledge
from reki_spark.lake import CLUSTERS, ITEM_CLUSTERS, KNOWLEDGE, LEDGER, PROMPTS, USER_CLUSTERS, Lake
from reki_spark.training.data import ClusterRows, knowledge_arrays
from tests.paths import FIXTURES

pytestmark = pytest.mark.integration
MODEL = "gpt-3.5-turbo-0613"


def _ml1m(make_config, *overrides):
    return make_config("dataset.name=movielens-1m", f"dataset.path={FIXTURES / 'ml1m'}", *overrides)


def test_the_reki_release_layout_imports_and_encodes(spark, make_config, ray_local):
    from ray_workers.encode import encode

    config = _ml1m(
        make_config,
        f"knowledge.imported.path={FIXTURES / 'reki_release'}",
        "knowledge.imported.format=reki-release",
        "llm.backend=imported",
        f"llm.model={MODEL}",
    )
    ingest(spark, config)
    summary = import_knowledge(spark, config)
    assert summary.groups == {"item": 2, "negative": 1, "positive": 2}
    assert (summary.items_mapped, summary.items) == (3, 3)
    assert summary.users_mapped == {"negative": 3, "positive": 3} and summary.users == 3
    assert summary.unknown_entities == 2  # release user 4 in both views: not in the lake
    lake = Lake(spark, config.lake)
    items = {r["item_id"]: r["cluster_id"] for r in lake.read(ITEM_CLUSTERS).collect()}
    assert items == {"3": "imported-item-0", "1": "imported-item-0", "2": "imported-item-1"}
    users = {(r["user_id"], r["view"]): r["cluster_id"] for r in lake.read(USER_CLUSTERS).collect()}
    assert users[("2", "positive")] == "imported-positive-0" and users[("1", "positive")] == "imported-positive-1"
    assert lake.read(CLUSTERS).where("cluster_id = 'imported-item-0'").first()["size"] == 2
    answers = lake.read(KNOWLEDGE).collect()
    assert {(r["model_id"], r["status"]) for r in answers} == {(f"imported:{MODEL}", "ok")} and len(answers) == 5
    assert {r["kind"] for r in lake.read(PROMPTS).collect()} == {"item_cluster", "user_cluster"}
    ledger = lake.read(LEDGER).where(F.col("stage") == "import-knowledge").first()
    assert (ledger["llm_calls"], ledger["prompt_tokens"]) == (5, 100 * 5 + 15)
    assert json.loads(ledger["details"])["format"] == "reki-release"

    coverage = encode(config)  # unchanged: the imported answers' model is llm.model
    assert coverage.complete and coverage.items == 3 and coverage.users == 3

    # The controls deal the imported vectors within each view (the ids say nothing of the view):
    # the two item groups and the two positive ones swap, the lone negative group keeps its own.
    rows = ClusterRows.of(lake)
    assert rows.user_views == ["negative", "positive", "positive"]
    collective = knowledge_arrays(lake, None, "collective", config.encoder.model, rows)
    shuffled = knowledge_arrays(lake, None, "shuffled", config.encoder.model, rows, seed=1)
    assert np.array_equal(shuffled.item_vectors[1:], collective.item_vectors[[2, 1]])
    assert np.array_equal(shuffled.user_vectors[1:], collective.user_vectors[[1, 3, 2]])


def test_generic_input_with_two_models_is_refused(spark, make_config, tmp_path):
    folder = tmp_path / "import"
    folder.mkdir()
    (folder / "groups.csv").write_text("entity_type,view,entity_id,group_id\nitem,item,1,a\n")
    answers = [
        {"entity_type": "item", "view": "item", "group_id": "a", "text": "x" * 50, "model": model}
        for model in ("model-one", "model-two")
    ]
    (folder / "answers.jsonl").write_text("".join(json.dumps(a) + "\n" for a in answers))
    config = _ml1m(make_config, f"knowledge.imported.path={folder}")
    ingest(spark, config)
    with pytest.raises(ConfigError, match="must hold the answers of one model"):
        import_knowledge(spark, config)
    (folder / "groups.csv").write_text("entity_type,view,entity_id,group_id\nitem,positive,1,a\n")
    with pytest.raises(ConfigError, match="unknown entity_type/view"):
        import_knowledge(spark, config)
