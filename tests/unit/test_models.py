"""Models alone (plain PyTorch): HEIN's shapes and gates, the knowledge lookup, every backbone with
and without knowledge."""

import numpy as np
import pytest
import torch

from reki_spark.models import CTR_MODELS, SEQUENTIAL_MODELS, CtrSchema, Hein, KnowledgeTables, SeqSchema
from reki_spark.models.base import CTR_FIELDS, DEFAULT_HEIN, ITEM_KNOWLEDGE, SEQUENCE_KNOWLEDGE, USER_KNOWLEDGE
from reki_spark.models.serving import PrecomputedKnowledge, serving_copy

D = 16


def _knowledge(views: int = 2) -> KnowledgeTables:
    """Three item clusters and four user clusters (row 0: no knowledge)."""
    rng = np.random.default_rng(0)
    item_vectors = np.vstack([np.zeros((1, D)), rng.normal(size=(3, D))]).astype(np.float32)
    user_vectors = np.vstack([np.zeros((1, D)), rng.normal(size=(4, D))]).astype(np.float32)
    return KnowledgeTables(item_vectors, user_vectors, views)


def _rows(n: int, views: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """Each example's knowledge rows, as the training views carry them (some 0: no knowledge)."""
    generator = torch.Generator().manual_seed(seed)
    return {
        USER_KNOWLEDGE: torch.randint(0, 5, (n, views), generator=generator),
        ITEM_KNOWLEDGE: torch.randint(0, 4, (n,), generator=generator),
    }


def test_hein_shapes_and_gate_weights():
    hein = Hein(D, shared=2, dedicated=3)
    users, items = torch.randn(5, D), torch.randn(5, D)
    assert hein(users, items).shape == (5, 64)
    user_vector, user_weights = hein.user(users)
    item_vector, item_weights = hein.item(items)
    assert user_vector.shape == item_vector.shape == (5, 32)
    assert user_weights.shape == item_weights.shape == (5, 2 + 3)
    assert torch.allclose(user_weights.sum(-1), torch.ones(5))
    assert torch.allclose(item_weights.sum(-1), torch.ones(5))
    assert len(hein.shared) == 2 and len(hein.user_experts) == len(hein.item_experts) == 3
    first = hein.shared[0]
    assert [m.out_features for m in first if isinstance(m, torch.nn.Linear)] == [128, 32]


def test_knowledge_lookup_is_frozen_and_keeps_user_views_apart():
    tables = _knowledge()
    assert not any(p.requires_grad for p in tables.parameters())
    assert torch.count_nonzero(tables.items(torch.tensor([0]))) == 0
    rows = torch.tensor([[2, 0]])
    vectors, present = tables.users(rows)
    assert torch.equal(vectors[0], tables.user_vectors[rows[0]])  # likes and dislikes never mixed
    assert present[0].tolist() == [True, False]


def test_the_model_holds_cluster_tables_only_whatever_the_number_of_entities():
    schema = CtrSchema(fields={field: 10 for field in CTR_FIELDS} | {"user_id": 100_000, "item_id": 50_000})
    model = CTR_MODELS["din"](schema, embedding_dim=8, knowledge=_knowledge())
    buffers = dict(model.named_buffers())
    assert {name: tuple(b.shape) for name, b in buffers.items()} == {
        "adapter.knowledge.item_vectors": (4, D),
        "adapter.knowledge.user_vectors": (5, D),
    }


def test_a_missing_user_view_contributes_zeros_not_heins_bias():
    from reki_spark.models.base import KnowledgeAdapter

    adapter = KnowledgeAdapter(_knowledge(), DEFAULT_HEIN)
    assert adapter.output_dim == 3 * DEFAULT_HEIN.output  # positive, negative, item
    positive, negative = adapter.users(torch.tensor([[3, 0]])).split(DEFAULT_HEIN.output, dim=-1)
    assert torch.count_nonzero(negative) == 0 and torch.count_nonzero(positive) > 0


def test_hein_once_per_distinct_row_gives_each_examples_values_and_gradients():
    from reki_spark.models.base import KnowledgeAdapter

    torch.manual_seed(0)
    adapter = KnowledgeAdapter(_knowledge(), DEFAULT_HEIN)
    rows = _rows(64)  # 64 examples over 5 user rows and 4 item rows: many repeats
    shared = adapter.hein.shared[0][0].weight
    deduplicated = adapter.pair(rows)
    (deduplicated_grad,) = torch.autograd.grad(deduplicated.square().sum(), shared)
    knowledge, hein = adapter.knowledge, adapter.hein
    vectors, present = knowledge.users(rows[USER_KNOWLEDGE])
    users = (hein.user(vectors.flatten(0, 1))[0].view(64, 2, -1) * present.unsqueeze(-1)).flatten(1)
    per_example = torch.cat([users, hein.item(knowledge.items(rows[ITEM_KNOWLEDGE]))[0]], dim=-1)
    (per_example_grad,) = torch.autograd.grad(per_example.square().sum(), shared)
    assert torch.allclose(deduplicated, per_example, atol=1e-6)
    assert torch.allclose(deduplicated_grad, per_example_grad, atol=1e-5)
    assert deduplicated_grad.abs().sum() > 0


def _ctr_batch(n: int = 6, history: int = 5) -> dict:
    generator = torch.Generator().manual_seed(0)
    batch = {name: torch.randint(0, 8, (n,), generator=generator) for name in CTR_FIELDS}
    batch["history"] = torch.randint(0, 10, (n, history), generator=generator)
    batch["label"] = torch.randint(0, 2, (n,), generator=generator).float()
    return batch | _rows(n)


@pytest.mark.parametrize("name", sorted(CTR_MODELS))
@pytest.mark.parametrize("with_knowledge", [False, True])
def test_ctr_backbones_train_a_step(name, with_knowledge):
    torch.manual_seed(0)
    schema = CtrSchema(fields={field: 10 for field in CTR_FIELDS})
    model = CTR_MODELS[name](schema, embedding_dim=32, knowledge=_knowledge() if with_knowledge else None)
    batch = _ctr_batch()
    logits = model(batch)
    assert logits.shape == (6,)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch["label"])
    loss.backward()
    hein_grads = [p.grad for n, p in model.named_parameters() if n.startswith("adapter.hein")]
    assert bool(hein_grads) == with_knowledge
    assert all(g is not None and torch.isfinite(g).all() for g in hein_grads)


@pytest.mark.parametrize("name", sorted(CTR_MODELS))
def test_without_the_user_id_field_scores_ignore_the_user_id(name):
    torch.manual_seed(0)
    schema = CtrSchema(fields={field: 10 for field in CTR_FIELDS})
    model = CTR_MODELS[name](schema, embedding_dim=32, user_id=False).eval()
    assert schema.user_field not in model.embeddings and schema.user_field not in model.field_names
    batch = _ctr_batch()
    other_users = batch | {schema.user_field: (batch[schema.user_field] % 9) + 1}
    assert not torch.equal(other_users[schema.user_field], batch[schema.user_field])
    with torch.no_grad():
        assert torch.equal(model(batch), model(other_users))


def test_dins_query_carries_the_target_items_categories():
    """DIN's attention compares the target with history items as both are represented (id plus
    categories): a target whose categories change scores differently, its id unchanged."""
    torch.manual_seed(0)
    schema = CtrSchema(fields={field: 10 for field in CTR_FIELDS})
    model = CTR_MODELS["din"](schema, embedding_dim=32).eval()
    batch = _ctr_batch()
    item, categories = (model.embeddings[f](batch[f]) for f in (schema.item_field, schema.category_field))
    with torch.no_grad():
        assert torch.allclose(model.target(batch), item + categories)
        recategorised = batch | {schema.category_field: (batch[schema.category_field] % 9) + 1}
        assert not torch.allclose(model.target(recategorised), model.target(batch))


@pytest.mark.parametrize("name", sorted(CTR_MODELS))
def test_serving_copy_scores_like_the_trained_model_without_running_hein(name):
    torch.manual_seed(0)
    schema = CtrSchema(fields={field: 10 for field in CTR_FIELDS})
    model = CTR_MODELS[name](schema, embedding_dim=32, knowledge=_knowledge()).eval()
    served = serving_copy(model)
    batch = _ctr_batch(n=32)
    with torch.no_grad():
        assert torch.allclose(served(batch), model(batch), atol=1e-5)
    assert isinstance(served.adapter, PrecomputedKnowledge)
    for mlp_name in served.knowledge_mlps:
        folded, original = getattr(served, mlp_name), getattr(model, mlp_name)
        # the request-time product no longer carries the 64 knowledge columns
        assert folded.input_width == original[0].in_features - model.adapter.output_dim


@pytest.mark.parametrize("name", sorted(SEQUENTIAL_MODELS))
@pytest.mark.parametrize("with_knowledge", [False, True])
def test_sequential_backbones_score_every_item(name, with_knowledge):
    torch.manual_seed(0)
    schema = SeqSchema(items=10, users=8, max_length=6)
    model = SEQUENTIAL_MODELS[name](schema, embedding=16, knowledge=_knowledge() if with_knowledge else None)
    sequence = torch.tensor([[0, 0, 3, 4, 5, 6, 7], [1, 2, 3, 4, 5, 6, 9]])
    rows = {SEQUENCE_KNOWLEDGE: sequence % 4, USER_KNOWLEDGE: torch.tensor([[1, 2], [3, 0]])}
    loss = model.loss({"sequence": sequence, "user": torch.tensor([1, 2]), **rows})
    loss.backward()
    assert torch.isfinite(loss)
    model.eval()
    inputs = {"sequence": sequence[:, 1:], "user": torch.tensor([1, 2]), **rows}
    inputs[SEQUENCE_KNOWLEDGE] = inputs[SEQUENCE_KNOWLEDGE][:, 1:]
    score = model.item_scorer(inputs)
    every_item = score(torch.arange(10))
    assert every_item.shape == (2, 10)
    # per-row candidates score as the same items in the shared-catalogue call
    candidates = torch.tensor([[3, 7], [9, 1]])
    assert torch.allclose(score(candidates), every_item.gather(1, candidates), atol=1e-6)


def test_sampled_softmax_counts_targets_as_they_come_and_loads_older_checkpoints():
    """The logQ frequencies' counts and their running total grow by the batch's targets only; a
    checkpoint from before the running total gets it from its counts."""
    schema = SeqSchema(items=10, users=8, max_length=6)
    model = SEQUENTIAL_MODELS["sasrec"](schema, embedding=8, loss="sampled_softmax", sampled_negatives=4)
    sequence = torch.tensor([[0, 3, 4, 4, 5], [1, 2, 3, 9, 9]])
    model.loss({"sequence": sequence, "user": torch.tensor([1, 2])})
    expected = torch.bincount(sequence[:, 1:][sequence[:, 1:] > 0], minlength=10).float()
    assert torch.equal(model.target_counts, expected) and float(model.target_total) == 8
    older = {key: value for key, value in model.state_dict().items() if key != "target_total"}
    fresh = SEQUENTIAL_MODELS["sasrec"](schema, embedding=8, loss="sampled_softmax", sampled_negatives=4)
    fresh.load_state_dict(older)
    assert float(fresh.target_total) == 8


def test_shuffled_knowledge_moves_every_vector_to_another_group_of_its_own_view():
    import numpy as np

    from reki_spark.training.data import deranged

    # As ClusterRows holds them (sorted by id): negative-view groups before positive ones.
    view_of = ["negative"] * 5 + ["positive"] * 7
    vectors = np.vstack([np.zeros((1, 3)), np.arange(36, dtype=float).reshape(12, 3)])
    source = {tuple(vector): row for row, vector in enumerate(vectors.tolist()) if row}
    dealt = {seed: deranged(vectors, view_of, seed) for seed in (1, 2, 3)}
    for moved in dealt.values():
        assert (moved[0] == 0).all()  # row 0 means "no knowledge" and stays
        origins = [source[tuple(vector)] for vector in moved[1:].tolist()]
        assert sorted(origins) == list(range(1, 13))  # the same vectors, each once
        assert all(origin != row for row, origin in enumerate(origins, 1))  # none stays in its group
        # and none crosses views: a liked-view text never lands where a disliked one stood
        assert all(view_of[origin - 1] == view_of[row - 1] for row, origin in enumerate(origins, 1))
    assert (deranged(vectors, view_of, 1) == dealt[1]).all()  # seeded: a seed deals the same groups again
    assert not (dealt[1] == dealt[2]).all() and not (dealt[2] == dealt[3]).all()  # seeds sample permutations
    items = deranged(vectors[:4], ["item"] * 3, 1)
    assert not (items[1:] == vectors[1:4]).all(axis=1).any()
