"""Metrics: AUC and LogLoss for CTR; NDCG@K and Recall@K for next-item ranking from the target's rank
(one relevant item per user); checked against scikit-learn in the tests. Full ranking scores every
item not already in the user's history; the sampled protocol scores the target against 99 items the
user never interacted with.

Every metric is computed from additive statistics (`CtrSums`, `RankingSums`): each evaluation
rank adds its own shard's batches, the ranks' sums are added together (one all-reduce of a
fixed-size vector), and the metric comes from the total. AUC comes from per-label histograms of the
click probability in 2^20 bins: two scores in one bin count as a tie (half a correct pair), which
moves AUC by at most the share of positive-negative pairs closer than 1e-6, and makes the result
independent of how the rows were split across ranks."""

from __future__ import annotations

import math

import torch
from torch import distributed as dist

from reki_spark.models.sequential import ItemScorer

# Every run's record (one JSON list under `output`): training writes it, the report reads it.
METRICS_FILE = "metrics.json"
FULL, SAMPLED = "full", "sampled99"
# The metric that picks the best epoch, names a run and carries the report's verdict, per task.
PRIMARY = {"ctr": "auc", "sequential": f"ndcg@10_{FULL}"}
SAMPLED_NEGATIVES = 99


AUC_BINS = 1 << 20
CUTOFF = 10


class MetricSums:
    """A fixed-size float64 vector of sums (counts stay exact up to 2^53), added batch by batch and
    across ranks; subclasses say what the entries are and how metrics follow from them."""

    size: int

    def __init__(self) -> None:
        self.values = torch.zeros(self.size, dtype=torch.float64)

    def reduce(self) -> None:
        """Adds every rank's sums into each rank's (each rank of the process group must call it)."""
        dist.all_reduce(self.values)

    def metrics(self) -> dict[str, float]:
        raise NotImplementedError


class CtrSums(MetricSums):
    """[positives per probability bin; negatives per bin; summed log loss; rows]."""

    size = 2 * AUC_BINS + 2

    def add(self, labels: torch.Tensor, probabilities: torch.Tensor) -> None:
        clipped = probabilities.double().clamp(1e-7, 1 - 1e-7)
        positive = labels.double() > 0.5
        bins = (clipped * AUC_BINS).long().clamp(max=AUC_BINS - 1)
        # index_add_ touches only the batch's bins, not all 2^21 of them per batch.
        self.values.index_add_(0, bins + AUC_BINS * (~positive), torch.ones(len(bins), dtype=torch.float64))
        losses = torch.where(positive, clipped.log(), (1 - clipped).log())
        self.values[-2] -= losses.sum()
        self.values[-1] += len(labels)

    def metrics(self) -> dict[str, float]:
        positives, negatives = self.values[:AUC_BINS], self.values[AUC_BINS : 2 * AUC_BINS]
        below = negatives.cumsum(0) - negatives  # negatives in lower bins
        pairs = positives.sum() * negatives.sum()
        correct = (positives * below).sum() + 0.5 * (positives * negatives).sum()
        return {
            "auc": float(correct / pairs) if pairs > 0 else math.nan,
            "logloss": float(self.values[-2] / self.values[-1]) if self.values[-1] > 0 else math.nan,
        }


class RankingSums(MetricSums):
    """[NDCG@10, Recall@10 summed over rows, full ranking; the same, sampled; rows]."""

    size = 5

    def add(self, full_ranks: torch.Tensor, sampled_ranks: torch.Tensor) -> None:
        for offset, ranks in ((0, full_ranks), (2, sampled_ranks)):
            hit = ranks < CUTOFF
            self.values[offset] += torch.where(hit, 1.0 / torch.log2(ranks.double() + 2), 0.0).sum()
            self.values[offset + 1] += hit.sum()
        self.values[4] += len(full_ranks)

    def metrics(self) -> dict[str, float]:
        rows = float(self.values[4])
        names = (
            f"ndcg@{CUTOFF}_{FULL}",
            f"recall@{CUTOFF}_{FULL}",
            f"ndcg@{CUTOFF}_{SAMPLED}",
            f"recall@{CUTOFF}_{SAMPLED}",
        )
        return {name: float(self.values[i]) / rows if rows else math.nan for i, name in enumerate(names)}


def target_ranks(
    score: ItemScorer, targets: torch.Tensor, seen: torch.Tensor, items: int, chunk: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """0-based ranks of each row's target, full and sampled (against 99 negatives), over the items
    1..items-1 except those in the row's `seen` (batch, width; 0 pads) other than the target.
    Ties count against the target.

    The catalogue is walked in chunks of `chunk` items, so no batch x |items| matrix exists in one
    piece: the full rank is a running count of the items scoring at least the target. The sampled
    negatives are a uniform draw without replacement from the allowed items: on a catalogue much
    larger than what a row blocks, uniform draws with rejection (`_drawn_negatives`: work per row
    grows with the 99, not with the catalogue); on a small one, a running bottom-99 of uniform
    random keys over the allowed items, walked with the chunks. One relevant item per row makes
    the target's rank all that NDCG and Recall need, so no top-K list is kept."""
    target_scores = score(targets.unsqueeze(1))
    count = min(SAMPLED_NEGATIVES, int(_allowed(seen, targets, items).min()))
    by_rejection = items - 1 > REJECTION_ROOM * (count + seen.shape[1] + 1)
    above = torch.zeros(len(targets), dtype=torch.long)
    keys = torch.empty(len(targets), 0)
    negatives = torch.empty(len(targets), 0, dtype=torch.long)
    for start in range(1, items, chunk):
        ids = torch.arange(start, min(start + chunk, items))
        blocked = _blocked(seen, targets, start, len(ids))
        above += ((score(ids) >= target_scores) & ~blocked).sum(1)
        if by_rejection:
            continue
        drawn = torch.rand(blocked.shape, generator=generator).masked_fill(blocked, math.inf)
        keys, kept = torch.cat([keys, drawn], 1).topk(min(count, keys.shape[1] + len(ids)), largest=False)
        negatives = torch.cat([negatives, ids.expand(len(targets), -1)], 1).gather(1, kept)
    if by_rejection:
        negatives = _drawn_negatives(seen, targets, items, count, generator)
    candidate_scores = score(torch.cat([targets.unsqueeze(1), negatives], 1))
    return above, (candidate_scores >= candidate_scores[:, :1]).sum(1) - 1


# Draws with rejection when the catalogue holds over this many times what a row blocks or keeps:
# then at least three draws in four are usable and the first round almost always fills every row.
REJECTION_ROOM = 4


def _drawn_negatives(
    seen: torch.Tensor, targets: torch.Tensor, items: int, count: int, generator: torch.Generator
) -> torch.Tensor:
    """(batch, count): per row, the first `count` distinct draws, uniform over 1..items-1, that are
    neither seen nor the target; by exchangeability a uniform subset without replacement. Rows a
    round leaves short draw again, twice as many, from scratch."""
    blocked = torch.cat([seen, targets.unsqueeze(1)], 1).sort(1).values
    negatives = torch.empty(len(targets), count, dtype=torch.long)
    short, draws = torch.arange(len(targets)), 2 * count + blocked.shape[1]
    while len(short):
        drawn = torch.randint(1, items, (len(short), draws), generator=generator)
        rows = blocked[short]
        at = torch.searchsorted(rows, drawn).clamp(max=rows.shape[1] - 1)
        usable = (rows.gather(1, at) != drawn) & _first_occurrences(drawn)
        first_usable = torch.sort((~usable).to(torch.int8), dim=1, stable=True).indices[:, :count]
        filled = usable.sum(1) >= count
        negatives[short[filled]] = drawn.gather(1, first_usable)[filled]
        short, draws = short[~filled], 2 * draws
    return negatives


def _first_occurrences(values: torch.Tensor) -> torch.Tensor:
    """(rows, n) True where a value appears for the first time in its row."""
    ordered, order = values.sort(dim=1, stable=True)
    repeat = torch.zeros_like(values, dtype=torch.bool)
    repeat[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    return ~torch.zeros_like(repeat).scatter(1, order, repeat)


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
