"""Results name the code that produced them."""

from __future__ import annotations

import subprocess

from reki_spark.config import load_config
from reki_spark.provenance import COMMIT_ENV, DIRTY, checkout_version, code_version, config_hash


def test_the_checkout_commit_marked_dirty_when_code_differs_but_not_for_benchmark_results(tmp_path):
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(tmp_path), *args], capture_output=True, text=True, check=True).stdout

    git("init", "-q")
    for path in ("reki_spark/a.py", "bench/results/table.json"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    head = git("rev-parse", "HEAD").strip()
    (tmp_path / "bench/results/table.json").write_text("2\n")  # a benchmark wrote its results
    (tmp_path / "notes.txt").write_text("untracked\n")
    assert checkout_version(tmp_path) == head
    (tmp_path / "reki_spark/a.py").write_text("2\n")
    assert checkout_version(tmp_path) == head + DIRTY


def test_an_image_names_its_commit(monkeypatch):
    monkeypatch.setenv(COMMIT_ENV, "0123abc")
    assert code_version() == "0123abc"


def test_the_config_hash_follows_what_decides_a_result_not_where_it_runs():
    base = config_hash(load_config(None, []))
    elsewhere = ["lake=s3a://b/lake", "output=/x/run", "training.seeds=[7]", "spark.shuffle_partitions=64"]
    assert config_hash(load_config(None, elsewhere)) == base
    for changed in ("training.learning_rate=0.5", "features.order=kar", "seed=1", "encoder.model=other"):
        assert config_hash(load_config(None, [changed])) != base, changed
