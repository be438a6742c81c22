"""DeepFM (Guo et al., 2017): a factorization machine over the fields plus a deep tower on the same
embeddings. Knowledge: the HEIN vector is concatenated to the deep tower's dense input and,
as in KAR's DeepFM, has its own term in the linear part."""

from __future__ import annotations

import torch
from torch import nn

from reki_spark.models.base import Batch, CtrModel, mlp, pooled


class DeepFm(CtrModel):
    knowledge_mlps = ("deep",)

    def __init__(self, *args, hidden: tuple[int, ...] = (200, 80), dropout: float = 0.1, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.first_order = nn.ModuleDict(
            {name: nn.Embedding(self.schema.fields[name], 1, padding_idx=0) for name in self.field_names}
        )
        self.knowledge_linear = nn.Linear(self.adapter.output_dim, 1) if self.adapter.enabled else None
        self.bias = nn.Parameter(torch.zeros(1))
        width = (len(self.field_names) + 1) * self.embedding_dim + self.adapter.output_dim
        self.deep = mlp([width, *hidden, 1], dropout, last_activation=False)

    def forward(self, batch: Batch) -> torch.Tensor:
        fields = torch.cat([self.field_embeddings(batch), self.mean_history(batch).unsqueeze(1)], dim=1)
        linear = sum(pooled(self.first_order[name], batch[name]).squeeze(-1) for name in self.field_names) + self.bias
        augmented = self.augmented(batch)
        if augmented is not None and self.knowledge_linear is not None:
            linear = linear + self.knowledge_linear(augmented).squeeze(-1)
        pairwise = 0.5 * (fields.sum(1).pow(2) - fields.pow(2).sum(1)).sum(-1)
        deep = self.knowledge_mlp("deep", [fields.flatten(1)], batch, augmented).squeeze(-1)
        return linear + pairwise + deep
