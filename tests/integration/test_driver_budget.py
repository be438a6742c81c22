"""The driver holds no per-row data: the whole pipeline (ingest -> features -> cluster -> prompts ->
extract -> encode -> train -> report -> evaluate -> export -> refresh) runs in a fresh driver whose
actions may bring back at most 1 MB (`spark.driver.maxResultSize`) and whose JVM has 1 GB, on a
sample where any per-interaction table is several times that. A stage that collected its samples,
interactions or sequences would fail the run; the control shows that such a collect does fail."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.paths import REPO

BUDGET = [
    "spark.max_result_size=1m",
    "spark.driver_memory=1g",
    "spark.shuffle_partitions=2",
    "dataset.sample.users=3000",
    "dataset.sample.items=1200",
    "dataset.sample.interactions=60000",
    "clustering.item_cluster_size=300",
    "clustering.user_cluster_size=1000",
    "llm.max_tokens=16",
    "llm.min_chars=10",
    'training.models=["din", "sasrec"]',
    'training.knowledge=["collective"]',
    "training.seeds=[1]",
    "training.epochs=1",
    "training.sasrec.epochs=1",
    "training.batch_size=1024",
    "tracking.enabled=false",
]


def _reki(command: str, tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    settings = [*BUDGET, f"lake={tmp_path / 'lake'}", f"output={tmp_path / 'run'}", *overrides]
    args = [sys.executable, "-m", "reki_spark.cli", command]
    for setting in settings:
        args += ["--set", setting]
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=1200)


def _collect_samples(tmp_path: Path) -> subprocess.CompletedProcess:
    """The control: the same driver budget, and one `toPandas()` of the samples table."""
    settings = [*BUDGET, f"lake={tmp_path / 'lake'}", f"output={tmp_path / 'run'}"]
    script = (
        "import sys\n"
        "from reki_spark.config import load_config\n"
        "from reki_spark.lake import SAMPLES, Lake\n"
        "from reki_spark.session import get_spark\n"
        "config = load_config(None, sys.argv[1:])\n"
        "frame = Lake(get_spark(config), config.lake).read(SAMPLES).toPandas()\n"
        "print(f'collected {len(frame)} rows')\n"
    )
    return subprocess.run(
        [sys.executable, "-c", script, *settings], cwd=REPO, capture_output=True, text=True, timeout=600
    )


def test_the_whole_pipeline_runs_within_a_one_megabyte_driver_budget(tmp_path):
    for command in ("run", "evaluate", "export"):
        result = _reki(command, tmp_path)
        assert result.returncode == 0, f"reki {command}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    # New interactions arrive: refresh assigns them to the clusters and asks what changed.
    result = _reki("refresh", tmp_path, "dataset.sample.interactions=66000")
    assert result.returncode == 0, f"reki refresh:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {(r["model"], r["knowledge"]) for r in metrics} >= {("din", "collective"), ("sasrec", "collective")}
    assert (tmp_path / "run" / "serving" / "model.pt").exists()
    # The budget is small enough to catch a per-row collect: the samples table does not fit in it.
    control = _collect_samples(tmp_path)
    assert control.returncode != 0 and "maxResultSize" in control.stderr, control.stdout[-2000:]
