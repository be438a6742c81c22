"""Does knowledge help, and is it the LLM's text? One command per dataset, resumable across sessions:
finished stages are marked in the work folder, and a (model, seed) whose arms are all in the
committed results/metrics.json is not retrained, even from a fresh clone with no work folder:

    python -m bench.knowledge_effect ml-100k --data ../shared/data/movielens_100k
    python -m bench.knowledge_effect ml-1m --data ../shared/data/movielens_1m \\
        --release ../shared/data/reki_release_ml1m

One base lake (ingest, features, the product's own clusters and prompts) is copied once per
knowledge source, because a source owns its cluster and knowledge tables: SmolLM2 or Qwen answers
to the product's prompts, or the REKI authors' GPT-3.5 groups and answers imported. The first
source trains `none`, `collective` and its controls (`shuffled`, `random_vectors`, `cluster_only`:
no LLM text; `collective_plus_ids`: the text beside the group ids);
every further source trains its `collective`, reported as `collective_<source>`, and, where its
groups are not the first source's (the product's clusters beside an imported set's groups, which
may have been built from other data), its own bare-groups control `cluster_only_<source>`. Results go to
bench/results/knowledge_effect/<dataset>/: report.md (the product's statistics: mean ± std, 95%
intervals, Welch p-values against `none` and against both controls), metrics.json, comparison.png
and knowledge_cost.json (LLM calls, tokens and seconds of each knowledge set).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import SparkSession

from bench.common import RESULTS
from reki_spark.config import QWEN05_PRESET, RekiConfig, load_config
from reki_spark.data.ingest import ingest
from reki_spark.evaluation.metrics import METRICS_FILE
from reki_spark.evaluation.report import results_lines, stage_costs, summarize, write_chart
from reki_spark.features import build_features
from reki_spark.knowledge.clustering import cluster_entities
from reki_spark.knowledge.importing import import_knowledge
from reki_spark.knowledge.prompts import build_prompts
from reki_spark.lake import LEDGER, Lake
from reki_spark.provenance import code_version
from reki_spark.session import get_spark
from reki_spark.training.train import train, write_metrics

Stage = Callable[[SparkSession, RekiConfig], object]
# In training order: `none` and `collective` first, so that a partial run already compares them;
# then the arms of the report's two text tests (config.KNOWLEDGE_CONTROLS): beyond membership
# (`collective_plus_ids` vs `cluster_only`) and against vectors that carry no text.
CONTROL_ARMS = ("none", "collective", "collective_plus_ids", "cluster_only", "shuffled", "random_vectors")
KNOWLEDGE_STAGES = ("extract", "import-knowledge", "encode")
OWN_CLUSTER_ARMS = ("collective", "cluster_only")


def _extract(spark: SparkSession, config: RekiConfig) -> object:
    from ray_workers.extract import extract

    return extract(config)


def _encode(spark: SparkSession, config: RekiConfig) -> object:
    from ray_workers.encode import encode

    return encode(config)


@dataclass(frozen=True)
class Source:
    """One knowledge set: the stages that produce it on a copy of the base lake, and its config."""

    label: str
    llm: str  # as the README names it
    stages: tuple[tuple[str, Stage], ...]
    overrides: tuple[str, ...] = ()

    @property
    def imported(self) -> bool:
        """Its groups come with it (imported), not from the product's clusters."""
        return any(name == "import-knowledge" for name, _ in self.stages)


EXTRACTED = (("extract", _extract), ("encode", _encode))
SMOLLM2 = Source("smollm2", "SmolLM2-135M-Instruct Q4_1 (embedded)", EXTRACTED)
QWEN05 = Source("qwen05", "Qwen2.5-Coder-0.5B-Instruct Q4_K_M", EXTRACTED, (f"llm.model={QWEN05_PRESET}",))


def gpt35(release: str) -> Source:
    return Source(
        "gpt35",
        "GPT-3.5-turbo-0613 (the REKI release, imported)",
        (("import-knowledge", import_knowledge), ("encode", _encode)),
        (
            f"knowledge.imported.path={release}",
            "knowledge.imported.format=reki-release",
            "llm.backend=imported",
            "llm.model=gpt-3.5-turbo-0613",
        ),
    )


@dataclass(frozen=True)
class Experiment:
    config: str
    models: tuple[str, ...]
    seeds: tuple[int, ...]


EXPERIMENTS = {
    # SASRec first: its knowledge effect (-42% before the input-side infusion) is the open question.
    "ml-100k": Experiment("jobs/configs/movielens-100k.yaml", ("sasrec", "din", "dcnv2"), (1, 2, 3, 4, 5)),
    # Five seeds, as every "better" needs (evaluation/report.py: MIN_SEEDS).
    "ml-1m": Experiment("jobs/configs/movielens-1m.yaml", ("din", "dcnv2", "autoint"), (1, 2, 3, 4, 5)),
}


def _config(
    experiment: Experiment,
    data: str,
    work: Path,
    arms: tuple[str, ...],
    models: tuple[str, ...],
    seeds: tuple[int, ...],
    *overrides: str,
) -> RekiConfig:
    return load_config(
        experiment.config,
        [
            f"dataset.path={data}",
            f"lake={work / 'lake'}",
            f"output={work / 'run'}",
            f"training.models={json.dumps(list(models))}",
            f"training.knowledge={json.dumps(list(arms))}",
            f"training.seeds={json.dumps(list(seeds))}",
            *overrides,
        ],
    )


def _once(spark: SparkSession, config: RekiConfig, marks: Path, stages: tuple[tuple[str, Stage], ...]) -> None:
    """Each stage once: a mark file records that it finished, so a rerun skips it."""
    marks.mkdir(parents=True, exist_ok=True)
    for name, stage in stages:
        mark = marks / f"{name}.done"
        if not mark.exists():
            print(f"== {marks.parent.name}: {name}", flush=True)
            stage(spark, config)
            mark.touch()


def copy_lake(base: Path, lake: Path) -> None:
    """`base` copied to `lake` once: whole, then renamed, so a stop mid-copy leaves no lake."""
    if not lake.exists():
        partial = lake.with_name(lake.name + ".copying")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(base, partial)
        partial.rename(lake)


def run(
    name: str,
    data: str,
    sources: list[Source],
    work: Path,
    models: tuple[str, ...] | None = None,
    seeds: tuple[int, ...] | None = None,
) -> Path:
    """Trains what the committed results lack, for the given models and seeds (default: the
    experiment's; none at all for `()`), then rewrites the results."""
    experiment = EXPERIMENTS[name]
    base = _config(experiment, data, work / "base", ("none",), experiment.models, experiment.seeds)
    spark = get_spark(base)
    _once(
        spark,
        base,
        work / "base" / "marks",
        (("ingest", ingest), ("features", build_features), ("cluster", cluster_entities), ("prompts", build_prompts)),
    )

    def config_of(
        index: int, models: tuple[str, ...], seeds: tuple[int, ...] = experiment.seeds, arms: tuple[str, ...] = ()
    ) -> RekiConfig:
        arms = arms or tuple(_arms(sources[index], sources[0]))
        folder = work / sources[index].label
        return _config(experiment, data, folder, arms, models, seeds, *sources[index].overrides)

    configs = [(source, config_of(index, experiment.models)) for index, source in enumerate(sources)]
    for source, config in configs:  # every knowledge set first, then the long training
        folder = work / source.label
        copy_lake(work / "base" / "lake", folder / "lake")
        _once(spark, config, folder / "marks", source.stages)
    trained = _by_run([*_committed(name), *_trained_at(code_version(), configs)])
    for seed in experiment.seeds if seeds is None else seeds:
        # One seed and model across every set at a time, results rewritten after each: a run stopped
        # part way already compares every arm of every backbone on the seeds it finished, and once
        # those results are committed a later session (a fresh clone, no runs/ folder) skips them.
        for model in experiment.models if models is None else models:
            done = {r["knowledge"] for r in trained.get((model, seed), [])}
            for index, (source, _) in enumerate(configs):
                missing = tuple(arm for arm, label in _arms(source, sources[0]).items() if label not in done)
                if missing:
                    train(spark, config_of(index, (model,), (seed,), missing))
            _write_results(spark, name, configs)
    return _write_results(spark, name, configs)


def _arms(source: Source, primary: Source) -> dict[str, str]:
    """The arms one knowledge set trains, each with its name in the results: the first set trains
    every arm; a further set its collective knowledge, plus the bare-groups control when its groups
    differ from the first set's (a grouping's own signal, whichever data built it), suffixed with
    its label."""
    if source == primary:
        return {arm: arm for arm in CONTROL_ARMS}
    arms = OWN_CLUSTER_ARMS if source.imported != primary.imported else ("collective",)
    return {arm: f"{arm}_{source.label}" for arm in arms}


def _by_run(records: list[dict]) -> dict[tuple[str, int], list[dict]]:
    by_run: dict[tuple[str, int], list[dict]] = {}
    for record in records:
        by_run.setdefault((record["model"], record["seed"]), []).append(record)
    return by_run


def _committed(name: str) -> list[dict]:
    """The results already in bench/results: the record that outlives runs/."""
    path = RESULTS / "knowledge_effect" / name / METRICS_FILE
    return json.loads(path.read_text()) if path.exists() else []


def _trained_at(commit: str, configs: list[tuple[Source, RekiConfig]]) -> list[dict]:
    """The arms the work folder's runs already trained at `commit`: a run stopped part way through
    a (model, seed) resumes at its next arm (one SASRec seed of ML-100k trains its seven arms for
    over an hour), and a record of other code is trained again."""
    primary = configs[0][0]
    return [r for source, config in configs for r in _records(source, config, primary) if r.get("commit") == commit]


def _records(source: Source, config: RekiConfig, primary: Source) -> list[dict]:
    path = Path(config.output) / METRICS_FILE
    records = json.loads(path.read_text()) if path.exists() else []
    names = _arms(source, primary)
    return [{**r, "knowledge": names[r["knowledge"]]} for r in records if r["knowledge"] in names]


def _knowledge_cost(spark: SparkSession, config: RekiConfig) -> dict:
    costs = stage_costs(Lake(spark, config.lake).read(LEDGER).toPandas())  # one ledger row per stage run: small
    return json.loads(costs[costs.index.isin(KNOWLEDGE_STAGES)].round(1).to_json(orient="index"))


def _write_results(spark: SparkSession, name: str, configs: list[tuple[Source, RekiConfig]]) -> Path:
    target = RESULTS / "knowledge_effect" / name
    target.mkdir(parents=True, exist_ok=True)
    fresh = [r for s, c in configs for r in _records(s, c, configs[0][0])]
    # Merged into the committed records by run, which outlive the work folder.
    records = json.loads(Path(write_metrics(str(target), fresh)).read_text())
    summary = summarize(records)
    write_chart(summary, target / "comparison.png")
    costs = {source.label: {"llm": source.llm, **_knowledge_cost(spark, config)} for source, config in configs}
    (target / "knowledge_cost.json").write_text(json.dumps(costs, indent=2) + "\n")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    labels = ["collective", *[f"collective_{source.label}" for source, _ in configs[1:]]]
    sources = [f"- `{label}`: {source.llm}" for label, (source, _) in zip(labels, configs, strict=True)]
    lines = [
        f"# Knowledge effect: {name}",
        "",
        f"`python -m bench.knowledge_effect {name}` at commit {commit}. Knowledge sets:",
        "",
        *sources,
        "- `shuffled`, `random_vectors`, `cluster_only`: the first set's controls (its vectors permuted "
        "among the groups of each view, anew per seed; one random unit vector per group; a learned "
        "embedding of its group ids). No LLM text.",
        "- `collective_plus_ids`: the first set's vectors and its group ids together (does the text add "
        "to membership?).",
        "- `cluster_only_<set>`: a learned embedding of that set's own group ids. No LLM text.",
        "",
        *results_lines(summary, "comparison.png"),
        "## LLM cost of each knowledge set",
        "",
        "| set | stage | LLM calls | prompt tokens | completion tokens | seconds |",
        "|---|---|---|---|---|---|",
        *[
            f"| {label} | {stage} | "
            + " | ".join(str(c[k]) for k in ("llm_calls", "prompt_tokens", "completion_tokens", "seconds"))
            + " |"
            for label, cost in costs.items()
            for stage, c in cost.items()
            if stage != "llm"
        ],
    ]
    (target / "report.md").write_text("\n".join(lines) + "\n")
    print(f"results: {target}")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=sorted(EXPERIMENTS))
    parser.add_argument("--data", required=True, help="the dataset folder (`reki download` puts it in data/)")
    parser.add_argument("--release", help="ml-1m: the REKI authors' release folder, imported as GPT-3.5's knowledge")
    parser.add_argument("--work", help="default runs/knowledge-effect-<dataset>")
    parser.add_argument("--results-only", action="store_true", help="rewrite the results from the finished runs")
    parser.add_argument("--models", help="comma-separated: train only these backbones (to order a long run)")
    parser.add_argument("--seeds", help="comma-separated: train only these seeds")
    parser.add_argument("--sources", help="comma-separated knowledge-set labels to keep (the first stays first)")
    args = parser.parse_args()
    if args.dataset == "ml-1m":
        if not args.release:
            parser.error("ml-1m needs --release (the GPT-3.5 knowledge set)")
        sources = [gpt35(args.release), SMOLLM2]
    else:
        sources = [SMOLLM2, QWEN05]
    if args.sources:
        kept = args.sources.split(",")
        if unknown_sources := set(kept) - {source.label for source in sources}:
            parser.error(f"no such knowledge set for {args.dataset}: {sorted(unknown_sources)}")
        sources = [source for source in sources if source.label in kept]
    work = Path(args.work or f"runs/knowledge-effect-{args.dataset}")
    experiment = EXPERIMENTS[args.dataset]
    models = tuple(args.models.split(",")) if args.models else experiment.models
    seeds = tuple(int(seed) for seed in args.seeds.split(",")) if args.seeds else experiment.seeds
    if unknown := set(models) - set(experiment.models) or set(seeds) - set(experiment.seeds):
        parser.error(f"not in the {args.dataset} experiment: {sorted(unknown)}")
    run(args.dataset, args.data, sources, work, models, () if args.results_only else seeds)


if __name__ == "__main__":
    main()
