"""Base of the sequential backbones (next-item prediction over the whole catalogue). Knowledge:
HEIN's item vector, projected, is added to every item's representation, and its user vector to
the user's state, as REKI adds it for SASRec and GRU4Rec."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from reki_spark.models.base import DEFAULT_HEIN, Batch, HeinSettings, KnowledgeAdapter, KnowledgeTables


@dataclass(frozen=True)
class SeqSchema:
    items: int  # item vocabulary size, index 0 = padding
    users: int
    max_length: int = 50


class SeqModel(nn.Module):
    def __init__(
        self,
        schema: SeqSchema,
        hidden: int = 64,
        knowledge: KnowledgeTables | None = None,
        hein: HeinSettings = DEFAULT_HEIN,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.schema = schema
        self.hidden = hidden
        self.item_embedding = nn.Embedding(schema.items, hidden, padding_idx=0)
        self.dropout = nn.Dropout(dropout)
        self.adapter = KnowledgeAdapter(knowledge, hein)
        side = self.adapter.side_dim
        self.item_knowledge = nn.Linear(side, hidden) if side else None
        self.user_knowledge = nn.Linear(side, hidden) if side else None

    def item_table(self) -> torch.Tensor:
        """(items, hidden): every item's representation, knowledge included."""
        table = self.item_embedding.weight
        knowledge = self.adapter.items(torch.arange(self.schema.items, device=table.device))
        if knowledge is not None and self.item_knowledge is not None:
            table = table + self.item_knowledge(knowledge) * (
                torch.arange(len(table), device=table.device) > 0
            ).unsqueeze(-1)
        return table

    def encode(self, embedded: torch.Tensor, sequence: torch.Tensor) -> torch.Tensor:
        """(batch, length, hidden) states from embedded items; position t sees items <= t."""
        raise NotImplementedError

    def states(self, sequence: torch.Tensor, users: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        states = self.encode(self.dropout(table[sequence]), sequence)
        knowledge = self.adapter.users(users)
        if knowledge is not None and self.user_knowledge is not None:
            states = states + self.user_knowledge(knowledge).unsqueeze(1)
        return states

    def loss(self, batch: Batch) -> torch.Tensor:
        """Cross-entropy of every next item of the (left-padded) sequence over all items."""
        sequence = batch["sequence"]
        inputs, targets = sequence[:, :-1], sequence[:, 1:]
        table = self.item_table()
        logits = self.states(inputs, batch["user"], table) @ table.T
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=0)

    def scores(self, sequence: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        """(batch, items) scores of every item as the next one after `sequence`."""
        table = self.item_table()
        return self.states(sequence, users, table)[:, -1] @ table.T
