"""The comparison report (`reki report`): `report.md` with mean ± std over seeds per model and
knowledge setting, each setting's difference to the same backbone without knowledge with its 95%
confidence interval and Welch's t-test p-value (called better or worse only at p < 0.05), every
model's ratio to MostPop, a PNG bar chart, and the cost ledger."""

from __future__ import annotations

import json
import math
import tempfile
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession
from scipy import stats

from reki_spark import storage, tracking
from reki_spark.config import KNOWLEDGE_CONTROLS, RekiConfig
from reki_spark.evaluation.metrics import METRICS_FILE, PRIMARY
from reki_spark.lake import LEDGER, Lake
from reki_spark.models import MOSTPOP

METRIC_COLUMNS = {
    "ctr": ["auc", "logloss"],
    "sequential": ["ndcg@10_full", "recall@10_full", "ndcg@10_sampled99", "recall@10_sampled99"],
}
# A difference is called better or worse only below this p-value, over at least MIN_SEEDS seeds
# on each side; otherwise "no difference shown" (or, p below it on fewer seeds, "not called").
SIGNIFICANCE = 0.05
MIN_SEEDS = 5


def summarize(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per (task, model, knowledge, metric): mean, std, seeds, the per-seed values, the
    gain over the same backbone's `none`, and the ratio to the task's MostPop."""
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
                    "values": values.tolist(),
                }
            )
    summary = pd.DataFrame(rows)
    summary["gain_pct"] = (summary["mean"] / _reference(summary, "none") - 1) * 100
    summary["vs_mostpop"] = summary["mean"] / _reference(summary, MOSTPOP)
    return summary


def _reference(summary: pd.DataFrame, reference: str) -> pd.Series:
    """Per row: the mean of its reference row, `none` of the same backbone or MostPop's."""
    if reference == MOSTPOP:
        rows = summary[summary["model"] == MOSTPOP].set_index(["task", "metric"])["mean"]
        keys = list(zip(summary["task"], summary["metric"], strict=True))
    else:
        rows = summary[summary["knowledge"] == reference].set_index(["task", "model", "metric"])["mean"]
        keys = list(zip(summary["task"], summary["model"], summary["metric"], strict=True))
    return pd.Series([rows.get(k) for k in keys], index=summary.index, dtype="float64")


@dataclass(frozen=True)
class Comparison:
    """A setting against its backbone without knowledge, over seeds: Welch's t-test."""

    difference: float
    low: float  # 95% confidence interval of the difference
    high: float
    p_value: float
    seeds: int  # the smaller side's

    @property
    def verdict(self) -> str:
        if math.isnan(self.p_value) or self.p_value >= SIGNIFICANCE:
            return "no difference shown"
        if self.seeds < MIN_SEEDS:
            return f"not called (p < {SIGNIFICANCE} on fewer than {MIN_SEEDS} seeds)"
        return "better" if self.difference > 0 else "worse"


def welch(values: list[float], baseline: list[float]) -> Comparison:
    """Difference of means with its 95% interval (Welch-Satterthwaite degrees of freedom) and the
    two-sided p-value; NaN where either side has fewer than two seeds."""
    a, b = np.asarray(values, dtype=float), np.asarray(baseline, dtype=float)
    difference = float(a.mean() - b.mean()) if len(a) and len(b) else math.nan
    seeds = min(len(a), len(b))
    if seeds < 2:
        return Comparison(difference, math.nan, math.nan, math.nan, seeds)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if va + vb == 0:  # identical seeds on both sides: nothing to test
        return Comparison(difference, difference, difference, 1.0 if difference == 0 else 0.0, seeds)
    freedom = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    margin = float(stats.t.ppf(0.975, freedom) * math.sqrt(va + vb))
    p_value = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return Comparison(difference, difference - margin, difference + margin, p_value, seeds)


def comparisons(summary: pd.DataFrame) -> pd.DataFrame:
    """Every knowledge setting's primary metric against `none` of the same backbone."""
    rows = []
    primary = summary[summary["metric"] == summary["task"].map(PRIMARY)]
    for (task, model), group in primary.groupby(["task", "model"]):
        none = group[group["knowledge"] == "none"]
        for _, row in group[group["knowledge"] != "none"].iterrows():
            if none.empty:
                continue
            base = none.iloc[0]
            result = welch(row["values"], base["values"])
            rows.append(
                {
                    "task": task,
                    "model": model,
                    "knowledge": row["knowledge"],
                    "metric": row["metric"],
                    "mean": row["mean"],
                    "none": base["mean"],
                    "gain_pct": row["gain_pct"],
                    "comparison": result,
                }
            )
    return pd.DataFrame(rows)


def verdict_lines(summary: pd.DataFrame) -> list[str]:
    lines = []
    for _, row in comparisons(summary).iterrows():
        result: Comparison = row["comparison"]
        stated = (
            "(fewer than two seeds: no test)"
            if math.isnan(result.p_value)
            else f"{result.verdict} (p = {result.p_value:.3g}, Welch's t-test, {result.seeds} seeds)"
        )
        lines.append(
            f"- {row['task']} {row['model']}: `{row['knowledge']}` vs `none` on {row['metric']}: "
            f"{row['mean']:.4f} vs {row['none']:.4f}, difference {result.difference:+.4f}"
            + ("" if math.isnan(result.low) else f" [95% CI {result.low:+.4f}, {result.high:+.4f}]")
            + f", {row['gain_pct']:+.2f}%: {stated}."
        )
    return lines


def headline(summary: pd.DataFrame) -> str:
    """One line: the best learned model of the first task against MostPop, and the knowledge
    setting of that backbone against its `none`."""
    primary = summary[summary["metric"] == summary["task"].map(PRIMARY)]
    task = next(task for task in PRIMARY if task in set(primary["task"]))
    rows = primary[primary["task"] == task]
    learned = rows[rows["model"] != MOSTPOP].dropna(subset=["mean"])
    if learned.empty:
        return f"{task}: no learned model has a {PRIMARY[task]} value (MostPop only)"
    best = learned.loc[learned["mean"].idxmax()]
    line = f"best {task} model {best['model']} ({best['knowledge']}): {best['metric']} {best['mean']:.4f}"
    if not math.isnan(best["vs_mostpop"]):
        mostpop = rows[rows["model"] == MOSTPOP]["mean"].iloc[0]
        line += f" = {best['vs_mostpop']:.2f} x MostPop ({mostpop:.4f})"
    compared = comparisons(summary)
    own = compared[(compared["task"] == task) & (compared["model"] == best["model"])] if len(compared) else compared
    for _, row in own.iterrows():
        result: Comparison = row["comparison"]
        test = "one seed: no test" if math.isnan(result.p_value) else f"p = {result.p_value:.3g}: {result.verdict}"
        line += f"; {row['knowledge']} vs none {result.difference:+.4f} ({test})"
    return line


COLLECTIVE_PLUS_IDS = "collective_plus_ids"


def _controls(knowledge: str, settings: set[str]) -> dict[str, str]:
    """Each control's setting for a collective set: `collective` and any set extracted on the same
    clusters (`collective_<llm>`) share `shuffled`, `cluster_only`, ...; a set on groups of its own
    (it has a `cluster_only_<llm>`, say) is held to `<control>_<llm>`, missing ones included."""
    suffix = knowledge.removeprefix("collective")
    own = {control: f"{control}{suffix}" for control in KNOWLEDGE_CONTROLS}
    return own if suffix and settings & set(own.values()) else {control: control for control in KNOWLEDGE_CONTROLS}


def _text_tests(knowledge: str, settings: set[str]) -> list[tuple[str, str]]:
    """The comparisons (setting, control) that make an effect the LLM's text: the set beats its
    vectors dealt to other groups and membership in meaningless vectors, and the text beside the
    group codes beats the codes alone."""
    control = _controls(knowledge, settings)
    return [
        (knowledge, control["shuffled"]),
        (knowledge, control["random_vectors"]),
        (control[COLLECTIVE_PLUS_IDS], control["cluster_only"]),
    ]


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment of `p_values` (NaN stays NaN and is not counted)."""
    ranked = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(ranked):
        running = max(running, min(1.0, (len(ranked) - rank) * p))
        adjusted[i] = running
    return adjusted


def llm_verdict(summary: pd.DataFrame) -> list[str]:
    """Each collective set against the controls on its groups, every comparison the section makes
    Holm-corrected together: the effect is the LLM's text only where all three tests of
    `_text_tests` come out better."""
    primary = summary[summary["metric"] == summary["task"].map(PRIMARY)]
    tests: list[tuple[str, str, str, str, str, Comparison | None]] = []
    for (task, model), group in primary.groupby(["task", "model"]):
        by_setting = group.set_index("knowledge")
        settings = set(by_setting.index)
        for knowledge in sorted(k for k in settings if _is_collective_set(k)):
            pairs = _text_tests(knowledge, settings)
            if not settings & ({name for pair in pairs for name in pair} - {knowledge}):
                continue  # no control trained beside it: nothing to say
            for setting, control in pairs:
                trained = setting in settings and control in settings
                result = (
                    welch(by_setting.loc[setting, "values"], by_setting.loc[control, "values"]) if trained else None
                )
                tests.append((task, model, knowledge, setting, control, result))
    adjusted = iter(holm([r.p_value for *_, r in tests if r is not None]))
    counted = sum(1 for *_, r in tests if r is not None and not math.isnan(r.p_value))
    lines = []
    for (task, model, knowledge), rows in _grouped(tests):
        parts, shown = [], True
        for _, _, _, setting, control, result in rows:
            if result is None:
                parts.append(f"`{setting}` vs `{control}`: not trained")
                shown = False
                continue
            corrected = replace(result, p_value=next(adjusted))
            parts.append(
                f"`{setting}` vs `{control}` {result.difference:+.4f} (p = {result.p_value:.3g}, "
                f"Holm {corrected.p_value:.3g}): {corrected.verdict}"
            )
            shown = shown and corrected.verdict == "better"
        lines.append(
            f"- {task} {model}, `{knowledge}`: {'; '.join(parts)}; an effect of the LLM's text is "
            + ("shown." if shown else "not shown (all three must come out better at p < 0.05 after Holm).")
        )
    if lines:
        lines.append(f"- Holm's correction runs over the {counted} tests of the LLM's text above.")
    return lines


def _is_collective_set(knowledge: str) -> bool:
    """`collective` or another LLM's set on groups (`collective_<llm>`), not a control."""
    is_control = knowledge.startswith(COLLECTIVE_PLUS_IDS)
    return knowledge == "collective" or (knowledge.startswith("collective_") and not is_control)


def _grouped(tests: list) -> list[tuple[tuple[str, str, str], list]]:
    """`tests` grouped by (task, model, set), in order."""
    groups: dict[tuple[str, str, str], list] = {}
    for test in tests:
        groups.setdefault(test[:3], []).append(test)
    return list(groups.items())


def _table(summary: pd.DataFrame, task: str) -> list[str]:
    part = summary[summary["task"] == task]
    metrics = METRIC_COLUMNS[task]
    against_pop = bool(part["vs_mostpop"].notna().any())
    extra = " | × MostPop" if against_pop else ""
    header = "| model | knowledge | seeds | " + " | ".join(metrics) + " | gain in " + PRIMARY[task] + extra + " |"
    lines = [header, "|" + "---|" * (len(metrics) + 4 + int(against_pop))]
    for (model, knowledge), group in part.groupby(["model", "knowledge"], sort=True):
        by_metric = group.set_index("metric")
        cells = [f"{by_metric.loc[m, 'mean']:.4f} ± {by_metric.loc[m, 'std']:.4f}" for m in metrics]
        gain = by_metric.loc[PRIMARY[task], "gain_pct"]
        gain_text = "—" if knowledge == "none" or pd.isna(gain) else f"{gain:+.2f}%"
        if against_pop:
            gain_text += f" | {by_metric.loc[PRIMARY[task], 'vs_mostpop']:.2f}"
        lines.append(
            f"| {model} | {knowledge} | {int(by_metric['seeds'].iloc[0])} | " + " | ".join(cells) + f" | {gain_text} |"
        )
    return lines


def rejected_calls(ledger: pd.DataFrame) -> dict[str, float]:
    """Share of all extraction calls rejected by validation, per reason kind."""
    extraction = ledger[ledger["stage"].isin(["extract", "refresh"])]
    counts: Counter[str] = Counter()
    for details in extraction["details"].dropna():
        counts.update(json.loads(details).get("rejected_calls", {}))
    calls = int(extraction["llm_calls"].sum())
    return {kind: count / calls for kind, count in counts.most_common()} if calls else {}


def stage_costs(ledger: pd.DataFrame) -> pd.DataFrame:
    """Per stage, in pipeline order: runs, LLM calls, prompt and completion tokens, seconds."""
    grouped = ledger.groupby("stage").agg(
        runs=("stage", "size"),
        llm_calls=("llm_calls", "sum"),
        prompt_tokens=("prompt_tokens", "sum"),
        completion_tokens=("completion_tokens", "sum"),
        seconds=("wall_seconds", "sum"),
    )
    order = ["ingest", "features", "cluster", "prompts", "extract", "encode", "train"]
    return grouped.reindex([s for s in order if s in grouped.index] + [s for s in grouped.index if s not in order])


def write_chart(summary: pd.DataFrame, path: Path) -> None:
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


def results_lines(summary: pd.DataFrame, chart_name: str) -> list[str]:
    """The report's results in markdown: one table per task, every setting against `none` with its
    interval and p-value, the LLM-text verdicts, and the chart."""
    lines = []
    for task in PRIMARY:
        if task in set(summary["task"]):
            lines += [f"## {task}", "", *_table(summary, task), ""]
    return [
        *lines,
        "## What the numbers say",
        "",
        *(verdict_lines(summary) or ["- (no knowledge setting to compare)"]),
        *llm_verdict(summary),
        "",
        f"![comparison]({chart_name})",
        "",
    ]


def write_report(spark: SparkSession, config: RekiConfig) -> str:
    """report.md and its chart under `output` (any location); returns the report's location."""
    metrics_path = storage.join(config.output, METRICS_FILE)
    if not storage.exists(metrics_path):
        raise FileNotFoundError(f"{metrics_path} not found: run `reki train` first")
    summary = summarize(json.loads(storage.read_text(metrics_path)))
    # Drawn in a scratch folder of the driver's, then copied to the output location.
    with tempfile.TemporaryDirectory(prefix="reki-report-") as scratch:
        chart = Path(scratch) / "comparison.png"
        write_chart(summary, chart)
        summary_line = headline(summary)
        lines = [
            f"# REKI report: {config.dataset.name}",
            "",
            f"Knowledge mode `{config.knowledge.mode}`, LLM `{config.llm.backend}` "
            f"({config.llm.model or 'SmolLM2-135M-Instruct Q4_1'}), encoder `{config.encoder.model}`.",
            "",
            f"**In one line**: {summary_line}.",
            "",
        ]
        lines += [
            *results_lines(summary, chart.name),
            "## Cost ledger",
            "",
            "| stage | runs | LLM calls | prompt tokens | completion tokens | seconds |",
            "|---|---|---|---|---|---|",
        ]
        # One row per stage run: bounded by how often the pipeline ran, not by the data.
        ledger = Lake(spark, config.lake).read(LEDGER).toPandas()
        costs = stage_costs(ledger)
        for stage, row in costs.iterrows():
            lines.append(
                f"| {stage} | {int(row['runs'])} | {int(row['llm_calls'])} | {int(row['prompt_tokens'])} | "
                f"{int(row['completion_tokens'])} | {row['seconds']:.1f} |"
            )
        rejected = rejected_calls(ledger)
        shares = ", ".join(f"{kind} {share:.1%}" for kind, share in rejected.items()) or "none"
        lines += ["", f"LLM calls rejected by answer validation (share of all extraction calls): {shares}."]
        report = Path(scratch) / "report.md"
        report.write_text("\n".join(lines) + "\n")
        tracking.log_report(config, [report, chart], costs.reset_index().to_dict("records"))
        for written in (chart, report):
            storage.write_bytes(storage.join(config.output, written.name), written.read_bytes())
    location = storage.join(config.output, report.name)
    print(f"report: {location}")
    print(f"summary: {summary_line}")
    return location
