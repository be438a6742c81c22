"""A real Spark cluster on loopback: a standalone master and worker (from the Spark inside pyspark)
whose executors get no Python of ours, running `spark-submit --archives` of the packed executor
environment with jobs/ingest.py. Torn down also when the test fails."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from reki_spark.lake import ITEMS, Lake
from tests.loopback import BIN, cluster_environment, free_port, get_json, process_group, wait_for
from tests.paths import FIXTURES, REPO

pytestmark = [pytest.mark.integration, pytest.mark.cluster]


def _spark_class() -> str:
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return str(BIN.parent / "lib" / version / "site-packages" / "pyspark" / "bin" / "spark-class")


@pytest.fixture()
def standalone_master(tmp_path) -> Iterator[tuple[str, int, Path]]:
    """A Spark standalone master and one 1-core worker on loopback: (master URL, master UI port,
    the worker's work folder). The worker and its executors get no Python of ours (bare PATH, no
    PYSPARK_PYTHON): executors run whatever interpreter the submitted job names."""
    port, ui, worker_ui = free_port(), free_port(), free_port()
    work = tmp_path / "worker-work"
    master = ["bash", _spark_class(), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1"]
    master += ["--port", str(port), "--webui-port", str(ui)]
    worker = ["bash", _spark_class(), "org.apache.spark.deploy.worker.Worker", f"spark://127.0.0.1:{port}"]
    worker += ["--host", "127.0.0.1", "--cores", "1", "--memory", "2g", "--webui-port", str(worker_ui)]
    worker += ["--work-dir", str(work)]
    bare = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp")}
    bare["SPARK_LOCAL_IP"] = "127.0.0.1"
    with (
        process_group(master, tmp_path / "master.log"),
        process_group(worker, tmp_path / "worker.log", env=bare),
    ):
        wait_for(lambda: get_json(f"http://127.0.0.1:{ui}/json/")["aliveworkers"] >= 1, "a Spark worker")
        yield f"spark://127.0.0.1:{port}", ui, work


def test_spark_submit_with_the_packed_environment_on_executors(spark, standalone_master, built_wheel, tmp_path):
    """As the README's Deploy section says: the wheel packed into a venv-pack archive, unpacked by
    every executor as ./environment, the only Python the executors get; ingest's title-cleaning
    pandas UDF runs there."""
    master, ui, work = standalone_master
    archive = tmp_path / "reki-executor-env.tar.gz"
    pack = [str(REPO / "infra" / "spark" / "executor-env.sh"), str(built_wheel), str(archive)]
    subprocess.run(pack, check=True, timeout=600, env={**cluster_environment(), "PYTHON": sys.executable})
    lake = tmp_path / "lake"
    submit = [str(BIN / "spark-submit"), "--master", master, "--archives", f"{archive}#environment"]
    submit += ["--conf", "spark.pyspark.python=./environment/bin/python"]
    submit += ["--conf", f"spark.pyspark.driver.python={sys.executable}"]
    submit += ["--conf", "spark.executor.memory=1g", "--conf", "spark.sql.shuffle.partitions=2"]
    dataset = ["--set", f"lake={lake}", "--set", "dataset.name=movielens-100k"]
    dataset += ["--set", f"dataset.path={FIXTURES / 'ml100k_raw'}"]
    unset = ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON")
    driver_env = {key: value for key, value in cluster_environment().items() if key not in unset}
    job = [*submit, str(REPO / "jobs" / "ingest.py"), *dataset]
    result = subprocess.run(job, capture_output=True, text=True, timeout=600, env=driver_env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    applications = get_json(f"http://127.0.0.1:{ui}/json/")["completedapps"]
    assert [app["name"] for app in applications] == ["reki"]  # it ran on this master
    unpacked = list(work.glob("app-*/*/environment/bin/python"))
    assert len(unpacked) == 1, sorted(work.rglob("*"))[:20]  # the executor unpacked the archive
    titles = {row.title for row in Lake(spark, str(lake)).read(ITEMS).select("title").collect()}  # 4 items
    assert {"The Usual Suspects", "The Matrix"} <= titles  # cleaned by the pandas UDF on the executor
