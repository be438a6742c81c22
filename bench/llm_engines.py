"""Batched decoding on CPU: completion tokens/s of vLLM's CPU build (its OpenAI-compatible server,
in the LLM-worker environment, `make worker-setup`) at 1, 4 and 8 requests in flight, and of the
product's extraction path against that server at the same concurrency (`ExtractionActor`:
`OpenAiBackend`, `llm.concurrency` threads, validation), beside llama.cpp's own server with one
stream. Like for like: each server is pinned to the same one core (`taskset`, one thread), this
client to the other; the same collective prompts, greedy, the same `max_tokens`; the servers start
before the timed runs. Not part of `make bench` (it needs .venv-worker): `python -m bench.llm_engines`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pandas as pd
from openai import OpenAI

from bench.common import Measure, save
from ray_workers.backends.gguf import smollm2_gguf
from ray_workers.delta_io import RsLake
from ray_workers.extract import PROMPT_COLUMNS, ExtractionActor
from reki_spark.config import load_config
from reki_spark.data.ingest import ingest
from reki_spark.features import build_features
from reki_spark.knowledge.clustering import cluster_entities
from reki_spark.knowledge.prompts import build_prompts
from reki_spark.lake import PROMPTS
from reki_spark.session import get_spark
from tests.loopback import free_port, get_json, wait_for

WORK = Path("runs/bench-llm-engines")
WORKER_VENV = Path(os.environ.get("REKI_WORKER_VENV", ".venv-worker"))
MODEL_FOLDER = WORKER_VENV / "models" / "smollm2-135m"
SERVER_CORE, CLIENT_CORE = 1, 0
SERVED = "smollm2-135m"
MAX_TOKENS = 64
IN_FLIGHT = (1, 4, 8)
REPETITIONS = 3
SAMPLE = [
    "dataset.sample.users=120",
    "dataset.sample.items=96",
    "dataset.sample.interactions=4800",
    "clustering.item_cluster_size=12",
    "clustering.user_cluster_size=30",
]


def _prompts() -> pd.DataFrame:
    config = load_config("jobs/configs/sample.yaml", [*SAMPLE, f"lake={WORK / 'lake'}", f"output={WORK / 'run'}"])
    spark = get_spark(config)
    for stage in (ingest, build_features, cluster_entities, build_prompts):
        stage(spark, config)
    prompts = RsLake(config.lake).read(PROMPTS, PROMPT_COLUMNS).to_pandas()
    return prompts.assign(prompt_hash="")


@contextmanager
def _server(args: list[str], log: Path, env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    pinned = ["taskset", "-c", str(SERVER_CORE), *args, "--host", "127.0.0.1", "--port", str(port)]
    with log.open("w") as out:
        server = subprocess.Popen(pinned, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            base = f"http://127.0.0.1:{port}/v1"
            wait_for(lambda: get_json(f"{base}/models")["data"], log.stem, timeout=300)
            yield base
        finally:
            server.terminate()
            server.wait(timeout=60)


def _vllm_server() -> AbstractContextManager[str]:
    args = [str(WORKER_VENV / "bin" / "python"), "-m", "vllm.entrypoints.openai.api_server"]
    args += ["--model", str(MODEL_FOLDER), "--served-model-name", SERVED, "--dtype", "bfloat16"]
    args += ["--max-model-len", "2048", "--max-num-seqs", str(max(IN_FLIGHT)), "--enforce-eager"]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": str(SERVER_CORE)}
    return _server(args, WORK / "vllm-server.log", {**env, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})


def _llama_server() -> AbstractContextManager[str]:
    args = [sys.executable, "-m", "llama_cpp.server", "--model", smollm2_gguf(), "--model_alias", SERVED]
    args += ["--n_ctx", "2048", "--n_threads", "1", "--n_threads_batch", "1"]
    return _server(args, WORK / "llama-server.log", {**os.environ, "OMP_NUM_THREADS": "1"})


def _direct_tokens_per_s(base_url: str, prompts: pd.DataFrame, in_flight: int) -> float:
    """The server's own throughput: the prompts as plain chat requests, `in_flight` at a time."""
    client = OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=600)

    def ask(row: dict) -> int:
        messages = [{"role": "system", "content": row["system"]}, {"role": "user", "content": row["prompt"]}]
        response = client.chat.completions.create(
            model=SERVED, messages=messages, max_tokens=MAX_TOKENS, temperature=0.0, seed=0
        )
        return response.usage.completion_tokens

    start = time.perf_counter()
    with ThreadPoolExecutor(in_flight) as pool:
        tokens = sum(pool.map(ask, prompts.to_dict("records")))
    return tokens / (time.perf_counter() - start)


def _product_tokens_per_s(base_url: str, prompts: pd.DataFrame, in_flight: int) -> float:
    """The product's path: one extraction actor's batch call, `llm.concurrency` requests in flight."""
    settings = {
        "backend": "openai",
        "base_url": base_url,
        "model": SERVED,
        "concurrency": in_flight,
        "batch_size": len(prompts),
        "max_tokens": MAX_TOKENS,
        "temperature": 0.0,
        "max_attempts": 1,
        "min_chars": 1,
        "api_key_env": "REKI_BENCH_NO_KEY",
    }
    actor = ExtractionActor(settings, f"openai:{SERVED}")
    start = time.perf_counter()
    answers = actor(prompts)
    return int(answers["completion_tokens"].sum()) / (time.perf_counter() - start)


def main() -> None:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    prompts = _prompts()
    os.sched_setaffinity(0, {CLIENT_CORE})
    vllm: dict[int, list[float]] = {n: [] for n in IN_FLIGHT}
    product: dict[int, list[float]] = {n: [] for n in IN_FLIGHT}
    llama: list[float] = []
    with _vllm_server() as base_url:
        _direct_tokens_per_s(base_url, prompts.head(2), 2)  # warm-up: the first requests compile
        for _ in range(REPETITIONS):
            for n in IN_FLIGHT:
                # Alternating which side runs first keeps a drift in the machine's speed out of the ratio.
                sides = [(vllm, _direct_tokens_per_s), (product, _product_tokens_per_s)]
                for rates, measure in sides if len(vllm[n]) % 2 == 0 else sides[::-1]:
                    rates[n].append(measure(base_url, prompts, n))
    with _llama_server() as base_url:
        _direct_tokens_per_s(base_url, prompts.head(1), 1)
        llama = [_direct_tokens_per_s(base_url, prompts, 1) for _ in range(REPETITIONS)]
    details = {
        "tokens_per_s": {
            "vllm_cpu": {str(n): rates for n, rates in vllm.items()},
            "product_through_vllm_cpu": {str(n): rates for n, rates in product.items()},
            "llama_cpp_server_one_stream": llama,
        },
        "prompts": len(prompts),
        "max_tokens": MAX_TOKENS,
    }
    measures = [
        Measure(
            f"vLLM CPU build, {n} in flight / its single stream (1 core)",
            ">= 1.8",
            [many / one for many, one in zip(vllm[n], vllm[1], strict=True)],
            details if n == max(IN_FLIGHT) else {},
        )
        for n in IN_FLIGHT[1:]
    ]
    measures += [
        Measure(
            f"product extraction / vLLM's own throughput, {n} in flight (1 core)",
            ">= 0.9",
            [ours / theirs for ours, theirs in zip(product[n], vllm[n], strict=True)],
        )
        for n in IN_FLIGHT
    ]
    measures.append(
        Measure(
            "vLLM CPU build at 4 in flight / llama.cpp server single stream (1 core; not a target)",
            ">= 0",
            [many / one for many, one in zip(vllm[4], llama, strict=True)],
        )
    )
    save(
        "llm_engines",
        measures,
        notes=f"{len(prompts)} collective prompts of a 120-user sample, max {MAX_TOKENS} tokens, greedy, "
        f"{REPETITIONS} repetitions. Servers pinned to core {SERVER_CORE} with one thread (vLLM 0.29.0's CPU "
        "build `vllm-cpu`, bf16, enforce-eager, in .venv-worker; llama.cpp's server, Q4_1 GGUF, one request at a "
        f"time); the client on core {CLIENT_CORE}. vLLM's own throughput: plain chat requests from a thread pool; "
        "the product's: one ExtractionActor batch (OpenAiBackend, llm.concurrency threads, validation). One stream "
        "each, llama.cpp's Q4 is the faster CPU engine; llama.cpp's server was run one request at a time (its "
        "parallel slots were not measured), so the last row compares batched with unbatched decoding.",
    )


if __name__ == "__main__":
    main()
