"""The optimizers of one training run. Dense parameters: AdamW (decoupled weight decay). Id tables
with sparse gradients (`training.sparse_embeddings`): SparseAdam, which keeps Adam's moments and
updates only the rows a batch looked up ("lazy Adam"), so a step costs the batch's rows, not the
table's, and DDP all-reduces those rows only. SparseAdam rather than Adagrad: the same update rule
as the dense part and as the dense-table runs it is compared with, so a difference in results is
the sparsity's, not a different optimizer's. No weight decay on the tables (SparseAdam has none;
DLRM-style training leaves embedding rows undecayed): decaying every row each step is exactly the
whole-table work the sparse tables avoid. Each optimizer has its own cosine schedule."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def sparse_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [module.weight for module in model.modules() if isinstance(module, nn.Embedding) and module.sparse]


class RunOptimizer:
    """AdamW for the dense parameters and SparseAdam for the sparse tables (when there are any),
    stepped, scheduled and checkpointed together."""

    def __init__(self, model: nn.Module, learning_rate: float, weight_decay: float, total_steps: int) -> None:
        sparse = sparse_parameters(model)
        tables = {id(parameter) for parameter in sparse}
        dense = [parameter for parameter in model.parameters() if id(parameter) not in tables]
        self.optimizers: list[torch.optim.Optimizer] = []
        if dense:
            self.optimizers.append(torch.optim.AdamW(dense, lr=learning_rate, weight_decay=weight_decay))
        if sparse:
            self.optimizers.append(torch.optim.SparseAdam(sparse, lr=learning_rate))
        self.schedulers = [
            torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps) for optimizer in self.optimizers
        ]

    def zero_grad(self) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad()

    def step(self) -> None:
        for optimizer, scheduler in zip(self.optimizers, self.schedulers, strict=True):
            optimizer.step()
            scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizers": [optimizer.state_dict() for optimizer in self.optimizers],
            "schedulers": [scheduler.state_dict() for scheduler in self.schedulers],
        }

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        # A checkpoint written before the optimizers were split holds one AdamW and its schedule.
        optimizers = saved["optimizers"] if "optimizers" in saved else [saved["optimizer"]]
        schedulers = saved["schedulers"] if "schedulers" in saved else [saved["scheduler"]]
        if len(optimizers) != len(self.optimizers):
            raise ValueError(
                f"the checkpoint holds {len(optimizers)} optimizer(s), this run {len(self.optimizers)}: "
                "was training.sparse_embeddings changed since it was written? Remove the checkpoint to start over"
            )
        for optimizer, state in zip(self.optimizers, optimizers, strict=True):
            optimizer.load_state_dict(state)
        for scheduler, state in zip(self.schedulers, schedulers, strict=True):
            scheduler.load_state_dict(state)
