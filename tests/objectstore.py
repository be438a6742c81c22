"""An S3-compatible object store for the tests: moto's server mode (`moto[server]`) on loopback, the
credentials every process of a test reaches it with, and buckets."""

from __future__ import annotations

import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.loopback import free_port, process_group, wait_for

REGION = "us-east-1"


@dataclass(frozen=True)
class ObjectStore:
    endpoint: str

    @property
    def environment(self) -> dict[str, str]:
        """What every node of a cluster gets in its environment: the store's address and the
        credentials (the product reads neither from its config)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "reki-test-key",
            "AWS_SECRET_ACCESS_KEY": "reki-test-secret",
            "AWS_REGION": REGION,
        }

    def create_bucket(self, name: str) -> str:
        import boto3

        client = boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION, **self._credentials())
        client.create_bucket(Bucket=name)
        return name

    def _credentials(self) -> dict[str, str]:
        env = self.environment
        return {"aws_access_key_id": env["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"]}


@contextmanager
def moto_server(log: Path) -> Iterator[ObjectStore]:
    port = free_port()
    with process_group([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], log):
        endpoint = f"http://127.0.0.1:{port}"
        wait_for(lambda: urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).status == 200, "moto server", 60)
        yield ObjectStore(endpoint)
