"""MostPop: the floor every backbone must clear, counted from the training split (nothing is
learned) and scored by the same evaluation code. Sequential: every user gets the items ranked by
their count (same candidates, same exclusion of seen items, same tie rule). CTR: a row's click
probability is its item's positive rate (smoothed towards the overall rate)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from reki_spark.models.base import Batch, CtrSchema
from reki_spark.models.sequential import ItemScorer, SeqSchema, score_matrix


class MostPop(nn.Module):
    def __init__(self, schema: SeqSchema, popularity: np.ndarray | None = None) -> None:
        super().__init__()
        self.schema = schema
        counts = np.zeros(schema.items, dtype=np.float32) if popularity is None else popularity
        self.register_buffer("popularity", torch.as_tensor(counts, dtype=torch.float32))

    def loss(self, batch: Batch) -> torch.Tensor:
        raise TypeError("MostPop is counted, not trained")

    def item_scorer(self, batch: Batch) -> ItemScorer:
        return score_matrix(self.popularity.unsqueeze(0).expand(len(batch["sequence"]), -1))


class CtrMostPop(nn.Module):
    def __init__(self, schema: CtrSchema, rates: np.ndarray) -> None:
        super().__init__()
        self.schema = schema
        self.register_buffer("rates", torch.as_tensor(rates, dtype=torch.float32))

    def forward(self, batch: Batch) -> torch.Tensor:
        """Logits, as the CTR backbones return them."""
        return torch.logit(self.rates[batch[self.schema.item_field]], eps=1e-6)
