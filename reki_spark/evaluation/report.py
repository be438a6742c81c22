"""The comparison report (`reki report`): `report.md` with mean ± std over seeds per model and
knowledge setting, each setting's relative gain over the same backbone without knowledge, a PNG
bar chart, and the cost ledger (LLM calls, tokens, seconds per stage)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from pyspark.sql import SparkSession

from reki_spark.config import RekiConfig
from reki_spark.lake import LEDGER, Lake
from reki_spark.training.train import METRICS_FILE

PRIMARY = {"ctr": "auc", "sequential": "ndcg@10_full"}
METRIC_COLUMNS = {
    "ctr": ["auc", "logloss"],
    "sequential": ["ndcg@10_full", "recall@10_full", "ndcg@10_sampled99", "recall@10_sampled99"],
}
LOWER_IS_BETTER = {"logloss"}


def summarize(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per (task, model, knowledge, metric): mean, std, seeds, gain over `none`."""
    frame = pd.DataFrame(records)
    rows = []
    for (task, model, knowledge), group in frame.groupby(["task", "model", "knowledge"], sort=True):
        for metric in METRIC_COLUMNS[task]:
            values = group[metric].dropna()
            rows.append(
                {
                    "task": task,
                    "model": model,
                    "knowledge": knowledge,
                    "metric": metric,
                    "mean": values.mean(),
                    "std": values.std(ddof=1) if len(values) > 1 else 0.0,
                    "seeds": len(values),
                }
            )
    summary = pd.DataFrame(rows)
    baseline = summary[summary["knowledge"] == "none"].set_index(["task", "model", "metric"])["mean"]
    keys = list(zip(summary["task"], summary["model"], summary["metric"], strict=True))
    base = pd.Series([baseline.get(k) for k in keys], index=summary.index, dtype="float64")
    summary["gain_pct"] = (summary["mean"] - base) / base * 100
    return summary


def _verdict(summary: pd.DataFrame) -> list[str]:
    lines = []
    for (task, model), group in summary.groupby(["task", "model"]):
        primary = group[group["metric"] == PRIMARY[task]]
        none = primary[primary["knowledge"] == "none"]
        for _, row in primary[primary["knowledge"] != "none"].iterrows():
            if none.empty:
                continue
            base = none.iloc[0]
            noise = max(row["std"], base["std"])
            difference = row["mean"] - base["mean"]
            if min(row["seeds"], base["seeds"]) < 2:
                word = "(one seed, so no noise estimate) compared with"
            else:
                word = (
                    "better than" if difference > noise else "worse than" if difference < -noise else "within noise of"
                )
            lines.append(
                f"- {task} {model}: `{row['knowledge']}` is {word} `none` on {PRIMARY[task]} "
                f"({row['mean']:.4f} vs {base['mean']:.4f}, {row['gain_pct']:+.2f}%, "
                f"std up to {noise:.4f} over {int(row['seeds'])} seed(s))."
            )
    return lines


def _table(summary: pd.DataFrame, task: str) -> list[str]:
    part = summary[summary["task"] == task]
    metrics = METRIC_COLUMNS[task]
    header = "| model | knowledge | seeds | " + " | ".join(metrics) + " | gain in " + PRIMARY[task] + " |"
    lines = [header, "|" + "---|" * (len(metrics) + 4)]
    for (model, knowledge), group in part.groupby(["model", "knowledge"], sort=True):
        by_metric = group.set_index("metric")
        cells = [f"{by_metric.loc[m, 'mean']:.4f} ± {by_metric.loc[m, 'std']:.4f}" for m in metrics]
        gain = by_metric.loc[PRIMARY[task], "gain_pct"]
        gain_text = "—" if knowledge == "none" or pd.isna(gain) else f"{gain:+.2f}%"
        lines.append(
            f"| {model} | {knowledge} | {int(by_metric['seeds'].iloc[0])} | " + " | ".join(cells) + f" | {gain_text} |"
        )
    return lines


def ledger_summary(lake: Lake) -> pd.DataFrame:
    ledger = lake.read(LEDGER).toPandas()
    grouped = ledger.groupby("stage").agg(
        runs=("stage", "size"),
        llm_calls=("llm_calls", "sum"),
        prompt_tokens=("prompt_tokens", "sum"),
        completion_tokens=("completion_tokens", "sum"),
        seconds=("wall_seconds", "sum"),
    )
    order = ["ingest", "features", "cluster", "prompts", "extract", "encode", "train"]
    return grouped.reindex([s for s in order if s in grouped.index] + [s for s in grouped.index if s not in order])


def _chart(summary: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in PRIMARY if t in set(summary["task"])]
    figure, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4), squeeze=False)
    for axis, task in zip(axes[0], tasks, strict=True):
        part = summary[(summary["task"] == task) & (summary["metric"] == PRIMARY[task])]
        table = part.pivot(index="model", columns="knowledge", values="mean")
        errors = part.pivot(index="model", columns="knowledge", values="std")
        table.plot.bar(ax=axis, yerr=errors, rot=0, capsize=3)
        low = part["mean"].min() - 2 * part["std"].max()
        axis.set_ylim(max(0.0, low - 0.02), part["mean"].max() + 2 * part["std"].max() + 0.02)
        axis.set_title(f"{task}: {PRIMARY[task]} (mean ± std over seeds)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_report(spark: SparkSession, config: RekiConfig) -> Path:
    output = Path(config.output)
    metrics_path = output / METRICS_FILE
    if not metrics_path.exists():
        raise FileNotFoundError(f"{metrics_path} not found: run `reki train` first")
    summary = summarize(json.loads(metrics_path.read_text()))
    chart = output / "comparison.png"
    _chart(summary, chart)
    lines = [
        f"# REKI report: {config.dataset.name}",
        "",
        f"Knowledge mode `{config.knowledge.mode}`, LLM `{config.llm.backend}` "
        f"({config.llm.model or 'SmolLM2-135M-Instruct Q4_1'}), encoder `{config.encoder.model}`.",
        "",
    ]
    for task in PRIMARY:
        if task in set(summary["task"]):
            lines += [f"## {task}", "", *_table(summary, task), ""]
    lines += [
        "## What the numbers say",
        "",
        *(_verdict(summary) or ["- (no knowledge setting to compare)"]),
        "",
        f"![comparison]({chart.name})",
        "",
        "## Cost ledger",
        "",
        "| stage | runs | LLM calls | prompt tokens | completion tokens | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for stage, row in ledger_summary(Lake(spark, config.lake)).iterrows():
        lines.append(
            f"| {stage} | {int(row['runs'])} | {int(row['llm_calls'])} | {int(row['prompt_tokens'])} | "
            f"{int(row['completion_tokens'])} | {row['seconds']:.1f} |"
        )
    report = output / "report.md"
    report.write_text("\n".join(lines) + "\n")
    print(f"report: {report.resolve()}")
    return report
