"""Serving form of a trained CTR model: HEIN's outputs depend only on the user (resp. the item),
so they are computed once per entity and the model looks them up, never running the LLM, the
encoder or HEIN at request time. Where they feed a linear layer, that layer's product with them is
precomputed too. Plain PyTorch, exportable with TorchScript."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.functional import embedding

from reki_spark.models.base import CTR_FIELDS, ITEM_KNOWLEDGE, USER_KNOWLEDGE, CtrModel, KnowledgeAdapter

# The exported module's positional inputs, in order: the CTR fields, the history and each example's
# knowledge rows (cluster rows, or entity rows in individual mode; zeros for a model without knowledge).
SERVING_INPUTS = [*CTR_FIELDS, "history", "history_ratings", "history_categories", USER_KNOWLEDGE, ITEM_KNOWLEDGE]


class FoldedMlp(nn.Module):
    """An MLP whose first layer takes [x; user views' 32-d each; item 32-d], with the knowledge columns
    folded: W [x; u_1..u_V; i] + b = W_x x + sum_v (W_v u_v) + (W_i i + b), the bracketed terms
    looked up per knowledge row (per cluster in collective mode: a table of a few thousand rows
    whatever the catalogue's size) instead of widening the request-time matrix product."""

    def __init__(
        self, layers: nn.Sequential, user_outputs: torch.Tensor, views: int, item_outputs: torch.Tensor
    ) -> None:
        super().__init__()
        first = layers[0]
        if not isinstance(first, nn.Linear):
            raise TypeError(f"a knowledge MLP must start with a linear layer, not {type(first).__name__}")
        side = int(user_outputs.shape[1])
        width = first.in_features - views * side - int(item_outputs.shape[1])
        weight, bias = first.weight.detach(), first.bias.detach()
        self.register_buffer("input_weight", weight[:, :width].T.contiguous())
        # View v's terms occupy rows v * R .. (v + 1) * R - 1 of one table (R = user knowledge rows).
        user_terms = [
            user_outputs.detach() @ weight[:, width + v * side : width + (v + 1) * side].T for v in range(views)
        ]
        self.register_buffer("user_terms", torch.cat(user_terms))
        self.register_buffer("view_offsets", torch.arange(views) * len(user_outputs))
        self.register_buffer("item_terms", item_outputs.detach() @ weight[:, width + views * side :].T + bias)
        self.rest = layers[1:]

    @property
    def input_width(self) -> int:
        return int(self.input_weight.shape[0])

    def forward(self, x: torch.Tensor, user_rows: torch.Tensor, item_rows: torch.Tensor) -> torch.Tensor:
        # embedding() gathers rows with index_select (~10x faster than tensor[index] at batch 1024);
        # addmm accumulates the product onto the looked-up terms without another pass.
        users = embedding(user_rows + self.view_offsets, self.user_terms).sum(1)
        return self.rest(torch.addmm(users.add_(embedding(item_rows, self.item_terms)), x, self.input_weight))


class PrecomputedKnowledge(nn.Module):
    """Stands in for `KnowledgeAdapter` with HEIN's outputs precomputed per knowledge row (32-d per
    user row, zero at row 0 as a missing view is, and per item row)."""

    def __init__(self, user_outputs: torch.Tensor, views: int, item_outputs: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("user_outputs", user_outputs.detach().clone())
        self.register_buffer("item_outputs", item_outputs.detach().clone())
        self.side_dim = int(item_outputs.shape[1])
        self.user_dim = views * int(user_outputs.shape[1])
        self.output_dim = self.user_dim + self.side_dim
        self.enabled = True

    def pair(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([self.users(batch[USER_KNOWLEDGE]), self.items(batch[ITEM_KNOWLEDGE])], dim=-1)

    def through_mlp(
        self, layers: nn.Module, x: torch.Tensor, batch: dict[str, torch.Tensor], pair: torch.Tensor | None = None
    ) -> torch.Tensor:
        if isinstance(layers, FoldedMlp):
            return layers(x, batch[USER_KNOWLEDGE], batch[ITEM_KNOWLEDGE])
        extra = pair if pair is not None else self.pair(batch)
        return layers(torch.cat([x, extra], dim=-1))

    def users(self, user_rows: torch.Tensor) -> torch.Tensor:
        return embedding(user_rows, self.user_outputs).flatten(1)

    def items(self, item_rows: torch.Tensor) -> torch.Tensor:
        return embedding(item_rows, self.item_outputs)


@torch.no_grad()
def row_outputs(adapter: KnowledgeAdapter) -> tuple[torch.Tensor, torch.Tensor]:
    """HEIN's output of every user knowledge row (row 0, no knowledge: zero) and item row."""
    knowledge = adapter.knowledge
    if knowledge is None:
        raise ValueError("the model was trained without knowledge: there is nothing to precompute")
    user_out = adapter.users(torch.arange(len(knowledge.user_vectors)).unsqueeze(1))
    item_out = adapter.items(torch.arange(len(knowledge.item_vectors)))
    assert user_out is not None and item_out is not None
    return user_out, item_out


def serving_copy(model: CtrModel) -> CtrModel:
    """A copy of `model` whose knowledge comes from HEIN outputs precomputed per knowledge row,
    folded into the first layer of its knowledge MLPs."""
    served = copy.deepcopy(model).eval()
    if served.adapter.enabled:
        assert served.adapter.knowledge is not None
        views = served.adapter.knowledge.user_views
        users, items = row_outputs(served.adapter)
        served.adapter = PrecomputedKnowledge(users, views, items)
        for name in served.knowledge_mlps:
            setattr(served, name, FoldedMlp(getattr(served, name), users, views, items))
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
        history_ratings: torch.Tensor,
        history_categories: torch.Tensor,
        user_knowledge: torch.Tensor,
        item_knowledge: torch.Tensor,
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
            "history_ratings": history_ratings,
            "history_categories": history_categories,
            USER_KNOWLEDGE: user_knowledge,
            ITEM_KNOWLEDGE: item_knowledge,
        }
        return torch.sigmoid(self.model(batch))


def serving_inputs(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """The exported module's positional inputs from a model batch; a batch without knowledge rows
    (a model trained without knowledge) passes zeros, which the module ignores."""
    zeros = torch.zeros(len(batch["item_id"]), dtype=torch.long)
    defaults = {USER_KNOWLEDGE: zeros.unsqueeze(1), ITEM_KNOWLEDGE: zeros}
    return tuple(batch[name] if name in batch else defaults[name] for name in SERVING_INPUTS)


def export_torchscript(model: CtrModel, example: dict[str, torch.Tensor]) -> torch.jit.ScriptModule:
    inputs = serving_inputs(example)
    with torch.no_grad():
        return torch.jit.trace(ScoringModule(serving_copy(model)).eval(), inputs, check_trace=False)
