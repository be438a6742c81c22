"""Petastorm's view of the storage layer. Petastorm resolves s3a:// URLs through fsspec's registry,
whose s3a (s3fs) does not resolve beside this stack's pins and would not know `storage.endpoint`;
and with pyarrow 14 its `ParquetDataset(validate_schema=...)` calls work only on the legacy
`pyarrow.filesystem` API. Importing this module registers that API over Arrow's S3 client with the
process's storage settings, for the driver's converter and every rank's readers alike (the rank
imports it with the pickled loader). Apart from `storage` because the executors of the Spark
stages run a slim environment without fsspec."""

from __future__ import annotations

import warnings

from fsspec import register_implementation
from fsspec.implementations.arrow import ArrowFSWrapper
from pyarrow import filesystem as legacyfs

from reki_spark import storage


class ArrowS3(ArrowFSWrapper):
    """fsspec's view of Arrow's S3 client with this process's settings."""

    cachable = False  # rebuilt where unpickled (a training rank), with that process's settings

    def __init__(self, **kwargs: object) -> None:
        super().__init__(storage.s3_filesystem(storage.current()), **kwargs)

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        return path.split("://", 1)[-1].lstrip("/") if "://" in path else path.lstrip("/")


class PetastormS3(legacyfs.S3FSWrapper):
    """What Petastorm gets for s3a:// URLs: the legacy filesystem API over `ArrowS3`."""

    def __init__(self, **_: object) -> None:
        with warnings.catch_warnings():
            # The legacy API is deprecated, and it is what Petastorm 0.12 on pyarrow 14 reads through.
            warnings.simplefilter("ignore", FutureWarning)
            super().__init__(ArrowS3())

    @classmethod
    def _get_kwargs_from_urls(cls, url: str) -> dict:
        return {}

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        return ArrowS3._strip_protocol(path)

    def isdir(self, path: str) -> bool:
        return self.fs.isdir(path)

    def isfile(self, path: str) -> bool:
        return self.fs.isfile(path)


register_implementation("s3a", PetastormS3, clobber=True)
