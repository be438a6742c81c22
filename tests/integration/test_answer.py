"""The extract stage's worker-side half (ray_workers/answer.py, no Spark) chooses exactly the
prompts the Spark side would ask, with the same prompt hashes: all of them for a new model, the
first ones by id under `llm.max_prompts`, the failed ones again under `llm.retry_failed`. The
encode stage's (ray_workers/worker_encode.py) chooses the texts the Spark side would encode, with
the same source hashes.
(vLLM answering them runs in tests/worker, in the LLM-worker environment.)"""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ray_workers.answer import stage_pending_prompts
from ray_workers.backends import model_id
from ray_workers.delta_io import RsLake
from ray_workers.encode import texts_to_encode as spark_texts_to_encode
from ray_workers.extract import KNOWLEDGE_KEYS, pending_prompts
from ray_workers.staging import RunFolder, StagedRows, recover
from ray_workers.worker_encode import stage_pending_texts
from reki_spark.lake import KNOWLEDGE, Lake
from tests.conftest import tiny_config
from tests.integration.test_knowledge import TINY_PROMPTS

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("model", "retry_failed", "max_prompts"),
    [("vllm:new-model", False, None), ("vllm:new-model", False, 3), (None, True, None), (None, False, None)],
)
def test_the_worker_side_stages_the_prompts_the_spark_side_would_ask(
    spark, knowledge_lake, tmp_path, model, retry_failed, max_prompts
):
    model = model or model_id(tiny_config(knowledge_lake).llm)  # the model that answered them
    inputs = RunFolder(str(tmp_path / "staging"), "inputs/extract")
    staged = stage_pending_prompts(RsLake(str(knowledge_lake)), model, retry_failed, max_prompts, inputs)
    pending = pending_prompts(Lake(spark, str(knowledge_lake)), model, retry_failed)
    if max_prompts is not None:
        pending = pending.orderBy("prompt_id").limit(max_prompts)
    expected = sorted((row.prompt_id, row.prompt_hash) for row in pending.select("prompt_id", "prompt_hash").collect())
    found = pq.read_table(inputs.location).to_pylist() if staged else []
    assert staged == len(expected)
    assert sorted((row["prompt_id"], row["prompt_hash"]) for row in found) == expected


def _spark_texts(spark, lake: Path, model: str, encoder_id: str) -> list[tuple[str, str, str]]:
    texts = spark_texts_to_encode(Lake(spark, str(lake)), model, encoder_id)
    return sorted((r.prompt_id, r.source_hash, r.encode_text) for r in texts.collect())


def _worker_texts(lake: Path, model: str, encoder_id: str, staging: Path) -> list[tuple[str, str, str]]:
    inputs = RunFolder(str(staging), "inputs/encode")
    staged = stage_pending_texts(RsLake(str(lake)), model, encoder_id, inputs)
    found = pq.read_table(inputs.location).to_pylist() if staged else []
    assert staged == len(found)
    return sorted((row["prompt_id"], row["source_hash"], row["encode_text"]) for row in found)


def test_the_worker_side_encodes_what_the_spark_side_would_with_the_same_source_hashes(spark, knowledge_lake, tmp_path):
    """Every text for a new encoder, none for the one that encoded them, and after a worker-side
    extraction hands over a new answer (staged, not merged), that prompt alone on both sides once
    the Spark side has merged it."""
    lake = tmp_path / "lake"
    shutil.copytree(knowledge_lake, lake)
    config = tiny_config(lake)
    model, encoder_id = model_id(config.llm), config.encoder.model
    everything = _spark_texts(spark, lake, model, "another-encoder")
    assert len(everything) == TINY_PROMPTS
    assert _worker_texts(lake, model, "another-encoder", tmp_path / "a") == everything
    assert _spark_texts(spark, lake, model, encoder_id) == [] == _worker_texts(lake, model, encoder_id, tmp_path / "b")

    answer = RsLake(str(lake)).read(KNOWLEDGE).to_pylist()[0]
    StagedRows(str(lake)).append_rows(KNOWLEDGE, [{**answer, "text": "A newer answer.", "status": "ok"}])
    changed = _worker_texts(lake, model, encoder_id, tmp_path / "c")
    assert [row[0] for row in changed] == [answer["prompt_id"]] and changed[0][2].endswith("A newer answer.")
    recover(Lake(spark, str(lake)), KNOWLEDGE, KNOWLEDGE_KEYS)  # what `reki extract` merges first
    assert _spark_texts(spark, lake, model, encoder_id) == changed
