"""LLM stage overhead: completion tokens/s of `reki extract` (Ray Data, 2 llama.cpp actors x 1
thread, commits to Delta) against raw `llama_cpp.Llama` (2 threads) generating the same prompts
with the same settings in one process. Both include loading the model; Ray is started before the
timed runs, as on a cluster where the job joins a running Ray."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import ray

from bench.common import Measure, save
from ray_workers.backends.gguf import resolve_gguf
from ray_workers.delta_io import RsLake
from ray_workers.extract import extract
from ray_workers.ray_session import start_ray
from reki_spark.config import RekiConfig, load_config
from reki_spark.data.ingest import ingest
from reki_spark.features import build_features
from reki_spark.knowledge.clustering import cluster_entities
from reki_spark.knowledge.prompts import build_prompts
from reki_spark.lake import PROMPTS
from reki_spark.session import get_spark

WORK = Path("runs/bench-llm")
REPETITIONS = 5
SETTINGS = [
    "dataset.sample.users=300",
    "dataset.sample.items=240",
    "dataset.sample.interactions=12000",
    "clustering.item_cluster_size=10",
    "clustering.user_cluster_size=30",
    "llm.max_tokens=64",
    "llm.min_chars=1",
    "llm.max_attempts=1",
    "llm.temperature=0",
    "llm.actors=2",
    "llm.threads_per_actor=1",
    "llm.batch_size=1",
    "ray.num_cpus=2",
]


def _raw_tokens_per_s(prompts: list[tuple[str, str]]) -> float:
    from llama_cpp import Llama

    start = time.perf_counter()
    llm = Llama(model_path=resolve_gguf(None), n_ctx=2048, n_threads=2, n_threads_batch=2, seed=0, verbose=False)
    tokens = 0
    for system, prompt in prompts:
        result = llm.create_chat_completion(
            messages=[{"role": "system", "content": system}, {"role": "user", "content": prompt}],
            max_tokens=64,
            temperature=0.0,
            seed=0,
        )
        tokens += result["usage"]["completion_tokens"]
    return tokens / (time.perf_counter() - start)


def _stage_tokens_per_s(config: RekiConfig) -> float:
    start = time.perf_counter()
    summary = extract(config)
    return summary.completion_tokens / (time.perf_counter() - start)


def main() -> None:
    shutil.rmtree(WORK, ignore_errors=True)
    base = load_config("jobs/configs/sample.yaml", [*SETTINGS, f"lake={WORK / 'base'}"])
    spark = get_spark(base)
    for stage in (ingest, build_features, cluster_entities, build_prompts):
        stage(spark, base)
    table = RsLake(base.lake).read(PROMPTS, ["system", "prompt"])
    prompts = list(zip(table["system"].to_pylist(), table["prompt"].to_pylist(), strict=True))
    start_ray(base.ray)
    ratios, rates = [], []
    try:
        for repetition in range(REPETITIONS):
            lake = WORK / f"run{repetition}"
            shutil.copytree(WORK / "base", lake)
            config = load_config("jobs/configs/sample.yaml", [*SETTINGS, f"lake={lake}"])
            # Alternating which side runs first keeps a drift in the machine's speed out of the median.
            if repetition % 2:
                raw_rate, stage_rate = _raw_tokens_per_s(prompts), _stage_tokens_per_s(config)
            else:
                stage_rate, raw_rate = _stage_tokens_per_s(config), _raw_tokens_per_s(prompts)
            rates.append((stage_rate, raw_rate))
            ratios.append(stage_rate / raw_rate)
    finally:
        # The benchmarks after this one (make bench) must not share the machine, or their
        # memory readings, with an idle Ray.
        ray.shutdown()
    save(
        "llm_overhead",
        [
            Measure(
                "reki extract / raw llama.cpp tokens per second",
                ">= 0.9",
                ratios,
                {"tokens_per_s": rates, "prompts": len(prompts), "max_tokens": 64},
            )
        ],
        notes=f"{len(prompts)} collective prompts of a 300-user sample, max 64 tokens, greedy; tokens/s pairs "
        "(extract, raw) per repetition in the JSON. The stage's wall time includes actor start-up, model "
        "load in each actor, reading the pending prompts and the Delta MERGE commits (every 8 answers); "
        "Ray itself is already running, as on a cluster.",
    )


if __name__ == "__main__":
    main()
