"""SASRec (Kang & McAuley, 2018): a causal Transformer over the item sequence."""

from __future__ import annotations

import torch
from torch import nn

from reki_spark.models.sequential import SeqModel


class SasRec(SeqModel):
    def __init__(self, *args, layers: int = 2, heads: int = 2, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.positions = nn.Embedding(self.schema.max_length + 1, self.hidden)
        layer = nn.TransformerEncoderLayer(
            self.hidden, heads, dim_feedforward=self.hidden * 2, dropout=0.2, batch_first=True, norm_first=True
        )
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(self.hidden)

    def encode(self, embedded: torch.Tensor, sequence: torch.Tensor) -> torch.Tensor:
        length = sequence.shape[1]
        positions = torch.arange(length, device=sequence.device).unsqueeze(0)
        causal = torch.triu(torch.ones(length, length, dtype=torch.bool, device=sequence.device), diagonal=1)
        hidden = embedded * self.hidden**0.5 + self.positions(positions)
        hidden = hidden * (sequence > 0).unsqueeze(-1)
        return self.norm(self.transformer(hidden, mask=causal))
