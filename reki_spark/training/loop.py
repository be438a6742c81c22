"""The training loop that runs in every rank: AdamW, a cosine schedule, early stopping on the
validation split (never on test), a checkpoint per epoch that a stopped run resumes from, and the
test metrics of the best epoch. Each epoch opens a fresh Petastorm loader on this rank's shard
(a re-iterated petastorm loader repeats its last partial batch) and DDP's `join` absorbs shards
of unequal length, so every training row is seen exactly once per epoch across ranks."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import functools
import json
import math
import os
import posixpath
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import distributed as dist
from torch import nn

from reki_spark import console, storage
from reki_spark.config import ConfigError
from reki_spark.evaluation.metrics import PRIMARY, CtrSums, MetricSums, RankingSums, target_ranks
from reki_spark.models import (
    CTR_MODELS,
    MOSTPOP,
    SEQUENTIAL_MODELS,
    CtrMostPop,
    CtrSchema,
    HeinSettings,
    KnowledgeTables,
    MostPop,
    SeqSchema,
)
from reki_spark.parquet_files import read_parquet_files
from reki_spark.training.data import KnowledgeArrays
from reki_spark.training.feeding import SplitFiles, ctr_batch, sequence_batch
from reki_spark.training.optim import RunOptimizer
from reki_spark.training.predictions import CTR_COLUMNS, RANKING_COLUMNS, ScoredRowsSink, scored_rows

CRASH_AFTER_STEPS_ENV = "REKI_FAULT_CRASH_AFTER_STEPS"
# glibc keeps the heap pages that freed CPU tensors leave (their sizes shift from batch to batch):
# a rank's resident memory grew by ~1 MB per step at 1e8 rows until the OOM killer stopped the run.
# Handing the free pages back this often kept it flat, at no measurable cost per step.
RELEASE_MEMORY_EVERY_STEPS = 50
LoaderFactory = Callable[[int, int, int], contextlib.AbstractContextManager[Iterable[dict[str, torch.Tensor]]]]


@dataclass(kw_only=True)
class ModelSpec:
    """What identifies a trained model and rebuilds it from its checkpoint."""

    task: str  # ctr | sequential
    model: str
    knowledge: str
    seed: int
    schema: CtrSchema | SeqSchema
    knowledge_arrays: KnowledgeArrays | None
    checkpoint_dir: str
    # The model constructor's keyword arguments (its block in the config).
    params: dict[str, Any] = field(default_factory=dict)
    hein: HeinSettings = field(default_factory=HeinSettings)
    # MostPop only: Parquet part files of (index, count), each item's count in the training split
    # (sequential) or its smoothed positive rate there (CTR).
    popularity: list[str] | None = None

    @property
    def name(self) -> str:
        return f"{self.task}-{self.model}-{self.knowledge}-seed{self.seed}"

    @property
    def keyed_by(self) -> str | None:
        """What the knowledge rows of its examples index (None: a model without knowledge)."""
        return None if self.knowledge_arrays is None else self.knowledge_arrays.keyed_by


@dataclass(kw_only=True)
class TrainJob(ModelSpec):
    """Everything one training run needs; pickled to every rank."""

    open_loader: LoaderFactory  # (epoch, rank, world) -> context manager yielding batches
    train_rows: int
    splits: SplitFiles  # valid and test rows, read by every rank from its own shard
    epochs: int = 20
    patience: int = 3
    batch_size: int = 1024
    eval_item_chunk: int = 8192
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    # Set: every rank writes its scored test rows under it, for the `predictions` table.
    predictions_root: str | None = None
    # The driver's storage settings: every rank reads and writes the same store (no credentials).
    storage_settings: storage.StorageSettings = field(default_factory=storage.StorageSettings)
    # Model and batches on the rank's GPU (TorchDistributor's use_gpu gives each rank one).
    use_gpu: bool = False
    # The code and settings that run it (provenance.run_provenance, taken on the driver): kept in
    # the checkpoint when the run finishes, so a finished run reused later still reports the code
    # and settings that trained it.
    provenance: dict[str, str] = field(default_factory=dict)

    @property
    def predictions_dir(self) -> str | None:
        """This run's staging folder for `predictions` (None: the run keeps no predictions)."""
        return None if self.predictions_root is None else storage.join(self.predictions_root, self.name)


def build_model(spec: ModelSpec) -> nn.Module:
    if spec.model == MOSTPOP:
        if isinstance(spec.schema, CtrSchema):
            size = spec.schema.fields[spec.schema.item_field]
            return CtrMostPop(spec.schema, item_counts(spec.popularity or [], size))
        return MostPop(spec.schema, item_counts(spec.popularity or [], spec.schema.items))
    knowledge = None
    if spec.knowledge_arrays is not None:
        arrays = spec.knowledge_arrays
        knowledge = KnowledgeTables(arrays.item_vectors, arrays.user_vectors, arrays.user_views)
    models = CTR_MODELS if spec.task == "ctr" else SEQUENTIAL_MODELS
    return models[spec.model](spec.schema, knowledge=knowledge, hein=spec.hein, **spec.params)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim` (None where the C library has none, e.g. macOS or musl)."""
    name = ctypes.util.find_library("c")
    return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None


def _release_free_memory() -> None:
    """Return the C heap's free pages to the system (see RELEASE_MEMORY_EVERY_STEPS)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _device(job: TrainJob) -> torch.device:
    """The rank's GPU when the run asks for GPUs (TorchDistributor sets LOCAL_RANK), else the CPU."""
    if job.use_gpu:
        if not torch.cuda.is_available():
            raise RuntimeError("training.use_gpu is true but this rank sees no CUDA device")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def _on(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return (
        batch if device.type == "cpu" else {name: value.to(device, non_blocking=True) for name, value in batch.items()}
    )


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


class _SequenceLoss(nn.Module):
    """Wraps a sequential model so that DDP's forward() computes its loss."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.loss(batch)


def train_worker(job: TrainJob) -> dict[str, Any]:
    """One rank of one training run; every rank returns rank 0's record for metrics.json, because
    TorchDistributor's local mode pickles each rank's return value to one file and keeps whichever
    rank finished last (a rank returning `{}` there made the run's record vanish)."""
    storage.use(job.storage_settings)
    rank, world = _distributed()
    record = _train_rank(job, rank, world)
    if world > 1:
        shared = [record]
        dist.broadcast_object_list(shared, src=0)
        record = shared[0]
    return record


def _train_rank(job: TrainJob, rank: int, world: int) -> dict[str, Any]:
    """This rank's part of the run: rank 0's record, `{}` on the others."""
    torch.manual_seed(job.seed)
    np.random.seed(job.seed)
    model = build_model(job)
    if job.model == MOSTPOP:
        return _counted_baseline(job, model) if rank == 0 else {}
    device = _device(job)
    model.to(device)
    steps_per_epoch = max(1, math.ceil(job.train_rows / (job.batch_size * world)))
    optimizer = RunOptimizer(model, job.learning_rate, job.weight_decay, job.epochs * steps_per_epoch)
    state = _resume(job, model, optimizer)
    trained: nn.Module = model if job.task == "ctr" else _SequenceLoss(model)
    if world > 1:
        trained = distributed(trained, device)
    # Fault injection for the resume test: the process dies after this many optimizer steps.
    crash_after = int(os.environ.get(CRASH_AFTER_STEPS_ENV, "0")) or None
    while not state["finished"] and state["epoch"] < job.epochs:
        epoch = state["epoch"]
        epoch_started = time.perf_counter()
        model.train()
        losses: list[torch.Tensor] = []
        with job.open_loader(epoch, rank, world) as batches, _joined(trained, world):
            for batch in batches:
                loss = _step_loss(trained, job, _on(batch, device))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(loss.detach())
                state["steps"] += 1
                if state["steps"] % RELEASE_MEMORY_EVERY_STEPS == 0:
                    _release_free_memory()
                if crash_after is not None and state["steps"] >= crash_after:
                    os._exit(3)
        state["epoch"] = epoch + 1
        train_loss = float(torch.stack(losses).mean()) if losses else math.nan
        stop = _end_of_epoch(job, model, state, (rank, world), train_loss, time.perf_counter() - epoch_started)
        # Kept in the checkpoint: a resumed or reloaded run reports all its epochs' time, not this call's.
        state["seconds"] = state.get("seconds", 0.0) + time.perf_counter() - epoch_started
        if world > 1:
            flag = torch.tensor([1 if stop else 0])
            dist.broadcast(flag, src=0)
            stop = bool(flag.item())
        if rank == 0:
            _save(job, model, optimizer, state)
        if stop:
            break
    checksums = _replica_checksums(model, world)
    # Each rank's own batches (DDP's join shadows a rank whose shard ran out): even shards or not.
    rank_steps = [int(steps) for steps in _per_rank(state["steps"], world)]
    if not state["finished"]:
        model.load_state_dict(state["best_state"])
        state["test"] = evaluate(job, model, "test", rank, world)
        state["finished"] = True
        state["provenance"] = job.provenance
        if rank == 0:
            _save(job, model, optimizer, state)
    if rank != 0:
        return {}
    return {
        **identity(job),
        **state["test"],
        "best_epoch": state["best_epoch"],
        "epochs_trained": state["epoch"],
        "steps": state["steps"],
        "train_seconds": round(state.get("seconds", 0.0), 2),
        "processes": world,
        **_recorded_provenance(state),
        "replica_checksums": checksums,
        "rank_steps": rank_steps,
        "history": state.get("history", []),
    }


def _counted_baseline(job: TrainJob, model: nn.Module) -> dict[str, Any]:
    """A model with nothing to learn: scored on test as it is, by the same evaluation code."""
    started = time.perf_counter()
    return {
        **identity(job),
        **evaluate(job, model, "test"),
        "best_epoch": 0,
        "epochs_trained": 0,
        "steps": 0,
        "train_seconds": round(time.perf_counter() - started, 2),
        "processes": 1,
        **job.provenance,
    }


def _recorded_provenance(state: dict[str, Any]) -> dict[str, str]:
    """The provenance a finished run kept; runs finished before it was recorded in full say so."""
    unknown = "unknown (finished before it was recorded)"
    if "provenance" in state:
        return state["provenance"]
    return {"commit": state.get("commit", unknown), "config_hash": unknown}


def distributed(trained: nn.Module, device: torch.device) -> nn.parallel.DistributedDataParallel:
    """DDP over `trained`. Its buffers are constants every rank builds alike from the same tables
    (knowledge vectors, popularity counts; no model keeps running statistics), so DDP's default
    re-broadcast of every buffer before each forward pass would only send the knowledge tables,
    hundreds of MB per step at scale, for nothing. They are sent once, when DDP starts (torch 2.13
    deprecates `broadcast_buffers`, which also skipped that one send, with a warning per rank)."""
    return nn.parallel.DistributedDataParallel(
        trained, device_ids=None if device.type == "cpu" else [device], forward_sync_buffers=False
    )


def identity(spec: ModelSpec) -> dict[str, Any]:
    return {"task": spec.task, "model": spec.model, "knowledge": spec.knowledge, "seed": spec.seed}


def _replica_checksums(model: nn.Module, world: int) -> list[float]:
    """Every rank's parameter checksum: equal values show that the DDP replicas stayed in sync."""
    return _per_rank(sum(float(p.detach().double().sum()) for p in model.parameters()), world)


def _per_rank(value: float, world: int) -> list[float]:
    """`value` of every rank, in rank order."""
    local = torch.tensor([value], dtype=torch.float64)
    if world == 1:
        return [local.item()]
    gathered = [torch.zeros_like(local) for _ in range(world)]
    dist.all_gather(gathered, local)
    return [t.item() for t in gathered]


def _step_loss(trained: nn.Module, job: TrainJob, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    if job.task == "ctr":
        return nn.functional.binary_cross_entropy_with_logits(trained(batch), batch["label"])
    return trained(batch)


@contextlib.contextmanager
def _joined(trained: nn.Module, world: int) -> Iterator[None]:
    if world > 1 and isinstance(trained, nn.parallel.DistributedDataParallel):
        with trained.join():
            yield
    else:
        yield


def _end_of_epoch(
    job: TrainJob, model: nn.Module, state: dict[str, Any], place: tuple[int, int], train_loss: float, seconds: float
) -> bool:
    """Every rank scores its shard of the validation split; with the metric reduced across ranks,
    every rank keeps the same best state (the replicas are equal), and rank 0 records the epoch and
    decides whether to stop early."""
    rank, world = place
    score = evaluate(job, model, "valid", rank, world)[PRIMARY[job.task]]
    if score > state["best_score"]:
        state.update(
            best_score=score,
            best_epoch=state["epoch"],
            bad_epochs=0,
            best_state={k: v.detach().clone() for k, v in model.state_dict().items()},
        )
    else:
        state["bad_epochs"] += 1
    if rank != 0:
        return False
    state.setdefault("history", []).append(
        {"epoch": state["epoch"], "train_loss": train_loss, "valid": score, "seconds": seconds}
    )
    console.detail(
        f"[{job.name}] epoch {state['epoch']}: valid {score:.4f} (best {state['best_score']:.4f} "
        f"at epoch {state['best_epoch']}), {seconds:.1f} s"
    )
    return state["bad_epochs"] >= job.patience


def _run_folder(spec: ModelSpec) -> str:
    """The run's checkpoints: `last.pt`, `best-epoch<N>.pt` and `settings.json`."""
    return storage.join(spec.checkpoint_dir, spec.name)


def _checkpoint_path(spec: ModelSpec) -> str:
    return storage.join(_run_folder(spec), "last.pt")


def run_settings(job: TrainJob) -> dict[str, Any]:
    """What a run's checkpoints were trained with: the model's settings, its input shapes and the
    optimisation (as JSON reads it back)."""
    arrays = job.knowledge_arrays
    settings = {
        "params": job.params,
        "hein": dataclasses.asdict(job.hein),
        "schema": dataclasses.asdict(job.schema),
        "knowledge_shape": None if arrays is None else [arrays.item_vectors.shape, arrays.user_vectors.shape],
        **{name: getattr(job, name) for name in ("epochs", "patience", "batch_size", "learning_rate", "weight_decay")},
    }
    return json.loads(json.dumps(settings))


def check_settings(job: TrainJob) -> None:
    """Refuses a run whose checkpoints were trained with other settings: it would resume them, or
    report a finished run as if trained with these (run on the driver, before any rank starts)."""
    path = storage.join(_run_folder(job), SETTINGS_FILE)
    if job.model == MOSTPOP or not storage.exists(path):
        return
    saved, now = json.loads(storage.read_text(path)), run_settings(job)
    changed = [f"{key} {_short(saved.get(key))} -> {_short(now.get(key))}" for key in now if saved.get(key) != now[key]]
    if changed:
        raise ConfigError(
            f"{job.name}: its checkpoints under {_run_folder(job)} were trained with "
            f"other settings ({'; '.join(changed)}): remove that folder to train it anew, or use another output"
        )


def _short(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _best_path(spec: ModelSpec, epoch: int) -> str:
    """The best epoch's weights alone, apart from the checkpoint's optimizer state (export and
    re-scoring load only this). Named by epoch: a crash between it and `last.pt` leaves the
    checkpoint's own best file in place."""
    return storage.join(_run_folder(spec), f"{BEST_PREFIX}{epoch}.pt")


def _best_files(spec: ModelSpec) -> list[str]:
    return [f for f in storage.list_files(_run_folder(spec), ".pt") if posixpath.basename(f).startswith(BEST_PREFIX)]


BEST_PREFIX = "best-epoch"
SETTINGS_FILE = "settings.json"


# Buffers of checkpoints written before knowledge rows travelled with the examples: the model then
# held per-entity maps to the same cluster rows (cluster ids in sorted order, as `ClusterRows`).
LEGACY_BUFFERS = ("adapter.knowledge.item_rows", "adapter.knowledge.user_rows")


def _loadable(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: value for name, value in state.items() if not name.endswith(LEGACY_BUFFERS)}


def _load_weights(path: str) -> dict[str, torch.Tensor]:
    weights = storage.load_torch(path)
    assert isinstance(weights, dict), path
    return _loadable(weights)


def _resume(job: TrainJob, model: nn.Module, optimizer: RunOptimizer) -> dict[str, Any]:
    path = _checkpoint_path(job)
    if storage.exists(path):
        saved = storage.load_torch(path)
        assert isinstance(saved, dict), path
        model.load_state_dict(_loadable(saved["model"]))
        optimizer.load_state_dict(saved)
        state = saved["state"]
        # Checkpoints written before the best weights had a file of their own carry them inline.
        best = state.get("best_state") or _load_weights(_best_path(job, state["best_epoch"]))
        state["best_state"] = _loadable(best)
        print(f"[{job.name}] resuming after epoch {state['epoch']}", flush=True)
        return state
    return {
        "epoch": 0,
        "steps": 0,
        "best_score": -math.inf,
        "best_epoch": 0,
        "bad_epochs": 0,
        "best_state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "finished": False,
        "test": {},
    }


def _save(job: TrainJob, model: nn.Module, optimizer: RunOptimizer, state: dict[str, Any]) -> None:
    """The best weights (when they changed) and then the checkpoint: model, optimizers and the
    run's state, without the best weights. Each is written whole (storage.write_bytes): a crash
    never leaves half a file, and a rank restarted on another node finds them on the shared store.
    Best files of earlier epochs go only once the checkpoint no longer names them."""
    best = state["best_epoch"]
    if state.get("best_saved") != best:
        storage.save_torch(state["best_state"], _best_path(job, best))
        state["best_saved"] = best
    storage.write_text(storage.join(_run_folder(job), SETTINGS_FILE), json.dumps(run_settings(job)))
    kept = {k: v for k, v in state.items() if k != "best_state"}
    storage.save_torch({"model": model.state_dict(), **optimizer.state_dict(), "state": kept}, _checkpoint_path(job))
    for stale in _best_files(job):
        if stale != _best_path(job, best):
            storage.delete_tree(stale)


def best_model(spec: ModelSpec) -> nn.Module:
    """The best epoch's model of a finished run, from its weights file alone (MostPop has none)."""
    if spec.model == MOSTPOP:
        return build_model(spec)
    best = _best_files(spec)
    if len(best) != 1:
        raise FileNotFoundError(f"no finished run {spec.name} under {spec.checkpoint_dir}: run `reki train` first")
    model = build_model(spec)
    model.load_state_dict(_load_weights(best[0]))
    return model


@torch.no_grad()
def evaluate(job: TrainJob, model: nn.Module, split: str, rank: int = 0, world: int = 1) -> dict[str, float]:
    """The metrics of `split`: this rank scores its shard of `world` and the sums are reduced across
    the ranks (with world > 1 every rank must call it), so the result does not depend on how many
    ranks share the split."""
    model.eval()
    device = next(model.parameters(), torch.empty(0)).device
    sums: MetricSums
    scorer, columns = (_ctr, CTR_COLUMNS) if job.task == "ctr" else (_ranking, RANKING_COLUMNS)
    with scored_rows(job.predictions_dir if split == "test" else None, rank, columns) as sink:
        sums = scorer(job, model, split, (rank, world, device), sink)
    if world > 1:
        sums.reduce()
    _release_free_memory()
    return sums.metrics()


Place = tuple[int, int, torch.device]  # rank, world, the model's device


def _ctr(job: TrainJob, model: nn.Module, split: str, place: Place, sink: ScoredRowsSink | None) -> CtrSums:
    assert isinstance(job.schema, CtrSchema)
    (rank, world, device), schema, sums = place, job.schema, CtrSums()
    for _, frame in job.splits.batches(split, rank, world):
        batch = ctr_batch(frame, schema.history_length, schema.category_slots, job.keyed_by)
        probabilities = torch.sigmoid(model(_on(batch, device))).cpu()
        sums.add(batch["label"], probabilities)
        if sink is not None:
            sink(frame["user_id"], frame["item_id"], frame["label"], probabilities.numpy())
    return sums


def _ranking(job: TrainJob, model: nn.Module, split: str, place: Place, sink: ScoredRowsSink | None) -> RankingSums:
    """Full and sampled ranks of each row's target; the items a row's user saw before it travel
    with the row (`seen`), so no per-user table is held here. The sampled negatives of a batch are
    drawn from a stream seeded by the run and the batch's place in the split's files, so they are
    the same however many ranks share the split."""
    assert isinstance(job.schema, SeqSchema)
    (rank, world, device), sums = place, RankingSums()
    for (number, index), frame in job.splits.batches(split, rank, world):
        batch = sequence_batch(frame, job.schema.max_length, "in", job.keyed_by)
        stream = int(np.random.SeedSequence([job.seed, number, index]).generate_state(1)[0])
        scorer = model.item_scorer(_on(batch, device))
        full_ranks, sampled_ranks = target_ranks(
            lambda items, scorer=scorer: scorer(items.to(device)).cpu(),
            torch.as_tensor(frame["target"].to_numpy(), dtype=torch.long),
            _padded(frame["seen"]),
            job.schema.items,
            job.eval_item_chunk,
            torch.Generator().manual_seed(stream),
        )
        sums.add(full_ranks, sampled_ranks)
        if sink is not None:
            sink(frame["user"], frame["target"], full_ranks.numpy(), sampled_ranks.numpy())
    return sums


def _padded(arrays: pd.Series) -> torch.Tensor:
    """(rows, longest) item indices of variable-length arrays, right-padded with 0."""
    lengths = arrays.map(len).to_numpy()
    codes = np.zeros((len(arrays), max(1, int(lengths.max(initial=0)))), dtype=np.int64)
    codes[np.arange(codes.shape[1]) < lengths[:, None]] = np.concatenate([np.asarray(a) for a in arrays] or [[]])
    return torch.as_tensor(codes)


def item_counts(files: list[str], items: int) -> np.ndarray:
    """Per item index its count (or rate), from Parquet part files of (index, count) (0 for items absent)."""
    counts = np.zeros(items, dtype=np.float32)
    if files:
        table = read_parquet_files(files, ["index", "count"])
        counts[table["index"].to_numpy()] = table["count"].to_numpy()
    return counts
