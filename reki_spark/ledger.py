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
from typing import Any

from reki_spark.lake import LEDGER, SCHEMAS, Lake


@dataclass
class StageRecord:
    stage: str
    rows_in: int | None = None
    rows_out: int | None = None
    llm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    details: dict[str, Any] = field(default_factory=dict)


@contextmanager
def ledger_entry(lake: Lake, stage: str) -> Iterator[StageRecord]:
    """Times the block and appends its record to the ledger when the block succeeds."""
    record = StageRecord(stage)
    started_at = datetime.now(UTC)
    start = time.perf_counter()
    yield record
    row = (
        uuid.uuid4().hex,
        record.stage,
        started_at,
        round(time.perf_counter() - start, 3),
        record.rows_in,
        record.rows_out,
        record.llm_calls,
        record.prompt_tokens,
        record.completion_tokens,
        json.dumps(record.details, sort_keys=True),
    )
    lake.append(lake.spark.createDataFrame([row], SCHEMAS[LEDGER]), LEDGER)
