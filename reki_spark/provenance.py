"""Which code and settings produced a result, recorded beside it (`metrics.json`, the training
checkpoints): results that span commits or settings can then be told apart, and a table's runs
checked to share one of each."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from reki_spark.config import RekiConfig

# Set where no git checkout is at hand: images and wheels built from a commit (infra/docker/*).
COMMIT_ENV = "REKI_COMMIT"
DIRTY = "+dirty"
RESULTS = "bench/results"  # what benchmarks write into the checkout
# Where a run reads and writes, how its processes run, and which runs a command selects: none of
# it changes one run's result (a record names its own model, knowledge and seed), and the same
# experiment run from two machines or two `--set training.seeds=...` commands keeps one hash.
NOT_HASHED = {
    "lake": None,
    "output": None,
    "storage": None,
    "spark": None,
    "ray": None,
    "tracking": None,
    "dataset": {"path", "download_url"},
    "knowledge": {"imported"},
    "training": {"models", "knowledge", "seeds", "distributor_local_mode"},
}


def config_hash(config: RekiConfig) -> str:
    """The first 16 hex digits of the sha256 of the resolved settings that decide a run's result
    (everything but `NOT_HASHED`), as sorted JSON."""
    settings: dict[str, Any] = config.model_dump(mode="json")
    for section, keys in NOT_HASHED.items():
        if keys is None:
            settings.pop(section, None)
        else:
            settings[section] = {k: v for k, v in settings[section].items() if k not in keys}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def run_provenance(config: RekiConfig) -> dict[str, str]:
    """What every training record carries: the code and the settings' hash."""
    return {"commit": code_version(), "config_hash": config_hash(config)}


def code_version() -> str:
    """`REKI_COMMIT` where set; else the commit of the git checkout this package runs from (see
    `checkout_version`); else `reki-spark <version>` (an installed wheel)."""
    if os.environ.get(COMMIT_ENV):
        return os.environ[COMMIT_ENV]
    try:
        return checkout_version(Path(__file__).resolve().parent.parent)
    except (OSError, subprocess.CalledProcessError):
        return _package_version()


def checkout_version(checkout: Path) -> str:
    """The checkout's commit, with `+dirty` when tracked files differ from it. Benchmark results
    do not count: a benchmark rewrites its tracked results after each seed, which would otherwise
    mark every later run of the same code dirty."""
    commit = _git(checkout, "rev-parse", "HEAD")
    changed = _git(checkout, "status", "--porcelain", "--untracked-files=no", "--", ".", f":(exclude){RESULTS}")
    return commit + (DIRTY if changed else "")


def _package_version() -> str:
    try:
        return f"reki-spark {metadata.version('reki-spark')}"
    except metadata.PackageNotFoundError:  # a source tree neither checked out nor installed
        return "unknown"


def _git(checkout: Path, *args: str) -> str:
    result = subprocess.run(["git", "-C", str(checkout), *args], capture_output=True, text=True, check=True, timeout=30)
    return result.stdout.strip()
