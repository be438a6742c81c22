"""The cost ledger: every stage appends one row (what it read and wrote, how long it took, and
the LLM calls and tokens it spent). Unlike the data tables it is an append-only log."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from reki_spark.lake import LEDGER


@dataclass
class StageRecord:
    stage: str
    rows_in: int | None = None
    rows_out: int | None = None
    llm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    details: dict[str, Any] = field(default_factory=dict)


class RowSink(Protocol):
    """Anything that appends rows to a named table: the Spark lake or the delta-rs one."""

    def append_rows(self, table: str, rows: list[dict[str, Any]]) -> None: ...


@contextmanager
def ledger_entry(sink: RowSink, stage: str) -> Iterator[StageRecord]:
    """Times the block and appends its record to the ledger when the block succeeds."""
    record = StageRecord(stage)
    started_at = datetime.now(UTC)
    start = time.perf_counter()
    yield record
    row = {
        "run_id": uuid.uuid4().hex,
        "stage": record.stage,
        "started_at": started_at,
        "wall_seconds": round(time.perf_counter() - start, 3),
        "rows_in": record.rows_in,
        "rows_out": record.rows_out,
        "llm_calls": record.llm_calls,
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "details": json.dumps(record.details, sort_keys=True),
    }
    sink.append_rows(LEDGER, [row])
