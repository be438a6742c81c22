"""The run's optimizers: AdamW for dense parameters, SparseAdam for sparse id tables, stepped and
checkpointed together (training/optim.py)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from reki_spark.training.optim import RunOptimizer


class _Tables(nn.Module):
    def __init__(self, sparse: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.ids = nn.Embedding(50, 4, sparse=sparse)
        self.head = nn.Linear(4, 1)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.head(self.ids(codes)).sum()


def _step(model: nn.Module, optimizer: RunOptimizer, codes: list[int]) -> None:
    optimizer.zero_grad()
    model(torch.tensor(codes)).backward()
    optimizer.step()


def test_sparse_tables_get_sparse_adam_and_only_the_looked_up_rows_move():
    model = _Tables(sparse=True)
    optimizer = RunOptimizer(model, 1e-2, 1e-4, total_steps=10)
    assert [type(o).__name__ for o in optimizer.optimizers] == ["AdamW", "SparseAdam"]
    before = model.ids.weight.detach().clone()
    _step(model, optimizer, [3, 7])
    moved = (model.ids.weight.detach() != before).any(dim=1).nonzero().flatten().tolist()
    assert moved == [3, 7]  # no weight decay, no moment, on the rows the batch did not use


def test_a_resumed_run_continues_exactly_as_an_uninterrupted_one():
    model = _Tables(sparse=True)
    optimizer = RunOptimizer(model, 1e-2, 1e-4, total_steps=10)
    _step(model, optimizer, [1, 2])
    saved = {"model": copy.deepcopy(model.state_dict()), **copy.deepcopy(optimizer.state_dict())}
    _step(model, optimizer, [2, 5])

    resumed = _Tables(sparse=True)
    resumed.load_state_dict(saved["model"])
    again = RunOptimizer(resumed, 1e-2, 1e-4, total_steps=10)
    again.load_state_dict(saved)
    _step(resumed, again, [2, 5])
    for name, value in model.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name
    assert again.schedulers[1].last_epoch == optimizer.schedulers[1].last_epoch == 2


def test_checkpoints_of_one_adamw_load_and_a_changed_layout_is_refused():
    dense = _Tables(sparse=False)
    optimizer = RunOptimizer(dense, 1e-2, 1e-4, total_steps=10)
    _step(dense, optimizer, [1])
    single = {"optimizer": optimizer.optimizers[0].state_dict(), "scheduler": optimizer.schedulers[0].state_dict()}
    RunOptimizer(_Tables(sparse=False), 1e-2, 1e-4, total_steps=10).load_state_dict(single)
    with pytest.raises(ValueError, match=r"was training\.sparse_embeddings changed"):
        RunOptimizer(_Tables(sparse=True), 1e-2, 1e-4, total_steps=10).load_state_dict(single)
