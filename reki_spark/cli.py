"""The `reki` command: one subcommand per stage, each taking `--config FILE` and repeated
`--set dotted.key=value`. It holds no logic: it builds the config and session and calls the
library's entry function."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from pyspark.sql import SparkSession

from ray_workers.backends.base import BackendUnavailable
from reki_spark.config import ConfigError, RekiConfig, run_configured
from reki_spark.data.download import PUBLIC_URLS, amazon_urls, download
from reki_spark.data.ingest import ingest
from reki_spark.evaluation.report import write_report
from reki_spark.export import export
from reki_spark.features import build_features
from reki_spark.knowledge.clustering import cluster_entities
from reki_spark.knowledge.importing import import_knowledge
from reki_spark.knowledge.prompts import build_prompts
from reki_spark.knowledge.refresh import refresh_clusters
from reki_spark.lake import Lake, format_tables
from reki_spark.ledger import ledger_entry
from reki_spark.session import get_spark
from reki_spark.training.train import evaluate_runs, train

StageFunction = Callable[[SparkSession, RekiConfig], Any]
RayStageFunction = Callable[[RekiConfig], Any]


def _extract(config: RekiConfig) -> Any:
    from ray_workers.extract import extract

    return extract(config)


def _encode(config: RekiConfig) -> Any:
    from ray_workers.encode import encode

    return encode(config)


# In pipeline order: `reki run` runs them one after the other. Spark stages get a session; the
# Ray stages (imported lazily, so Spark-only jobs never load Ray) start or join Ray themselves.
SPARK_STAGES: dict[str, StageFunction] = {
    "ingest": ingest,
    "features": build_features,
    "cluster": cluster_entities,
    "prompts": build_prompts,
}
RAY_STAGES: dict[str, RayStageFunction] = {"extract": _extract, "encode": _encode}
# After the knowledge stages: train every configured model, then write the report.
TRAINING_STAGES: dict[str, StageFunction] = {"train": train, "report": write_report}
PIPELINE = [*SPARK_STAGES, *RAY_STAGES, *TRAINING_STAGES]
# Run on their own, not by `reki run`.
EXTRA_STAGES: dict[str, StageFunction] = {
    "evaluate": evaluate_runs,
    "export": export,
    "import-knowledge": import_knowledge,
}
ALL_STAGES: dict[str, Any] = {**SPARK_STAGES, **TRAINING_STAGES, **EXTRA_STAGES}


def _print_tables(spark: SparkSession, config: RekiConfig, as_json: bool) -> None:
    print(format_tables(Lake(spark, config.lake).describe(), as_json=as_json))


def run_stage(name: str, config: RekiConfig, spark: SparkSession | None = None) -> Any:
    if name in RAY_STAGES:
        return RAY_STAGES[name](config)
    return ALL_STAGES[name](spark or get_spark(config), config)


def cmd_run(config: RekiConfig, args: argparse.Namespace) -> None:
    stages = _pipeline_stages(args.stages)
    spark = get_spark(config)
    for name in stages:
        if name == stages[-1] and args.stages is None:  # the whole pipeline: what it left, before the report
            tables = Lake(spark, config.lake).table_names()
            print(f"lake: {len(tables)} Delta tables under {config.lake} (`reki tables` lists them)")
        print(f"== {name}")
        run_stage(name, config, spark)


def _pipeline_stages(chosen: str | None) -> list[str]:
    """The pipeline's stages, or those of the comma-separated `chosen`, in pipeline order."""
    if chosen is None:
        return PIPELINE
    names = [name.strip() for name in chosen.split(",") if name.strip()]
    unknown = [name for name in names if name not in PIPELINE]
    if unknown or not names:
        raise ConfigError(f"--stages: {', '.join(unknown) or '(none)'} not among {', '.join(PIPELINE)}")
    return [name for name in PIPELINE if name in names]


def cmd_refresh(config: RekiConfig, args: argparse.Namespace) -> None:
    """New data in, nearest-cluster assignment, re-asking only the clusters that changed."""
    spark = get_spark(config)
    with ledger_entry(Lake(spark, config.lake), "refresh") as record:
        plan = refresh_clusters(spark, config)
        extraction = _extract(config)
        _encode(config)
        record.llm_calls = extraction.llm_calls
        record.prompt_tokens, record.completion_tokens = extraction.prompt_tokens, extraction.completion_tokens
        record.details = {
            **plan.as_dict(),
            "prompts_asked": extraction.answered,
            "calls_saved_vs_collective_rerun": plan.clusters - extraction.answered,
            "calls_saved_vs_individual_for_new_entities": plan.new_users + plan.new_items - extraction.answered,
        }
    print(
        f"refresh: {plan.new_interactions} new interactions, {plan.new_users} new users, {plan.new_items} new "
        f"items; {plan.changed_clusters} of {plan.clusters} clusters changed; "
        f"{extraction.answered} prompts asked ({extraction.llm_calls} LLM calls)"
    )


def cmd_tables(config: RekiConfig, args: argparse.Namespace) -> None:
    _print_tables(get_spark(config), config, as_json=args.json)


def cmd_download(config: RekiConfig, args: argparse.Namespace) -> None:
    dataset = config.dataset
    if dataset.name in ("sample", "table") or dataset.path is None:
        print(f"dataset.name={dataset.name} is not a public download: nothing to fetch")
        return
    url = dataset.download_url or PUBLIC_URLS[dataset.name]
    urls = amazon_urls(url, dataset.name, dataset.category or "") if dataset.name.startswith("amazon") else [url]
    for source in urls:
        for path in download(source, dataset.path):
            print(f"downloaded {path}")


def _stage_command(name: str) -> Callable[[RekiConfig, argparse.Namespace], None]:
    def command(config: RekiConfig, args: argparse.Namespace) -> None:
        run_stage(name, config)

    return command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reki", description="REKI: LLM knowledge for recommenders, at scale")
    commands = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="experiment YAML (jobs/configs/*.yaml)")
    common.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config key, e.g. --set lake=/tmp/lake (repeatable)",
    )
    common.add_argument("--verbose", action="store_true", help="also print Spark, Ray, petastorm and per-epoch output")
    for name in [*PIPELINE, *EXTRA_STAGES]:
        sub = commands.add_parser(name, parents=[common], help=f"run the {name} stage")
        sub.set_defaults(handler=_stage_command(name))
    run = commands.add_parser("run", parents=[common], help="run every stage in order, in one driver")
    run.add_argument(
        "--stages", help="only these pipeline stages, comma-separated (in pipeline order), e.g. train,report"
    )
    run.set_defaults(handler=cmd_run)
    refresh = commands.add_parser("refresh", parents=[common], help="ingest new data, re-ask only changed clusters")
    refresh.set_defaults(handler=cmd_refresh)
    tables = commands.add_parser("tables", parents=[common], help="list the Delta tables under the lake")
    tables.add_argument("--json", action="store_true", help="print JSON instead of a table")
    tables.set_defaults(handler=cmd_tables)
    commands.add_parser(
        "download", parents=[common], help="fetch the dataset's public files into dataset.path"
    ).set_defaults(handler=cmd_download)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_configured("reki", args, lambda config: args.handler(config, args), (BackendUnavailable,))


if __name__ == "__main__":
    sys.exit(main())
