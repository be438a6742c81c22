"""The extract stage's worker-side half (ray_workers/answer.py, no Spark) chooses exactly the
prompts the Spark side would ask, with the same prompt hashes: all of them for a new model, the
first ones by id under `llm.max_prompts`, the failed ones again under `llm.retry_failed`.
(vLLM answering them runs in tests/worker, in the LLM-worker environment.)"""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from ray_workers.answer import stage_pending_prompts
from ray_workers.backends import model_id
from ray_workers.delta_io import RsLake
from ray_workers.extract import pending_prompts
from ray_workers.staging import RunFolder
from reki_spark.lake import Lake
from tests.conftest import tiny_config

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
