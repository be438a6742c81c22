"""Shared fixtures: one real local Spark session with Delta for the whole run, and helpers that
build configs pointing at temporary lakes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.paths import REPO, SHARED_ML100K

# Workers must run the same interpreter as the driver: the system python3 lacks the stack.
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
# Two test processes share the 2 cores with the JVMs, Ray and torch processes they start: OpenMP
# threads (torch's CPU kernels) that spin while they wait take the cores from the threads they wait
# for. Three heavy files at -n 2 (bench/test_cost.py's count): 1,027 CPU s and 601 s spinning,
# 906 CPU s and 572 s sleeping; one at a time they took 824 CPU s and 590 s. One OpenMP thread per
# process as well (OMP_NUM_THREADS=1) made those three files faster (842 CPU s, 526 s) but the whole
# suite slower, 35:59 against 30:57 for the same CPU: the encoder and the models then cannot use a
# core the other test process leaves idle.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


# The longest files first: under pytest-xdist's loadfile scheduling a long file that starts last
# keeps one process busy alone at the end while the other idles.
LONGEST_FIRST = [
    "test_distributed.py",
    "test_training.py",
    "test_faults.py",
    "test_refresh_export.py",
    "test_knowledge.py",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: each file keeps its own order


@pytest.fixture(scope="session")
def spark() -> Iterator:
    from reki_spark.config import load_config
    from reki_spark.session import get_spark

    config = load_config(None, ["spark.shuffle_partitions=2", "spark.driver_memory=3g"])
    session = get_spark(config)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory) -> Path:
    """The wheel `make dist` builds, built once per test process (no build isolation: the
    environment's setuptools builds it, with no download)."""
    from filelock import FileLock

    dist = tmp_path_factory.mktemp("dist")
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist)]
    # setuptools builds in the checkout's build/ folder: two pytest-xdist workers must take turns.
    (REPO / "build").mkdir(exist_ok=True)
    with FileLock(str(REPO / "build" / ".wheel.lock")):
        shutil.rmtree(REPO / "build" / "lib", ignore_errors=True)  # or modules since deleted ship too
        subprocess.run([*pip_wheel, str(REPO)], check=True, timeout=300, capture_output=True)
    return next(dist.glob("reki_spark-*.whl"))


@pytest.fixture()
def make_config(tmp_path: Path):
    """Build a validated config whose lake and output live under this test's tmp folder."""
    from reki_spark.config import load_config

    def build(*overrides: str, config_file: str | None = None):
        base = [f"lake={tmp_path / 'lake'}", f"output={tmp_path / 'run'}", "spark.shuffle_partitions=2"]
        return load_config(config_file, [*base, *overrides])

    return build


@pytest.fixture(scope="session")
def ml100k_folder() -> Path:
    if not (SHARED_ML100K / "ml-100k.inter").exists():
        print(f"SKIP reason: MovieLens-100k not found at {SHARED_ML100K} (set REKI_ML100K)")
        pytest.skip(f"MovieLens-100k not found at {SHARED_ML100K} (set REKI_ML100K to its folder)")
    return SHARED_ML100K


@pytest.fixture(scope="session")
def ray_local() -> Iterator:
    """One local Ray for the run, sized like the CI machine."""
    import ray

    from ray_workers.ray_session import start_ray
    from reki_spark.config import RayConfig

    start_ray(RayConfig(num_cpus=2))
    yield ray
    ray.shutdown()


# A tiny sample dataset for the knowledge and training tests: 8 collective prompts.
TINY = [
    "dataset.sample.users=60",
    "dataset.sample.items=48",
    "dataset.sample.interactions=2400",
    "clustering.item_cluster_size=12",
    "clustering.user_cluster_size=30",
    "llm.max_tokens=24",
    "llm.min_chars=10",
    "llm.batch_size=1",
    "llm.commit_rows=2",
    "spark.shuffle_partitions=2",
    "training.seeds=[1]",
]


def tiny_config(lake: Path, *overrides: str):
    from reki_spark.config import load_config

    return load_config(None, [*TINY, f"lake={lake}", f"output={lake.parent / 'run'}", *overrides])


def _built_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """A lake that one test process builds and every process of the run reads (tests copy it):
    pytest-xdist's workers each have their own session, so each built its own before."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # the run's own folder
    folder = shared / f"shared-{name}"
    with FileLock(str(shared / f"shared-{name}.lock")):
        if not (folder / "complete").exists():
            shutil.rmtree(folder, ignore_errors=True)
            build(folder / "lake")
            (folder / "complete").touch()
    return folder / "lake"


@pytest.fixture(scope="session")
def prompts_lake(request, tmp_path_factory) -> Path:
    """The tiny sample dataset up to collective prompts."""

    def build(lake: Path) -> None:
        from reki_spark.data.ingest import ingest
        from reki_spark.features import build_features
        from reki_spark.knowledge.clustering import cluster_entities
        from reki_spark.knowledge.prompts import build_prompts

        spark, config = request.getfixturevalue("spark"), tiny_config(lake)
        for stage in (ingest, build_features, cluster_entities, build_prompts):
            stage(spark, config)

    return _built_once(tmp_path_factory, "prompts", build)


@pytest.fixture(scope="session")
def knowledge_lake(request, prompts_lake, tmp_path_factory) -> Path:
    """The same, with knowledge extracted by the real GGUF model and encoded."""

    def build(lake: Path) -> None:
        from ray_workers.encode import encode
        from ray_workers.extract import extract

        request.getfixturevalue("ray_local")
        shutil.copytree(prompts_lake, lake)
        config = tiny_config(lake)
        extract(config)
        encode(config)

    return _built_once(tmp_path_factory, "knowledge", build)
