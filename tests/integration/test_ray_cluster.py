"""A real Ray cluster on loopback: a head node (with its dashboard's job server) running
`ray job submit jobs/extract.py`. Torn down also when the test fails."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from ray_workers.delta_io import RsLake
from reki_spark.lake import KNOWLEDGE, PROMPTS
from tests.conftest import tiny_config
from tests.loopback import BIN, cluster_environment, free_port, get_json, process_group, wait_for
from tests.paths import REPO

pytestmark = [pytest.mark.integration, pytest.mark.cluster]
# The dashboard answers before its job agent has registered; Ray says to try again later.
AGENT_NOT_READY = "No available agent to submit job"


def _submit(command: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    deadline, environment = time.monotonic() + timeout, cluster_environment()
    while True:
        result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=environment, cwd=REPO)
        if AGENT_NOT_READY not in result.stderr or time.monotonic() > deadline:
            return result
        time.sleep(2)


def test_ray_job_submit_extraction_on_a_head_node(prompts_lake, tmp_path):
    lake = tmp_path / "lake"
    shutil.copytree(prompts_lake, lake)
    port, dashboard = free_port(), free_port()
    head = [
        str(BIN / "ray"),
        "start",
        "--head",
        "--block",
        "--node-ip-address",
        "127.0.0.1",
        "--port",
        str(port),
        "--dashboard-host",
        "127.0.0.1",
        "--dashboard-port",
        str(dashboard),
        # Its default (52365) is taken whenever another Ray runs on the host, e.g. the other test
        # process's local Ray; the job server then never gets an agent.
        "--dashboard-agent-listen-port",
        str(free_port()),
        "--num-cpus",
        "2",
        "--include-dashboard",
        "true",
        "--disable-usage-stats",
    ]
    address = f"http://127.0.0.1:{dashboard}"
    config = tiny_config(lake, "llm.max_prompts=3")
    overrides = [
        f"{key}={value}"
        for key, value in (
            ("lake", lake),
            ("llm.max_prompts", 3),
            ("llm.max_tokens", 24),
            ("llm.min_chars", 10),
            ("llm.batch_size", 1),
            ("llm.commit_rows", 1),
        )
    ]
    with process_group(head, tmp_path / "ray-head.log"):
        wait_for(lambda: get_json(f"{address}/api/version") is not None, "the Ray dashboard", timeout=180)
        sets = [arg for override in overrides for arg in ("--set", override)]
        submit = [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(REPO)]
        result = _submit([*submit, "--", "python", "jobs/extract.py", *sets])
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        assert "succeeded" in (result.stdout + result.stderr).lower()  # the job ended SUCCEEDED
    knowledge = RsLake(str(lake)).read(KNOWLEDGE).to_pandas()
    assert len(knowledge) == knowledge["prompt_id"].nunique() == config.llm.max_prompts
    assert set(knowledge["prompt_id"]) <= set(RsLake(str(lake)).read(PROMPTS, ["prompt_id"]).to_pandas()["prompt_id"])
