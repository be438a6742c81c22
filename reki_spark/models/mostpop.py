"""MostPop: every user gets the items ranked by their count in the training split. Nothing is
learned; it is the floor every sequential backbone must clear, scored by the same evaluation code
(same candidates, same exclusion of seen items, same tie rule)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from reki_spark.models.base import Batch
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
