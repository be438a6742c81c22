"""The storage layer's mapping of locations onto Spark, pyarrow and delta-rs (no server needed)."""

from __future__ import annotations

import pytest

from reki_spark import storage
from reki_spark.storage import StorageError, StorageSettings


def test_the_s3_schemes_name_one_bucket_for_every_library():
    assert storage.spark_uri("s3://bucket/lake/") == "s3a://bucket/lake"
    assert storage.delta_uri("s3a://bucket/lake") == "s3://bucket/lake"
    assert storage.join("s3a://bucket/lake/", "samples", "part-0.parquet") == "s3a://bucket/lake/samples/part-0.parquet"
    paths = {storage.filesystem(f"{scheme}://bucket/lake/x")[1] for scheme in ("s3", "s3a")}
    assert paths == {"bucket/lake/x"}


def test_local_paths_and_hadoop_file_uris_are_the_same_absolute_path(tmp_path):
    folder = tmp_path / "with space"
    assert storage.resolve(f"file:{folder}") == storage.resolve(folder.as_uri()) == str(folder)
    assert storage.spark_uri(str(folder)) == folder.as_uri()
    assert storage.is_local("relative/folder") and not storage.is_local("gs://bucket/x")


def test_a_custom_endpoint_implies_path_style_and_plain_http_where_it_says_so(monkeypatch):
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    assert StorageSettings.resolve(None, None, None) == StorageSettings(None, None, False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio:9000")
    settings = StorageSettings.resolve(None, "eu-west-1", None)
    hadoop = storage.hadoop_settings(settings)
    assert hadoop["spark.hadoop.fs.s3a.endpoint"] == "http://minio:9000"
    assert hadoop["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert hadoop["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "false"
    options = storage.delta_storage_options("s3a://bucket/lake", settings)
    assert options is not None and options["AWS_ALLOW_HTTP"] == "true" and options["AWS_REGION"] == "eu-west-1"
    assert storage.delta_storage_options("/local/lake", settings) is None
    # Never a credential: they stay in each node's environment or the cloud's chain.
    assert not any("key" in name.lower() or "secret" in name.lower() for name in {*hadoop, *options})


@pytest.mark.parametrize("location", ["abfss://container@account/lake", "hdfs://namenode/lake", "ftp://host/lake"])
def test_a_scheme_without_a_client_here_is_one_line_naming_it(location):
    with pytest.raises(StorageError, match=location.split(":")[0]):
        storage.check_location(location, "lake")


def test_bytes_round_trip_and_listing_on_local_disk(tmp_path):
    target = storage.join(str(tmp_path), "a", "b.bin")
    storage.write_bytes(target, b"payload")
    assert storage.read_bytes(target) == b"payload" and storage.exists(target)
    assert storage.list_files(storage.join(str(tmp_path), "a"), ".bin") == [target]
    storage.delete_tree(storage.join(str(tmp_path), "a"))
    assert not storage.exists(target)
