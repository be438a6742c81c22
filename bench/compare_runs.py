"""Two metrics.json files of the same models and seeds (e.g. before and after a change), compared
per model on each task's primary metric with the report's Welch test:

    python -m bench.compare_runs BEFORE/metrics.json AFTER/metrics.json --out bench/results/x.json
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from reki_spark.evaluation.report import PRIMARY, Comparison, welch


def comparison_text(result: Comparison) -> str:
    """ "+0.0016 [-0.0012, +0.0044], p = 0.22: no difference shown"."""
    return (
        f"{result.difference:+.4f} [{result.low:+.4f}, {result.high:+.4f}], p = {result.p_value:.2g}: {result.verdict}"
    )


def compare(before: list[dict], after: list[dict]) -> list[dict]:
    rows = []
    for model in sorted({r["model"] for r in after} & {r["model"] for r in before}):
        task = next(r["task"] for r in after if r["model"] == model)
        metric = PRIMARY[task]
        old = [r[metric] for r in before if r["model"] == model and r["knowledge"] == "none"]
        new = [r[metric] for r in after if r["model"] == model and r["knowledge"] == "none"]
        result = welch(new, old)
        rows.append(
            {
                "model": model,
                "metric": metric,
                "before": old,
                "after": new,
                **asdict(result),
                "verdict": result.verdict,
                "text": comparison_text(result),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    rows = compare(json.loads(Path(args.before).read_text()), json.loads(Path(args.after).read_text()))
    Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")
    for row in rows:
        print(
            f"{row['model']} {row['metric']}: {sum(row['before']) / len(row['before']):.4f} -> "
            f"{sum(row['after']) / len(row['after']):.4f}, difference {row['text']}"
        )


if __name__ == "__main__":
    main()
