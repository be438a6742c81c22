"""Training step cost against the size of the id tables, dense against sparse updates: the product's
DIN, optimizer (`training/optim.py`: AdamW, plus SparseAdam for the user and item tables when they
are sparse) and batch layout (`feeding.ctr_batch`), at the user and item counts of the scale
benchmark's 1e7 and 1e8 interactions and of the 1e9 sizing (1e5/1e4, 1e6/1e5, 1e7/1e6 users/items).

One process per (size, update), one thread (a rank per core, as the scale runs), the same seeded
batches of 4,096 rows with uniform ids (the most distinct rows a batch can touch: real logs, Zipf
on items, touch fewer). No DDP: the all-reduce of a dense table's gradient comes on top of the
dense figures (a 1e7 x 32 table is 1.28 GB per step), a sparse one's carries only the touched rows.

    python -m bench.step_cost            # ~10 min on 2 cores
"""

from __future__ import annotations

import multiprocessing
import resource
import statistics
import time
from typing import Any

import numpy as np
import torch

from bench.common import Measure, save
from reki_spark.models import CtrSchema, Din
from reki_spark.models.base import CTR_FIELDS, RATING_FIELD
from reki_spark.provenance import code_version
from reki_spark.training.feeding import ctr_batch
from reki_spark.training.optim import RunOptimizer

SIZES = ((100_000, 10_000), (1_000_000, 100_000), (10_000_000, 1_000_000))  # (users, items)
BATCH, HISTORY, SMALL_FIELD = 4096, 5, 20
WARMUP, TIMED, REPETITIONS = 3, 10, 3


def _columns(users: int, items: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One batch in the CTR view's scalar layout (one category slot)."""
    columns = {name: rng.integers(1, SMALL_FIELD, BATCH) for name in CTR_FIELDS if name != "item_category"}
    columns["user_id"] = rng.integers(1, users + 1, BATCH)
    columns["item_id"] = rng.integers(1, items + 1, BATCH)
    columns["cat0"] = rng.integers(1, SMALL_FIELD, BATCH)
    for i in range(HISTORY):
        columns[f"hist{i}"] = rng.integers(1, items + 1, BATCH)
        columns[f"hrat{i}"] = rng.integers(1, 6, BATCH)
        columns[f"hcat{i}_0"] = rng.integers(1, SMALL_FIELD, BATCH)
    columns["label"] = (rng.random(BATCH) < 0.5).astype(np.float32)
    return columns


def _steps(users: int, items: int, sparse: bool, seed: int) -> dict[str, Any]:
    """Median seconds per optimizer step, and the process's peak resident memory."""
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    sizes = {name: SMALL_FIELD + 1 for name in [*CTR_FIELDS, RATING_FIELD]}
    schema = CtrSchema(fields={**sizes, "user_id": users + 1, "item_id": items + 1})
    model = Din(schema, sparse_ids=sparse)
    optimizer = RunOptimizer(model, 1e-3, 1e-4, total_steps=WARMUP + TIMED)
    rng = np.random.default_rng(seed)
    batches = [ctr_batch(_columns(users, items, rng), HISTORY, 1) for _ in range(WARMUP + TIMED)]
    seconds = []
    for batch in batches:
        started = time.perf_counter()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(batch), batch["label"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seconds.append(time.perf_counter() - started)
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    return {"step_seconds": statistics.median(seconds[WARMUP:]), "peak_rss_gib": round(peak_gib, 2)}


def _measured(users: int, items: int, sparse: bool, seed: int) -> dict[str, Any]:
    with multiprocessing.get_context("spawn").Pool(1) as pool:  # a fresh process: its own peak memory
        return pool.apply(_steps, (users, items, sparse, seed))


def main() -> None:
    runs: dict[str, list[dict[str, Any]]] = {}
    for repetition in range(REPETITIONS):
        for users, items in SIZES:
            for sparse in (False, True):  # side by side, the same batches
                key = f"{users}_users_{'sparse' if sparse else 'dense'}"
                runs.setdefault(key, []).append(_measured(users, items, sparse, seed=repetition + 1))
                print(key, runs[key][-1], flush=True)

    def step(users: int, update: str, repetition: int) -> float:
        return runs[f"{users}_users_{update}"][repetition]["step_seconds"]

    summary = {
        key: {
            "step_seconds": statistics.median(r["step_seconds"] for r in values),
            "peak_rss_gib": max(r["peak_rss_gib"] for r in values),
        }
        for key, values in runs.items()
    }
    details = {"commit": code_version(), **summary}
    (small, _), _, (large, _) = SIZES
    reps = range(REPETITIONS)
    measures = [
        Measure(
            "DIN step, 1e7 users: sparse / dense",
            "<= 0.5",
            [step(large, "sparse", r) / step(large, "dense", r) for r in reps],
            details,
        ),
        Measure(
            "DIN sparse step growth, 1e5 -> 1e7 users (100x tables)",
            "<= 1.5",
            [step(large, "sparse", r) / step(small, "sparse", r) for r in reps],
            details,
        ),
    ]
    save(
        "step_cost",
        measures,
        notes=(
            f"Median seconds per step (batch {BATCH}, one thread, one process, no DDP) and peak RSS per run: "
            f"{summary}. Users/items {SIZES}; DIN with the product's defaults (32-d), AdamW on the dense "
            "parameters and, when sparse, SparseAdam on the user and item tables. Dense updates for scale: their step "
            "grows with the tables (the 1e7/1e5 ratio of the dense medians), which sparse updates remove."
        ),
    )


if __name__ == "__main__":
    main()
