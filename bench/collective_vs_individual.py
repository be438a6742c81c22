"""Collective vs individual extraction on MovieLens-100k: LLM calls, tokens and wall seconds of
the extraction, and the test AUC of DIN trained with each mode's knowledge.

Individual mode asks one prompt per user and per item (2,625 on ML-100k). On this 2-core machine
that is about an hour of SmolLM2, so `--individual-share` (default 0.1) extracts a seeded random
share of the individual prompts and reports calls exactly and tokens/seconds scaled up from it;
the DIN AUC for individual knowledge is then reported only when the share is 1."""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from bench.common import Measure, save
from ray_workers.encode import encode
from ray_workers.extract import extract
from reki_spark.config import load_config
from reki_spark.data.ingest import ingest
from reki_spark.features import build_features
from reki_spark.knowledge.clustering import cluster_entities
from reki_spark.knowledge.prompts import build_prompts
from reki_spark.lake import PROMPTS, Lake
from reki_spark.session import get_spark
from reki_spark.training.train import train

SOURCE = Path("lake/ml-100k")  # built by `reki run --config jobs/configs/movielens-100k.yaml`
WORK = Path("runs/bench-modes")
LLM = ["llm.max_tokens=64", "llm.max_attempts=1", "llm.min_chars=1"]


def _mode_run(mode: str, share: float, seeds: list[int]) -> dict:
    lake = WORK / mode / "lake"
    shutil.rmtree(WORK / mode, ignore_errors=True)
    shutil.copytree(SOURCE, lake)
    for answered in ("knowledge", "knowledge_vectors"):  # each mode pays for its own extraction
        shutil.rmtree(lake / answered, ignore_errors=True)
    overrides = [
        f"lake={lake}",
        f"output={WORK / mode / 'run'}",
        f"knowledge.mode={mode}",
        *LLM,
        'training.models=["din"]',
        f'training.knowledge=["{mode}"]',
        f"training.seeds={json.dumps(seeds)}",
    ]
    config = load_config("jobs/configs/movielens-100k.yaml", overrides)
    spark = get_spark(config)
    lake_tables = Lake(spark, config.lake)
    build_prompts(spark, config)
    all_prompts = lake_tables.read(PROMPTS).count()
    if share < 1.0:
        kept = lake_tables.read(PROMPTS).sample(fraction=share, seed=7).localCheckpoint()
        lake_tables.overwrite(kept, PROMPTS)
    asked = lake_tables.read(PROMPTS).count()
    start = time.perf_counter()
    summary = extract(config)
    seconds = time.perf_counter() - start
    scale = all_prompts / asked
    result = {
        "prompts": all_prompts,
        "asked": asked,
        "calls": all_prompts,
        "tokens": (summary.prompt_tokens + summary.completion_tokens) * scale,
        "seconds": seconds * scale,
        "scaled_from_share": share,
    }
    if share == 1.0:
        encode(config)
        result["auc"] = [r["auc"] for r in train(spark, config)]
    return result


def _ensure_source() -> None:
    """The ML-100k lake up to clustering (shared by both modes)."""
    if (SOURCE / "clusters").exists():
        return
    config = load_config("jobs/configs/movielens-100k.yaml", [f"lake={SOURCE}"])
    spark = get_spark(config)
    for stage in (ingest, build_features, cluster_entities):
        stage(spark, config)


def main() -> None:
    _ensure_source()
    parser = argparse.ArgumentParser()
    parser.add_argument("--individual-share", type=float, default=0.1)
    parser.add_argument("--seeds", default="[1, 2, 3]")
    args = parser.parse_args()
    seeds = json.loads(args.seeds)
    collective = _mode_run("collective", 1.0, seeds)
    individual = _mode_run("individual", args.individual_share, seeds)
    measures = [
        Measure("collective / individual LLM calls", "<= 0.05", [collective["calls"] / individual["calls"]]),
        Measure("collective / individual tokens", "<= 0.05", [collective["tokens"] / individual["tokens"]]),
        Measure(
            "collective / individual extraction seconds", "<= 0.05", [collective["seconds"] / individual["seconds"]]
        ),
    ]
    if "auc" in individual:
        measures.append(
            Measure(
                "collective / individual DIN test AUC",
                ">= 0.997",
                [c / i for c, i in zip(collective["auc"], individual["auc"], strict=True)],
            )
        )
    save(
        "collective_vs_individual",
        measures,
        notes=(
            f"collective: {collective}; individual: {individual}. Individual tokens and seconds are scaled from "
            f"a {args.individual_share:.0%} seeded sample of its prompts"
            + (
                "; the AUC comparison needs the full individual extraction (--individual-share 1), not run here."
                if "auc" not in individual
                else "."
            )
        ),
    )


if __name__ == "__main__":
    main()
