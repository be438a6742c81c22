"""The storage layer against a real S3-compatible server (moto's): round trips through Arrow's S3
client and Petastorm's view of it, and bad storage settings stopping a stage before any work with
one line that names the URI and the setting."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
import torch

from reki_spark import storage
from tests.objectstore import ObjectStore, moto_server
from tests.paths import REPO

pytestmark = pytest.mark.integration


@pytest.fixture()
def store(tmp_path, monkeypatch) -> Iterator[ObjectStore]:
    with moto_server(tmp_path / "moto.log") as server:
        for name, value in server.environment.items():
            monkeypatch.setenv(name, value)
        storage.use(storage.StorageSettings.resolve(None, None, None))
        server.create_bucket("reki-store")
        yield server
    storage.use(storage.StorageSettings())


def test_objects_round_trip_through_every_client(store):
    checkpoint = "s3a://reki-store/run/checkpoints/last.pt"
    storage.save_torch({"weights": torch.arange(4)}, checkpoint)
    assert torch.equal(storage.load_torch(checkpoint)["weights"], torch.arange(4))  # type: ignore[index]
    assert storage.list_files("s3://reki-store/run/checkpoints", ".pt") == ["s3://reki-store/run/checkpoints/last.pt"]
    from petastorm.fs_utils import get_filesystem_and_path_or_paths

    from reki_spark.training import petastorm_fs  # noqa: F401  (what every training process imports)

    petastorm_view, path = get_filesystem_and_path_or_paths(checkpoint)
    assert path == "reki-store/run/checkpoints/last.pt" and petastorm_view.isfile(path)
    storage.delete_tree("s3a://reki-store/run")
    assert not storage.exists(checkpoint)


def _reki(*settings: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "reki_spark.cli", "ingest", *(a for s in settings for a in ("--set", s))]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO)


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        (["lake=s3a://no-such-bucket/lake"], "lake=s3a://no-such-bucket/lake: bucket 'no-such-bucket' does not exist"),
        (["lake=s3a://reki-store/lake", "storage.endpoint=http://127.0.0.1:9"], "cannot reach the object store"),
        (["lake=abfss://lake@account.dfs.core.windows.net/x"], "abfss:// needs pyarrow >= 16"),
    ],
)
def test_bad_storage_stops_the_stage_before_any_work_with_one_line(store, settings, said):
    result = _reki(*settings, "output=s3a://reki-store/run")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and said in lines[0], result.stderr[-2000:]
    assert "setting" not in result.stdout and not storage.list_files("s3a://reki-store")  # nothing written


def test_a_key_the_store_refuses_stops_the_stage_with_one_line(tmp_path, monkeypatch):
    with moto_server(tmp_path / "moto.log", checks_credentials=True) as refusing:
        for name, value in refusing.environment.items():
            monkeypatch.setenv(name, value)
        result = _reki("lake=s3a://reki-store/lake", "output=s3a://reki-store/run")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert "lake=s3a://reki-store/lake" in lines[0] and "refused the credentials" in lines[0]
    assert "AWS_ACCESS_KEY_ID" in lines[0] and refusing.environment["AWS_SECRET_ACCESS_KEY"] not in result.stderr
