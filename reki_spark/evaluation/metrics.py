"""Metrics: AUC and LogLoss from scikit-learn for CTR; NDCG@K and Recall@K for next-item ranking
from the target's rank (one relevant item per user, checked against scikit-learn in the tests).
Full ranking scores every item not already in the user's history; the sampled protocol scores the
target against 99 items the user never interacted with."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import log_loss, roc_auc_score

FULL, SAMPLED = "full", "sampled99"
# The metric that picks the best epoch, names a run and carries the report's verdict, per task.
PRIMARY = {"ctr": "auc", "sequential": f"ndcg@10_{FULL}"}
SAMPLED_NEGATIVES = 99


def ctr_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    clipped = np.clip(probabilities, 1e-7, 1 - 1e-7)
    return {"auc": float(roc_auc_score(labels, clipped)), "logloss": float(log_loss(labels, clipped, labels=[0, 1]))}


def target_ranks(scores: torch.Tensor, targets: torch.Tensor, excluded: torch.Tensor | None = None) -> torch.Tensor:
    """0-based rank of each row's target among its candidates; `excluded` (bool, same shape as
    `scores`) removes items such as the history and padding. Ties count against the target."""
    scores = scores.clone()
    if excluded is not None:
        scores = scores.masked_fill(excluded, float("-inf"))
    target_scores = scores.gather(1, targets.unsqueeze(1))
    return (scores >= target_scores).sum(1) - 1


def ranking_metrics(ranks: np.ndarray, k: int = 10) -> dict[str, float]:
    ranks = np.asarray(ranks)
    hit = ranks < k
    return {
        f"ndcg@{k}": float(np.mean(np.where(hit, 1.0 / np.log2(ranks + 2), 0.0))),
        f"recall@{k}": float(np.mean(hit)),
    }


def sampled_candidates(targets: torch.Tensor, excluded: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(batch, 1 + 99) candidate item indices, the target first, negatives drawn without
    replacement from items the user never interacted with (`excluded` marks history, padding)."""
    weights = (~excluded).float()
    weights[torch.arange(len(targets)), targets] = 0.0
    # A catalogue smaller than 100 items (test fixtures) gives every row what all rows have.
    count = min(SAMPLED_NEGATIVES, int(weights.sum(1).min().item()))
    negatives = torch.multinomial(weights, count, replacement=False, generator=generator)
    return torch.cat([targets.unsqueeze(1), negatives], dim=1)
