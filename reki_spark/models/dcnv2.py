"""DCNv2 (Wang et al., 2021): full-rank cross layers beside a deep tower. Knowledge: the HEIN
vector is concatenated to the dense input x0."""

from __future__ import annotations

import torch
from torch import nn

from reki_spark.models.base import Batch, CtrModel, mlp


class DcnV2(CtrModel):
    def __init__(
        self, *args, cross_layers: int = 3, hidden: tuple[int, ...] = (256, 128), dropout: float = 0.1, **kwargs
    ) -> None:
        super().__init__(*args, **kwargs)
        width = (len(self.field_names) + 1) * self.embedding_dim + self.adapter.output_dim
        self.cross = nn.ModuleList(nn.Linear(width, width) for _ in range(cross_layers))
        self.deep = mlp([width, *hidden], dropout)
        self.head = nn.Linear(width + hidden[-1], 1)

    def forward(self, batch: Batch) -> torch.Tensor:
        x0 = self.with_augmented([self.field_embeddings(batch).flatten(1), self.mean_history(batch)], batch)
        crossed = x0
        for layer in self.cross:
            crossed = x0 * layer(crossed) + crossed
        return self.head(torch.cat([crossed, self.deep(x0)], dim=-1)).squeeze(-1)
