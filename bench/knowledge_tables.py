"""The knowledge-effect README tables and verdicts, printed from a `metrics.json` alone:

    python -m bench.knowledge_tables bench/results/knowledge_effect/ml-1m/metrics.json

One markdown table of the primary metric (CTR: AUC): a row per knowledge arm, per backbone its
mean ± std (seeds) and its gain over the backbone's `none` with Welch's p; MostPop's line; the
report's verdicts (every arm against `none`, then the LLM-text verdict with Holm's correction);
and which commits and config hashes each backbone's records carry, with a warning where a backbone's
runs do not share one of each (records from before provenance was kept count as unknown)."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from reki_spark.evaluation.metrics import PRIMARY
from reki_spark.evaluation.report import comparisons, llm_verdict, summarize, verdict_lines
from reki_spark.models import MOSTPOP

UNKNOWN = "unknown"


def provenance_lines(records: list[dict[str, Any]]) -> list[str]:
    """Per backbone (its arms are compared with each other, never across backbones), the commits
    and config hashes of its runs, counted; a warning unless one of each."""
    lines = []
    for model in sorted({r["model"] for r in records if r["model"] != MOSTPOP}):
        runs = [r for r in records if r["model"] == model]
        for key in ("commit", "config_hash"):
            counts = Counter(str(r.get(key, UNKNOWN)) for r in runs)
            listed = ", ".join(f"`{value}` ({n} runs)" for value, n in counts.most_common())
            lines.append(f"- {model} {key}: {listed}")
            if len(counts) > 1 or UNKNOWN in counts:
                lines.append(f"- **warning: the {model} runs do not share one known {key}**")
    return lines


def wide_table(summary: pd.DataFrame, task: str) -> list[str]:
    """Arms down, backbones across: `mean ± std (seeds)` and `gain%, p` against `none`."""
    metric = PRIMARY[task]
    primary = summary[(summary["task"] == task) & (summary["metric"] == metric) & (summary["model"] != MOSTPOP)]
    tested = comparisons(summary)
    tested = tested[tested["task"] == task].set_index(["model", "knowledge"]) if len(tested) else tested
    models = sorted(primary["model"].unique())
    arms = ["none", *sorted(k for k in primary["knowledge"].unique() if k != "none")]
    header = "| arm | " + " | ".join(f"{m} (seeds) | vs none, p" for m in models) + " |"
    lines = [f"{metric}, mean ± std (seeds); gain over the backbone's `none` and Welch's p", "", header]
    lines.append("|---|" + "---|---|" * len(models))
    rows = primary.set_index(["model", "knowledge"])
    for arm in arms:
        cells = []
        for model in models:
            if (model, arm) not in rows.index:
                cells += ["—", "—"]
                continue
            row = rows.loc[(model, arm)]
            cells.append(f"{row['mean']:.4f} ± {row['std']:.4f} ({row['seeds']})")
            if arm == "none" or (model, arm) not in tested.index:
                cells.append("—")
            else:
                result = tested.loc[(model, arm), "comparison"]
                cells.append(f"{row['gain_pct']:+.2f}%, {result.p_value:.2g}")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return lines


def mostpop_line(summary: pd.DataFrame, task: str) -> list[str]:
    metric = PRIMARY[task]
    rows = summary[(summary["task"] == task) & (summary["metric"] == metric) & (summary["model"] == MOSTPOP)]
    if rows.empty:
        return []
    (row,) = rows.itertuples()
    return ["", f"MostPop (nothing learned): {metric} {row.mean:.4f} over {row.seeds} records."]


def tables(records: list[dict[str, Any]]) -> list[str]:
    summary = summarize(records)
    lines = ["## Provenance", "", *provenance_lines(records)]
    for task in PRIMARY:
        if task in set(summary["task"]):
            lines += ["", f"## {task}", "", *wide_table(summary, task), *mostpop_line(summary, task)]
    return [*lines, "", "## Verdicts", "", *verdict_lines(summary), *llm_verdict(summary)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("metrics", type=Path, help="a metrics.json (one record per run)")
    args = parser.parse_args()
    print("\n".join(tables(json.loads(args.metrics.read_text()))))


if __name__ == "__main__":
    main()
