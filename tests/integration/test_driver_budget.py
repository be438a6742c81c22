"""The driver holds no per-row data: the whole pipeline (ingest -> features -> cluster -> prompts ->
extract -> encode -> train with its sharded evaluation and predictions -> report -> export ->
refresh) runs in a fresh driver whose actions may bring back at most 1 MB
(`spark.driver.maxResultSize`; join sides broadcast through the driver are held below it) and whose
JVM has 1 GB, on a sample where any per-interaction table is several times that. A stage that
collected its samples, interactions or sequences would fail the run; the control shows that such a
collect does fail."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.paths import REPO

BUDGET = [
    "spark.max_result_size=1m",
    "spark.broadcast_threshold=256k",  # a broadcast passes the driver: bounded by this, not by the data
    "spark.driver_memory=1g",
    "spark.shuffle_partitions=2",
    "dataset.sample.users=1500",
    "dataset.sample.items=600",
    "dataset.sample.interactions=30000",
    "clustering.item_cluster_size=200",
    "clustering.user_cluster_size=750",
    "llm.max_tokens=16",
    "llm.min_chars=10",
    'training.models=["din", "sasrec"]',
    'training.knowledge=["collective"]',
    "training.seeds=[1]",
    "training.epochs=1",
    "training.sasrec.epochs=1",
    "training.batch_size=2048",
    "training.predictions=true",
    "tracking.enabled=false",
]


def _reki(command: str, tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    settings = [*BUDGET, f"lake={tmp_path / 'lake'}", f"output={tmp_path / 'run'}", *overrides]
    args = [sys.executable, "-m", "reki_spark.cli", command]
    for setting in settings:
        args += ["--set", setting]
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=1200)


def _failure(command: str, result: subprocess.CompletedProcess) -> str:
    """What went wrong, first: the exception lines (a budget overrun names maxResultSize)."""
    causes = [line for line in result.stderr.splitlines() if "Exception" in line or "maxResultSize" in line]
    return f"reki {command}: {chr(10).join(causes[:8])}\n{result.stdout[-2000:]}"


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


@pytest.mark.timeout(1800)  # five fresh drivers, a JVM and a Ray each: ~6 min on an idle 2-core machine
def test_the_whole_pipeline_runs_within_a_one_megabyte_driver_budget(tmp_path):
    for command in ("run", "export"):
        result = _reki(command, tmp_path)
        assert result.returncode == 0, _failure(command, result)
    # New interactions arrive: refresh assigns them to the clusters and asks what changed.
    result = _reki("refresh", tmp_path, "dataset.sample.interactions=33000")
    assert result.returncode == 0, _failure("refresh", result)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {(r["model"], r["knowledge"]) for r in metrics} >= {("din", "collective"), ("sasrec", "collective")}
    assert (tmp_path / "run" / "serving" / "model.pt").exists()
    assert (tmp_path / "lake" / "predictions" / "_delta_log").is_dir()  # scored rows kept, off the driver
    # The budget is small enough to catch a per-row collect: the samples table does not fit in it.
    control = _collect_samples(tmp_path)
    assert control.returncode != 0 and "maxResultSize" in control.stderr, control.stdout[-2000:]
