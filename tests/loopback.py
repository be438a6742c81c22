"""Loopback clusters for the integration tests: free ports, background process groups torn down
with everything they started, and polling."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cluster_environment() -> dict[str, str]:
    """This interpreter's tools first on PATH, and Spark and Ray bound to loopback."""
    return {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "HF_HUB_OFFLINE": "1",
    }


@contextmanager
def process_group(args: list[str], log: Path, env: dict | None = None) -> Iterator[subprocess.Popen]:
    """A background process in its own group, killed with everything it started on exit."""
    with log.open("w") as out:
        process = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, env=env or cluster_environment(), start_new_session=True
        )
        try:
            yield process
        finally:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    process.wait(timeout=20)
                    break
                except subprocess.TimeoutExpired:
                    continue


def wait_for(predicate, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(1)
    raise TimeoutError(f"timed out waiting for {what}")


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def in_private_view(args: list[str], hidden: list[Path], make: list[Path] | None = None) -> list[str]:
    """`args` run as a separate machine would: in a mount namespace of their own where each folder
    of `hidden` is an empty private tmpfs (what the process writes there nobody else sees, and it
    sees nothing of what others wrote), with the folders of `make` created inside."""
    mounts = [f"mount -t tmpfs -o size=4g reki-private {shlex.quote(str(folder))}" for folder in hidden]
    mounts += [f"mkdir -p {shlex.quote(str(folder))}" for folder in make or []]
    script = " && ".join([*mounts, 'exec "$@"'])
    return ["unshare", "--mount", "--propagation", "private", "bash", "-c", script, "private-view", *args]


def private_files(pid: int, folder: Path) -> list[Path]:
    """The files under `folder` as the process `pid` sees them (its own mount namespace)."""
    view = Path(f"/proc/{pid}/root") / folder.relative_to("/")
    return sorted(path for path in view.rglob("*") if path.is_file())
