"""The backbones on MovieLens-100k without knowledge, every seed of the experiment config: DIN and
DCNv2 (CTR, by-user split) and SASRec, GRU4Rec and MostPop (leave-one-out, full ranking and 99
sampled negatives). Finished runs are not retrained, so an interrupted run resumes. The report
(mean ± std, Welch's p against each backbone's `none`, × MostPop), metrics.json and the chart are
copied to bench/results/ml-100k/.

    python -m bench.backbones_ml100k --ml100k data/ml-100k
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

from bench.common import RESULTS
from reki_spark.config import load_config
from reki_spark.data.ingest import ingest
from reki_spark.evaluation.report import write_report
from reki_spark.features import build_features
from reki_spark.session import get_spark
from reki_spark.training.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ml100k", default="data/ml-100k", help="where `reki download` puts it")
    parser.add_argument("--work", default="runs/bench-ml100k")
    args = parser.parse_args()
    work = Path(args.work)
    config = load_config(
        "jobs/configs/movielens-100k.yaml",
        [
            f"dataset.path={args.ml100k}",
            f"lake={work / 'lake'}",
            f"output={work / 'run'}",
            "training.knowledge=[none]",
        ],
    )
    # The commit the run starts from: later commits made while it trains do not produce it.
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    spark = get_spark(config)
    if not (work / "lake" / "sequences").exists():
        ingest(spark, config)
        build_features(spark, config)
    train(spark, config)
    write_report(spark, config)
    target = RESULTS / "ml-100k"
    target.mkdir(parents=True, exist_ok=True)
    for name in ("metrics.json", "report.md", "comparison.png"):
        shutil.copy(Path(config.output) / name, target / name)
    (target / "COMMIT").write_text(commit + "\n")
    print(f"results: {target} (commit {commit})")


if __name__ == "__main__":
    main()
