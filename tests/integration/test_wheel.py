"""Deploy as users deploy: the built wheel, installed without the source tree, runs a real stage."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SHIPPED = [
    "reki_spark/data/ingest.py",
    "reki_spark/data/tables.py",
    "reki_spark/training/loop.py",
    "reki_spark/models/sasrec.py",
    "reki_spark/log4j2-quiet.properties",
    "ray_workers/extract.py",
]


def _run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


def test_the_built_wheel_runs_a_stage_outside_the_checkout(built_wheel, tmp_path):
    wheel = built_wheel
    names = set(zipfile.ZipFile(wheel).namelist())
    assert not [name for name in SHIPPED if name not in names]
    assert not [name for name in names if name.startswith("tests/")]

    site = tmp_path / "site"
    pip_install = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "--target", str(site)]
    _run([*pip_install, str(wheel)], tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # The wheel first on the path; the environment supplies only the dependencies. No activated
    # venv and no PYSPARK_PYTHON: the Spark workers must still get this interpreter.
    unset = {"PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "VIRTUAL_ENV"}
    env = {key: value for key, value in os.environ.items() if key not in unset}
    env.update(PYTHONPATH=str(site), PATH="/usr/local/bin:/usr/bin:/bin")
    located = _run([sys.executable, "-c", "import reki_spark, ray_workers; print(reki_spark.__file__)"], elsewhere, env)
    assert located.strip().startswith(str(site))
    reki = str(site / "bin" / "reki")
    assert "ingest" in _run([reki, "--help"], elsewhere, env)
    sample = ["dataset.sample.users=40", "dataset.sample.items=30", "dataset.sample.interactions=400"]
    overrides = [part for value in [f"lake={tmp_path / 'lake'}", *sample] for part in ("--set", value)]
    printed = _run([reki, "ingest", *overrides], elsewhere, env)
    read, clean = re.search(r"interactions: read ([\d,]+) = clean ([\d,]+)", printed).groups()
    assert read == clean and 0 < int(read) <= 400  # 400 draws, each (user, item) pair kept once
    assert (tmp_path / "lake" / "interactions" / "_delta_log").is_dir()
