"""The encode stage for the LLM-worker image (`python -m ray_workers.answer --encode`: after the
answers, in the same job): the texts whose vectors are missing or stale are
chosen with delta-rs and pyarrow, encoded by the same encoder actors as `reki encode`, and staged
under the lake's `_staging` folder and handed over, with the run's ledger row. The answers it
encodes are the `knowledge` table's and those a worker-side extraction staged and handed over but
the Spark side has not merged yet. The Spark side's `reki run --stages extract,encode` merges
answers and vectors and then finds nothing to ask or encode: its `source_hash` of each text is
the one computed here.

Reads `prompts`, `knowledge` (and its handed-over parts), `knowledge_vectors`; stages
`knowledge_vectors`, `ledger`."""

from __future__ import annotations

import hashlib

import pandas as pd
import pyarrow as pa

from ray_workers.answer import current_answers
from ray_workers.backends import model_id
from ray_workers.delta_io import RsLake
from ray_workers.encode import UNCHANGED_KEYS, encoded_vectors
from ray_workers.extract import OK
from ray_workers.staging import RunFolder, StagedRows, handed_off_tallies, input_folder, write_part
from reki_spark import console
from reki_spark.config import RekiConfig
from reki_spark.lake import KNOWLEDGE_VECTORS, PROMPTS, SOURCE_HASH_COLUMNS, SOURCE_HASH_SEPARATOR
from reki_spark.ledger import ledger_entry

PROMPT_COLUMNS = ["prompt_id", "mode", "entity_type", "entity_id", "view", "prompt", "context"]
TEXT_COLUMNS = ["prompt_id", "source", "entity_type", "entity_id", "view", "encode_text", "text_source", "source_hash"]
TEXT_SCHEMA = pa.schema([(name, pa.string()) for name in TEXT_COLUMNS])


def vector_source_hash(row: dict[str, str | None]) -> str:
    """`reki_spark.lake.source_hash` in Python."""
    joined = SOURCE_HASH_SEPARATOR.join(row[name] or "" for name in SOURCE_HASH_COLUMNS)
    return hashlib.sha256(joined.encode()).hexdigest()[:32]


def texts_to_encode(prompts: pd.DataFrame, answers: pd.DataFrame, encoded: pd.DataFrame) -> pd.DataFrame:
    """`ray_workers.encode.texts_to_encode` over pandas: the prompts' texts, less those whose
    vector (`encoded`: UNCHANGED_KEYS of the encoder's vectors) was encoded from the same inputs."""
    rows = prompts.merge(answers, on="prompt_id")
    ok = rows["status"] == OK
    answered = (rows["context"].fillna("") + " " + rows["text"].fillna("")).str.strip()
    texts = rows.assign(
        source=rows["mode"],
        encode_text=answered.where(ok, rows["prompt"]),
        text_source=pd.Series("answer", index=rows.index).where(ok, "prompt"),
        source_hash=[vector_source_hash(row) for row in rows[list(SOURCE_HASH_COLUMNS)].to_dict("records")],
    )
    keys = list(UNCHANGED_KEYS)
    unchanged = texts[keys].merge(encoded[keys].drop_duplicates(), on=keys, how="left", indicator=True)
    return texts.loc[(unchanged["_merge"] == "left_only").to_numpy(), TEXT_COLUMNS]


def stage_pending_texts(lake: RsLake, model: str, encoder_id: str, inputs: RunFolder) -> int:
    """The texts to encode, staged into `inputs` one prompts file at a time; returns how many."""
    answers = current_answers(lake, model)
    encoded = pd.DataFrame(columns=list(UNCHANGED_KEYS))
    if lake.exists(KNOWLEDGE_VECTORS):
        vectors = lake.read(KNOWLEDGE_VECTORS, [*UNCHANGED_KEYS, "encoder_id"]).to_pandas()
        encoded = vectors[vectors["encoder_id"] == encoder_id]
    staged = 0
    for part in lake.read_in_parts(PROMPTS, PROMPT_COLUMNS):
        texts = texts_to_encode(part.to_pandas(), answers, encoded)
        if len(texts):
            write_part(texts, inputs.location, TEXT_SCHEMA)
            staged += len(texts)
    return staged


def encode_here(config: RekiConfig) -> int:
    """Encodes what is pending and hands the vectors over; returns how many."""
    encoder_id = config.encoder.model
    with ledger_entry(StagedRows(config.lake), "encode") as record:
        with input_folder(config.lake, "encode") as inputs:
            lake = RsLake(config.lake)
            pending = stage_pending_texts(lake, model_id(config.llm), encoder_id, inputs)
            if pending:
                vectors = encoded_vectors(config, inputs, pending)
                with console.progress(pending, "encode", "text") as progress:
                    for tally in handed_off_tallies(config.lake, vectors, KNOWLEDGE_VECTORS):
                        progress.update(tally["rows"])
        record.rows_in = record.rows_out = pending
        record.details = {"encoder_id": encoder_id, "model_id": model_id(config.llm), "handed_over": pending}
    print(f"encode [{encoder_id}]: {pending} vectors staged under {config.lake}: the next `reki encode` merges them")
    return pending
