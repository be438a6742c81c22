"""Real clusters on loopback: a Spark standalone master and worker (from the Spark inside pyspark)
running `spark-submit jobs/features.py`, and a Ray head running `ray job submit jobs/extract.py`.
Each test tears its cluster down, also when it fails."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ray_workers.delta_io import RsLake
from reki_spark.data.ingest import ingest
from reki_spark.lake import KNOWLEDGE, PROMPTS, SAMPLES, SEQUENCES, Lake
from tests.conftest import tiny_config
from tests.paths import FIXTURES, REPO

pytestmark = [pytest.mark.integration, pytest.mark.cluster]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _environment() -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "HF_HUB_OFFLINE": "1",
    }


@contextmanager
def _process_group(args: list[str], log: Path) -> Iterator[subprocess.Popen]:
    """A background process in its own group, killed with everything it started on exit."""
    with log.open("w") as out:
        process = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, env=_environment(), start_new_session=True
        )
        try:
            yield process
        finally:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    process.wait(timeout=20)
                    break
                except subprocess.TimeoutExpired:
                    continue


def _wait_for(predicate, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(1)
    raise TimeoutError(f"timed out waiting for {what}")


def _json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def test_spark_submit_features_on_a_standalone_cluster(spark, make_config, tmp_path):
    config = make_config("dataset.name=movielens-100k", f"dataset.path={FIXTURES / 'ml100k_raw'}")
    ingest(spark, config)
    port, ui, worker_ui = _free_port(), _free_port(), _free_port()
    spark_class = str(
        BIN.parent
        / "lib"
        / f"python{sys.version_info.major}.{sys.version_info.minor}"
        / "site-packages"
        / "pyspark"
        / "bin"
        / "spark-class"
    )
    master = [
        "bash",
        spark_class,
        "org.apache.spark.deploy.master.Master",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--webui-port",
        str(ui),
    ]
    worker = [
        "bash",
        spark_class,
        "org.apache.spark.deploy.worker.Worker",
        f"spark://127.0.0.1:{port}",
        "--host",
        "127.0.0.1",
        "--cores",
        "1",
        "--memory",
        "2g",
        "--webui-port",
        str(worker_ui),
    ]
    with _process_group(master, tmp_path / "master.log"), _process_group(worker, tmp_path / "worker.log"):
        _wait_for(lambda: _json(f"http://127.0.0.1:{ui}/json/")["aliveworkers"] >= 1, "a Spark worker")
        result = subprocess.run(
            [
                str(BIN / "spark-submit"),
                "--master",
                f"spark://127.0.0.1:{port}",
                "--conf",
                "spark.executor.memory=1g",
                "--conf",
                "spark.sql.shuffle.partitions=2",
                str(REPO / "jobs" / "features.py"),
                "--set",
                f"lake={config.lake}",
                "--set",
                "dataset.name=movielens-100k",
                "--set",
                f"dataset.path={FIXTURES / 'ml100k_raw'}",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            env=_environment(),
            cwd=REPO,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        applications = _json(f"http://127.0.0.1:{ui}/json/")["completedapps"]
        assert any(app["name"] == "reki" for app in applications)  # it ran on this master
    lake = Lake(spark, config.lake)
    assert lake.read(SAMPLES).count() == 8  # 4 users x (4 - window of 2)
    assert lake.read(SEQUENCES).count() == 4


def test_ray_job_submit_extraction_on_a_head_node(prompts_lake, tmp_path):
    lake = tmp_path / "lake"
    shutil.copytree(prompts_lake, lake)
    port, dashboard = _free_port(), _free_port()
    head = [
        str(BIN / "ray"),
        "start",
        "--head",
        "--block",
        "--node-ip-address",
        "127.0.0.1",
        "--port",
        str(port),
        "--dashboard-host",
        "127.0.0.1",
        "--dashboard-port",
        str(dashboard),
        "--num-cpus",
        "2",
        "--include-dashboard",
        "true",
        "--disable-usage-stats",
    ]
    address = f"http://127.0.0.1:{dashboard}"
    config = tiny_config(lake, "llm.max_prompts=3")
    overrides = [
        f"{key}={value}"
        for key, value in (
            ("lake", lake),
            ("llm.max_prompts", 3),
            ("llm.max_tokens", 24),
            ("llm.min_chars", 10),
            ("llm.batch_size", 1),
            ("llm.commit_rows", 1),
        )
    ]
    with _process_group(head, tmp_path / "ray-head.log"):
        _wait_for(lambda: _json(f"{address}/api/version") is not None, "the Ray dashboard", timeout=180)
        sets = [arg for override in overrides for arg in ("--set", override)]
        result = subprocess.run(
            [
                str(BIN / "ray"),
                "job",
                "submit",
                "--address",
                address,
                "--working-dir",
                str(REPO),
                "--",
                "python",
                "jobs/extract.py",
                *sets,
            ],
            capture_output=True,
            text=True,
            timeout=600,
            env=_environment(),
            cwd=REPO,
        )
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        assert "succeeded" in (result.stdout + result.stderr).lower()  # the job ended SUCCEEDED
    knowledge = RsLake(str(lake)).read(KNOWLEDGE).to_pandas()
    assert len(knowledge) == knowledge["prompt_id"].nunique() == config.llm.max_prompts
    assert set(knowledge["prompt_id"]) <= set(RsLake(str(lake)).read(PROMPTS, ["prompt_id"]).to_pandas()["prompt_id"])
