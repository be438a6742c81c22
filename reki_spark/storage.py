"""The one storage layer: every location the product reads or writes (lake, dataset, output,
staging, checkpoints, Petastorm's cache, the export bundle) is a URI or a local path, and this module
turns it into what each library needs: Spark's Hadoop URI and settings, a pyarrow filesystem,
delta-rs' storage options, bytes for torch.

Object stores: `s3://` and `s3a://` name the same bucket (Hadoop's S3A connector for Spark, Arrow's
S3 client for pyarrow, object_store for delta-rs); `gs://` goes to pyarrow's GCS client and Hadoop's
GCS connector where the cluster has it. Credentials are never part of the settings: they come from
the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`) or the cloud's
own chain (instance profile, IRSA), read by each library on each node, so nothing here can write
them to a table, a log or MLflow."""

from __future__ import annotations

import io
import os
import posixpath
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from pyarrow import fs

S3_SCHEMES = ("s3", "s3a", "s3n")
GCS_SCHEMES = ("gs", "gcs")
# Schemes whose pyarrow client this environment lacks (pyarrow 14 has no Azure filesystem).
UNSUPPORTED = {
    "abfs": "abfss:// needs pyarrow >= 16 (AzureFileSystem); pyarrow is pinned to 14 for petastorm",
    "abfss": "abfss:// needs pyarrow >= 16 (AzureFileSystem); pyarrow is pinned to 14 for petastorm",
    "wasbs": "wasbs:// has no pyarrow filesystem",
    "hdfs": "hdfs:// needs libhdfs on every node; use an object store URI",
}
DEFAULT_REGION = "us-east-1"


class StorageError(RuntimeError):
    """A location the product cannot use, worded as one line naming the URI and what to fix."""


@dataclass(frozen=True)
class StorageSettings:
    """Where the object store is (not who may use it): picklable, safe to log and to ship to
    executors, ranks and Ray workers. `endpoint` None means the cloud's own (AWS S3)."""

    endpoint: str | None = None
    region: str | None = None
    path_style: bool = False

    @classmethod
    def resolve(cls, endpoint: str | None, region: str | None, path_style: bool | None) -> StorageSettings:
        """The config's values, else the standard AWS variables (`AWS_ENDPOINT_URL_S3`,
        `AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_DEFAULT_REGION`); a custom endpoint implies
        path-style addressing (what S3-compatible servers expect) unless told otherwise."""
        endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        return cls(endpoint, region, bool(endpoint) if path_style is None else path_style)

    @property
    def secure(self) -> bool:
        return not (self.endpoint or "").startswith("http://")

    @property
    def endpoint_host(self) -> str | None:
        """The endpoint without its scheme (what Arrow's `endpoint_override` takes)."""
        if not self.endpoint:
            return None
        return self.endpoint.split("://", 1)[-1].rstrip("/")


_settings = StorageSettings.resolve(None, None, None)


def use(settings: StorageSettings) -> None:
    """Makes `settings` this process's storage settings (each stage entry, rank and Ray task that
    received them calls it)."""
    global _settings
    _settings = settings
    _filesystems.clear()


def current() -> StorageSettings:
    return _settings


def scheme(location: str) -> str:
    """The URI's scheme, or "file" for a local path (and for file: URIs)."""
    parsed = urlparse(location)
    return parsed.scheme.lower() if len(parsed.scheme) > 1 else "file"


def is_local(location: str) -> bool:
    return scheme(location) == "file"


def resolve(location: str) -> str:
    """An absolute location: local paths (and file: URIs, as Hadoop writes them) made absolute
    paths, relative ones against the working folder; URIs kept, trailing slashes dropped."""
    if is_local(location):
        path = unquote(urlparse(location).path) if location.startswith("file:") else location
        return str(Path(path).resolve())
    return location.rstrip("/")


def join(location: str, *parts: str) -> str:
    """`location`/part/...: for URIs and local paths alike."""
    base = resolve(location)
    return posixpath.join(base, *parts) if not is_local(base) else str(Path(base).joinpath(*parts))


def spark_uri(location: str) -> str:
    """The location as Spark (Hadoop) reads it: `file://` for local paths (so that a cluster whose
    default filesystem is HDFS does not reinterpret them), `s3a://` for the S3 schemes."""
    location = resolve(location)
    kind = scheme(location)
    if kind == "file":
        return Path(location).as_uri()
    if kind in S3_SCHEMES:
        return "s3a://" + location.split("://", 1)[1]
    return location


def _check_supported(location: str) -> str:
    kind = scheme(location)
    if kind in UNSUPPORTED:
        raise StorageError(f"{location}: {UNSUPPORTED[kind]}")
    if kind not in ("file", *S3_SCHEMES, *GCS_SCHEMES):
        raise StorageError(f"{location}: unknown storage scheme {kind}:// (use a path, s3://, s3a:// or gs://)")
    return kind


_filesystems: dict[str, fs.FileSystem] = {}


def filesystem(location: str) -> tuple[fs.FileSystem, str]:
    """pyarrow's filesystem for `location` and the path inside it."""
    location = resolve(location)
    kind = _check_supported(location)
    if kind == "file":
        return fs.LocalFileSystem(), location
    bucket_and_key = location.split("://", 1)[1]
    if kind in GCS_SCHEMES:
        return fs.GcsFileSystem(), bucket_and_key
    if "s3" not in _filesystems:
        _filesystems["s3"] = s3_filesystem(_settings)
    return _filesystems["s3"], bucket_and_key


def s3_filesystem(settings: StorageSettings, attempts: int = 3, timeout_s: float | None = None) -> fs.S3FileSystem:
    """Arrow's S3 client for `settings`; credentials from the environment or the AWS chain. Arrow
    14 addresses buckets path-style whenever an endpoint is given."""
    options: dict = {"region": settings.region or DEFAULT_REGION}
    if settings.endpoint:
        options["endpoint_override"] = settings.endpoint_host
        options["scheme"] = "https" if settings.secure else "http"
    if timeout_s is not None:
        options["connect_timeout"] = options["request_timeout"] = timeout_s
    return fs.S3FileSystem(retry_strategy=fs.AwsStandardS3RetryStrategy(max_attempts=attempts), **options)


def hadoop_settings(settings: StorageSettings) -> dict[str, str]:
    """Spark's Hadoop settings (`spark.hadoop.*`) for `settings`: the S3A connector for s3a:// and
    s3://, the endpoint and addressing style; credentials left to S3A's default chain (environment
    variables, then the instance's)."""
    values = {
        "fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "fs.s3a.path.style.access": str(settings.path_style).lower(),
    }
    if settings.endpoint:
        values["fs.s3a.endpoint"] = settings.endpoint
        values["fs.s3a.connection.ssl.enabled"] = str(settings.secure).lower()
    if settings.region:
        values["fs.s3a.endpoint.region"] = settings.region
    return {f"spark.hadoop.{key}": value for key, value in values.items()}


def delta_storage_options(location: str, settings: StorageSettings | None = None) -> dict[str, str] | None:
    """delta-rs' `storage_options` for `location` (None for local paths); credentials are read by
    delta-rs itself from the environment."""
    settings = settings or _settings
    if scheme(location) not in S3_SCHEMES:
        return None
    options = {"AWS_REGION": settings.region or DEFAULT_REGION}
    if settings.endpoint:
        options["AWS_ENDPOINT_URL"] = settings.endpoint
        options["AWS_ALLOW_HTTP"] = str(not settings.secure).lower()
    if settings.path_style:
        options["AWS_VIRTUAL_HOSTED_STYLE_REQUEST"] = "false"
    # Only the lake's Spark writers commit to Delta; delta-rs reads.
    options["AWS_S3_ALLOW_UNSAFE_RENAME"] = "true"
    return options


def delta_uri(location: str) -> str:
    """The location as delta-rs names it (`s3://` for the S3 schemes)."""
    location = resolve(location)
    if scheme(location) in S3_SCHEMES:
        return "s3://" + location.split("://", 1)[1]
    return location


def exists(location: str) -> bool:
    filesystem_, path = filesystem(location)
    return filesystem_.get_file_info(path).type != fs.FileType.NotFound


def read_bytes(location: str) -> bytes:
    filesystem_, path = filesystem(location)
    with filesystem_.open_input_stream(path) as stream:
        return stream.read()


def read_text(location: str) -> str:
    return read_bytes(location).decode()


def write_bytes(location: str, payload: bytes) -> None:
    """Writes the whole object at once: a reader sees the old content or the new, never half (an
    object store's PUT is atomic; locally a hidden file is renamed over the target)."""
    filesystem_, path = filesystem(location)
    parent = posixpath.dirname(path)
    if parent:
        filesystem_.create_dir(parent, recursive=True)
    if isinstance(filesystem_, fs.LocalFileSystem):
        hidden = f"{parent}/.{posixpath.basename(path)}.{uuid.uuid4().hex}.partial"
        with filesystem_.open_output_stream(hidden) as stream:
            stream.write(payload)
        filesystem_.move(hidden, path)
        return
    with filesystem_.open_output_stream(path) as stream:
        stream.write(payload)


def write_text(location: str, text: str) -> None:
    write_bytes(location, text.encode())


def delete_tree(location: str) -> None:
    """Removes a folder (or a single file) and everything under it; nothing there is no error."""
    filesystem_, path = filesystem(location)
    info = filesystem_.get_file_info(path)
    if info.type == fs.FileType.Directory:
        filesystem_.delete_dir(path)
    elif info.type == fs.FileType.File:
        filesystem_.delete_file(path)


def list_files(location: str, suffix: str = "") -> list[str]:
    """The files directly under a folder whose names end with `suffix`, as locations, sorted;
    hidden ones (`.` or `_`) left out."""
    filesystem_, path = filesystem(location)
    found = filesystem_.get_file_info(fs.FileSelector(path, allow_not_found=True))
    names = sorted(
        f.base_name
        for f in found
        if f.type == fs.FileType.File and f.base_name.endswith(suffix) and not f.base_name.startswith((".", "_"))
    )
    return [join(location, name) for name in names]


def save_torch(obj: object, location: str) -> None:
    """`torch.save` to any location, written whole (see `write_bytes`)."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(location, buffer.getvalue())


def load_torch(location: str) -> object:
    import torch

    return torch.load(io.BytesIO(read_bytes(location)), map_location="cpu", weights_only=False)


def check_location(location: str, setting: str, settings: StorageSettings | None = None) -> None:
    """Stops before any work when `location` cannot be used: an unknown scheme, an endpoint that
    does not answer, a bucket that does not exist, credentials the store refuses. One line names
    the URI and the setting to fix."""
    kind = _check_supported(location)
    if kind not in S3_SCHEMES:
        return
    settings = settings or _settings
    bucket = location.split("://", 1)[1].split("/", 1)[0]
    where = settings.endpoint or "AWS S3"
    client = s3_filesystem(settings, attempts=1, timeout_s=5)
    try:
        info = client.get_file_info(bucket)
    except OSError as err:
        raise StorageError(f"{setting}={location}: {_s3_problem(str(err), where)}") from None
    if info.type == fs.FileType.NotFound:
        raise StorageError(f"{setting}={location}: bucket {bucket!r} does not exist at {where} (create it first)")


def _s3_problem(message: str, where: str) -> str:
    lowered = message.lower()
    if "curl" in lowered or "connect" in lowered or "resolve" in lowered or "timeout" in lowered:
        return f"cannot reach the object store at {where} (check storage.endpoint / AWS_ENDPOINT_URL)"
    if any(
        word in lowered for word in ("access_denied", "accessdenied", "forbidden", "invalidaccesskeyid", "signature")
    ):
        return (
            f"the object store at {where} refused the credentials (check AWS_ACCESS_KEY_ID / "
            "AWS_SECRET_ACCESS_KEY or the instance's role)"
        )
    return f"the object store at {where} answered: {message.splitlines()[0][:200]}"
