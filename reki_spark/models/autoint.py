"""AutoInt (Song et al., 2019): multi-head self-attention across feature fields. Knowledge: the HEIN
user and item vectors (32-d each) enter as two extra fields."""

from __future__ import annotations

import torch
from torch import nn

from reki_spark.models.base import Batch, CtrModel


class AutoInt(CtrModel):
    def __init__(self, *args, layers: int = 2, heads: int = 2, dropout: float = 0.1, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        d = self.embedding_dim
        self.attention = nn.ModuleList(
            nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True) for _ in range(layers)
        )
        # HEIN's 32-d parts (each user view, the item) become fields of the embedding width.
        side = self.adapter.side_dim
        self.knowledge_field = nn.Linear(side, d) if side and side != d else nn.Identity()
        n_fields = len(self.field_names) + 1 + (self.adapter.output_dim // side if side else 0)
        self.head = nn.Linear(n_fields * d, 1)

    def forward(self, batch: Batch) -> torch.Tensor:
        parts = [self.field_embeddings(batch), self.mean_history(batch).unsqueeze(1)]
        augmented = self.augmented(batch)
        if augmented is not None:
            pieces = augmented.split(self.adapter.side_dim, dim=-1)
            parts.append(torch.stack([self.knowledge_field(piece) for piece in pieces], dim=1))
        fields = torch.cat(parts, dim=1)
        for layer in self.attention:
            attended, _ = layer(fields, fields, fields, need_weights=False)
            fields = torch.relu(fields + attended)
        return self.head(fields.flatten(1)).squeeze(-1)
