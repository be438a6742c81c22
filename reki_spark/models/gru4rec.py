"""GRU4Rec (Hidasi et al., 2016): a GRU over the item sequence."""

from __future__ import annotations

import torch
from torch import nn

from reki_spark.models.sequential import SeqModel


class Gru4Rec(SeqModel):
    def __init__(self, *args, layers: int = 1, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gru = nn.GRU(self.hidden, self.hidden, num_layers=layers, batch_first=True)

    def encode(self, embedded: torch.Tensor, sequence: torch.Tensor) -> torch.Tensor:
        states, _ = self.gru(embedded)
        return states
