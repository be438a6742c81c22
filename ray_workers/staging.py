"""How rows travel between Spark and the Ray workers without passing through the driver.

Inputs: Spark writes the rows a Ray stage must process (the pending prompts, the texts to encode)
as Parquet parts into a run folder under `<lake>/_staging/`, and Ray Data reads those files on its
workers. Outputs: each worker writes every batch it produced as one Parquet part (written under a
hidden name, then renamed, so a reader never sees half a file) and hands the driver a one-row
summary; Spark merges the staged parts into the Delta table in large commits (by row count or by
time). A crash loses only what was not yet staged: the next run first merges the parts that a
dead run left behind, then asks only for what is still missing.

Every run folder carries a lease (`_owner.json`: host, pid and an expiry the live run keeps
pushing forward), so the store alone tells whether a run is alive: a folder whose lease expired
belongs to a dead run whichever host or pod it ran on (a restarted pod has a new name).

Folders whose names start with `_` are invisible to Delta and Spark readers of the lake."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs
from pyspark.sql import DataFrame

from ray_workers.delta_io import arrow_schema
from reki_spark import storage
from reki_spark.lake import SCHEMAS, Lake, absolute_root

STAGING = "_staging"
INPUTS = "inputs"
# Writing a part is I/O, not compute: a sliver of a CPU, so that it never waits for the actors'.
STAGING_CPUS = 0.1
OWNER_FILE = "_owner.json"  # "_": Spark and Delta readers skip it
PART_PREFIX = "part-"
# A live run renews its lease every third of this: a run silent for longer is dead.
LEASE_SECONDS = 90.0


def _filesystem(location: str) -> tuple[fs.FileSystem, str]:
    return storage.filesystem(location)


@dataclass
class RunFolder:
    """One run's staging folder: `<lake>/_staging/<table>/<run id>` for the parts bound for a
    table, `<lake>/_staging/inputs/<stage>/<run id>` for a stage's input rows."""

    root: str
    table: str
    run_id: str = field(default_factory=lambda: f"{int(time.time())}-{uuid.uuid4().hex[:8]}")

    @property
    def location(self) -> str:
        return f"{absolute_root(self.root)}/{STAGING}/{self.table}/{self.run_id}"

    def claim(self, seconds: float = LEASE_SECONDS) -> None:
        """Marks the folder as this live process's for a lease, so that a concurrent run leaves it
        alone; `renewed` keeps the lease alive while a run works."""
        filesystem, path = _filesystem(self.location)
        filesystem.create_dir(path, recursive=True)
        owner = {"host": socket.gethostname(), "pid": os.getpid(), "expires_at": time.time() + seconds}
        storage.write_text(f"{self.location}/{OWNER_FILE}", json.dumps(owner))

    def release(self) -> None:
        """Hands the folder over: its lease ends now, so the next Spark run merges its parts."""
        self.claim(seconds=0.0)

    @contextmanager
    def renewed(self) -> Iterator[None]:
        """The folder claimed, its lease renewed in the background until the block ends."""
        self.claim()
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(LEASE_SECONDS / 3):
                self.claim()

        renewer = threading.Thread(target=renew, name=f"lease-{self.run_id}", daemon=True)
        renewer.start()
        try:
            yield
        finally:
            stop.set()
            renewer.join()

    def parts(self) -> list[str]:
        """The complete parts staged so far, as locations Spark reads."""
        filesystem, path = _filesystem(self.location)
        found = filesystem.get_file_info(fs.FileSelector(path, allow_not_found=True))
        names = sorted(f.base_name for f in found if f.base_name.startswith(PART_PREFIX) and f.extension == "parquet")
        return [f"{self.location}/{name}" for name in names]

    def remove(self) -> None:
        filesystem, path = _filesystem(self.location)
        filesystem.delete_dir(path)  # with its contents


def write_part(frame: pd.DataFrame, location: str, schema: pa.Schema) -> None:
    """One Parquet part with exactly `schema`'s columns, visible only once complete."""
    filesystem, path = _filesystem(location)
    filesystem.create_dir(path, recursive=True)
    name = f"{PART_PREFIX}{uuid.uuid4().hex}.parquet"
    hidden = f"{path}/.{name}.partial"
    # A column the batch lacks is null (a non-nullable one makes this an error, not a silent gap).
    columns = [
        pa.array(frame[f.name], type=f.type, from_pandas=True) if f.name in frame else pa.nulls(len(frame), f.type)
        for f in schema
    ]
    table = pa.Table.from_arrays(columns, schema=schema)
    pq.write_table(table, hidden, filesystem=filesystem)
    filesystem.move(hidden, f"{path}/{name}")


def stage_batch(
    batch: pd.DataFrame,
    location: str,
    table: str,
    summarize: Callable[[pd.DataFrame], dict[str, Any]] | None,
    settings: storage.StorageSettings,
) -> pd.DataFrame:
    """The last stage of a Ray Data pipeline: writes the batch's `table` columns as one staged part
    and returns one small row for the driver: `rows` and `summarize(batch)`."""
    storage.use(settings)  # a Ray worker process: the driver's storage settings travel with the task
    write_part(batch, location, arrow_schema(table))
    return pd.DataFrame([{"rows": len(batch), **(summarize(batch) if summarize else {})}])


def staged_tallies(
    lake: Lake,
    dataset: Any,
    table: str,
    keys: list[str],
    commit: tuple[int, float],
    summarize: Callable[[pd.DataFrame], dict[str, Any]] | None = None,
) -> Iterator[dict[str, Any]]:
    """Runs `dataset` with every output batch staged for `table` by the workers and yields each
    batch's summary row; the staged parts are merged by `keys` every `commit` (rows, seconds),
    at the end, and when the run stops early."""
    outputs = RunFolder(lake.root, table)
    committer = Committer(lake, outputs, keys, *commit)
    with outputs.renewed():
        try:
            for tally in _staged(dataset, outputs, summarize).iter_rows():
                yield tally
                committer.staged(tally["rows"])
        finally:
            committer.commit()
    outputs.remove()


def handed_off_tallies(
    root: str, dataset: Any, table: str, summarize: Callable[[pd.DataFrame], dict[str, Any]] | None = None
) -> Iterator[dict[str, Any]]:
    """As `staged_tallies`, for a process without Spark (the LLM-worker image): nothing is merged
    here; the staged parts are handed over when the run ends, and whatever stopped it, so that the
    next Spark run of the stage merges them (as it merges a dead run's)."""
    outputs = RunFolder(root, table)
    try:
        with outputs.renewed():
            yield from _staged(dataset, outputs, summarize).iter_rows()
    finally:
        outputs.release()


class StagedRows:
    """A `ledger.RowSink` without Spark: each append is one part staged for its table and handed
    over at once, merged by the next Spark run (the ledger row of a worker-image run)."""

    def __init__(self, root: str) -> None:
        self.root = root

    def append_rows(self, table: str, rows: list[dict[str, Any]]) -> None:
        folder = RunFolder(self.root, table)
        with folder.renewed():
            write_part(pd.DataFrame(rows), folder.location, arrow_schema(table))
        folder.release()


def _staged(dataset: Any, outputs: RunFolder, summarize: Callable[[pd.DataFrame], dict[str, Any]] | None) -> Any:
    return dataset.map_batches(
        stage_batch,
        fn_kwargs={
            "location": outputs.location,
            "table": outputs.table,
            "summarize": summarize,
            "settings": storage.current(),
        },
        batch_size=None,
        num_cpus=STAGING_CPUS,
        batch_format="pandas",
    )


def read_input(folder: RunFolder, rows: int, batch_size: int) -> Any:
    """The Ray dataset of a stage's input, read by the workers, one block per `batch_size` rows
    so that every actor of a pool gets work. Only Parquet files: the folder also holds Spark's
    markers and the owner file."""
    import ray

    filesystem, path = _filesystem(folder.location)
    dataset = ray.data.read_parquet(path, filesystem=filesystem, file_extensions=["parquet"])
    return dataset.repartition(max(1, rows // batch_size))


def merge_parts(lake: Lake, table: str, keys: list[str], parts: list[str]) -> None:
    """Merges staged parts into `table` in one keyed commit (a part merged twice changes nothing)
    and deletes them."""
    if not parts:
        return
    lake.merge(lake.spark.read.schema(SCHEMAS[table]).parquet(*[storage.spark_uri(p) for p in parts]), table, keys)
    for part in parts:
        filesystem, path = _filesystem(part)
        filesystem.delete_file(path)


class Committer:
    """Merges a run's staged parts once `rows` rows or `seconds` seconds have gathered since the
    last commit, and at the end."""

    def __init__(self, lake: Lake, folder: RunFolder, keys: list[str], rows: int, seconds: float) -> None:
        self.lake, self.folder, self.keys = lake, folder, keys
        self.rows_limit, self.seconds_limit = rows, seconds
        self.waiting, self.since = 0, time.monotonic()

    def staged(self, rows: int) -> None:
        self.waiting += rows
        if self.waiting >= self.rows_limit or time.monotonic() - self.since >= self.seconds_limit:
            self.commit()

    def commit(self) -> None:
        merge_parts(self.lake, self.folder.table, self.keys, self.folder.parts())
        self.waiting, self.since = 0, time.monotonic()


def recover(lake: Lake, table: str, keys: list[str]) -> int:
    """Merges the parts that dead runs left staged for `table` and removes their folders; returns
    the rows recovered."""
    recovered = 0
    for folder in _dead_folders(lake.root, table):
        parts = folder.parts()
        recovered += sum(_rows_in(part) for part in parts)
        merge_parts(lake, table, keys, parts)
        folder.remove()
    return recovered


def handed_over_parts(root: str, table: str) -> list[str]:
    """The parts staged for `table` whose run is over (handed over or dead) and that no Spark run
    has merged yet: what a process without Spark reads beside the table."""
    return [part for folder in _dead_folders(root, table) for part in folder.parts()]


def _rows_in(part: str) -> int:
    """A staged part's row count, from its Parquet footer."""
    filesystem, path = _filesystem(part)
    return pq.read_metadata(path, filesystem=filesystem).num_rows


@contextmanager
def staged_input(frame: DataFrame, root: str, stage: str) -> Iterator[tuple[RunFolder, int]]:
    """Spark writes the rows a Ray stage will read into a fresh input folder of `stage` (after
    removing the folders that dead runs of it left); yields the folder and how many rows it holds,
    and removes it afterwards, whatever happened."""
    for folder in _dead_folders(root, f"{INPUTS}/{stage}"):
        folder.remove()
    with input_folder(root, stage) as folder:
        frame.write.mode("append").parquet(storage.spark_uri(folder.location))
        yield folder, frame.sparkSession.read.parquet(storage.spark_uri(folder.location)).count()


@contextmanager
def input_folder(root: str, stage: str) -> Iterator[RunFolder]:
    """A new input folder of `stage` under `<root>/_staging/inputs/`, its lease renewed while the
    block runs, removed afterwards whatever happened."""
    folder = RunFolder(root, f"{INPUTS}/{stage}")
    try:
        with folder.renewed():
            yield folder
    finally:
        folder.remove()


def _dead_folders(root: str, name: str) -> list[RunFolder]:
    """The run folders under `_staging/<name>` whose owner is not running: none claimed it, its
    lease expired, or it ran on this host and its process is gone."""
    filesystem, path = _filesystem(f"{absolute_root(root)}/{STAGING}/{name}")
    found = filesystem.get_file_info(fs.FileSelector(path, allow_not_found=True))
    return [
        RunFolder(root, name, info.base_name)
        for info in found
        if info.type == fs.FileType.Directory and not _alive(filesystem, info.path)
    ]


def _alive(filesystem: fs.FileSystem, folder: str) -> bool:
    try:
        with filesystem.open_input_stream(f"{folder}/{OWNER_FILE}") as stream:
            owner = json.loads(stream.read())
    except (FileNotFoundError, json.JSONDecodeError):
        return False  # never claimed, or the claim was cut short: no live owner
    if owner.get("expires_at", 0.0) < time.time():
        return False  # not renewed in time: its run is gone, wherever it ran
    if owner["host"] != socket.gethostname():
        return True  # another host's run within its lease
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
