"""HEIN, the hybridized expert-integrated network of REKI (stage 3): S shared experts and P
dedicated experts per type, each an MLP d -> 128 -> 32 with ReLU; per type a gate Linear(d -> S+P)
with softmax over [shared, that type's dedicated] fed with that type's own vector; the output is
concat(user 32-d, item 32-d)."""

from __future__ import annotations

import torch
from torch import nn


def _expert(dim: int, hidden: int, output: int) -> nn.Module:
    return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, output), nn.ReLU())


class Hein(nn.Module):
    def __init__(self, dim: int, shared: int = 2, dedicated: int = 2, hidden: int = 128, output: int = 32) -> None:
        super().__init__()
        if shared < 0 or dedicated < 0 or shared + dedicated == 0:
            raise ValueError("HEIN needs at least one expert")
        self.output_dim = output
        self.shared = nn.ModuleList(_expert(dim, hidden, output) for _ in range(shared))
        self.user_experts = nn.ModuleList(_expert(dim, hidden, output) for _ in range(dedicated))
        self.item_experts = nn.ModuleList(_expert(dim, hidden, output) for _ in range(dedicated))
        self.user_gate = nn.Linear(dim, shared + dedicated)
        self.item_gate = nn.Linear(dim, shared + dedicated)

    @staticmethod
    def _mix(x: torch.Tensor, experts: list[nn.Module], gate: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = torch.stack([expert(x) for expert in experts], dim=1)  # (batch, experts, output)
        weights = torch.softmax(gate(x), dim=-1)  # (batch, experts)
        return (weights.unsqueeze(-1) * outputs).sum(1), weights

    def user(self, x_user: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The user's 32-d vector and its gate weights over [shared, user-dedicated] experts."""
        return self._mix(x_user, [*self.shared, *self.user_experts], self.user_gate)

    def item(self, x_item: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._mix(x_item, [*self.shared, *self.item_experts], self.item_gate)

    def forward(self, x_user: torch.Tensor, x_item: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.user(x_user)[0], self.item(x_item)[0]], dim=-1)
