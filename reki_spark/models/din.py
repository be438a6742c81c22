"""DIN (Zhou et al., 2018): attention of the history on the target item. Knowledge: the HEIN
vector joins the attention-pooled interest and the target embedding before the MLP."""

from __future__ import annotations

import torch

from reki_spark.models.base import Batch, CtrModel, mlp


class Din(CtrModel):
    knowledge_mlps = ("head",)

    def __init__(
        self,
        *args,
        attention_hidden: tuple[int, int] = (80, 40),
        hidden: tuple[int, ...] = (200, 80),
        dropout: float = 0.1,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        d = self.embedding_dim
        self.attention = mlp([4 * d, *attention_hidden, 1], last_activation=False)
        width = len(self.field_names) * d + d + self.adapter.output_dim
        self.head = mlp([width, *hidden, 1], dropout, last_activation=False)

    def forward(self, batch: Batch) -> torch.Tensor:
        target = self.target(batch)
        history, mask = self.history(batch)
        query = target.unsqueeze(1).expand_as(history)
        scores = self.attention(torch.cat([query, history, query - history, query * history], dim=-1)).squeeze(-1)
        interest = ((scores * mask).unsqueeze(-1) * history).sum(1)
        fields = self.field_embeddings(batch).flatten(1)
        return self.knowledge_mlp("head", [fields, interest], batch).squeeze(-1)
