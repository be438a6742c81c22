"""An S3-compatible object store for the tests: moto's server mode (`moto[server]`) on loopback, the
credentials every process of a test reaches it with, and buckets."""

from __future__ import annotations

import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.loopback import cluster_environment, free_port, process_group, wait_for

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
def moto_server(log: Path, checks_credentials: bool = False) -> Iterator[ObjectStore]:
    """`checks_credentials`: the server verifies every request's key against its IAM users, of
    which it has none, so it refuses any key (as a real store refuses a wrong one)."""
    port = free_port()
    environment = cluster_environment() | ({"INITIAL_NO_AUTH_ACTION_COUNT": "0"} if checks_credentials else {})
    server = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with process_group(server, log, env=environment):
        endpoint = f"http://127.0.0.1:{port}"
        wait_for(lambda: urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).status == 200, "moto server", 60)
        yield ObjectStore(endpoint)
