"""Collective vs individual extraction on MovieLens-100k: LLM calls, tokens and wall seconds of
the extraction, and the test AUC of DIN trained with each mode's knowledge.

Individual mode asks one prompt per user and per item (2,625 on ML-100k): about 26 minutes of
SmolLM2 on this 2-core machine, too long to repeat three times. So the individual prompts are split
into three seeded random thirds, and repetition k runs a fresh collective extraction side by side
with the extraction of third k; its individual tokens and seconds are that third's scaled by the
number of prompts. After the three repetitions every individual prompt is answered once, and DIN is
trained on each mode's knowledge and without knowledge (`none`) with the configured seeds: AUC
ratios collective/individual, collective/none and individual/none, one per seed, with Welch's p.
`--individual-share` below 1 extracts only a seeded share of the individual prompts, for a quick
look; the AUC is then not measured."""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

from pyspark.sql import functions as F

from bench.common import Measure, save
from ray_workers.encode import encode
from ray_workers.extract import extract
from reki_spark.config import RekiConfig, load_config
from reki_spark.data.ingest import ingest
from reki_spark.evaluation.report import welch
from reki_spark.features import build_features
from reki_spark.knowledge.clustering import cluster_entities
from reki_spark.knowledge.prompts import build_prompts
from reki_spark.lake import KNOWLEDGE, KNOWLEDGE_VECTORS, PROMPTS, Lake
from reki_spark.session import get_spark
from reki_spark.training.train import train

SOURCE = Path("lake/ml-100k")  # ingested, featurised and clustered once, shared by both modes
WORK = Path("runs/bench-modes")
LLM = ["llm.max_tokens=64", "llm.max_attempts=1", "llm.min_chars=1"]
REPETITIONS = 3


def _mode_config(mode: str, name: str, seeds: list[int], arms: tuple[str, ...] | None = None) -> RekiConfig:
    """A fresh copy of the source lake without any answers: each run pays for its own extraction."""
    lake = WORK / name / "lake"
    shutil.rmtree(WORK / name, ignore_errors=True)
    shutil.copytree(SOURCE, lake)
    for answered in (KNOWLEDGE, KNOWLEDGE_VECTORS):
        shutil.rmtree(lake / answered, ignore_errors=True)
    overrides = [
        f"lake={lake}",
        f"output={WORK / name / 'run'}",
        f"knowledge.mode={mode}",
        *LLM,
        'training.models=["din"]',
        f"training.knowledge={json.dumps(list(arms or (mode,)))}",
        f"training.seeds={json.dumps(seeds)}",
    ]
    return load_config("jobs/configs/movielens-100k.yaml", overrides)


def _extraction(config: RekiConfig, prompts_in_mode: int) -> dict[str, Any]:
    """One extraction of the lake's pending prompts, its calls, tokens and seconds scaled to the
    mode's full prompt set."""
    start = time.perf_counter()
    summary = extract(config)
    seconds = time.perf_counter() - start
    scale = prompts_in_mode / summary.pending
    return {
        "asked": summary.pending,
        "calls": summary.llm_calls * scale,
        "tokens": (summary.prompt_tokens + summary.completion_tokens) * scale,
        "seconds": seconds * scale,
    }


def _din_auc(config: RekiConfig) -> dict[str, list[float]]:
    """Test AUC per seed of every knowledge arm the config trains."""
    encode(config)
    runs = train(get_spark(config), config)
    din = [run for run in runs if run["model"] == "din"]  # MostPop trains beside it, under `none`
    return {arm: [run["auc"] for run in din if run["knowledge"] == arm] for arm in config.training.knowledge}


def _collective(seeds: list[int], repetition: int, with_auc: bool) -> dict[str, Any]:
    config = _mode_config("collective", f"collective-{repetition}", seeds)
    spark = get_spark(config)
    build_prompts(spark, config)
    prompts = Lake(spark, config.lake).read(PROMPTS).count()
    result = {"prompts": prompts, **_extraction(config, prompts)}
    if with_auc:
        result["auc"] = _din_auc(config)["collective"]
    return result


class IndividualThirds:
    """The individual lake, whose prompt table grows by one seeded random third per repetition, so
    that each extraction asks exactly the prompts of its third."""

    def __init__(self, seeds: list[int], share: float) -> None:
        # The individual lake also trains DIN without knowledge: the `none` arm both modes face.
        self.config = _mode_config("individual", "individual", seeds, ("none", "individual"))
        spark = get_spark(self.config)
        self.lake = Lake(spark, self.config.lake)
        build_prompts(spark, self.config)
        everything = self.lake.read(PROMPTS)
        self.prompts = everything.count()
        kept = everything if share >= 1.0 else everything.sample(fraction=share, seed=7)
        third = F.pmod(F.xxhash64("prompt_id", F.lit(7)), F.lit(REPETITIONS))
        self.parts = kept.withColumn("_third", third).localCheckpoint()

    def extract_third(self, repetition: int) -> dict[str, Any]:
        upto = self.parts.where(F.col("_third") <= repetition).drop("_third")
        self.lake.overwrite(upto, PROMPTS)
        return {"prompts": self.prompts, **_extraction(self.config, self.prompts)}


def _ensure_source(ml100k: str) -> None:
    if (SOURCE / "clusters").exists():
        return
    config = load_config("jobs/configs/movielens-100k.yaml", [f"lake={SOURCE}", f"dataset.path={ml100k}"])
    spark = get_spark(config)
    for stage in (ingest, build_features, cluster_entities):
        stage(spark, config)


def _auc_measures(collective: list[float], trained: dict[str, list[float]], seeds: list[int]) -> list[Measure]:
    """Collective against individual, and each mode against `none`: the first ratio says nothing
    unless a mode beats `none`, so the last two can fail where knowledge does not help."""
    arms = {"collective": collective, **trained}
    measures = []
    for a, b, target in (
        ("collective", "individual", ">= 0.997"),
        ("collective", "none", ">= 1.0"),
        ("individual", "none", ">= 1.0"),
    ):
        result = welch(arms[a], arms[b])
        measures.append(
            Measure(
                f"{a} / {b} DIN test AUC (one ratio per training seed)",
                target,
                [x / y for x, y in zip(arms[a], arms[b], strict=True)],
                {
                    f"{a}_auc": arms[a],
                    f"{b}_auc": arms[b],
                    "seeds": seeds,
                    "welch_p": result.p_value,
                    "verdict": result.verdict,
                },
            )
        )
    return measures


def _ratios(runs: list[tuple[dict[str, Any], dict[str, Any]]], key: str) -> list[float]:
    return [collective[key] / individual[key] for collective, individual in runs]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--individual-share", type=float, default=1.0)
    parser.add_argument("--seeds", default="[1, 2, 3]")
    parser.add_argument("--ml100k", default="data/ml-100k", help="where `reki download` puts it")
    args = parser.parse_args(argv)
    seeds = json.loads(args.seeds)
    complete = args.individual_share >= 1.0
    _ensure_source(args.ml100k)
    individual = IndividualThirds(seeds, args.individual_share)
    runs = []
    for repetition in range(REPETITIONS):
        collective = _collective(seeds, repetition, with_auc=complete and repetition == REPETITIONS - 1)
        runs.append((collective, individual.extract_third(repetition)))
    measures = [
        Measure("collective / individual LLM calls", "<= 0.05", _ratios(runs, "calls")),
        Measure("collective / individual tokens", "<= 0.05", _ratios(runs, "tokens")),
        Measure("collective / individual extraction seconds", "<= 0.05", _ratios(runs, "seconds")),
    ]
    if complete:
        measures += _auc_measures(runs[-1][0]["auc"], _din_auc(individual.config), seeds)
    save(
        "collective_vs_individual",
        measures,
        notes=(
            f"{REPETITIONS} repetitions, each a fresh collective extraction beside one seeded third of the "
            f"individual prompts (scaled by prompts in the mode); runs: {runs}. "
            + (
                "The AUC target reads 'within 0.3%' as collective no more than 0.3% below individual."
                if complete
                else f"Only {args.individual_share:.0%} of the individual prompts were extracted: AUC not measured."
            )
        ),
    )


if __name__ == "__main__":
    main()
