"""Shared fixtures: one real local Spark session with Delta for the whole run, and helpers that
build configs pointing at temporary lakes."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.paths import SHARED_ML100K

# Workers must run the same interpreter as the driver (see ../shared/stack/NOTES.md).
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)


@pytest.fixture(scope="session")
def spark() -> Iterator:
    from reki_spark.config import load_config
    from reki_spark.session import get_spark

    config = load_config(None, ["spark.shuffle_partitions=2", "spark.driver_memory=3g"])
    session = get_spark(config)
    yield session
    session.stop()


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
