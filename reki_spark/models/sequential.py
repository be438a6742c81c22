"""Base of the sequential backbones (next-item prediction over the whole catalogue), one interface
for all of them (RecBole's): `loss(batch)` for training, `item_scorer(batch)` for ranking. A batch holds
`sequence` (batch, length) and `user` (batch,) and, with knowledge, each position's item knowledge row
`sequence_knowledge` (batch, length) and the user's rows `user_knowledge` (batch, views).

Sequences are left-padded with index 0. Item embeddings are tied with the output layer, as in
SASRec and RecBole's GRU4Rec, and the output scores use the ID embeddings alone.

Knowledge enters on the input side only (as KAR feeds its adapter output to the backbone's input):
HEIN's item vector of every input position and HEIN's user vector, each through a projection that
starts at zero, are added to the embedded inputs before the encoder. A projection at zero makes the
model start as the plain backbone and learn how much of the knowledge to use; the output table is
never touched, so items that share a cluster vector stay distinguishable."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from reki_spark.models.base import (
    DEFAULT_HEIN,
    SEQUENCE_KNOWLEDGE,
    USER_KNOWLEDGE,
    Batch,
    HeinSettings,
    KnowledgeAdapter,
    KnowledgeTables,
)

# The batch columns that run along the sequence (trimmed and shifted together).
POSITIONAL = ("sequence", SEQUENCE_KNOWLEDGE)

ItemScorer = Callable[[torch.Tensor], torch.Tensor]
"""A batch of queries' scores of items: item indices (n,) shared by every row give (batch, n);
per-row candidates (batch, n) give (batch, n). Evaluation asks for the catalogue in chunks."""


def score_matrix(scores: torch.Tensor) -> ItemScorer:
    """The ItemScorer of an already computed (batch, items) matrix (MostPop, reference models)."""
    return lambda items: scores[:, items] if items.dim() == 1 else scores.gather(1, items)


@dataclass(frozen=True)
class SeqSchema:
    items: int  # item vocabulary size, index 0 = padding
    users: int
    max_length: int = 50


class SeqModel(nn.Module):
    def __init__(
        self,
        schema: SeqSchema,
        embedding: int = 64,
        knowledge: KnowledgeTables | None = None,
        hein: HeinSettings = DEFAULT_HEIN,
        loss: str = "full_softmax",
        sampled_negatives: int = 1000,
        sparse_ids: bool = False,
    ) -> None:
        super().__init__()
        self.schema = schema
        self.embedding_dim = embedding
        self.loss_kind = loss
        self.sampled_negatives = sampled_negatives
        # sparse_ids: the item table gets sparse gradients (training/optim.py) under sampled
        # softmax, which looks up the batch's candidates only; full softmax multiplies by the whole
        # table, whose every row then has a gradient, so the table stays dense there.
        sparse = sparse_ids and loss == "sampled_softmax"
        self.item_embedding = nn.Embedding(schema.items, embedding, padding_idx=0, sparse=sparse)
        if loss == "sampled_softmax":  # only then: checkpoints of full-softmax runs keep their keys
            self.register_buffer("target_counts", torch.zeros(schema.items))
            # Their sum, kept as it grows: summing the catalogue every step made the step's cost
            # grow with it.
            self.register_buffer("target_total", torch.zeros(()))
        self.adapter = KnowledgeAdapter(knowledge, hein)
        side, user_side = self.adapter.side_dim, self.adapter.user_dim
        self.item_knowledge = _zero_linear(side, embedding) if side else None
        self.user_knowledge = _zero_linear(user_side, embedding) if user_side else None

    def reset_knowledge_projections(self) -> None:
        """Back to zero after a subclass's own initialisation touched every linear layer."""
        for projection in (self.item_knowledge, self.user_knowledge):
            if projection is not None:
                nn.init.zeros_(projection.weight)
                nn.init.zeros_(projection.bias)

    def embed_inputs(self, batch: Batch) -> torch.Tensor:
        """(batch, length, embedding): item embeddings plus the projected knowledge, 0 at padding."""
        sequence = batch["sequence"]
        embedded = self.item_embedding(sequence)
        if self.adapter.enabled and self.item_knowledge is not None and self.user_knowledge is not None:
            items = self.adapter.items(batch[SEQUENCE_KNOWLEDGE].reshape(-1))  # HEIN takes (rows, dimension)
            user = self.adapter.users(batch[USER_KNOWLEDGE])
            assert items is not None and user is not None
            embedded = embedded + self.item_knowledge(items).reshape(embedded.shape)
            embedded = embedded + self.user_knowledge(user).unsqueeze(1)
        return embedded * (sequence > 0).unsqueeze(-1)

    def encode(self, embedded: torch.Tensor, sequence: torch.Tensor) -> torch.Tensor:
        """(batch, length, embedding) states; position t sees items <= t only."""
        raise NotImplementedError

    def states(self, batch: Batch) -> torch.Tensor:
        return self.encode(self.embed_inputs(batch), batch["sequence"])

    def loss(self, batch: Batch) -> torch.Tensor:
        """Cross-entropy of every next item of the window (padding targets skipped)."""
        trimmed = trim_padding(batch, keep=2)
        targets = trimmed["sequence"][:, 1:]
        inputs = {name: column[:, :-1] if name in POSITIONAL else column for name, column in trimmed.items()}
        present = targets > 0
        states = self.states(inputs)[present]
        targets = targets[present]
        if self.loss_kind == "full_softmax":
            return F.cross_entropy(states @ self.item_embedding.weight.T, targets)
        return self._sampled_softmax(states, targets)

    def _sampled_softmax(self, states: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mixed negatives (Yang et al., 2020): the batch's targets plus `sampled_negatives` uniform
        draws are every row's candidates, and each candidate's logit loses the log of how often the
        proposal is expected to hold it (logQ, Yi et al., 2019), so that popular items, which the
        in-batch half draws often, are not pushed down for being popular. An item drawn twice (a
        repeated target, a uniform draw of a target) is one candidate. Item frequencies are
        counted over the training targets as training goes (add-one smoothed)."""
        if self.training:  # touches the batch's targets only, not the catalogue
            self.target_counts.index_add_(0, targets, torch.ones_like(targets, dtype=self.target_counts.dtype))
            self.target_total += len(targets)
        uniform = torch.randint(1, self.schema.items, (self.sampled_negatives,), device=targets.device)
        candidates, column = torch.unique(torch.cat([targets, uniform]), return_inverse=True)
        frequency = (self.target_counts[candidates] + 1) / (self.target_total + self.schema.items)
        expected = len(targets) * frequency + self.sampled_negatives / (self.schema.items - 1)
        logits = states @ self.item_embedding(candidates).T - expected.log()
        return F.cross_entropy(logits, column[: len(targets)])

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        """Checkpoints from before the running total get it from their counts."""
        counts, total = f"{prefix}target_counts", f"{prefix}target_total"
        if counts in state_dict and total not in state_dict:
            state_dict[total] = state_dict[counts].sum()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def item_scorer(self, batch: Batch) -> ItemScorer:
        """Scores of items as the next one after each row's `sequence`: the last state against their
        ID embeddings, computed for the items asked only."""
        queries = self.states(trim_padding(batch, keep=1))[:, -1]

        def score(items: torch.Tensor) -> torch.Tensor:
            vectors = self.item_embedding(items)
            return queries @ vectors.T if items.dim() == 1 else torch.einsum("bd,bnd->bn", queries, vectors)

        return score


def trim_padding(batch: Batch, keep: int) -> Batch:
    """Drops the leading columns that are padding in every row of `sequence` (at least `keep` columns
    stay), from every positional column alike: a batch of short sequences costs what its longest
    member costs, not `max_length`."""
    present = (batch["sequence"] > 0).any(0).nonzero()
    length = batch["sequence"].shape[1]
    first = min(int(present[0]) if len(present) else length, length - keep)
    return {name: column[:, first:] if name in POSITIONAL else column for name, column in batch.items()}


def _zero_linear(width_in: int, width_out: int) -> nn.Linear:
    layer = nn.Linear(width_in, width_out)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer
