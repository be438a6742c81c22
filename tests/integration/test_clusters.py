"""Real clusters on loopback: a Spark standalone master and worker (from the Spark inside pyspark)
running `spark-submit --archives` of the packed executor environment with jobs/ingest.py and
jobs/features.py, and a Ray head running `ray job submit jobs/extract.py`.
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
from reki_spark.lake import ITEMS, KNOWLEDGE, PROMPTS, SAMPLES, SEQUENCES, Lake
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
def _process_group(args: list[str], log: Path, environment: dict | None = None) -> Iterator[subprocess.Popen]:
    """A background process in its own group, killed with everything it started on exit."""
    with log.open("w") as out:
        process = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, env=environment or _environment(), start_new_session=True
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


def _spark_class() -> str:
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return str(BIN.parent / "lib" / version / "site-packages" / "pyspark" / "bin" / "spark-class")


@pytest.fixture()
def standalone_master(tmp_path) -> Iterator[tuple[str, int, Path]]:
    """A Spark standalone master and one 1-core worker on loopback: (master URL, master UI port,
    the worker's work folder). The worker and its executors get no Python of ours (bare PATH, no
    PYSPARK_PYTHON): executors run whatever interpreter the submitted job names."""
    port, ui, worker_ui = _free_port(), _free_port(), _free_port()
    work = tmp_path / "worker-work"
    master = ["bash", _spark_class(), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1"]
    master += ["--port", str(port), "--webui-port", str(ui)]
    worker = ["bash", _spark_class(), "org.apache.spark.deploy.worker.Worker", f"spark://127.0.0.1:{port}"]
    worker += ["--host", "127.0.0.1", "--cores", "1", "--memory", "2g", "--webui-port", str(worker_ui)]
    worker += ["--work-dir", str(work)]
    bare = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp")}
    bare["SPARK_LOCAL_IP"] = "127.0.0.1"
    with (
        _process_group(master, tmp_path / "master.log"),
        _process_group(worker, tmp_path / "worker.log", environment=bare),
    ):
        _wait_for(lambda: _json(f"http://127.0.0.1:{ui}/json/")["aliveworkers"] >= 1, "a Spark worker")
        yield f"spark://127.0.0.1:{port}", ui, work


def test_spark_submit_with_the_packed_environment_on_executors(spark, standalone_master, built_wheel, tmp_path):
    """As the README's Deploy section says: the wheel packed into a venv-pack archive, unpacked by
    every executor as ./environment, the only Python the executors get; ingest's title-cleaning
    pandas UDF and the features stage run there."""
    master, ui, work = standalone_master
    archive = tmp_path / "reki-executor-env.tar.gz"
    pack = [str(REPO / "infra" / "spark" / "executor-env.sh"), str(built_wheel), str(archive)]
    subprocess.run(pack, check=True, timeout=600, env={**_environment(), "PYTHON": sys.executable})
    lake = tmp_path / "lake"
    submit = [str(BIN / "spark-submit"), "--master", master, "--archives", f"{archive}#environment"]
    submit += ["--conf", "spark.pyspark.python=./environment/bin/python"]
    submit += ["--conf", f"spark.pyspark.driver.python={sys.executable}"]
    submit += ["--conf", "spark.executor.memory=1g", "--conf", "spark.sql.shuffle.partitions=2"]
    dataset = ["--set", f"lake={lake}", "--set", "dataset.name=movielens-100k"]
    dataset += ["--set", f"dataset.path={FIXTURES / 'ml100k_raw'}"]
    driver_env = {k: v for k, v in _environment().items() if k not in ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON")}
    for stage in ("ingest", "features"):
        job = [*submit, str(REPO / "jobs" / f"{stage}.py"), *dataset]
        result = subprocess.run(job, capture_output=True, text=True, timeout=600, env=driver_env, cwd=tmp_path)
        assert result.returncode == 0, f"{stage}: {result.stderr[-3000:]}"
    applications = _json(f"http://127.0.0.1:{ui}/json/")["completedapps"]
    assert len([app for app in applications if app["name"] == "reki"]) == 2  # both ran on this master
    unpacked = list(work.glob("app-*/*/environment/bin/python"))
    assert len(unpacked) == 2, sorted(work.rglob("*"))[:20]  # one executor per application
    lake_tables = Lake(spark, str(lake))
    titles = {row.title for row in lake_tables.read(ITEMS).select("title").collect()}  # 4 fixture items
    assert {"The Usual Suspects", "The Matrix"} <= titles  # cleaned by the UDF on the executors
    assert lake_tables.read(SAMPLES).count() == 8  # 4 users x (4 - window of 2)
    assert lake_tables.read(SEQUENCES).count() == 4


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
