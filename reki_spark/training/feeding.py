"""Petastorm feeding: the train split materialised once by `make_spark_converter`, and a picklable
loader factory that opens a fresh loader per epoch on a rank's shard and shapes its batches for
the models."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch

from reki_spark import console, storage
from reki_spark.models.base import CTR_FIELDS, ITEM_KNOWLEDGE, SEQUENCE_KNOWLEDGE, USER_KNOWLEDGE
from reki_spark.training import petastorm_fs  # noqa: F401  (registers s3a:// for Petastorm)
from reki_spark.training.data import KEYED_BY_ENTITY, USER_VIEWS


def _column(columns: Mapping[str, Any], name: str) -> torch.Tensor:
    return torch.as_tensor(np.asarray(columns[name])).long()


def _stacked(columns: Mapping[str, Any], names: list[str]) -> torch.Tensor:
    return torch.stack([_column(columns, name) for name in names], dim=-1)


def _user_rows(columns: Mapping[str, Any], keyed_by: str, user_field: str) -> torch.Tensor:
    """(batch, views): the user's knowledge rows, per view (clusters) or its own index (entities)."""
    if keyed_by == KEYED_BY_ENTITY:
        return _column(columns, user_field).unsqueeze(1)
    return _stacked(columns, [f"kuser{v}" for v in range(len(USER_VIEWS))])


def ctr_batch(
    columns: Mapping[str, Any], history_length: int, slots: int, keyed_by: str | None = None
) -> dict[str, torch.Tensor]:
    """The model's CTR batch from the view's scalar columns (a Petastorm batch or a pandas frame):
    single-valued fields (batch,), `item_category` (batch, slots), `history` and `history_ratings`
    (batch, length), `history_categories` (batch, length, slots), `label`, and with knowledge the
    example's knowledge rows (`keyed_by` clusters: the view's kitem and kuser{v}; entities: the
    user's and item's own indices)."""

    batch = {name: _column(columns, name) for name in CTR_FIELDS if name != "item_category"}
    batch["item_category"] = _stacked(columns, [f"cat{j}" for j in range(slots)])
    batch["history"] = _stacked(columns, [f"hist{i}" for i in range(history_length)])
    batch["history_ratings"] = _stacked(columns, [f"hrat{i}" for i in range(history_length)])
    categories = _stacked(columns, [f"hcat{i}_{j}" for i in range(history_length) for j in range(slots)])
    batch["history_categories"] = categories.reshape(len(categories), history_length, slots)
    batch["label"] = torch.as_tensor(np.asarray(columns["label"])).float()
    if keyed_by is not None:
        batch[USER_KNOWLEDGE] = _user_rows(columns, keyed_by, "user_id")
        batch[ITEM_KNOWLEDGE] = batch["item_id"] if keyed_by == KEYED_BY_ENTITY else _column(columns, "kitem")
    return batch


def sequence_batch(
    columns: Mapping[str, Any], width: int, prefix: str, keyed_by: str | None
) -> dict[str, torch.Tensor]:
    """The model's sequential batch from scalar columns: `user`, `sequence` (prefix0..prefix{width-1}:
    `seq` for training windows, `in` for evaluation rows) and with knowledge each position's item
    knowledge row and the user's rows (clusters: the view's k{prefix}{i} and kuser{v}; entities:
    the items' and the user's own indices)."""
    batch = {"user": _column(columns, "user"), "sequence": _stacked(columns, [f"{prefix}{i}" for i in range(width)])}
    if keyed_by is not None:
        batch[USER_KNOWLEDGE] = _user_rows(columns, keyed_by, "user")
        batch[SEQUENCE_KNOWLEDGE] = (
            batch["sequence"]
            if keyed_by == KEYED_BY_ENTITY
            else _stacked(columns, [f"k{prefix}{i}" for i in range(width)])
        )
    return batch


@dataclass
class PetastormBatches:
    converter: Any  # petastorm SparkDatasetConverter (picklable, points at the materialised parquet)
    batch_size: int
    task: str
    width: int  # CTR: history length; sequential: sequence length + 1
    seed: int
    # Rows pass through a shuffling buffer of this size, so every epoch sees its rows in a new
    # order (row groups alone would keep the order within each group).
    shuffle_buffer: int = 0
    # Sequential rows are regrouped by length across this many batches (see `by_length`).
    bucket_batches: int = 16
    category_slots: int = 1  # CTR: category codes per item
    keyed_by: str | None = None  # what the rows' knowledge columns index (training.data.keyed_by)

    @contextlib.contextmanager
    def __call__(self, epoch: int, rank: int, world: int) -> Iterator[Iterator[dict[str, torch.Tensor]]]:
        console.quiet_petastorm()  # here too: TorchDistributor ranks are fresh processes
        from petastorm.pytorch import BatchedDataLoader

        with self.converter.make_torch_dataloader(
            batch_size=self.batch_size,
            num_epochs=1,
            cur_shard=rank,
            shard_count=world,
            shuffle_row_groups=True,
            seed=self.seed + epoch,
            workers_count=1,
            shuffling_queue_capacity=self.shuffle_buffer,
            # Shuffles and batches whole column tensors; the default DataLoader unrolls every row into
            # Python objects: fed by it, a DIN step on the 1e7 rows took 2.3x as long and the rank
            # held 1.1 GB more.
            data_loader_fn=BatchedDataLoader,
        ) as loader:
            batches = (self.model_batch(batch) for batch in loader)
            if self.task == "sequential":
                batches = by_length(batches, self.bucket_batches, torch.Generator().manual_seed(self.seed + epoch))
            yield batches

    def model_batch(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.task == "ctr":
            return ctr_batch(batch, self.width, self.category_slots, self.keyed_by)
        return sequence_batch(batch, self.width, "seq", self.keyed_by)


def by_length(
    batches: Iterator[dict[str, torch.Tensor]], group: int, generator: torch.Generator
) -> Iterator[dict[str, torch.Tensor]]:
    """Length bucketing: `group` consecutive (already shuffled) batches are pooled, sorted by
    sequence length, cut back into batches of the same size and yielded in random order. A batch
    then costs about its rows' own length once the model trims shared padding, instead of the
    longest window; every row is still seen exactly once."""
    pending: list[dict[str, torch.Tensor]] = []
    for batch in batches:
        pending.append(batch)
        if len(pending) == group:
            yield from _regrouped(pending, generator)
            pending = []
    if pending:
        yield from _regrouped(pending, generator)


def _regrouped(batches: list[dict[str, torch.Tensor]], generator: torch.Generator) -> Iterator[dict[str, torch.Tensor]]:
    size = len(batches[0]["sequence"])
    pooled = {name: torch.cat([b[name] for b in batches]) for name in batches[0]}
    order = (pooled["sequence"] > 0).sum(1).argsort(stable=True)
    pieces = [order[i : i + size] for i in range(0, len(order), size)]
    for piece in torch.randperm(len(pieces), generator=generator).tolist():
        yield {name: column[pieces[piece]] for name, column in pooled.items()}


@dataclass
class SplitFiles:
    """The valid and test rows of a task as Parquet part files written by Spark's executors (any
    location the storage layer reaches). Each evaluating rank reads the files of its shard (file i
    goes to rank i mod world) batch by batch, so neither the driver nor any rank holds a split."""

    files: dict[str, list[str]]  # split -> part files, in a fixed order
    batch_size: int

    def batches(self, split: str, rank: int = 0, world: int = 1) -> Iterator[tuple[tuple[int, int], pd.DataFrame]]:
        """(file number, batch number) and the rows of each batch of this rank's shard: the key
        names a batch whatever the number of ranks, so per-batch random draws can be seeded by it."""
        for number, uri in enumerate(self.files[split]):
            if number % world != rank:
                continue
            filesystem, path = storage.filesystem(uri)
            with filesystem.open_input_file(path) as handle:
                for index, batch in enumerate(pq.ParquetFile(handle).iter_batches(self.batch_size)):
                    # One batch (batch_size rows) of this rank's shard, in the rank, never the driver.
                    yield (number, index), batch.to_pandas()
