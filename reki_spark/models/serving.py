"""Serving form of a trained CTR model: HEIN's outputs depend only on the user (resp. the item),
so they are computed once per entity and the model looks them up, never running the LLM, the
encoder or HEIN at request time. Plain PyTorch, exportable with TorchScript."""

from __future__ import annotations

import copy

import torch
from torch import nn

from reki_spark.models.base import CTR_FIELDS, CtrModel, KnowledgeAdapter

FIELD_ORDER = CTR_FIELDS


class PrecomputedKnowledge(nn.Module):
    """Stands in for `KnowledgeAdapter` with per-entity 32-d HEIN outputs."""

    def __init__(self, user_vectors: torch.Tensor, item_vectors: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("user_vectors", user_vectors.detach().clone())
        self.register_buffer("item_vectors", item_vectors.detach().clone())
        self.side_dim = int(user_vectors.shape[1])
        self.output_dim = 2 * self.side_dim
        self.enabled = True

    def pair(self, user_index: torch.Tensor, item_index: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.user_vectors[user_index], self.item_vectors[item_index]], dim=-1)

    def users(self, user_index: torch.Tensor) -> torch.Tensor:
        return self.user_vectors[user_index]

    def items(self, item_index: torch.Tensor) -> torch.Tensor:
        return self.item_vectors[item_index]


@torch.no_grad()
def entity_outputs(adapter: KnowledgeAdapter, users: int, items: int) -> tuple[torch.Tensor, torch.Tensor]:
    """HEIN's user and item outputs for every entity index (row 0: padding/unknown)."""
    user_out = adapter.users(torch.arange(users))
    item_out = adapter.items(torch.arange(items))
    if user_out is None or item_out is None:
        raise ValueError("the model was trained without knowledge: there is nothing to precompute")
    return user_out, item_out


def serving_copy(model: CtrModel) -> CtrModel:
    """A copy of `model` whose knowledge comes from precomputed per-entity vectors."""
    served = copy.deepcopy(model).eval()
    if served.adapter.enabled:
        fields = served.schema.fields
        users, items = entity_outputs(
            served.adapter, fields[served.schema.user_field], fields[served.schema.item_field]
        )
        served.adapter = PrecomputedKnowledge(users, items)
    return served


class ScoringModule(nn.Module):
    """Positional tensors in, click probabilities out: the form TorchScript exports."""

    def __init__(self, model: CtrModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        user_id: torch.Tensor,
        item_id: torch.Tensor,
        user_gender: torch.Tensor,
        user_age: torch.Tensor,
        user_occupation: torch.Tensor,
        item_category: torch.Tensor,
        item_brand: torch.Tensor,
        item_year: torch.Tensor,
        history: torch.Tensor,
    ) -> torch.Tensor:
        batch = {
            "user_id": user_id,
            "item_id": item_id,
            "user_gender": user_gender,
            "user_age": user_age,
            "user_occupation": user_occupation,
            "item_category": item_category,
            "item_brand": item_brand,
            "item_year": item_year,
            "history": history,
        }
        return torch.sigmoid(self.model(batch))


def export_torchscript(model: CtrModel, example: dict[str, torch.Tensor]) -> torch.jit.ScriptModule:
    inputs = tuple(example[name] for name in [*FIELD_ORDER, "history"])
    with torch.no_grad():
        return torch.jit.trace(ScoringModule(serving_copy(model)).eval(), inputs, check_trace=False)
