"""Serving latency: a DIN scoring requests with HEIN's outputs precomputed per knowledge row (the serving
copy `reki export` ships), against the same backbone without knowledge, at batch 1 and 1024; and
one SmolLM2 call for scale."""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from bench.common import Measure, save
from reki_spark.models import CtrSchema, Din, KnowledgeTables
from reki_spark.models.base import CTR_FIELDS, ITEM_KNOWLEDGE, USER_KNOWLEDGE
from reki_spark.models.serving import serving_copy

USERS, ITEMS, DIM, CLUSTERS = 943, 1682, 384, 42


def _batch(size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    batch = {name: torch.randint(1, 20, (size,), generator=generator) for name in CTR_FIELDS}
    batch["user_id"] = torch.randint(1, USERS, (size,), generator=generator)
    batch["item_id"] = torch.randint(1, ITEMS, (size,), generator=generator)
    batch["history"] = torch.randint(1, ITEMS, (size, 5), generator=generator)
    batch[USER_KNOWLEDGE] = torch.randint(1, CLUSTERS, (size, 2), generator=generator)
    batch[ITEM_KNOWLEDGE] = torch.randint(1, CLUSTERS, (size,), generator=generator)
    return batch


def _latencies(
    plain: torch.nn.Module, served: torch.nn.Module, batch: dict[str, torch.Tensor], calls: int
) -> tuple[float, float]:
    """Median seconds per call of each model, the calls interleaved so that drift in the machine's
    speed hits both alike."""
    timings: tuple[list[float], list[float]] = ([], [])
    with torch.no_grad():
        for _ in range(10):
            plain(batch), served(batch)
        for _ in range(calls):
            for model, times in zip((plain, served), timings, strict=True):
                start = time.perf_counter()
                model(batch)
                times.append(time.perf_counter() - start)
    return statistics.median(timings[0]), statistics.median(timings[1])


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    fields = {name: 21 for name in CTR_FIELDS} | {"user_id": USERS, "item_id": ITEMS}
    schema = CtrSchema(fields=fields)
    knowledge = KnowledgeTables(
        rng.normal(size=(CLUSTERS, DIM)).astype(np.float32), rng.normal(size=(CLUSTERS, DIM)).astype(np.float32), 2
    )
    plain = Din(schema).eval()
    served = serving_copy(Din(schema, knowledge=knowledge)).eval()
    generator = torch.Generator().manual_seed(0)
    measures, details = [], {}
    for size, calls in ((1, 2000), (1024, 200)):
        batch = _batch(size, generator)
        ratios, pairs = [], []
        for _ in range(5):
            base, with_knowledge = _latencies(plain, served, batch, calls)
            ratios.append(with_knowledge / base)
            pairs.append((base * 1e3, with_knowledge * 1e3))
        details[f"batch_{size}_ms"] = {
            "backbone": statistics.median(p[0] for p in pairs),
            "backbone_plus_hein": statistics.median(p[1] for p in pairs),
        }
        measures.append(Measure(f"DIN+HEIN / DIN latency, batch {size}", "<= 1.1", ratios, details[f"batch_{size}_ms"]))
    details["smollm2_call_ms"] = _llm_call_ms()
    save(
        "serving",
        measures,
        notes=(
            f"Median latencies (ms): {details}. HEIN's outputs are precomputed per knowledge row (cluster) and "
            "their product with DIN's first MLP layer too (W [x; u; i] = W_x x + W_u u + W_i i, the last two "
            "looked up by each request's cluster rows), so serving adds three 200-d lookups and adds to the "
            "backbone, and the request-time matrix product stays as narrow as the backbone's. For scale, one "
            "SmolLM2-135M call (64 tokens, 2 threads) per request would cost the milliseconds shown as smollm2_call_ms."
        ),
    )


def _llm_call_ms() -> float:
    from llama_cpp import Llama

    from ray_workers.backends.gguf import resolve_gguf

    llm = Llama(model_path=resolve_gguf(None), n_ctx=1024, n_threads=2, verbose=False, seed=0)
    messages = [{"role": "user", "content": 'Describe the movie "The Matrix" in one paragraph.'}]
    llm.create_chat_completion(messages=messages, max_tokens=8)
    start = time.perf_counter()
    llm.create_chat_completion(messages=messages, max_tokens=64, temperature=0.0)
    return (time.perf_counter() - start) * 1e3


if __name__ == "__main__":
    main()
