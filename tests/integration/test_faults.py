"""Fault injection with the real components: nothing lost, nothing duplicated. (The other faults
live beside the features they break: a killed actor and empty answers in test_knowledge.py,
injected titles there and in tests/unit/test_templates.py, a killed training in test_training.py.)"""

from __future__ import annotations

import gzip
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from ray_workers.delta_io import RsLake, arrow_schema
from ray_workers.extract import extract
from ray_workers.staging import OWNER_FILE, RunFolder, recover, write_part
from reki_spark.data.ingest import ingest
from reki_spark.lake import INTERACTIONS, KNOWLEDGE, PROMPTS, QUARANTINE, Lake
from tests.conftest import TINY, tiny_config
from tests.paths import REPO

pytestmark = pytest.mark.integration


def _extract_process(lake: Path, log: Path, *extra: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "reki_spark.cli", "extract", "--set", f"lake={lake}"]
    for override in [*TINY, "llm.commit_rows=1", *extra]:
        args += ["--set", override]
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        args, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=REPO, env=env, start_new_session=True
    )


def _answers(lake: Path) -> list[str]:
    reader = RsLake(str(lake))
    return reader.read(KNOWLEDGE, ["prompt_id"])["prompt_id"].to_pylist() if reader.exists(KNOWLEDGE) else []


def test_killed_extraction_driver_resumes_with_nothing_lost_or_repeated(spark, ray_local, prompts_lake, tmp_path):
    lake = tmp_path / "lake"
    shutil.copytree(prompts_lake, lake)
    total = RsLake(str(lake)).read(PROMPTS).num_rows
    driver = _extract_process(lake, tmp_path / "driver.log")
    deadline = time.monotonic() + 300
    # Killed at the first merged answer: merges batch whatever was staged meanwhile, so on a loaded
    # machine the count jumped from under half to all 8 between two polls (a run that had ended).
    while not _answers(lake) and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.3)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver, its Ray and its Spark die at once
    driver.wait(timeout=60)
    before = _answers(lake)
    assert 1 <= len(before) < total, (tmp_path / "driver.log").read_text()[-2000:]
    # Answers the workers had staged when the driver died are merged by the rerun, not asked again.
    parts = (lake / "_staging" / KNOWLEDGE).glob("*/part-*.parquet")
    staged = {key for part in parts for key in pq.read_table(part, columns=["prompt_id"])["prompt_id"].to_pylist()}
    rerun = extract(tiny_config(lake))
    assert rerun.pending == total - len(set(before) | staged)  # only the missing prompts are asked
    after = _answers(lake)
    assert len(after) == len(set(after)) == total
    assert set(before) <= set(after)


def _staged_answers(root: Path, owner_pid: int, prompts: list[str], **claim: object) -> RunFolder:
    folder = RunFolder(str(root), KNOWLEDGE)
    folder.claim()
    owner = Path(folder.location) / OWNER_FILE
    owner.write_text(json.dumps({**json.loads(owner.read_text()), "pid": owner_pid, **claim}))
    rows = pd.DataFrame({"prompt_id": prompts, "model_id": "m", "text": "staged", "status": "ok"})
    write_part(rows, folder.location, arrow_schema(KNOWLEDGE))
    return folder


def test_answers_a_dead_run_staged_are_merged_and_a_live_runs_are_left_alone(spark, tmp_path):
    lake = Lake(spark, str(tmp_path / "lake"))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _staged_answers(tmp_path / "lake", dead.pid, ["p1", "p2"])
    live = _staged_answers(tmp_path / "lake", os.getpid(), ["p3"])
    assert recover(lake, KNOWLEDGE, ["prompt_id", "model_id"]) == 2
    merged = lake.read(KNOWLEDGE).select("prompt_id", "text").collect()
    assert sorted((r["prompt_id"], r["text"]) for r in merged) == [("p1", "staged"), ("p2", "staged")]
    assert [Path(p).name for p in live.parts()] and len(
        list((tmp_path / "lake" / "_staging" / KNOWLEDGE).iterdir())
    ) == 1
    # A part staged again (a crash between its merge and its deletion): still one row per key.
    _staged_answers(tmp_path / "lake", dead.pid, ["p1"])
    assert recover(lake, KNOWLEDGE, ["prompt_id", "model_id"]) == 1
    assert lake.read(KNOWLEDGE).count() == 2


def test_two_concurrent_extractions_leave_one_row_per_prompt(prompts_lake, tmp_path):
    lake = tmp_path / "lake"
    shutil.copytree(prompts_lake, lake)
    total = RsLake(str(lake)).read(PROMPTS).num_rows
    runs = [_extract_process(lake, tmp_path / f"run{i}.log") for i in range(2)]
    codes = [run.wait(timeout=600) for run in runs]
    assert codes == [0, 0], [(tmp_path / f"run{i}.log").read_text()[-2000:] for i in range(2)]
    answers = _answers(lake)
    assert len(answers) == len(set(answers)) == total


def _review(user: str, item: str, rating: float, ts: int) -> str:
    return json.dumps(
        {
            "reviewerID": user,
            "asin": item,
            "overall": rating,
            "unixReviewTime": ts,
            "reviewText": "Fine.",
            "summary": "ok",
        }
    )


def test_five_percent_corrupt_input_is_all_quarantined_with_reasons(spark, make_config, tmp_path):
    rng = random.Random(11)
    items = [f"B{n:04d}" for n in range(40)]
    meta = [
        repr({"asin": item, "title": f"Product {item}", "brand": "Acme", "categories": [["Beauty"]]}) for item in items
    ]
    lines = [_review(f"U{n % 60}", rng.choice(items), float(rng.randint(1, 5)), 1_400_000_000 + n) for n in range(600)]
    corruptions = [
        lambda line: line[: len(line) // 2],  # truncated JSON
        lambda line: line.replace('"overall": ', '"overall": "five", "x": '),  # wrong type
        lambda line: line.replace('"unixReviewTime": ', '"unixReviewTime": "soon", "y": '),
        lambda line: line.replace('"asin": "B', '"asin": "Z'),  # unknown item
        lambda line: re.sub(r'"reviewerID": "U\d+"', '"reviewerID": ""', line),  # missing user id
    ]
    chosen = rng.sample(range(len(lines)), 30)  # 5%
    raw = [line.encode() for line in lines]
    for n, index in enumerate(chosen):
        if n % 6 == 5:
            raw[index] = raw[index].replace(b"Fine.", b"Fine\xff\xfe.")  # bytes that are not UTF-8
        else:
            raw[index] = corruptions[n % 5](lines[index]).encode()
    folder = tmp_path / "amazon"
    folder.mkdir()
    with gzip.open(folder / "reviews_Beauty_5.json.gz", "wb") as out:
        out.write(b"\n".join(raw) + b"\n")
    (folder / "meta_Beauty.json").write_text("\n".join(meta) + "\n")
    config = make_config("dataset.name=amazon-2014", "dataset.category=Beauty", f"dataset.path={folder}")
    counts = ingest(spark, config)[INTERACTIONS]
    lake = Lake(spark, config.lake)
    quarantined = lake.read(QUARANTINE).where(F.col("target") == INTERACTIONS)
    assert sorted(r["line"] for r in quarantined.collect()) == sorted(i + 1 for i in chosen)
    assert quarantined.where(F.col("reason").isNull() | (F.col("reason") == "")).count() == 0
    reasons = {r["reason"].split(":")[0] for r in quarantined.collect()}
    assert {
        "not a valid JSON object",
        "rating is not a number",
        "timestamp is not an integer",
        "bytes not valid UTF-8",
        "missing user_id",
    } <= reasons
    assert any(reason.startswith("unknown item_id") for reason in reasons)
    assert counts.read == 600 == counts.clean + counts.quarantined + counts.duplicates
    assert lake.read(INTERACTIONS).count() == counts.clean


def test_another_hosts_run_is_recovered_once_its_lease_expires(spark, tmp_path):
    """A pod restarted elsewhere has a new host name: its old run's claim is judged by the lease in
    the store alone, never by a host this process cannot see."""
    lake = Lake(spark, str(tmp_path / "lake"))
    _staged_answers(tmp_path / "lake", 1, ["p1"], host="gone-pod-7f9c", expires_at=time.time() - 1)
    live = _staged_answers(tmp_path / "lake", 1, ["p2"], host="busy-pod-1a2b", expires_at=time.time() + 600)
    assert recover(lake, KNOWLEDGE, ["prompt_id", "model_id"]) == 1
    assert [r["prompt_id"] for r in lake.read(KNOWLEDGE).select("prompt_id").collect()] == ["p1"]
    assert live.parts()  # within its lease: left for its own run
