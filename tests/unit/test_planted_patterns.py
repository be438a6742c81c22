"""Models must learn: small synthetic data with a planted rule, trained by the product's own loop
(`train_worker`, in-memory batches instead of Petastorm) and scored by its evaluation code. A
control at learning rate 0 shows that the thresholds cannot be met by a model that learns nothing."""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed as dist
from torch import nn

from reki_spark.config import ConfigError
from reki_spark.models import CTR_MODELS, MOSTPOP, SEQUENTIAL_MODELS, CtrSchema, SeqSchema
from reki_spark.models.base import CTR_FIELDS, RATING_FIELD
from reki_spark.training.data import KEYED_BY_CLUSTER, KnowledgeArrays
from reki_spark.training.feeding import SplitFiles, ctr_batch
from reki_spark.training.loop import (
    TrainJob,
    best_model,
    build_model,
    check_settings,
    distributed,
    train_worker,
)
from tests.loopback import free_port

ITEMS, USERS, LENGTH = 40, 400, 12
FIELD_SIZE = 12


class MemoryBatches:
    """A loader factory over in-memory rows, shuffled per epoch (the picklable shape of
    `PetastormBatches`)."""

    def __init__(self, rows: dict[str, torch.Tensor], batch_size: int, seed: int) -> None:
        self.rows, self.batch_size, self.seed = rows, batch_size, seed

    @contextlib.contextmanager
    def __call__(self, epoch: int, rank: int, world: int) -> Iterator[Iterator[dict[str, torch.Tensor]]]:
        count = len(next(iter(self.rows.values())))
        order = torch.randperm(count, generator=torch.Generator().manual_seed(self.seed + epoch))
        yield (
            {name: column[order[i : i + self.batch_size]] for name, column in self.rows.items()}
            for i in range(0, count, self.batch_size)
        )


def _parquet_parts(frame: pd.DataFrame, folder: Path, parts: int = 2) -> list[str]:
    """`frame` as Parquet part files, as the product's Spark views write them."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"part-{i}.parquet" for i in range(parts)]
    for path, piece in zip(paths, np.array_split(np.arange(len(frame)), parts), strict=True):
        frame.iloc[piece].to_parquet(path)
    return [path.as_uri() for path in paths]


def _split_files(folder: Path, splits: dict[str, pd.DataFrame]) -> SplitFiles:
    return SplitFiles({name: _parquet_parts(frame, folder / name) for name, frame in splits.items()}, 300)


def _planted_sequences(seed: int) -> np.ndarray:
    """Every user walks a fixed successor permutation (90% of steps), so the next item follows
    from the current one; MostPop sees a nearly uniform catalogue."""
    rng = np.random.default_rng(seed)
    successor = rng.permutation(ITEMS) + 1
    walks = np.zeros((USERS, LENGTH), dtype=np.int64)
    walks[:, 0] = rng.integers(1, ITEMS + 1, USERS)
    for t in range(1, LENGTH):
        follow = rng.random(USERS) < 0.9
        walks[:, t] = np.where(follow, successor[walks[:, t - 1] - 1], rng.integers(1, ITEMS + 1, USERS))
    return walks


def _sequential_job(model: str, learning_rate: float, tmp_path, **params) -> TrainJob:
    walks = _planted_sequences(0)
    # The last two items are the valid and test targets; training windows are the prefix.
    rows = {"user": torch.arange(USERS), "sequence": torch.as_tensor(walks[:, : LENGTH - 2])}
    width = LENGTH - 3  # the model's input length: a window minus its last target

    def targets(split_end: int) -> pd.DataFrame:
        frame = pd.DataFrame(walks[:, split_end - width : split_end], columns=[f"in{i}" for i in range(width)])
        seen = [sorted(set(w[:split_end])) for w in walks]
        return frame.assign(user=np.arange(USERS), target=walks[:, split_end], seen=seen)

    counts = np.bincount(walks[:, : LENGTH - 2].ravel(), minlength=ITEMS + 1).astype(np.float32)
    popularity = _parquet_parts(pd.DataFrame({"index": np.arange(ITEMS + 1), "count": counts}), tmp_path / "popularity")
    sequence_models = {"sasrec": {"layers": 1, "inner": 64, "dropout": 0.1}, "gru4rec": {"hidden": 64}}
    return TrainJob(
        task="sequential",
        model=model,
        knowledge="none",
        seed=1,
        schema=SeqSchema(items=ITEMS + 1, users=USERS, max_length=width),
        knowledge_arrays=None,
        checkpoint_dir=str(tmp_path / f"{model}-{learning_rate}"),
        params={"embedding": 32, **sequence_models.get(model, {}), **params},
        popularity=popularity,
        open_loader=MemoryBatches(rows, 64, seed=1),
        train_rows=USERS,
        splits=_split_files(tmp_path, {"valid": targets(LENGTH - 2), "test": targets(LENGTH - 1)}),
        epochs=15,
        patience=15,
        batch_size=64,
        learning_rate=learning_rate,
        weight_decay=0.0,
    )


def _ndcg(model: str, learning_rate: float, tmp_path, **params) -> float:
    return train_worker(_sequential_job(model, learning_rate, tmp_path, **params))["ndcg@10_full"]


@pytest.mark.parametrize("name", sorted(SEQUENTIAL_MODELS))
def test_sequential_backbones_find_a_planted_next_item_rule(name, tmp_path):
    popular = _ndcg(MOSTPOP, 0.0, tmp_path)
    learned = _ndcg(name, 5e-3, tmp_path)
    assert learned >= 3 * popular, f"{name}: NDCG@10 {learned:.3f} vs MostPop {popular:.3f}"


def test_sampled_softmax_finds_the_planted_rule_too(tmp_path):
    popular = _ndcg(MOSTPOP, 0.0, tmp_path)
    # 8 uniform negatives plus the batch's targets: far fewer than the 40 items the full one scores.
    learned = _ndcg("sasrec", 5e-3, tmp_path, loss="sampled_softmax", sampled_negatives=8)
    assert learned >= 3 * popular, f"sampled softmax: NDCG@10 {learned:.3f} vs MostPop {popular:.3f}"


@pytest.mark.parametrize("learning_rate", [5e-3, 1e-12])
def test_a_sparse_item_table_under_sampled_softmax_finds_the_rule_and_fails_frozen(learning_rate, tmp_path):
    """The item table sparse (SparseAdam on the looked-up rows): the rule is found, and frozen
    (SparseAdam refuses a rate of 0: 1e-12) it is not, so the sparse optimizer is what learns it."""
    popular = _ndcg(MOSTPOP, 0.0, tmp_path)
    sampled = {"loss": "sampled_softmax", "sampled_negatives": 8, "sparse_ids": True}
    job = _sequential_job("sasrec", learning_rate, tmp_path, **sampled)
    assert build_model(job).item_embedding.sparse
    ndcg = train_worker(job)["ndcg@10_full"]
    learns = learning_rate > 1e-6
    assert (ndcg >= 3 * popular) == learns, f"lr {learning_rate}: NDCG@10 {ndcg:.3f} vs MostPop {popular:.3f}"


def test_a_sequential_model_that_learns_nothing_stays_below_the_bar(tmp_path):
    popular = _ndcg(MOSTPOP, 0.0, tmp_path)
    frozen = _ndcg("sasrec", 0.0, tmp_path)
    assert frozen < 3 * popular, "the planted rule is found without training: the test could not fail"


def _planted_ctr(seed: int, count: int) -> pd.DataFrame:
    """Rows in the training view's layout (one category slot) whose clicks follow a (gender,
    category) affinity 90% of the time; every other column is noise."""
    rng = np.random.default_rng(seed)
    singles = [name for name in CTR_FIELDS if name != "item_category"]
    history = [f"{prefix}{i}" for prefix in ("hist", "hrat") for i in range(5)] + [f"hcat{i}_0" for i in range(5)]
    frame = pd.DataFrame({name: rng.integers(1, FIELD_SIZE, count) for name in [*singles, "cat0", *history]})
    rule = frame["user_gender"] % 3 == frame["cat0"] % 3
    noise = rng.random(count) < 0.1
    return frame.assign(label=(rule ^ noise).astype(np.float32))


CLUSTERS = 6


def _planted_knowledge_ctr(seed: int, count: int) -> pd.DataFrame:
    """Rows whose clicks follow the knowledge rows the examples carry (the user's positive-view
    cluster against the item's cluster) 90% of the time; ids and every other field are noise."""
    frame = _planted_ctr(seed, count)
    rng = np.random.default_rng(seed + 100)
    frame = frame.assign(**{name: rng.integers(1, CLUSTERS, count) for name in ("kitem", "kuser0", "kuser1")})
    rule = frame["kuser0"] % 3 == frame["kitem"] % 3
    return frame.assign(label=(rule ^ (rng.random(count) < 0.1)).astype(np.float32))


def _cluster_knowledge() -> KnowledgeArrays:
    rng = np.random.default_rng(0)
    vectors = np.vstack([np.zeros((1, 8)), rng.normal(size=(CLUSTERS, 8))]).astype(np.float32)
    return KnowledgeArrays(vectors, vectors.copy(), 2, KEYED_BY_CLUSTER)


def _ctr_auc(
    model: str, learning_rate: float, tmp_path, planted=_planted_ctr, knowledge=None, popularity=None, sparse=False
) -> float:
    return train_worker(_ctr_job(model, learning_rate, tmp_path, planted, knowledge, popularity, sparse))["auc"]


def _ctr_job(
    model: str,
    learning_rate: float,
    tmp_path,
    planted=_planted_ctr,
    knowledge=None,
    popularity=None,
    sparse=False,
    batch_size: int = 256,
) -> TrainJob:
    keyed = None if knowledge is None else knowledge.keyed_by
    return TrainJob(
        task="ctr",
        model=model,
        knowledge="none" if knowledge is None else "collective",
        seed=1,
        schema=CtrSchema(fields={name: FIELD_SIZE + 1 for name in [*CTR_FIELDS, RATING_FIELD]}),
        knowledge_arrays=knowledge,
        checkpoint_dir=str(tmp_path / f"{model}-{learning_rate}-{keyed}"),
        params={"embedding_dim": 16, "sparse_ids": sparse},
        open_loader=MemoryBatches(ctr_batch(planted(0, 6000), 5, 1, keyed), batch_size, seed=1),
        train_rows=6000,
        splits=_split_files(tmp_path / f"{model}-{keyed}", {"valid": planted(1, 1000), "test": planted(2, 1000)}),
        popularity=popularity,
        epochs=10,
        patience=10,
        batch_size=batch_size,
        learning_rate=learning_rate,
        weight_decay=0.0,
    )


@pytest.mark.parametrize("name", sorted(CTR_MODELS))
def test_ctr_backbones_find_a_planted_click_rule(name, tmp_path):
    auc = _ctr_auc(name, 3e-2, tmp_path)
    assert auc >= 0.8, f"{name}: AUC {auc:.3f}"


def test_a_ctr_model_that_learns_nothing_stays_below_the_bar(tmp_path):
    assert _ctr_auc("dcnv2", 0.0, tmp_path) < 0.8, "the click rule is found without training: the test could not fail"


def test_knowledge_rows_carried_by_the_examples_reach_the_model(tmp_path):
    """The click rule lives only in the cluster rows each example carries (the model holds the
    cluster vectors, no entity map): DIN finds it with knowledge and cannot without."""

    def auc(knowledge: KnowledgeArrays | None) -> float:
        # The rule is an interaction of two clusters seen only through random vectors: with lr 3e-2
        # and batches of 256, half of the runs stalled at AUC ~0.69 by the kernels' rounding alone
        # (one torch thread or four failed, two passed; training seeds 2, 3, 5 failed at two). With
        # 64-row batches at 3e-3 for 30 epochs every seed 1-5 at one, two and four threads reached
        # 0.865-0.871.
        job = _ctr_job("din", 3e-3, tmp_path, _planted_knowledge_ctr, knowledge, batch_size=64)
        job.epochs = job.patience = 30
        return train_worker(job)["auc"]

    with_knowledge, without = auc(_cluster_knowledge()), auc(None)
    assert with_knowledge >= 0.8, f"AUC {with_knowledge:.3f} with the knowledge rows"
    assert without < 0.65, f"AUC {without:.3f} without knowledge: the rule leaks through other columns"


def _planted_item_ctr(seed: int, count: int) -> pd.DataFrame:
    """Clicks that follow the item alone (every third item is liked) 90% of the time."""
    frame = _planted_ctr(seed, count)
    rule = frame["item_id"] % 3 == 0
    return frame.assign(label=(rule ^ (np.random.default_rng(seed + 7).random(count) < 0.1)).astype(np.float32))


def test_ctr_mostpop_scores_each_item_by_its_training_positive_rate(tmp_path):
    """CTR MostPop is counted, not trained: with each item's positive rate in the training rows
    it finds a click rule that lives in the item alone; without counts (every rate equal) it
    ranks nothing."""
    rates = _planted_item_ctr(0, 6000).groupby("item_id")["label"].mean()
    counted = _parquet_parts(
        pd.DataFrame({"index": rates.index.astype(np.int64), "count": rates.to_numpy()}), tmp_path / "rates", 1
    )
    assert _ctr_auc(MOSTPOP, 0.0, tmp_path, _planted_item_ctr, popularity=counted) >= 0.85
    assert _ctr_auc(MOSTPOP, 0.0, tmp_path / "uncounted", _planted_item_ctr) == pytest.approx(0.5)


def _planted_id_ctr(seed: int, count: int) -> pd.DataFrame:
    """Clicks that follow the user and item ids alone (user id against item id, mod 3) 90% of the
    time: the rule lives only in the two tables that `sparse_ids` makes sparse."""
    frame = _planted_ctr(seed, count)
    rule = frame["user_id"] % 3 == frame["item_id"] % 3
    return frame.assign(label=(rule ^ (np.random.default_rng(seed + 11).random(count) < 0.1)).astype(np.float32))


@pytest.mark.parametrize("name", ["din", "dcnv2"])
def test_sparse_id_tables_learn_through_the_sparse_optimizer(name, tmp_path):
    """The id tables get sparse gradients and SparseAdam; the rule is only in them, so a model
    whose sparse rows are not updated stays near 0.5."""
    model = _ctr_job(name, 3e-2, tmp_path, _planted_id_ctr, sparse=True)
    built = build_model(model)
    assert [n for n, table in built.embeddings.items() if table.sparse] == ["user_id", "item_id"]
    assert train_worker(model)["auc"] >= 0.8
    # SparseAdam refuses a learning rate of 0; Adam's steps are about the learning rate in size, so
    # 1e-12 over a few hundred steps leaves rows initialised at 1e-4 where they were.
    frozen = _ctr_auc(name, 1e-12, tmp_path / "frozen", _planted_id_ctr, sparse=True)
    assert frozen < 0.65, f"{name}: AUC {frozen:.3f} without learning: the test could not fail"


class ShardedBatches(MemoryBatches):
    """Each rank its own rows (every world-th), so replicas whose sparse gradients were not
    all-reduced would drift apart."""

    @contextlib.contextmanager
    def __call__(self, epoch: int, rank: int, world: int) -> Iterator[Iterator[dict[str, torch.Tensor]]]:
        rows = {name: column[rank::world] for name, column in self.rows.items()}
        with MemoryBatches(rows, self.batch_size, self.seed + rank)(epoch, rank, world) as batches:
            yield batches


def _ddp_rank(rank: int, world: int, port: int, job: TrainJob, out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    record = train_worker(job)
    Path(out, f"rank{rank}.json").write_text(json.dumps({k: record[k] for k in ("auc", "replica_checksums")}))


def test_ddp_on_gloo_all_reduces_the_sparse_gradients(tmp_path):
    """Two ranks on different rows: their replicas (sparse id tables included) end identical,
    and the model still finds the rule that lives in the ids."""
    job = _ctr_job("din", 3e-2, tmp_path, _planted_id_ctr, sparse=True)
    job.open_loader = ShardedBatches(job.open_loader.rows, 128, seed=1)
    job.epochs = 6
    torch.multiprocessing.spawn(_ddp_rank, args=(2, free_port(), job, str(tmp_path)), nprocs=2)
    records = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    checksums = records[0]["replica_checksums"]
    assert len(checksums) == 2 and checksums[0] == checksums[1]
    assert records[0]["auc"] >= 0.8


def test_ddp_does_not_rebroadcast_the_constant_knowledge_tables():
    """Knowledge vectors are buffers every rank builds alike: DDP must not send them every step."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        model = nn.Linear(2, 1)
        model.register_buffer("item_vectors", torch.ones(4, 3))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # quiet: no deprecated DDP argument
            assert distributed(model, torch.device("cpu")).forward_sync_buffers is False
    finally:
        dist.destroy_process_group()


def test_the_best_weights_live_apart_from_the_optimizer_checkpoint(tmp_path):
    """`last.pt` holds model, optimizer and state without the best weights; the best epoch's
    weights alone are `best-epoch<N>.pt`, which export and re-scoring load, and which a resumed
    run takes its best state from."""
    job = _ctr_job("din", 3e-2, tmp_path)
    # Six epochs, resumed after four to seven: four stopped near AUC 0.6 on this machine's CPU, so
    # the resumed run's check sat on its threshold (0.795 against 0.8).
    job.epochs, job.patience = 6, 6
    first = train_worker(job)
    folder = Path(job.checkpoint_dir, job.name)
    best_file = f"best-epoch{first['best_epoch']}.pt"
    assert sorted(p.name for p in folder.iterdir()) == [best_file, "last.pt", "settings.json"]
    checkpoint = torch.load(folder / "last.pt", weights_only=False)
    assert "best_state" not in checkpoint["state"] and "optimizers" in checkpoint
    weights = torch.load(folder / best_file)
    assert weights.keys() == build_model(job).state_dict().keys()  # weights only
    assert all(value.equal(weights[name]) for name, value in best_model(job).state_dict().items())
    # An unfinished checkpoint resumes with its best state from that file, and trains on.
    checkpoint["state"].update(finished=False, epoch=4)
    torch.save(checkpoint, folder / "last.pt")
    job.epochs, job.patience = 7, 7
    resumed = train_worker(job)
    assert resumed["epochs_trained"] == 7 and resumed["auc"] >= 0.8
    assert len(list(folder.glob("best-epoch*.pt"))) == 1


def test_checkpoints_trained_with_other_settings_are_refused_before_training(tmp_path):
    """A finished run would be reported, a stopped one resumed, as if trained with the new settings."""
    job = _ctr_job("din", 3e-2, tmp_path)
    job.epochs = job.patience = 1
    train_worker(job)
    check_settings(job)  # the same settings: reused as before
    job.learning_rate, job.params = 1e-2, {**job.params, "embedding_dim": 8}
    with pytest.raises(ConfigError, match=r"learning_rate 0.03 -> 0.01.*remove that folder") as refused:
        check_settings(job)
    assert "params" in str(refused.value) and str(Path(job.checkpoint_dir, job.name)) in str(refused.value)
