"""The product as a cluster runs it: a Spark standalone master with two workers and a two-node Ray
cluster, every worker and Ray node a separate "machine" with a private view of the filesystem (its
own mount namespace with a private tmpfs over every folder of this test run), and an S3-compatible
object store (moto's server) as the only storage they share. The sample data goes ingest ->
features -> cluster -> prompts through `spark-submit` (executors on the packed environment of
`make dist`, or the image's Python for the stages that need torch and scikit-learn), extract ->
encode through `ray job submit`, then DDP training with two ranks on the workers and the report.

It fails if a stage writes product output to a worker's own disk (the driver would never see it)
or reads the driver's (the worker sees an empty folder there), if a worker killed during features
loses or duplicates rows, or if a second run changes any row count."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ray_workers.delta_io import RsLake
from reki_spark import storage
from reki_spark.lake import INTERACTIONS, KNOWLEDGE, KNOWLEDGE_VECTORS, LEDGER, PROMPTS, SAMPLES, USER_CLUSTERS
from tests.conftest import TINY
from tests.loopback import (
    BIN,
    cluster_environment,
    free_port,
    get_json,
    in_private_view,
    private_files,
    process_group,
    wait_for,
)
from tests.objectstore import ObjectStore, moto_server
from tests.paths import REPO

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

BUCKET = "reki-cluster"
LAKE, OUTPUT = f"s3a://{BUCKET}/lake", f"s3a://{BUCKET}/runs/sample"
# What executors import for ingest and features fits the slim packed environment (prompts too:
# tests/unit/test_infra.py); the cluster stage (the encoder, scikit-learn) and training (torch)
# run on the image's Python, present on every node.
ON_PACKED_ENV = ("ingest", "features")
SETTINGS = [
    *TINY,
    f"lake={LAKE}",
    f"output={OUTPUT}",
    'training.models=["din"]',
    'training.knowledge=["collective"]',
    "training.epochs=1",
    "training.num_processes=2",
    "tracking.enabled=false",
    "clustering.max_iterations=5",
]
COUNTED = (INTERACTIONS, SAMPLES, USER_CLUSTERS, PROMPTS, KNOWLEDGE, KNOWLEDGE_VECTORS)
# Files that only the product writes: a worker's private disk must hold none of them.
PRODUCT_SUFFIXES = (".parquet", ".pt", ".crc", ".md", ".png")


def _spark_class() -> str:
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return str(BIN.parent / "lib" / version / "site-packages" / "pyspark" / "bin" / "spark-class")


@dataclass
class Machines:
    """The cluster's processes: each worker and Ray node sees a private tmpfs over `hidden`."""

    store: ObjectStore
    hidden: Path
    scratch: Path  # the driver's own folder (logs, event logs)
    stack: ExitStack
    master: str = ""
    master_ui: int = 0
    workers: list[subprocess.Popen] = field(default_factory=list)
    ray_nodes: list[subprocess.Popen] = field(default_factory=list)
    dashboard: str = ""

    def node_environment(self) -> dict[str, str]:
        """A cluster node's environment: no Python of ours on PATH (the jobs name their own), the
        store's address and credentials as its cloud would provide them."""
        bare = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root")}
        return {**bare, "SPARK_LOCAL_IP": "127.0.0.1", "HF_HUB_OFFLINE": "1", **self.store.environment}

    def start_master(self) -> None:
        port, self.master_ui = free_port(), free_port()
        args = ["bash", _spark_class(), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1"]
        args += ["--port", str(port), "--webui-port", str(self.master_ui)]
        self.stack.enter_context(process_group(args, self.scratch / "master.log"))
        self.master = f"spark://127.0.0.1:{port}"

    def start_worker(self, number: int) -> subprocess.Popen:
        work = self.hidden / f"spark-worker-{number}"
        args = ["bash", _spark_class(), "org.apache.spark.deploy.worker.Worker", self.master, "--host", "127.0.0.1"]
        args += ["--cores", "1", "--memory", "3g", "--webui-port", str(free_port()), "--work-dir", str(work)]
        log = self.scratch / f"worker-{number}-{time.monotonic_ns()}.log"
        worker = self.stack.enter_context(
            process_group(in_private_view(args, [self.hidden], [work]), log, env=self.node_environment())
        )
        self.workers.append(worker)
        alive = len([w for w in self.workers if w.poll() is None])
        wait_for(lambda: self._alive_workers() >= alive, "Spark workers", timeout=120)
        return worker

    def _alive_workers(self) -> int:
        return get_json(f"http://127.0.0.1:{self.master_ui}/json/")["aliveworkers"]

    def kill(self, process: subprocess.Popen) -> None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def start_ray(self) -> None:
        port, dashboard = free_port(), free_port()
        common = ["--block", "--node-ip-address", "127.0.0.1", "--num-cpus", "2", "--disable-usage-stats"]
        common += ["--object-store-memory", str(400 * 2**20)]
        head = [str(BIN / "ray"), "start", "--head", "--port", str(port), "--dashboard-host", "127.0.0.1"]
        head += ["--dashboard-port", str(dashboard), "--include-dashboard", "true"]
        head += ["--dashboard-agent-listen-port", str(free_port()), *common]
        worker = [str(BIN / "ray"), "start", "--address", f"127.0.0.1:{port}", *common]
        worker += ["--dashboard-agent-listen-port", str(free_port())]
        # Ray nodes find `python` on PATH: the image's.
        environment = {**self.node_environment(), "PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin"}
        for name, args in (("ray-head", head), ("ray-worker", worker)):
            log = self.scratch / f"{name}.log"
            node = self.stack.enter_context(process_group(in_private_view(args, [self.hidden]), log, env=environment))
            self.ray_nodes.append(node)
            if name == "ray-head":
                self.dashboard = f"http://127.0.0.1:{dashboard}"
                wait_for(lambda: get_json(f"{self.dashboard}/api/version") is not None, "the Ray dashboard", 180)
        wait_for(lambda: len(self._ray_nodes_alive()) >= 2, "two Ray nodes", 180)

    def _ray_nodes_alive(self) -> list[dict]:
        nodes = get_json(f"{self.dashboard}/nodes?view=summary")["data"]["summary"]
        return [node for node in nodes if node.get("raylet", {}).get("state") == "ALIVE"]


@contextmanager
def machines(tmp_path: Path, tmp_path_factory) -> Iterator[Machines]:
    # /tmp/pytest-of-<user>: the folders of every test of this run, this one's included.
    hidden = next(p for p in tmp_path_factory.getbasetemp().parents if p.name.startswith("pytest-of-"))
    scratch = tmp_path / "driver"
    scratch.mkdir()
    with ExitStack() as stack, moto_server(scratch / "moto.log") as store:
        store.create_bucket(BUCKET)
        yield Machines(store, hidden, scratch, stack)


def _packed_environment(wheel: Path, scratch: Path) -> Path:
    archive = scratch / "reki-executor-env.tar.gz"
    pack = [str(REPO / "infra" / "spark" / "executor-env.sh"), str(wheel), str(archive)]
    subprocess.run(pack, check=True, timeout=600, env={**cluster_environment(), "PYTHON": sys.executable})
    return archive


@dataclass
class Submitted:
    process: subprocess.Popen
    log: Path

    def finished(self, timeout: float = 1800) -> None:
        code = self.process.wait(timeout=timeout)
        assert code == 0, f"{self.log.name} exited {code}:\n{self.log.read_text()[-4000:]}"


def _spark_submit(cluster: Machines, stage: str, archive: Path, events: Path, *stages: str) -> Submitted:
    """`spark-submit jobs/<stage>.py` as the README's deploy section writes it (`stages`: those
    that jobs/pipeline.py runs in one application)."""
    packed = set(stages or [stage]) <= set(ON_PACKED_ENV)
    python = "./environment/bin/python" if packed else sys.executable
    submit = [str(BIN / "spark-submit"), "--master", cluster.master, "--archives", f"{archive}#environment"]
    submit += ["--conf", f"spark.pyspark.python={python}", "--conf", f"spark.pyspark.driver.python={sys.executable}"]
    submit += ["--conf", "spark.executor.memory=1g", "--conf", "spark.sql.shuffle.partitions=2"]
    # As a local session sets it (reki_spark/session.py): Delta rebuilds each table's snapshot in
    # 50 tasks by default, 46 such stages in a 2-step training of the tiny sample (27 of its 80 s).
    submit += ["--conf", "spark.databricks.delta.snapshotPartitions=2"]
    submit += ["--conf", "spark.eventLog.enabled=true", "--conf", f"spark.eventLog.dir={events.as_uri()}"]
    sets = [arg for setting in SETTINGS for arg in ("--set", setting)]
    unset = ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON")
    environment = {k: v for k, v in cluster_environment().items() if k not in unset} | cluster.store.environment
    log = cluster.scratch / f"{stage}-{time.monotonic_ns()}.log"
    command = [*submit, str(REPO / "jobs" / f"{stage}.py"), *sets]
    if stages:
        command += ["--stages", ",".join(stages)]
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=environment, cwd=cluster.scratch)
    return Submitted(process, log)


def _ray_submit(cluster: Machines, *stages: str) -> None:
    """`ray job submit` of jobs/pipeline.py with the Ray stages."""
    sets = [arg for setting in SETTINGS for arg in ("--set", setting)]
    submit = [str(BIN / "ray"), "job", "submit", "--address", cluster.dashboard, "--working-dir", str(REPO)]
    command = [*submit, "--", "python", "jobs/pipeline.py", "--stages", ",".join(stages), *sets]
    environment = cluster_environment() | cluster.store.environment
    deadline = time.monotonic() + 120
    while True:
        result = subprocess.run(command, capture_output=True, text=True, timeout=900, env=environment, cwd=REPO)
        # The dashboard answers before its job agent has registered; Ray says to try again later.
        if "No available agent to submit job" not in result.stderr or time.monotonic() > deadline:
            break
        time.sleep(2)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "succeeded" in output.lower(), output[-4000:]


def _row_counts() -> dict[str, int]:
    lake = RsLake(LAKE)
    return {table: lake.read(table).num_rows for table in COUNTED}


def _executors_removed(events: Path) -> int:
    return sum(log.read_text().count('"SparkListenerExecutorRemoved"') for log in events.iterdir())


def _product_files(files: list[Path]) -> list[Path]:
    """Files the product would have written (outside the unpacked executor environment)."""
    return [
        path
        for path in files
        if "environment" not in path.parts and (path.suffix in PRODUCT_SUFFIXES or "_delta_log" in path.parts)
    ]


# 13 min alone on 2 cores, 26.5 under the rest of `make test` (both cores busy throughout): the
# limit leaves the slower CI machine room.
@pytest.mark.timeout(3600)
def test_the_pipeline_on_a_multi_worker_cluster_that_shares_only_object_storage(
    built_wheel, tmp_path, tmp_path_factory, monkeypatch
):
    with machines(tmp_path, tmp_path_factory) as cluster:
        for name, value in cluster.store.environment.items():
            monkeypatch.setenv(name, value)
        storage.use(storage.StorageSettings.resolve(None, None, None))
        archive = _packed_environment(built_wheel, cluster.scratch)
        cluster.start_master()
        doomed = cluster.start_worker(0)
        cluster.start_worker(1)
        events = cluster.scratch / "events"
        events.mkdir()

        # Several stages per application (jobs/pipeline.py), as few JVM starts as the check allows.
        preparing = _spark_submit(cluster, "pipeline", archive, events, "ingest", "features")
        wait_for(lambda: "== features" in preparing.log.read_text(), "features under way", timeout=600)
        time.sleep(5)
        cluster.kill(doomed)  # with its executor, mid-stage
        cluster.start_worker(2)
        preparing.finished()
        assert _executors_removed(events) >= 1  # the stage did lose an executor
        _spark_submit(cluster, "pipeline", archive, events, "cluster", "prompts").finished()

        cluster.start_ray()
        _ray_submit(cluster, "extract", "encode")
        _spark_submit(cluster, "pipeline", archive, events, "train", "report").finished()

        counts = _row_counts()
        assert counts[KNOWLEDGE] == counts[PROMPTS] == 8 and counts[KNOWLEDGE_VECTORS] > 0
        metrics = json.loads(storage.read_text(f"{OUTPUT}/metrics.json"))
        (trained,) = [record for record in metrics if record["model"] == "din"]
        assert trained["knowledge"] == "collective" and trained["processes"] == 2
        assert len(trained["rank_steps"]) == 2 and min(trained["rank_steps"]) > 0  # both ranks had rows
        assert len(set(trained["replica_checksums"])) == 1  # the two ranks stayed in sync
        checkpoints = storage.list_files(f"{OUTPUT}/checkpoints/ctr-din-collective-seed1", ".pt")
        assert [Path(c).name for c in checkpoints] == ["best-epoch1.pt", "last.pt"]
        assert "| din |" in storage.read_text(f"{OUTPUT}/report.md")

        # Nothing the product wrote stayed on a machine's own disk, the driver's included; the
        # executors did unpack the archive on theirs.
        survivors = [w for w in cluster.workers if w.poll() is None]
        for node in survivors + cluster.ray_nodes:
            assert _product_files(private_files(node.pid, cluster.hidden)) == []
        unpacked = [
            p for w in survivors for p in private_files(w.pid, cluster.hidden) if p.match("environment/bin/python")
        ]
        assert unpacked
        assert _product_files(sorted(p for p in tmp_path.rglob("*") if p.is_file())) == []

        # A second run asks nothing (with nothing pending, extract starts no Ray) and changes no
        # row count.
        stages = ("ingest", "features", "cluster", "prompts", "extract")
        _spark_submit(cluster, "pipeline", archive, events, *stages).finished()
        assert _row_counts() == counts
        ledger = RsLake(LAKE).read(LEDGER).to_pandas()
        assert ledger[ledger["stage"] == "extract"].sort_values("started_at")["llm_calls"].tolist()[-1] == 0
