"""Petastorm feeding: the train split materialised once by `make_spark_converter`, and a picklable
loader factory that opens a fresh loader per epoch on a rank's shard and shapes its batches for
the models."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from reki_spark.training.data import CTR_FIELDS


@dataclass
class PetastormBatches:
    converter: Any  # petastorm SparkDatasetConverter (picklable, points at the materialised parquet)
    batch_size: int
    task: str
    width: int  # CTR: history length; sequential: sequence length + 1
    seed: int

    @contextlib.contextmanager
    def __call__(self, epoch: int, rank: int, world: int) -> Iterator[Iterator[dict[str, torch.Tensor]]]:
        with self.converter.make_torch_dataloader(
            batch_size=self.batch_size,
            num_epochs=1,
            cur_shard=rank,
            shard_count=world,
            shuffle_row_groups=True,
            seed=self.seed + epoch,
            workers_count=1,
        ) as loader:
            yield (self.model_batch(batch) for batch in loader)

    def model_batch(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.task == "ctr":
            shaped = {name: batch[name].long() for name in CTR_FIELDS}
            shaped["history"] = torch.stack([batch[f"hist{i}"].long() for i in range(self.width)], dim=1)
            shaped["label"] = batch["label"].float()
            return shaped
        return {
            "user": batch["user"].long(),
            "sequence": torch.stack([batch[f"seq{i}"].long() for i in range(self.width)], dim=1),
        }
