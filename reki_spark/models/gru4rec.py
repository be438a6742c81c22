"""GRU4Rec (Hidasi et al., 2016), as RecBole implements it: embedding dropout, a GRU without bias,
a dense layer back to the embedding width, xavier initialisation, scores against the item table."""

from __future__ import annotations

import torch
from torch import nn

from reki_spark.models.sequential import SeqModel


class Gru4Rec(SeqModel):
    def __init__(self, *args, hidden: int = 128, layers: int = 1, dropout: float = 0.3, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.input_dropout = nn.Dropout(dropout)
        self.gru = nn.GRU(self.embedding_dim, hidden, num_layers=layers, bias=False, batch_first=True)
        self.dense = nn.Linear(hidden, self.embedding_dim)
        nn.init.xavier_normal_(self.item_embedding.weight)
        self.item_embedding.weight.data[0].zero_()
        for weight in self.gru.parameters():
            nn.init.xavier_uniform_(weight)

    def encode(self, embedded: torch.Tensor, sequence: torch.Tensor) -> torch.Tensor:
        # Left padding is all zeros, so the GRU reaches the first real item from a zero state.
        states, _ = self.gru(self.input_dropout(embedded))
        return self.dense(states)
