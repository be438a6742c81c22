"""Metrics: AUC and LogLoss from scikit-learn for CTR; NDCG@K and Recall@K for next-item ranking
from the target's rank (one relevant item per user, checked against scikit-learn in the tests).
Full ranking scores every item not already in the user's history; the sampled protocol scores the
target against 99 items the user never interacted with."""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.metrics import log_loss, roc_auc_score

from reki_spark.models.sequential import ItemScorer

FULL, SAMPLED = "full", "sampled99"
# The metric that picks the best epoch, names a run and carries the report's verdict, per task.
PRIMARY = {"ctr": "auc", "sequential": f"ndcg@10_{FULL}"}
SAMPLED_NEGATIVES = 99


def ctr_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    clipped = np.clip(probabilities, 1e-7, 1 - 1e-7)
    return {"auc": float(roc_auc_score(labels, clipped)), "logloss": float(log_loss(labels, clipped, labels=[0, 1]))}


def ranking_metrics(ranks: np.ndarray, k: int = 10) -> dict[str, float]:
    ranks = np.asarray(ranks)
    hit = ranks < k
    return {
        f"ndcg@{k}": float(np.mean(np.where(hit, 1.0 / np.log2(ranks + 2), 0.0))),
        f"recall@{k}": float(np.mean(hit)),
    }


def target_ranks(
    score: ItemScorer, targets: torch.Tensor, seen: torch.Tensor, items: int, chunk: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """0-based ranks of each row's target, full and sampled (against 99 negatives), over the items
    1..items-1 except those in the row's `seen` (batch, width; 0 pads) other than the target.
    Ties count against the target.

    The catalogue is walked in chunks of `chunk` items, so no batch x |items| matrix exists in one
    piece: the full rank is a running count of the items scoring at least the target, and the
    sampled negatives are a running bottom-99 of uniform random keys over the allowed items (a
    uniform draw without replacement). One relevant item per row makes the target's rank all that
    NDCG and Recall need, so no top-K list is kept."""
    target_scores = score(targets.unsqueeze(1))
    count = min(SAMPLED_NEGATIVES, int(_allowed(seen, targets, items).min()))
    above = torch.zeros(len(targets), dtype=torch.long)
    keys = torch.empty(len(targets), 0)
    negatives = torch.empty(len(targets), 0, dtype=torch.long)
    for start in range(1, items, chunk):
        ids = torch.arange(start, min(start + chunk, items))
        blocked = _blocked(seen, targets, start, len(ids))
        above += ((score(ids) >= target_scores) & ~blocked).sum(1)
        drawn = torch.rand(blocked.shape, generator=generator).masked_fill(blocked, math.inf)
        keys, kept = torch.cat([keys, drawn], 1).topk(min(count, keys.shape[1] + len(ids)), largest=False)
        negatives = torch.cat([negatives, ids.expand(len(targets), -1)], 1).gather(1, kept)
    candidate_scores = score(torch.cat([targets.unsqueeze(1), negatives], 1))
    return above, (candidate_scores >= candidate_scores[:, :1]).sum(1) - 1


def _blocked(seen: torch.Tensor, targets: torch.Tensor, start: int, width: int) -> torch.Tensor:
    """(batch, width): the items start..start+width-1 that a row does not rank (seen, or the target
    itself, which is counted apart)."""
    blocked = torch.zeros(len(targets), width, dtype=torch.bool)
    for codes in (seen, targets.unsqueeze(1)):
        rows, columns = ((codes >= start) & (codes < start + width)).nonzero(as_tuple=True)
        blocked[rows, codes[rows, columns] - start] = True
    return blocked


def _allowed(seen: torch.Tensor, targets: torch.Tensor, items: int) -> torch.Tensor:
    """Per row, how many items can be a sampled negative: all but padding, the target and the
    distinct seen items."""
    ordered = seen.sort(1).values
    first = torch.ones_like(ordered, dtype=torch.bool)
    first[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    distinct_seen = (first & (ordered > 0) & (ordered != targets.unsqueeze(1))).sum(1)
    return items - 2 - distinct_seen
