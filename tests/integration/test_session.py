"""The session factory under spark-submit keeps the cluster's settings and adds Delta."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.paths import REPO

pytestmark = pytest.mark.integration

PROBE = """
import sys
from reki_spark.config import load_config
from reki_spark.session import get_spark
spark = get_spark(load_config(None, ["spark.shuffle_partitions=11", "spark.master=local[2]"]))
print("partitions", spark.conf.get("spark.sql.shuffle.partitions"))
print("master", spark.sparkContext.master)
print("extensions", spark.conf.get("spark.sql.extensions"))
spark.range(3).write.format("delta").save(sys.argv[1])
print("delta rows", spark.read.format("delta").load(sys.argv[1]).count())
"""


def test_spark_submit_settings_win_and_delta_works(tmp_path: Path):
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    spark_submit = Path(sys.executable).parent / "spark-submit"
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [
            str(spark_submit),
            "--master",
            "local[1]",
            "--conf",
            "spark.sql.shuffle.partitions=3",
            str(probe),
            str(tmp_path / "table"),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert "partitions 3" in lines
    assert "master local[1]" in lines
    assert "extensions io.delta.sql.DeltaSparkSessionExtension" in lines
    assert "delta rows 3" in lines
