"""Shared pieces of every model: the frozen knowledge lookup, HEIN wiring, embeddings and MLPs.
Plain PyTorch: nothing here imports Spark, Ray or the lake, so models serve and test alone."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from reki_spark.models.hein import Hein

Batch = dict[str, torch.Tensor]
# The CTR categorical fields, in the order the serving module takes them; each names the sample
# column it reads. `item_category` holds all of an item's categories (batch, slots), pooled.
CTR_FIELDS = [
    "user_id",
    "item_id",
    "user_gender",
    "user_age",
    "user_occupation",
    "item_category",
    "item_brand",
    "item_year",
]


@dataclass(frozen=True)
class HeinSettings:
    shared_experts: int = 2
    dedicated_experts: int = 2
    hidden: int = 128
    output: int = 32


DEFAULT_HEIN = HeinSettings()


# The vocabulary of the ratings that history items carry (KAR embeds them with the items).
RATING_FIELD = "history_rating"


@dataclass(frozen=True)
class CtrSchema:
    """Categorical fields (name -> cardinality, index 0 is padding/unknown) and the history. A
    history item is its id, its categories (pooled) and, where the data has ratings, its rating."""

    fields: dict[str, int]
    history_length: int = 5
    # Category slots per item (items with more are cut, fewer are padded with 0).
    category_slots: int = 1
    user_field: str = "user_id"
    item_field: str = "item_id"
    category_field: str = "item_category"
    side_fields: list[str] = field(default_factory=list)


def pooled(embedding: nn.Module, codes: torch.Tensor) -> torch.Tensor:
    """The embedding of one code per row, or the mean over a row's non-zero codes when a row holds
    several (a multi-hot field: trailing dimension)."""
    if codes.dim() == 1:
        return embedding(codes)
    present = (codes > 0).unsqueeze(-1).float()
    return (embedding(codes) * present).sum(-2) / present.sum(-2).clamp(min=1.0)


# Batch keys of the knowledge rows each example uses (see `KnowledgeTables`): the item's row (batch,)
# (sequential models: one per position, (batch, length)) and one row per user view (batch, views).
ITEM_KNOWLEDGE, USER_KNOWLEDGE, SEQUENCE_KNOWLEDGE = "item_knowledge", "user_knowledge", "sequence_knowledge"


class KnowledgeTables(nn.Module):
    """Frozen knowledge vectors: one row per cluster (collective and its controls: a few thousand
    rows whatever the data's size) or per entity (individual, a small-data comparison). Which row an
    example uses travels with the example (`ITEM_KNOWLEDGE`, `USER_KNOWLEDGE`), joined in by Spark:
    the model holds no entity map. Row 0 is the zero vector: no knowledge."""

    def __init__(self, item_vectors: np.ndarray, user_vectors: np.ndarray, user_views: int) -> None:
        super().__init__()
        if item_vectors.shape[1] != user_vectors.shape[1]:
            raise ValueError("user and item knowledge vectors must have the same dimension")
        self.register_buffer("item_vectors", torch.as_tensor(item_vectors, dtype=torch.float32))
        self.register_buffer("user_vectors", torch.as_tensor(user_vectors, dtype=torch.float32))
        # collective: positive and negative (never mixed); individual: the profile
        self.user_views = user_views

    @property
    def dimension(self) -> int:
        return int(self.item_vectors.shape[1])

    def items(self, item_rows: torch.Tensor) -> torch.Tensor:
        return self.item_vectors[item_rows]

    def users(self, user_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, views, dimension) vectors of (batch, views) rows, each view kept apart (likes and
        dislikes are never mixed), and (batch, views) whether the user has that view."""
        return self.user_vectors[user_rows], user_rows > 0


def mlp(sizes: list[int], dropout: float = 0.0, last_activation: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (width_in, width_out) in enumerate(pairwise(sizes)):
        layers.append(nn.Linear(width_in, width_out))
        if i < len(sizes) - 2 or last_activation:
            layers.append(nn.ReLU())
            if dropout:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class KnowledgeAdapter(nn.Module):
    """HEIN over the frozen knowledge of a (user, item) pair, or nothing when there is none."""

    def __init__(self, knowledge: KnowledgeTables | None, hein: HeinSettings) -> None:
        super().__init__()
        self.knowledge = knowledge
        self.hein = (
            Hein(knowledge.dimension, hein.shared_experts, hein.dedicated_experts, hein.hidden, hein.output)
            if knowledge is not None
            else None
        )
        # One HEIN output per user view and one for the item: [positive; negative; item] in
        # collective mode, [profile; item] in individual mode.
        views = knowledge.user_views if knowledge is not None else 0
        self.side_dim = hein.output if knowledge is not None else 0
        self.user_dim = views * self.side_dim
        self.output_dim = self.user_dim + self.side_dim

    @property
    def enabled(self) -> bool:
        return self.knowledge is not None

    def pair(self, batch: Batch) -> torch.Tensor | None:
        """The augmented vector of each example: concat(each user view's 32-d, item 32-d)."""
        if not self.enabled:
            return None
        return torch.cat([self.users(batch[USER_KNOWLEDGE]), self.items(batch[ITEM_KNOWLEDGE])], dim=-1)

    def through_mlp(
        self, layers: nn.Module, x: torch.Tensor, batch: Batch, pair: torch.Tensor | None = None
    ) -> torch.Tensor:
        """`layers` over x with the augmented vector appended (x alone without knowledge); `pair`
        is that vector when the caller already computed it."""
        extra = pair if pair is not None else self.pair(batch)
        return layers(x if extra is None else torch.cat([x, extra], dim=-1))

    def items(self, item_rows: torch.Tensor) -> torch.Tensor | None:
        """(n, 32): HEIN's item output of each knowledge row."""
        if self.knowledge is None or self.hein is None:
            return None
        knowledge, hein = self.knowledge, self.hein
        return _per_distinct_row(item_rows, lambda rows: hein.item(knowledge.items(rows))[0])

    def users(self, user_rows: torch.Tensor) -> torch.Tensor | None:
        """(batch, views x 32): HEIN's user output per view's row, zero where the user lacks the view."""
        if self.knowledge is None or self.hein is None:
            return None
        knowledge, hein = self.knowledge, self.hein
        outputs = _per_distinct_row(user_rows, lambda rows: hein.user(knowledge.users(rows)[0])[0])
        return (outputs * (user_rows > 0).unsqueeze(-1)).flatten(1)


def _per_distinct_row(rows: torch.Tensor, outputs_of: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """`outputs_of` each distinct row of `rows`, gathered back to (*rows.shape, output). HEIN has no
    dropout, so running it once per knowledge row a batch uses (collective: a few hundred clusters)
    instead of once per example and position gives the same values and gradients for a fraction of
    the work (a DIN step with ML-1M's GPT-3.5 knowledge: 47 ms per example, 25 ms per distinct row,
    20 ms without knowledge; batch 1024, 2 threads)."""
    distinct, inverse = torch.unique(rows, return_inverse=True)
    return outputs_of(distinct)[inverse]


class CtrModel(nn.Module):
    """Base of the CTR backbones: field embeddings, the history, the knowledge adapter."""

    # The MLPs fed through `knowledge_mlp`: their first layer is linear in the augmented vector,
    # so a serving copy folds that layer's knowledge columns into per-entity vectors.
    knowledge_mlps: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        schema: CtrSchema,
        embedding_dim: int = 32,
        knowledge: KnowledgeTables | None = None,
        hein: HeinSettings = DEFAULT_HEIN,
        sparse_ids: bool = False,
        user_id: bool = True,
    ) -> None:
        super().__init__()
        self.schema = schema
        self.embedding_dim = embedding_dim
        # Fields the model leaves out (no table, no input): the user id when `user_id` is false.
        self.dropped_fields = set() if user_id else {schema.user_field}
        # sparse_ids: the user and item tables (the ones that grow with the data) get sparse
        # gradients, the looked-up rows only (training/optim.py); the small fields stay dense.
        sparse = {schema.user_field, schema.item_field} if sparse_ids else set()
        self.embeddings = nn.ModuleDict(
            {
                name: nn.Embedding(size, embedding_dim, padding_idx=0, sparse=name in sparse)
                for name, size in schema.fields.items()
                if name not in self.dropped_fields
            }
        )
        # Small initial embeddings (as FuxiCTR does): an id never seen in training, such as a user
        # of the held-out split, then stays close to neutral instead of injecting N(0, 1) noise.
        for embedding in self.embeddings.values():
            nn.init.normal_(embedding.weight, std=1e-4)
            embedding.weight.data[0].zero_()
        self.adapter = KnowledgeAdapter(knowledge, hein)

    @property
    def field_names(self) -> list[str]:
        return [name for name in self.schema.fields if name != RATING_FIELD and name not in self.dropped_fields]

    def field_embeddings(self, batch: Batch) -> torch.Tensor:
        """(batch, fields, dim)"""
        return torch.stack([pooled(self.embeddings[name], batch[name]) for name in self.field_names], dim=1)

    def target(self, batch: Batch) -> torch.Tensor:
        """The target item as a history item is represented (its id plus its pooled categories), so
        that attention compares like with like: DIN's query is goods id and category together."""
        embedded = self.embeddings[self.schema.item_field](batch[self.schema.item_field])
        return embedded + pooled(self.embeddings[self.schema.category_field], batch[self.schema.category_field])

    def history(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """History item representations (batch, length, dim) and their mask (batch, length): the
        item embedding plus its pooled categories and its rating, where the batch has them."""
        items = batch["history"]
        embedded = self.embeddings[self.schema.item_field](items)
        if "history_categories" in batch:
            embedded = embedded + pooled(self.embeddings[self.schema.category_field], batch["history_categories"])
        if "history_ratings" in batch and RATING_FIELD in self.embeddings:
            embedded = embedded + self.embeddings[RATING_FIELD](batch["history_ratings"])
        return embedded, (items > 0).float()

    def mean_history(self, batch: Batch) -> torch.Tensor:
        embedded, mask = self.history(batch)
        return (embedded * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)

    def augmented(self, batch: Batch) -> torch.Tensor | None:
        return self.adapter.pair(batch)

    def knowledge_mlp(
        self, name: str, parts: list[torch.Tensor], batch: Batch, augmented: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The MLP `name` (one of `knowledge_mlps`) over the parts and the augmented vector (pass it
        when the model also uses it elsewhere, so HEIN runs once)."""
        return self.adapter.through_mlp(getattr(self, name), torch.cat(parts, dim=-1), batch, augmented)

    def with_augmented(self, parts: list[torch.Tensor], batch: Batch) -> torch.Tensor:
        extra = self.augmented(batch)
        return torch.cat([*parts, extra] if extra is not None else parts, dim=-1)

    def forward(self, batch: Batch) -> torch.Tensor:  # logits, shape (batch,)
        raise NotImplementedError
