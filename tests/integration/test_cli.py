"""The `reki` command: stage subcommands, `tables`, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from reki_spark.cli import main
from tests.paths import FIXTURES, REPO

pytestmark = pytest.mark.integration


def test_ingest_then_tables_json(spark, tmp_path, capsys):
    args = [
        "--config",
        str(REPO / "jobs/configs/movielens-100k.yaml"),
        "--set",
        f"dataset.path={FIXTURES / 'ml100k_raw'}",
        "--set",
        f"lake={tmp_path / 'lake'}",
    ]
    assert main(["ingest", *args]) == 0
    assert "interactions: read 24 = clean 16 + quarantined 7 + duplicates 1" in capsys.readouterr().out
    assert main(["tables", "--json", *args]) == 0
    tables = {t["name"]: t for t in json.loads(capsys.readouterr().out)}
    assert set(tables) == {"users", "items", "interactions", "quarantine", "ledger"}
    assert tables["interactions"]["rows"] == 16
    assert tables["interactions"]["version"] == 0
    assert tables["interactions"]["last_operation"] == "WRITE"


def test_config_error_is_one_line_and_exit_2():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "reki_spark.cli",
            "ingest",
            "--config",
            str(REPO / "jobs/configs/sample.yaml"),
            "--set",
            "dataset.sampel.users=3",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "reki: error: config error at dataset.sampel: unknown key"
