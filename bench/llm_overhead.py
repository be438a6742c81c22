"""LLM stage overhead: completion tokens/s of `reki extract` (Ray Data, llama.cpp actors, commits to
Delta) against raw `llama_cpp.Llama` generating the same prompts with the same settings in the
same layout: as many processes as `llm.actors`, `llm.threads_per_actor` threads each, the prompts
dealt out among them. Both include starting the processes and loading the model; Ray is started
before the timed runs, as on a cluster where the job joins a running Ray. One row per embedded
model: SmolLM2 (every prompt) and, where the llm-qwen05 extra is installed, Qwen 0.5B (the first
prompts only: it generates ~10x slower)."""

from __future__ import annotations

import multiprocessing
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import ray
from pyspark.sql import SparkSession

from bench.common import Measure, save
from ray_workers.backends.gguf import resolve_gguf
from ray_workers.delta_io import RsLake
from ray_workers.extract import extract
from ray_workers.ray_session import start_ray
from reki_spark.config import QWEN05_PRESET, SMOLLM2_PRESET, RekiConfig, load_config
from reki_spark.data.ingest import ingest
from reki_spark.features import build_features
from reki_spark.knowledge.clustering import cluster_entities
from reki_spark.knowledge.prompts import build_prompts
from reki_spark.lake import PROMPTS, Lake
from reki_spark.session import get_spark

WORK = Path("runs/bench-llm")
# model preset -> (prompts asked, repetitions)
MODELS = {SMOLLM2_PRESET: (None, 5), QWEN05_PRESET: (8, 3)}
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


def _raw_share(model_path: str, threads: int, max_tokens: int, prompts: list[tuple[str, str]]) -> int:
    """One raw process: load the model, answer its share of the prompts, return completion tokens."""
    from llama_cpp import Llama

    llm = Llama(model_path=model_path, n_ctx=2048, n_threads=threads, n_threads_batch=threads, seed=0, verbose=False)
    tokens = 0
    for system, prompt in prompts:
        result = llm.create_chat_completion(
            messages=[{"role": "system", "content": system}, {"role": "user", "content": prompt}],
            max_tokens=max_tokens,
            temperature=0.0,
            seed=0,
        )
        tokens += result["usage"]["completion_tokens"]
    return tokens


def _raw_tokens_per_s(config: RekiConfig, prompts: list[tuple[str, str]]) -> float:
    settings = config.llm
    model_path, processes = resolve_gguf(settings.model, settings.model_cache), settings.actors
    start = time.perf_counter()
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        shares = [prompts[index::processes] for index in range(processes)]
        args = ([model_path] * processes, [settings.threads_per_actor] * processes, [settings.max_tokens] * processes)
        tokens = sum(pool.map(_raw_share, *args, shares))
    return tokens / (time.perf_counter() - start)


def _stage_tokens_per_s(config: RekiConfig) -> float:
    start = time.perf_counter()
    summary = extract(config)
    return summary.completion_tokens / (time.perf_counter() - start)


def _measure(spark: SparkSession, model: str, limit: int | None, repetitions: int) -> Measure:
    """Stage and raw side by side on copies of the base lake, whose prompt table is cut to `limit`."""
    folder = WORK / model
    shutil.copytree(WORK / "base", folder / "base")
    settings = [*SETTINGS, f"llm.model={model}"]
    base = load_config("jobs/configs/sample.yaml", [*settings, f"lake={folder / 'base'}"])
    if limit is not None:
        lake = Lake(spark, base.lake)
        lake.overwrite(lake.read(PROMPTS).orderBy("prompt_id").limit(limit).localCheckpoint(), PROMPTS)
    table = RsLake(base.lake).read(PROMPTS, ["system", "prompt"])
    prompts = list(zip(table["system"].to_pylist(), table["prompt"].to_pylist(), strict=True))
    ratios, rates = [], []
    for repetition in range(repetitions):
        shutil.copytree(folder / "base", folder / f"run{repetition}")
        config = load_config("jobs/configs/sample.yaml", [*settings, f"lake={folder / f'run{repetition}'}"])
        # Alternating which side runs first keeps a drift in the machine's speed out of the median.
        if repetition % 2:
            raw_rate, stage_rate = _raw_tokens_per_s(config, prompts), _stage_tokens_per_s(config)
        else:
            stage_rate, raw_rate = _stage_tokens_per_s(config), _raw_tokens_per_s(config, prompts)
        rates.append((stage_rate, raw_rate))
        ratios.append(stage_rate / raw_rate)
    layout = {"processes": base.llm.actors, "threads_each": base.llm.threads_per_actor}
    return Measure(
        f"reki extract / raw llama.cpp tokens per second ({model})",
        ">= 0.9",
        ratios,
        {"tokens_per_s": rates, "prompts": len(prompts), "max_tokens": base.llm.max_tokens, **layout},
    )


def _installed(model: str) -> bool:
    try:
        resolve_gguf(model)
    except FileNotFoundError as missing:
        print(f"llm_overhead: {model} skipped ({missing})")
        return False
    return True


def main() -> None:
    shutil.rmtree(WORK, ignore_errors=True)
    base = load_config("jobs/configs/sample.yaml", [*SETTINGS, f"lake={WORK / 'base'}"])
    spark = get_spark(base)
    for stage in (ingest, build_features, cluster_entities, build_prompts):
        stage(spark, base)
    start_ray(base.ray)
    try:
        measures = [_measure(spark, model, *plan) for model, plan in MODELS.items() if _installed(model)]
    finally:
        # The benchmarks after this one (make bench) must not share the machine, or their
        # memory readings, with an idle Ray.
        ray.shutdown()
    save(
        "llm_overhead",
        measures,
        notes="Collective prompts of a 300-user sample (SmolLM2: all; Qwen: the first 8 by id), max 64 tokens, "
        "greedy; tokens/s pairs (extract, raw) per repetition in the JSON. Like for like: the raw side runs "
        "llm.actors processes x llm.threads_per_actor threads (2 x 1), each loading the model and answering "
        "its share. The stage's wall time also includes reading the pending prompts and the Delta MERGE "
        "commits; Ray itself is already running, as on a cluster.",
    )


if __name__ == "__main__":
    main()
