"""Which code produced a result, recorded beside it (`metrics.json`, the training checkpoints):
results that span commits can then be told apart, and a table's runs checked to share one."""

from __future__ import annotations

import os
import subprocess
from importlib import metadata
from pathlib import Path

# Set where no git checkout is at hand: images and wheels built from a commit (infra/docker/*).
COMMIT_ENV = "REKI_COMMIT"
DIRTY = "+dirty"


def code_version() -> str:
    """`REKI_COMMIT` where set; else the commit of the git checkout this package runs from, with
    `+dirty` when tracked files differ from it; else `reki-spark <version>` (an installed wheel)."""
    if os.environ.get(COMMIT_ENV):
        return os.environ[COMMIT_ENV]
    checkout = Path(__file__).resolve().parent.parent
    try:
        commit = _git(checkout, "rev-parse", "HEAD")
        changed = _git(checkout, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return _package_version()
    return commit + (DIRTY if changed else "")


def _package_version() -> str:
    try:
        return f"reki-spark {metadata.version('reki-spark')}"
    except metadata.PackageNotFoundError:  # a source tree neither checked out nor installed
        return "unknown"


def _git(checkout: Path, *args: str) -> str:
    result = subprocess.run(["git", "-C", str(checkout), *args], capture_output=True, text=True, check=True, timeout=30)
    return result.stdout.strip()
