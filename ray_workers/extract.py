"""Knowledge extraction on Ray (`reki extract`, REKI stage 1): the prompts with no accepted answer
yet for the configured model go through a Ray Data `map_batches` actor pool of LLM backends (or
`ray.data.llm` for vLLM); answers are validated, retried, and merged into `knowledge` by
(prompt_id, model_id) as they arrive, so a crash loses at most the batches in flight and a rerun
asks only what is missing.

Reads `prompts`, `knowledge`; writes `knowledge`, `ledger`."""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from ray_workers.backends import LlmBackend, make_backend, model_id
from ray_workers.delta_io import RsLake
from ray_workers.ray_session import start_ray
from ray_workers.validation import answer_problem, reason_kind
from reki_spark.config import LlmConfig, RekiConfig
from reki_spark.lake import KNOWLEDGE, PROMPTS, Lake
from reki_spark.ledger import ledger_entry
from reki_spark.session import get_spark

OK, FAILED = "ok", "failed"
PROMPT_COLUMNS = ["prompt_id", "kind", "entity_type", "entity_id", "view", "system", "prompt"]
BackendFactory = Callable[[LlmConfig], LlmBackend]
# A retry with the same seed at temperature 0 would repeat the same answer.
RETRY_MIN_TEMPERATURE = 0.7


@dataclass
class ExtractionSummary:
    model_id: str
    pending: int
    answered: int
    ok: int
    failed: int
    prompt_tokens: int
    completion_tokens: int
    llm_calls: int
    # Rejected attempts (retried or, at the last attempt, failed) per reason kind.
    rejections: Counter[str] = field(default_factory=Counter)

    def rejection_shares(self) -> dict[str, float]:
        return {kind: count / self.llm_calls for kind, count in self.rejections.most_common()}


def pending_prompts(lake: RsLake, model: str, retry_failed: bool) -> pa.Table:
    """Prompts without an accepted answer from `model` (failed ones too when `retry_failed`)."""
    prompts = lake.read(PROMPTS, PROMPT_COLUMNS)
    if not lake.exists(KNOWLEDGE):
        return prompts
    answers = lake.read(KNOWLEDGE, ["prompt_id", "model_id", "status"])
    accepted = pc.equal(answers["model_id"], model)
    if retry_failed:
        accepted = pc.and_(accepted, pc.equal(answers["status"], OK))
    done = answers.filter(accepted)["prompt_id"]
    return prompts.filter(pc.invert(pc.is_in(prompts["prompt_id"], value_set=done)))


def answer_prompt(backend: LlmBackend, settings: LlmConfig, row: dict[str, Any], model: str) -> dict[str, Any]:
    """Ask, validate, retry with a new seed; always returns one knowledge row, `ok` or `failed`."""
    prompt_tokens = completion_tokens = 0
    text, problem, attempts = "", "not attempted", 0
    rejections: list[str] = []
    started = time.perf_counter()
    for attempts in range(1, settings.max_attempts + 1):
        temperature = settings.temperature if attempts == 1 else max(settings.temperature, RETRY_MIN_TEMPERATURE)
        try:
            generation = backend.generate(row["system"], row["prompt"], settings.seed + attempts - 1, temperature)
        # Any backend failure (a prompt longer than the context, a dropped connection, an API
        # error) is one failed attempt of this prompt, recorded with its reason, not a dead run.
        except Exception as err:
            text, problem = "", f"backend error: {type(err).__name__}: {str(err)[:200]}"
            rejections.append(reason_kind(problem))
            continue
        prompt_tokens += generation.prompt_tokens
        completion_tokens += generation.completion_tokens
        text = generation.text.strip()
        problem = answer_problem(text, settings)
        if problem is None:
            break
        rejections.append(reason_kind(problem))
    return {
        "prompt_id": row["prompt_id"],
        "model_id": model,
        "kind": row["kind"],
        "entity_type": row["entity_type"],
        "entity_id": row["entity_id"],
        "view": row["view"],
        "text": text,
        "prompt_hash": prompt_hash(row["system"], row["prompt"]),
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "latency_s": round(time.perf_counter() - started, 4),
        "attempts": attempts,
        "status": OK if problem is None else FAILED,
        "reason": problem,
        "created_at": datetime.now(UTC),
        # Counted into the ledger, not stored in `knowledge`: the kind of each rejected attempt.
        "rejections": rejections,
    }


def prompt_hash(system: str, prompt: str) -> str:
    return hashlib.sha256(f"{system}\n{prompt}".encode()).hexdigest()[:32]


class ExtractionActor:
    """One LLM backend per actor; called by Ray Data with a pandas batch of prompts."""

    def __init__(self, settings: dict[str, Any], model: str, backend_factory: BackendFactory | None = None) -> None:
        self.settings = LlmConfig.model_validate(settings)
        self.model = model
        self.backend = (backend_factory or make_backend)(self.settings)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        rows = [answer_prompt(self.backend, self.settings, row, self.model) for row in batch.to_dict("records")]
        return pd.DataFrame(rows)


def extract(config: RekiConfig, backend_factory: BackendFactory | None = None) -> ExtractionSummary:
    settings = config.llm
    lake = Lake(get_spark(config), config.lake)
    model = model_id(settings)
    with ledger_entry(lake, "extract") as record:
        pending = pending_prompts(RsLake(config.lake), model, settings.retry_failed)
        if settings.max_prompts is not None:
            pending = pending.slice(0, settings.max_prompts)
        summary = ExtractionSummary(model, pending.num_rows, 0, 0, 0, 0, 0, 0)
        if pending.num_rows:
            _run(config, pending, model, backend_factory, lake, summary)
        record.rows_in, record.rows_out = summary.pending, summary.answered
        record.llm_calls = summary.llm_calls
        record.prompt_tokens, record.completion_tokens = summary.prompt_tokens, summary.completion_tokens
        record.details = {
            "model_id": model,
            "ok": summary.ok,
            "failed": summary.failed,
            "rejected_calls": dict(summary.rejections),
        }
    rejected = ", ".join(f"{kind} {share:.0%}" for kind, share in summary.rejection_shares().items())
    print(
        f"extract [{model}]: {summary.pending} pending, {summary.ok} ok, {summary.failed} failed, "
        f"{summary.llm_calls} LLM calls, {summary.prompt_tokens} prompt + {summary.completion_tokens} "
        f"completion tokens; rejected calls: {rejected or 'none'}"
    )
    return summary


def _run(
    config: RekiConfig,
    pending: pa.Table,
    model: str,
    backend_factory: BackendFactory | None,
    lake: RsLake,
    summary: ExtractionSummary,
) -> None:
    import ray

    settings = config.llm
    start_ray(config.ray)
    dataset = ray.data.from_arrow(pending).repartition(max(1, pending.num_rows // settings.batch_size))
    answers = _answers(dataset, settings, model, backend_factory)
    metadata = pending.select(["prompt_id", "kind", "entity_type", "entity_id", "view"]).to_pandas()
    metadata["prompt_hash"] = [
        prompt_hash(s, p) for s, p in zip(pending["system"].to_pylist(), pending["prompt"].to_pylist(), strict=True)
    ]
    metadata = metadata.set_index("prompt_id")
    with tqdm(total=pending.num_rows, desc="extract", unit="prompt") as progress:
        for batch in answers.iter_batches(batch_size=settings.commit_rows, batch_format="pandas"):
            # Prompt metadata comes from the driver's copy, whatever columns a backend carried.
            batch = batch.drop(columns=[c for c in metadata.columns if c in batch.columns]).join(
                metadata, on="prompt_id"
            )
            lake.merge_rows(KNOWLEDGE, batch.to_dict("records"), ["prompt_id", "model_id"])
            _tally(summary, batch)
            progress.update(len(batch))
            progress.set_postfix(ok=summary.ok, failed=summary.failed, tokens=summary.completion_tokens)


def _answers(dataset: Any, settings: LlmConfig, model: str, backend_factory: BackendFactory | None) -> Any:
    import ray

    if settings.backend == "vllm":
        from ray_workers.backends import vllm

        vllm.require_gpus(ray.cluster_resources(), settings)
        return vllm.build(settings, settings.seed)(dataset).map_batches(
            _validated_vllm_rows, fn_kwargs={"settings": settings.model_dump(), "model": model}, batch_format="pandas"
        )
    return dataset.map_batches(
        ExtractionActor,
        fn_constructor_kwargs={"settings": settings.model_dump(), "model": model, "backend_factory": backend_factory},
        batch_size=settings.batch_size,
        compute=ray.data.ActorPoolStrategy(size=settings.actors),
        num_cpus=settings.cpus_per_actor,
        batch_format="pandas",
    )


def _validated_vllm_rows(batch: pd.DataFrame, settings: dict[str, Any], model: str) -> pd.DataFrame:
    """vLLM answers in one attempt per run; those that fail validation are stored as failed."""
    config = LlmConfig.model_validate(settings)
    rows = []
    for row in batch.to_dict("records"):
        problem = answer_problem(row["text"], config)
        rows.append(
            {
                **row,
                "model_id": model,
                "attempts": 1,
                "status": OK if problem is None else FAILED,
                "reason": problem,
                "created_at": datetime.now(UTC),
                "rejections": [] if problem is None else [reason_kind(problem)],
            }
        )
    return pd.DataFrame(rows)


def _tally(summary: ExtractionSummary, batch: pd.DataFrame) -> None:
    summary.answered += len(batch)
    summary.ok += int((batch["status"] == OK).sum())
    summary.failed += int((batch["status"] == FAILED).sum())
    summary.prompt_tokens += int(batch["prompt_tokens"].sum())
    summary.completion_tokens += int(batch["completion_tokens"].sum())
    summary.llm_calls += int(batch["attempts"].sum())
    summary.rejections.update(kind for kinds in batch["rejections"] for kind in kinds)
