"""Our ranking metrics against scikit-learn on fixed arrays."""

import numpy as np
import torch
from sklearn.metrics import ndcg_score, roc_auc_score, top_k_accuracy_score

from reki_spark.evaluation.metrics import (
    SAMPLED_NEGATIVES,
    ctr_metrics,
    ranking_metrics,
    sampled_candidates,
    target_ranks,
)


def test_ctr_metrics_match_sklearn():
    labels = np.array([0, 1, 1, 0, 1, 0, 1, 1])
    scores = np.array([0.1, 0.8, 0.6, 0.4, 0.35, 0.2, 0.9, 0.55])
    metrics = ctr_metrics(labels, scores)
    assert metrics["auc"] == roc_auc_score(labels, scores)
    expected_logloss = -np.mean(labels * np.log(scores) + (1 - labels) * np.log(1 - scores))
    assert abs(metrics["logloss"] - expected_logloss) < 1e-12


def test_ranking_metrics_match_sklearn():
    rng = np.random.default_rng(7)
    scores = rng.normal(size=(50, 30))
    targets = rng.integers(0, 30, size=50)
    ranks = target_ranks(torch.tensor(scores), torch.tensor(targets)).numpy()
    ours = ranking_metrics(ranks, k=10)
    relevance = np.zeros_like(scores)
    relevance[np.arange(50), targets] = 1
    per_user_ndcg = [ndcg_score(relevance[i : i + 1], scores[i : i + 1], k=10) for i in range(50)]
    assert abs(ours["ndcg@10"] - np.mean(per_user_ndcg)) < 1e-9
    assert abs(ours["recall@10"] - top_k_accuracy_score(targets, scores, k=10, labels=np.arange(30))) < 1e-9


def test_excluded_items_do_not_rank_and_samples_avoid_history():
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0]])
    excluded = torch.tensor([[True, True, False, False]])
    assert target_ranks(scores, torch.tensor([2]), excluded).item() == 0
    generator = torch.Generator().manual_seed(0)
    history = torch.zeros(3, 200, dtype=torch.bool)
    history[:, :50] = True
    candidates = sampled_candidates(torch.tensor([60, 70, 80]), history, generator)
    assert candidates.shape == (3, 1 + SAMPLED_NEGATIVES)
    assert (candidates[:, 1:] >= 50).all()
    assert all(len(set(row.tolist())) == 1 + SAMPLED_NEGATIVES for row in candidates)
