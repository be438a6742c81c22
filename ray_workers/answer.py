"""The extract stage's LLM half, for the LLM-worker image (`python -m ray_workers.answer`, usually
under `ray job submit`): vLLM needs numpy 2 and a newer Ray than the Spark/training image can
hold (requirements/worker-*.txt), and that image has no JVM. Here the pending prompts are read
with delta-rs, answered on Ray with the same backends, validation and retries as `reki extract`,
and the answers and the run's ledger row are staged as Parquet parts under the lake's `_staging`
folder and handed over (a second run before the Spark side merges them asks nothing again: handed-
over answers count as answered). With `--encode` the answers are then encoded here too
(ray_workers/worker_encode.py). The Spark side merges them on its next `reki extract` (or `reki run`), as it
merges what a dead run staged, and then asks only what is still missing.

Reads `prompts`, `knowledge`; stages `knowledge`, `ledger`."""

from __future__ import annotations

import argparse
import hashlib
import sys

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ray_workers.backends import BackendUnavailable, model_id
from ray_workers.delta_io import RsLake
from ray_workers.extract import (
    OK,
    PROMPT_COLUMNS,
    ExtractionSummary,
    backend_outage,
    batch_summary,
    llm_answers,
    record_summary,
    report,
    tally_answers,
)
from ray_workers.ray_session import start_ray
from ray_workers.staging import (
    RunFolder,
    StagedRows,
    handed_off_tallies,
    handed_over_parts,
    input_folder,
    read_input,
    write_part,
)
from reki_spark import storage
from reki_spark.config import RekiConfig, run_configured
from reki_spark.lake import KNOWLEDGE, PROMPTS
from reki_spark.ledger import ledger_entry

ANSWER_COLUMNS = ["prompt_id", "model_id", "status", "text"]


def prompt_text_hash(system: str, prompt: str) -> str:
    """`reki_spark.lake.prompt_hash` in Python: sha256 of "system\\nprompt", its first 32 hex digits."""
    return hashlib.sha256(f"{system}\n{prompt}".encode()).hexdigest()[:32]


def stage_pending_prompts(
    lake: RsLake, model: str, retry_failed: bool, max_prompts: int | None, inputs: RunFolder
) -> int:
    """`extract.pending_prompts` over delta-rs, staged into `inputs` one prompts file at a time
    (the answered ids are held whole: 32 characters per prompt); returns how many. With
    `max_prompts`, the first ones by prompt_id, as the Spark side takes them."""
    answered = _answered_ids(lake, model, retry_failed)
    first: list[pa.Table] = []
    staged = 0
    for part in lake.read_in_parts(PROMPTS, PROMPT_COLUMNS):
        part = part.filter(pc.invert(pc.is_in(part["prompt_id"], value_set=answered)))
        if max_prompts is not None:
            first.append(part.sort_by("prompt_id").slice(0, max_prompts))
        elif part.num_rows:
            staged += _stage_hashed(part, inputs)
    if first:
        chosen = pa.concat_tables(first).sort_by("prompt_id").slice(0, max_prompts)
        staged = _stage_hashed(chosen, inputs) if chosen.num_rows else 0
    return staged


def _stage_hashed(prompts: pa.Table, inputs: RunFolder) -> int:
    """Writes `prompts` with their prompt_hash (only rows that will be asked are hashed)."""
    hashes = map(prompt_text_hash, prompts["system"].to_pylist(), prompts["prompt"].to_pylist())
    prompts = prompts.append_column("prompt_hash", pa.array(list(hashes), pa.string()))
    write_part(prompts.to_pandas(), inputs.location, prompts.schema)
    return prompts.num_rows


def _answered_ids(lake: RsLake, model: str, retry_failed: bool) -> pa.Array:
    answers = current_answers(lake, model)
    if retry_failed:
        answers = answers[answers["status"] == OK]
    return pa.array(answers["prompt_id"], pa.string())


def current_answers(lake: RsLake, model: str) -> pd.DataFrame:
    """`model`'s answers (prompt_id, status, text): the `knowledge` table's, replaced where a part
    staged and handed over by an earlier worker-side run, not merged yet, holds a newer one."""
    tables = [lake.read(KNOWLEDGE, ANSWER_COLUMNS)] if lake.exists(KNOWLEDGE) else []
    for part in handed_over_parts(lake.root, KNOWLEDGE):
        filesystem, path = storage.filesystem(part)
        tables.append(pq.read_table(path, columns=ANSWER_COLUMNS, filesystem=filesystem))
    answers = pa.concat_tables(tables).to_pandas() if tables else pd.DataFrame(columns=ANSWER_COLUMNS)
    answers = answers[answers["model_id"] == model].drop(columns="model_id")
    return answers.drop_duplicates("prompt_id", keep="last")


def answer(config: RekiConfig) -> ExtractionSummary:
    settings = config.llm
    model = model_id(settings)
    with ledger_entry(StagedRows(config.lake), "extract") as record:
        with input_folder(config.lake, "extract") as inputs, backend_outage():
            lake = RsLake(config.lake)
            pending = stage_pending_prompts(lake, model, settings.retry_failed, settings.max_prompts, inputs)
            summary = ExtractionSummary(model, pending, 0, 0, 0, 0, 0, 0)
            if pending:
                start_ray(config.ray)
                answers = llm_answers(read_input(inputs, pending, settings.batch_size), settings)
                tally_answers(handed_off_tallies(config.lake, answers, KNOWLEDGE, batch_summary), summary)
        record_summary(record, summary)
    report(summary)
    print(f"answers staged under {config.lake}: the next `reki extract` on the Spark side merges them")
    return summary


def main(argv: list[str] | None = None) -> int:
    from ray_workers.worker_encode import encode_here

    parser = argparse.ArgumentParser(prog="python -m ray_workers.answer", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="the experiment YAML (as for `reki`)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    parser.add_argument("--encode", action="store_true", help="then encode the answers here too (handed over as well)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)

    def stages(config: RekiConfig) -> None:
        answer(config)
        if args.encode:
            encode_here(config)

    return run_configured("ray_workers.answer", args, stages, (BackendUnavailable,))


if __name__ == "__main__":
    sys.exit(main())
