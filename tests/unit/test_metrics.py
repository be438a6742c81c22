"""Our ranking metrics against scikit-learn on fixed arrays."""

import numpy as np
import torch
from sklearn.metrics import ndcg_score, roc_auc_score, top_k_accuracy_score

from reki_spark.evaluation.metrics import CtrSums, RankingSums, target_ranks
from reki_spark.models.sequential import score_matrix


def _ctr(labels: np.ndarray, scores: np.ndarray, pieces: int = 1) -> dict[str, float]:
    """Metrics from sums added piece by piece, as shards of ranks add theirs."""
    total = CtrSums()
    for part in np.array_split(np.arange(len(labels)), pieces):
        shard = CtrSums()
        shard.add(torch.tensor(labels[part]), torch.tensor(scores[part]))
        total.values += shard.values
    return total.metrics()


def test_ctr_metrics_match_sklearn():
    labels = np.array([0, 1, 1, 0, 1, 0, 1, 1])
    scores = np.array([0.1, 0.8, 0.6, 0.4, 0.35, 0.2, 0.9, 0.55])
    metrics = _ctr(labels, scores)
    assert abs(metrics["auc"] - roc_auc_score(labels, scores)) < 1e-12
    expected_logloss = -np.mean(labels * np.log(scores) + (1 - labels) * np.log(1 - scores))
    assert abs(metrics["logloss"] - expected_logloss) < 1e-12


def test_histogram_auc_matches_sklearn_with_ties_and_does_not_depend_on_the_sharding():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 20_000)
    scores = np.clip(rng.normal(0.4 + 0.2 * labels, 0.2), 0, 1)
    scores[:2000] = np.round(scores[:2000], 2)  # exact ties across labels
    whole = _ctr(labels, scores)
    assert abs(whole["auc"] - roc_auc_score(labels, scores)) < 1e-5
    sharded = _ctr(labels, scores, pieces=7)
    assert sharded["auc"] == whole["auc"] and abs(sharded["logloss"] - whole["logloss"]) < 1e-12


def _ranks(scores: torch.Tensor, targets: torch.Tensor, seen: torch.Tensor, chunk: int = 7):
    generator = torch.Generator().manual_seed(0)
    return target_ranks(score_matrix(scores), targets, seen, scores.shape[1], chunk, generator)


def test_ranking_metrics_match_sklearn():
    rng = np.random.default_rng(7)
    scores = rng.normal(size=(50, 30))
    targets = rng.integers(0, 30, size=50)
    # Item 0 is padding: the catalogue is items 1..30, whose scores are `scores`.
    with_padding = torch.tensor(np.hstack([np.full((50, 1), 99.0), scores]))
    full, _ = _ranks(with_padding, torch.tensor(targets + 1), torch.zeros(50, 1, dtype=torch.long))
    sums = RankingSums()
    sums.add(full, full)
    metrics = sums.metrics()
    ours = {"ndcg@10": metrics["ndcg@10_full"], "recall@10": metrics["recall@10_full"]}
    relevance = np.zeros_like(scores)
    relevance[np.arange(50), targets] = 1
    per_user_ndcg = [ndcg_score(relevance[i : i + 1], scores[i : i + 1], k=10) for i in range(50)]
    assert abs(ours["ndcg@10"] - np.mean(per_user_ndcg)) < 1e-9
    assert abs(ours["recall@10"] - top_k_accuracy_score(targets, scores, k=10, labels=np.arange(30))) < 1e-9


def _dense_full_ranks(scores: torch.Tensor, targets: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
    """The whole batch x items matrix at once: what the chunked count must equal."""
    excluded = torch.zeros_like(scores, dtype=torch.bool)
    excluded[:, 0] = True
    excluded.scatter_(1, seen, True)
    excluded[torch.arange(len(targets)), targets] = False
    masked = scores.masked_fill(excluded, float("-inf"))
    return (masked >= masked.gather(1, targets.unsqueeze(1))).sum(1) - 1


def test_chunked_full_ranks_equal_the_whole_matrix_with_ties_repeats_and_seen_targets():
    rng = np.random.default_rng(3)
    scores = torch.tensor(rng.integers(0, 20, size=(40, 300)).astype(np.float32))  # many ties
    targets = torch.tensor(rng.integers(1, 300, size=40))
    seen = torch.tensor(rng.integers(0, 300, size=(40, 60)))  # repeats and 0 padding among them
    seen[:5, 0] = targets[:5]  # a target the user had seen before (repeat consumption) still ranks
    expected = _dense_full_ranks(scores, targets, seen)
    for chunk in (1, 13, 299, 10_000):
        assert torch.equal(_ranks(scores, targets, seen, chunk)[0], expected), chunk


def test_sampled_negatives_are_distinct_unseen_items_drawn_across_chunks():
    targets = torch.tensor([1, 2, 4])
    # Seen: 4 and 101..199, with 0 padding; the third row's target 4 was seen before and ranks.
    seen = torch.cat([torch.tensor([0, 4]), torch.arange(101, 200)]).expand(3, -1)
    scores = torch.full((3, 200), 1e9)  # padding or a seen item among the negatives beats the target
    scores[:, 1:101:2] = 1.0  # odd items beat the target (which scores 0), even ones do not
    scores[:, 2:101:2] = -1.0
    scores[torch.arange(3), targets] = 0.0
    for chunk in (3, 64, 1000):
        _, sampled = _ranks(scores, targets, seen, chunk)
        # Rows 1 and 2 have 98 allowed items, the fewest, so every row draws 98: all of theirs,
        # each once (49 and 50 odd ones); the third row 98 of its 99 (50 odd, 49 even).
        assert sampled[:2].tolist() == [49, 50], chunk
        assert sampled[2].item() in (49, 50), chunk


def test_negatives_drawn_with_rejection_on_a_large_catalogue_are_uniform_distinct_and_allowed():
    """5,000 items, 150 seen per row: rejection draws. Each row's 99 are distinct, neither seen nor
    the target, and over 2,000 rows every allowed item is drawn about equally often (expected
    99 * 2000 / ~4850 = 41 each; a rule that favoured low or high ids would move the halves)."""
    from reki_spark.evaluation.metrics import REJECTION_ROOM, _drawn_negatives

    items, rows = 5_000, 2_000
    assert items - 1 > REJECTION_ROOM * (99 + 150 + 1)
    generator = torch.Generator().manual_seed(1)
    seen = torch.randint(1, 200, (rows, 150), generator=generator)  # low ids, repeats among them
    targets = torch.randint(1, items, (rows,), generator=generator)
    drawn = _drawn_negatives(seen, targets, items, 99, generator)
    assert drawn.shape == (rows, 99)
    assert all(len(set(row)) == 99 for row in drawn.tolist())
    assert not (drawn.unsqueeze(2) == seen.unsqueeze(1)).any() and not (drawn == targets.unsqueeze(1)).any()
    counts = torch.bincount(drawn.flatten(), minlength=items)[200:].float()  # ids no row ever saw
    expected = 99 * rows / (items - 1 - 150)
    assert abs(counts.mean() - expected) / expected < 0.05
    assert abs(counts[: len(counts) // 2].mean() - counts[len(counts) // 2 :].mean()) / expected < 0.03
