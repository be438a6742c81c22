"""The table contract: every Delta table's name and schema, and the helpers that read and write
them under the lake root. Stages talk to each other only through these tables."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from delta import exceptions as delta_errors
from delta.tables import DeltaTable
from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from reki_spark import storage


def _schema(*fields: tuple[str, T.DataType, bool]) -> T.StructType:
    return T.StructType([T.StructField(name, dtype, nullable) for name, dtype, nullable in fields])


STR, INT, LONG, DOUBLE, BOOL = T.StringType(), T.IntegerType(), T.LongType(), T.DoubleType(), T.BooleanType()
STR_ARRAY = T.ArrayType(STR, True)
FLOAT_ARRAY = T.ArrayType(T.FloatType(), True)
DOUBLE_ARRAY = T.ArrayType(T.DoubleType(), True)
TIMESTAMP = T.TimestampType()

USERS = "users"
ITEMS = "items"
INTERACTIONS = "interactions"
QUARANTINE = "quarantine"
LEDGER = "ledger"
PROMPT_WINDOWS = "prompt_windows"
USER_HISTORIES = "user_histories"
SAMPLES = "samples"
SEQUENCES = "sequences"
ITEM_EMBEDDINGS = "item_embeddings"
ITEM_CLUSTERS = "item_clusters"
USER_CLUSTERS = "user_clusters"
CLUSTERS = "clusters"
PROMPTS = "prompts"
KNOWLEDGE = "knowledge"
KNOWLEDGE_VECTORS = "knowledge_vectors"
VOCAB = "vocab"
SERVING_VECTORS = "serving_vectors"
PREDICTIONS = "predictions"

# The `view` values of item_clusters, user_clusters and prompts: items, and what a user liked
# (positive) or disliked (negative) in the prompt window.
ITEM_VIEW, POSITIVE, NEGATIVE = "item", "positive", "negative"

SCHEMAS: dict[str, T.StructType] = {
    USERS: _schema(
        ("user_id", STR, False),
        ("gender", STR, True),
        ("age", INT, True),
        ("occupation", STR, True),
        ("location", STR, True),
    ),
    ITEMS: _schema(
        ("item_id", STR, False),
        ("title", STR, True),
        ("year", INT, True),
        ("categories", STR_ARRAY, True),
        ("brand", STR, True),
        ("description", STR, True),
        ("price", DOUBLE, True),
    ),
    INTERACTIONS: _schema(
        ("user_id", STR, False),
        ("item_id", STR, False),
        # null for implicit feedback
        ("rating", DOUBLE, True),
        # seconds since the epoch
        ("ts", LONG, False),
        # the source line (ingest order): breaks ties between equal timestamps as the data's
        # own order does (RecBole sorts by time stably); null where the source has no order
        ("source_line", LONG, True),
    ),
    QUARANTINE: _schema(
        ("target", STR, False),
        ("source_file", STR, False),
        ("line", LONG, True),
        ("raw", STR, True),
        ("reason", STR, False),
    ),
    # All nullable: both Spark stages and the Ray side (through delta-rs) append to it.
    LEDGER: _schema(
        ("run_id", STR, True),
        ("stage", STR, True),
        ("started_at", TIMESTAMP, True),
        ("wall_seconds", DOUBLE, True),
        ("rows_in", LONG, True),
        ("rows_out", LONG, True),
        ("llm_calls", LONG, True),
        ("prompt_tokens", LONG, True),
        ("completion_tokens", LONG, True),
        ("details", STR, True),
    ),
    PROMPT_WINDOWS: _schema(
        ("user_id", STR, False),
        ("item_id", STR, False),
        ("position", INT, False),
        ("rating", DOUBLE, True),
        ("ts", LONG, False),
    ),
    USER_HISTORIES: _schema(
        ("user_id", STR, False),
        ("item_ids", STR_ARRAY, False),
        ("ratings", T.ArrayType(DOUBLE, True), False),
        ("timestamps", T.ArrayType(LONG, True), False),
        ("length", INT, False),
        ("prompt_window_size", INT, False),
    ),
    SAMPLES: _schema(
        ("user_id", STR, False),
        ("item_id", STR, False),
        ("ts", LONG, False),
        ("position", INT, False),
        ("rating", DOUBLE, True),
        ("label", INT, False),
        ("is_sampled_negative", BOOL, False),
        ("history_item_ids", STR_ARRAY, False),
        # the rating of each history item (null where the data has none)
        ("history_ratings", DOUBLE_ARRAY, False),
        ("user_gender", STR, True),
        ("user_age", INT, True),
        ("user_occupation", STR, True),
        ("item_categories", STR_ARRAY, True),
        ("item_brand", STR, True),
        ("item_year", INT, True),
        ("split", STR, False),
    ),
    SEQUENCES: _schema(
        ("user_id", STR, False),
        # the whole time-ordered training prefix (training cuts it into windows of
        # features.sequence_max_length; evaluation reads its last items)
        ("item_ids", STR_ARRAY, False),
        ("valid_item_id", STR, False),
        ("test_item_id", STR, False),
        ("length", INT, False),
    ),
    ITEM_EMBEDDINGS: _schema(
        ("item_id", STR, False),
        ("text", STR, True),
        ("vector", FLOAT_ARRAY, False),
        ("encoder_id", STR, False),
    ),
    ITEM_CLUSTERS: _schema(
        ("item_id", STR, False),
        ("view", STR, False),
        ("cluster_id", STR, False),
    ),
    USER_CLUSTERS: _schema(
        ("user_id", STR, False),
        # positive: what the user liked in the prompt window; negative: what they disliked
        ("view", STR, False),
        ("cluster_id", STR, False),
        # true where the user had no such interactions and stood at the view's mean vector
        ("imputed", BOOL, False),
    ),
    CLUSTERS: _schema(
        ("cluster_id", STR, False),
        ("entity_type", STR, False),
        ("view", STR, False),
        ("size", LONG, False),
        ("centroid", T.ArrayType(DOUBLE, True), False),
        # up to clustering.representatives member ids, nearest to the centroid first
        ("representatives", STR_ARRAY, False),
    ),
    PROMPTS: _schema(
        # hash of the template version and the prompt's inputs: stable across reruns
        ("prompt_id", STR, False),
        # item | user (individual) or item_cluster | user_cluster (collective)
        ("kind", STR, False),
        ("mode", STR, False),
        ("entity_type", STR, False),
        # the item or user id, or the cluster id
        ("entity_id", STR, False),
        ("view", STR, False),
        ("system", STR, False),
        ("prompt", STR, False),
        # individual user prompts: profile and history, encoded together with the answer
        ("context", STR, True),
        ("template_version", STR, False),
    ),
    KNOWLEDGE: _schema(
        ("prompt_id", STR, False),
        ("model_id", STR, False),
        ("kind", STR, True),
        ("entity_type", STR, True),
        ("entity_id", STR, True),
        ("view", STR, True),
        ("text", STR, True),
        ("prompt_hash", STR, True),
        ("prompt_tokens", LONG, True),
        ("completion_tokens", LONG, True),
        ("latency_s", DOUBLE, True),
        ("attempts", INT, True),
        # ok | failed (failed answers keep their last text and the reason)
        ("status", STR, True),
        ("reason", STR, True),
        ("created_at", TIMESTAMP, True),
    ),
    KNOWLEDGE_VECTORS: _schema(
        ("entity_type", STR, False),
        # item or user id (individual) or cluster id (collective; see item_clusters/user_clusters)
        ("entity_id", STR, False),
        ("view", STR, False),
        ("source", STR, False),
        ("vector", FLOAT_ARRAY, True),
        ("encoder_id", STR, False),
        # answer: the LLM's text was encoded; prompt: the answer failed validation, so the
        # prompt's own entity text stood in for it
        ("text_source", STR, False),
        ("prompt_id", STR, True),
        ("model_id", STR, True),
        # what the vector was encoded from (`source_hash`): a row whose hash is unchanged is not
        # encoded again; null in rows written before it existed
        ("source_hash", STR, True),
    ),
    # Integer codes of the models' categorical fields (0 = padding/unknown), needed at serving too.
    VOCAB: _schema(
        ("field", STR, False),
        ("value", STR, False),
        ("index", INT, False),
    ),
    # HEIN's 32-d output per entity, precomputed for an online feature store (`reki export`).
    SERVING_VECTORS: _schema(
        ("entity_type", STR, False),
        ("entity_id", STR, False),
        ("vector", FLOAT_ARRAY, False),
        ("model", STR, False),
    ),
    # Scored test rows of trained runs (`training.predictions`), one set per (model, knowledge,
    # seed), replaced when the run is scored again: CTR rows with their label and probability,
    # sequential rows with their target's 0-based ranks (full catalogue; among 99 sampled items).
    PREDICTIONS: _schema(
        ("task", STR, False),
        ("model", STR, False),
        ("knowledge", STR, False),
        ("seed", INT, False),
        ("user_id", STR, True),
        ("item_id", STR, True),
        ("label", DOUBLE, True),
        ("score", DOUBLE, True),
        ("rank", LONG, True),
        ("sampled_rank", LONG, True),
    ),
}


def prompt_hash() -> Column:
    """`knowledge.prompt_hash` of a row with `system` and `prompt`: which text an answer answered
    (sha256 of "system\nprompt", its first 32 hex digits)."""
    return F.substring(F.sha2(F.concat_ws("\n", "system", "prompt"), 256), 1, 32).alias("prompt_hash")


SOURCE_HASH_COLUMNS = ("prompt_id", "status", "text", "context")
SOURCE_HASH_SEPARATOR = "\x1f"


def source_hash() -> Column:
    """`knowledge_vectors.source_hash` of a row with the prompt's id and context and the answer's
    status and text: sha256 of those joined by the unit separator (null as empty), its first 32
    hex digits. Raw columns, not the encoded text, so a worker without Spark hashes them alike."""
    parts = [F.coalesce(F.col(name), F.lit("")) for name in SOURCE_HASH_COLUMNS]
    return F.substring(F.sha2(F.concat_ws(SOURCE_HASH_SEPARATOR, *parts), 256), 1, 32).alias("source_hash")


def absolute_root(root: str) -> str:
    """A lake root as an absolute location: local paths are resolved (Delta's table builder
    reads a relative location as a table name), URIs such as s3a://bucket/lake kept."""
    return storage.resolve(root)


def conform(df: DataFrame, table: str) -> DataFrame:
    """Select and cast the columns of `table`'s schema, in order; a missing column is an error."""
    schema = SCHEMAS[table]
    missing = [f.name for f in schema.fields if f.name not in df.columns]
    if missing:
        raise ValueError(f"cannot write {table}: missing columns {missing}")
    return df.select([F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields])


@dataclass(frozen=True)
class TableInfo:
    name: str
    rows: int
    version: int
    last_operation: str
    path: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "rows": self.rows,
            "version": self.version,
            "last_operation": self.last_operation,
            "path": self.path,
        }


JOB_DESCRIPTION = "spark.job.description"


class Lake:
    """The Delta tables under one root folder (a local path or any Hadoop URI such as s3a://)."""

    def __init__(self, spark: SparkSession, root: str) -> None:
        self.spark = spark
        self.root = absolute_root(root)

    def path(self, table: str) -> str:
        return f"{self.root}/{table}"

    def exists(self, table: str) -> bool:
        return DeltaTable.isDeltaTable(self.spark, self.path(table))

    def read(self, table: str) -> DataFrame:
        if not self.exists(table):
            raise FileNotFoundError(
                f"Delta table {table!r} not found under {self.root}: run the stage that writes it first"
            )
        return self.spark.read.format("delta").load(self.path(table))

    # history(1) is the table's last commit: one row.
    def version(self, table: str) -> int:
        return int(DeltaTable.forPath(self.spark, self.path(table)).history(1).collect()[0]["version"])

    def read_at(self, table: str, version: int) -> DataFrame:
        """The table as it was at `version` (Delta time travel)."""
        return self.spark.read.format("delta").option("versionAsOf", version).load(self.path(table))

    def overwrite(self, df: DataFrame, table: str) -> None:
        """Replace the table's contents: the same inputs give the same rows, in a new version. The
        schema is replaced too, so a lake written by an older release takes the current one."""
        with self._described(f"overwrite {table}"):
            writer = conform(df, table).write.format("delta").mode("overwrite").option("overwriteSchema", "true")
            writer.save(self.path(table))

    def replace(self, df: DataFrame, table: str, condition: str) -> None:
        """Replace the rows that match the SQL `condition` with `df` (whose rows must match it) in
        one commit, keeping the others; the table is created on first use."""
        self._create_if_absent(table)
        with self._described(f"replace {table} where {condition}"):
            writer = conform(df, table).write.format("delta").mode("overwrite").option("replaceWhere", condition)
            writer.save(self.path(table))

    def _create_if_absent(self, table: str) -> None:
        """Creates the table empty where it is absent; where it exists, adds the nullable columns
        its schema gained since an earlier release wrote it (MERGE does not add columns)."""
        path = self.path(table)
        if not self.exists(table):
            DeltaTable.createIfNotExists(self.spark).location(path).addColumns(SCHEMAS[table]).execute()
            return
        present = set(self.read(table).columns)
        added = [f for f in SCHEMAS[table].fields if f.name not in present]
        if added:
            columns = ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in added)
            self.spark.sql(f"ALTER TABLE delta.`{path}` ADD COLUMNS ({columns})")

    def append(self, df: DataFrame, table: str) -> None:
        with self._described(f"append {table}"):
            conform(df, table).write.format("delta").mode("append").save(self.path(table))

    @contextmanager
    def _described(self, action: str) -> Iterator[None]:
        """Names the Spark jobs of one table write (Spark UI, event log, REST API: stage times per
        table instead of 'save at NativeMethodAccessorImpl')."""
        context = self.spark.sparkContext
        previous = context.getLocalProperty(JOB_DESCRIPTION)
        context.setLocalProperty(JOB_DESCRIPTION, f"reki: {action}")
        try:
            yield
        finally:
            context.setLocalProperty(JOB_DESCRIPTION, previous)  # type: ignore[arg-type]  # None unsets it

    def append_rows(self, table: str, rows: list[dict[str, Any]]) -> None:
        schema = SCHEMAS[table]
        values = [tuple(row.get(field.name) for field in schema.fields) for row in rows]
        self.append(self.spark.createDataFrame(values, schema), table)

    def merge(self, df: DataFrame, table: str, keys: list[str], attempts: int = 20) -> None:
        """Upsert by key in one atomic commit: rows with a new key are inserted, rows with a known
        key updated. A concurrent writer's conflicting commit makes this one retry; since it is
        keyed, a retry can never leave two rows for one key."""
        rows = conform(df, table)
        condition = " AND ".join(f"t.`{key}` <=> s.`{key}`" for key in keys)
        for attempt in range(1, attempts + 1):
            try:
                # Created empty first, so that even the first rows go through MERGE: two blind
                # appends of the same key would both succeed.
                self._create_if_absent(table)
                target = DeltaTable.forPath(self.spark, self.path(table)).alias("t")
                with self._described(f"merge {table}"):
                    target.merge(rows.alias("s"), condition).whenMatchedUpdateAll().whenNotMatchedInsertAll().execute()
                return
            except (*CONCURRENT_WRITE_ERRORS, AnalysisException) as err:
                if attempt == attempts or not _is_concurrency_conflict(err):
                    raise
                time.sleep(min(2.0, 0.05 * 2**attempt) * random.uniform(0.5, 1.5))

    def table_names(self) -> list[str]:
        """Every Delta table directly under the root, found through the Hadoop file system."""
        jvm = self.spark.sparkContext._jvm
        root = jvm.org.apache.hadoop.fs.Path(self.root)
        fs = root.getFileSystem(self.spark.sparkContext._jsc.hadoopConfiguration())
        if not fs.exists(root):
            return []
        names = []
        for status in fs.listStatus(root):
            if status.isDirectory() and fs.exists(jvm.org.apache.hadoop.fs.Path(status.getPath(), "_delta_log")):
                names.append(status.getPath().getName())
        return sorted(names)

    def info(self, table: str) -> TableInfo:
        last = DeltaTable.forPath(self.spark, self.path(table)).history(1).collect()[0]
        return TableInfo(table, self.read(table).count(), int(last["version"]), last["operation"], self.path(table))

    def describe(self) -> list[TableInfo]:
        return [self.info(name) for name in self.table_names()]


# delta-spark's Python conflict exceptions are siblings, not subclasses of one another.
CONCURRENT_WRITE_ERRORS = (
    delta_errors.DeltaConcurrentModificationException,
    delta_errors.ConcurrentWriteException,
    delta_errors.MetadataChangedException,
    delta_errors.ProtocolChangedException,
    delta_errors.ConcurrentAppendException,
    delta_errors.ConcurrentDeleteReadException,
    delta_errors.ConcurrentDeleteDeleteException,
    delta_errors.ConcurrentTransactionException,
)


def _is_concurrency_conflict(err: Exception) -> bool:
    if isinstance(err, CONCURRENT_WRITE_ERRORS):
        return True
    # Two first writers racing to create the same table surface as a metadata/protocol change.
    return any(word in str(err) for word in ("Concurrent", "concurrent", "already exists", "MetadataChanged"))


def format_tables(infos: list[TableInfo], as_json: bool = False) -> str:
    if as_json:
        return json.dumps([info.as_dict() for info in infos], indent=2)
    if not infos:
        return "(no Delta tables)"
    width = max(len(info.name) for info in infos)
    lines = [f"{'table':<{width}}  {'rows':>12}  {'version':>7}  last operation"]
    lines += [f"{i.name:<{width}}  {i.rows:>12,}  {i.version:>7}  {i.last_operation}" for i in infos]
    return "\n".join(lines)
