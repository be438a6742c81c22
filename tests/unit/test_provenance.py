"""Results name the code that produced them."""

from __future__ import annotations

import subprocess

from reki_spark.config import load_config
from reki_spark.provenance import COMMIT_ENV, DIRTY, code_version, config_hash
from tests.paths import REPO


def test_the_checkout_commit_marked_dirty_when_tracked_files_differ(monkeypatch):
    monkeypatch.delenv(COMMIT_ENV, raising=False)
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    changed = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
    ).stdout.strip()
    assert code_version() == head + (DIRTY if changed else "")


def test_an_image_names_its_commit(monkeypatch):
    monkeypatch.setenv(COMMIT_ENV, "0123abc")
    assert code_version() == "0123abc"


def test_the_config_hash_follows_what_decides_a_result_not_where_it_runs():
    base = config_hash(load_config(None, []))
    elsewhere = ["lake=s3a://b/lake", "output=/x/run", "training.seeds=[7]", "spark.shuffle_partitions=64"]
    assert config_hash(load_config(None, elsewhere)) == base
    for changed in ("training.learning_rate=0.5", "features.order=kar", "seed=1", "encoder.model=other"):
        assert config_hash(load_config(None, [changed])) != base, changed
