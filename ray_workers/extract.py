"""Knowledge extraction on Ray (`reki extract`, REKI stage 1): Spark writes the prompts with no
accepted answer yet for the configured model into a staging folder; Ray Data reads them there on
its workers and sends them through a `map_batches` actor pool of LLM backends (or `ray.data.llm`
for vLLM); answers are validated and retried, each batch is staged by a worker as a Parquet part,
and Spark merges the staged parts into `knowledge` by (prompt_id, model_id) in large commits
(staging.py). A crash loses at most the batches in flight, and a rerun asks only what is missing.
The driver sees one summary row per batch, never the prompts or the answers.

Reads `prompts`, `knowledge`; writes `knowledge`, `ledger`."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from ray_workers.backends import BackendUnavailable, LlmBackend, make_backend, model_id
from ray_workers.ray_session import start_ray
from ray_workers.staging import read_input, recover, staged_input, staged_tallies
from ray_workers.validation import answer_problem, reason_kind
from reki_spark import console
from reki_spark.config import LlmConfig, RekiConfig
from reki_spark.lake import KNOWLEDGE, LEDGER, PROMPTS, Lake, prompt_hash
from reki_spark.ledger import StageRecord, ledger_entry
from reki_spark.session import get_spark

OK, FAILED = "ok", "failed"
KNOWLEDGE_KEYS = ["prompt_id", "model_id"]
LEDGER_KEYS = ["run_id"]
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
    # Staged answers of an interrupted run, merged before this run asked anything (some may have
    # been merged already when it died: the merge is keyed, so they change nothing).
    recovered: int = 0

    def add(self, tally: dict[str, Any]) -> None:
        self.answered += tally["rows"]
        for name in ("ok", "failed", "prompt_tokens", "completion_tokens", "llm_calls"):
            setattr(self, name, getattr(self, name) + tally[name])
        self.rejections.update(json.loads(tally["rejections"]))

    def rejection_shares(self) -> dict[str, float]:
        return {kind: count / self.llm_calls for kind, count in self.rejections.most_common()}


def pending_prompts(lake: Lake, model: str, retry_failed: bool) -> DataFrame:
    """Prompts without an accepted answer from `model` (failed ones too when `retry_failed`)."""
    prompts = lake.read(PROMPTS).select(*PROMPT_COLUMNS, prompt_hash())
    if not lake.exists(KNOWLEDGE):
        return prompts
    answers = lake.read(KNOWLEDGE).where(F.col("model_id") == model)
    if retry_failed:
        answers = answers.where(F.col("status") == OK)
    return prompts.join(answers.select("prompt_id"), "prompt_id", "left_anti")


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
        except BackendUnavailable:
            raise  # the endpoint is gone: stop the run, the prompt stays pending
        # Any other backend failure (a prompt longer than the context, an API error about this
        # request) is one failed attempt of this prompt, recorded with its reason, not a dead run.
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
        "prompt_hash": row["prompt_hash"],
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


class ExtractionActor:
    """One LLM backend per actor; called by Ray Data with a pandas batch of prompts."""

    def __init__(self, settings: dict[str, Any], model: str, backend_factory: BackendFactory | None = None) -> None:
        self.settings = LlmConfig.model_validate(settings)
        self.model = model
        self.backend = (backend_factory or make_backend)(self.settings)
        # llm.concurrency requests in flight (openai only: the config refuses it elsewhere).
        self.pool = ThreadPoolExecutor(self.settings.concurrency, thread_name_prefix="llm-request")

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        def answer(row: dict[str, Any]) -> dict[str, Any]:
            return answer_prompt(self.backend, self.settings, row, self.model)

        return pd.DataFrame(list(self.pool.map(answer, batch.to_dict("records"))))


def extract(config: RekiConfig, backend_factory: BackendFactory | None = None) -> ExtractionSummary:
    settings = config.llm
    lake = Lake(get_spark(config), config.lake)
    model = model_id(settings)
    with ledger_entry(lake, "extract") as record:
        # What a dead run staged, or a run in the LLM-worker image handed over (ray_workers.answer),
        # is merged first, so that it is not asked again.
        recovered = recover(lake, KNOWLEDGE, KNOWLEDGE_KEYS)
        recover(lake, LEDGER, LEDGER_KEYS)
        pending = pending_prompts(lake, model, settings.retry_failed)
        if settings.max_prompts is not None:
            pending = pending.orderBy("prompt_id").limit(settings.max_prompts)
        with staged_input(pending, lake.root, "extract") as (inputs, count):
            summary = ExtractionSummary(model, count, 0, 0, 0, 0, 0, 0, recovered=recovered)
            if count:
                with backend_outage():
                    start_ray(config.ray)
                    answers = llm_answers(read_input(inputs, count, settings.batch_size), settings, backend_factory)
                    commit = (settings.commit_rows, settings.commit_seconds)
                    tallies = staged_tallies(lake, answers, KNOWLEDGE, KNOWLEDGE_KEYS, commit, batch_summary)
                    tally_answers(tallies, summary)
        record_summary(record, summary)
    report(summary)
    return summary


def record_summary(record: StageRecord, summary: ExtractionSummary) -> None:
    record.rows_in, record.rows_out = summary.pending, summary.answered
    record.llm_calls = summary.llm_calls
    record.prompt_tokens, record.completion_tokens = summary.prompt_tokens, summary.completion_tokens
    record.details = {
        "model_id": summary.model_id,
        "ok": summary.ok,
        "failed": summary.failed,
        "rejected_calls": dict(summary.rejections),
        "recovered_from_staging": summary.recovered,
    }


def report(summary: ExtractionSummary) -> None:
    rejected = ", ".join(f"{kind} {share:.0%}" for kind, share in summary.rejection_shares().items())
    print(
        f"extract [{summary.model_id}]: {summary.pending} pending, {summary.ok} ok, {summary.failed} failed, "
        f"{summary.llm_calls} LLM calls, {summary.prompt_tokens} prompt + {summary.completion_tokens} "
        f"completion tokens; rejected calls: {rejected or 'none'}"
        + (
            f"; {summary.recovered} staged answers merged (an interrupted run's or the LLM-worker image's)"
            if summary.recovered
            else ""
        )
    )


@contextmanager
def backend_outage() -> Iterator[None]:
    """An endpoint outage surfaces as one BackendUnavailable, not as Ray's wrapping of it."""
    try:
        yield
    except Exception as err:
        unavailable = _unavailable_backend(err)
        if unavailable is None:
            raise
        raise BackendUnavailable(str(unavailable).splitlines()[0]) from None


def _unavailable_backend(err: BaseException) -> BaseException | None:
    """The endpoint outage behind a failed run (Ray wraps an actor's exception in its own), if any."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, BackendUnavailable):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def tally_answers(tallies: Iterator[dict[str, Any]], summary: ExtractionSummary) -> None:
    with console.progress(summary.pending, "extract", "prompt") as progress:
        for tally in tallies:
            summary.add(tally)
            progress.update(tally["rows"])
            progress.set_postfix(ok=summary.ok, failed=summary.failed, tokens=summary.completion_tokens)


def llm_answers(dataset: Any, settings: LlmConfig, backend_factory: BackendFactory | None = None) -> Any:
    """The Ray dataset of knowledge rows answering `dataset`'s prompts."""
    import ray

    model = model_id(settings)
    if settings.backend == "vllm":
        from ray_workers.backends import vllm

        bundle = vllm.engine_bundle(ray.cluster_resources(), settings)
        return vllm.build(settings, bundle, settings.seed)(dataset).map_batches(
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


def batch_summary(batch: pd.DataFrame) -> dict[str, Any]:
    """One staged batch of answers in a row for the driver's tally (the texts stay staged)."""
    return {
        "ok": int((batch["status"] == OK).sum()),
        "failed": int((batch["status"] == FAILED).sum()),
        "prompt_tokens": int(batch["prompt_tokens"].sum()),
        "completion_tokens": int(batch["completion_tokens"].sum()),
        "llm_calls": int(batch["attempts"].sum()),
        "rejections": json.dumps(Counter(kind for kinds in batch["rejections"] for kind in kinds)),
    }
