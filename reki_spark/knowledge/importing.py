"""Knowledge produced elsewhere (`reki import-knowledge`): a team that already asked an LLM (a batch
API, another cluster, a paper's release) brings its groups and answers into the lake, into the very
tables `reki cluster`, `reki prompts` and `reki extract` write, so `reki encode` and training run
unchanged.

The generic input is a folder with two files:
- `groups.csv` (header `entity_type,view,entity_id,group_id`): every item (view `item`) and user
  (views `positive` and `negative`) with its group;
- `answers.jsonl`: one JSON object per group, `{"entity_type", "view", "group_id", "text",
  "model"}` plus optionally `"prompt"`, `"prompt_tokens"`, `"completion_tokens"`.
`knowledge.imported.format: reki-release` reads the REKI authors' release layout instead
(`convert_reki_release`). Answers are stored under the model id `imported:<model>`; encode them
with `llm.backend=imported` and `llm.model=<model>`."""

from __future__ import annotations

import csv
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from reki_spark.config import ConfigError, RekiConfig
from reki_spark.data.bronze import blank_to_null
from reki_spark.lake import (
    CLUSTERS,
    ITEM_CLUSTERS,
    ITEMS,
    KNOWLEDGE,
    PROMPTS,
    USER_CLUSTERS,
    USERS,
    Lake,
    prompt_hash,
)
from reki_spark.ledger import ledger_entry

IMPORTED = "imported"
GROUPS_FILE, ANSWERS_FILE = "groups.csv", "answers.jsonl"
VIEWS = {"item": ["item"], "user": ["positive", "negative"]}
GROUP_SCHEMA = "entity_type string, view string, entity_id string, group_id string"
ANSWER_SCHEMA = (
    "entity_type string, view string, group_id string, text string, model string, prompt string, "
    "prompt_tokens long, completion_tokens long"
)
REPRESENTATIVES = 15


@dataclass
class ImportSummary:
    model_id: str
    groups: dict[str, int] = field(default_factory=dict)
    answers: int = 0
    failed: int = 0
    prompt_tokens: int = 0  # as the source recorded them
    completion_tokens: int = 0
    items_mapped: int = 0
    items: int = 0
    users_mapped: dict[str, int] = field(default_factory=dict)
    users: int = 0
    unknown_entities: int = 0

    def line(self) -> str:
        groups = ", ".join(f"{view} {count}" for view, count in self.groups.items())
        users = ", ".join(f"{view} {count}/{self.users}" for view, count in self.users_mapped.items())
        return (
            f"import-knowledge [{self.model_id}]: groups {groups}; {self.answers} answers ({self.failed} failed); "
            f"items mapped {self.items_mapped}/{self.items}, users mapped {users}; "
            f"{self.unknown_entities} grouped ids not in the lake"
        )


def import_knowledge(spark: SparkSession, config: RekiConfig) -> ImportSummary:
    source = config.knowledge.imported
    if source.path is None:
        raise ConfigError("knowledge.imported.path is required for reki import-knowledge")
    lake = Lake(spark, config.lake)
    with tempfile.TemporaryDirectory() as staging, ledger_entry(lake, "import-knowledge") as record:
        folder = Path(source.path)
        if source.format == "reki-release":
            folder = convert_reki_release(folder, Path(staging))
        groups, answers = _read(spark, folder)
        model = _single_model(answers)
        summary = _write(lake, groups, answers, model)
        record.rows_in, record.rows_out = summary.answers, summary.answers - summary.failed
        record.llm_calls = summary.answers
        record.prompt_tokens, record.completion_tokens = summary.prompt_tokens, summary.completion_tokens
        record.details = {"source": str(source.path), "format": source.format, **summary.__dict__}
    print(summary.line())
    print(f"encode these answers with: reki encode --set llm.backend={IMPORTED} --set llm.model={model}")
    return summary


def _read(spark: SparkSession, folder: Path) -> tuple[DataFrame, DataFrame]:
    for name in (GROUPS_FILE, ANSWERS_FILE):
        if not (folder / name).exists():
            raise FileNotFoundError(
                f"{folder / name} not found: knowledge.imported.path needs {GROUPS_FILE} and {ANSWERS_FILE}"
            )
    groups = spark.read.csv(str(folder / GROUPS_FILE), header=True, schema=GROUP_SCHEMA)
    answers = spark.read.json(str(folder / ANSWERS_FILE), schema=ANSWER_SCHEMA)
    for name, frame, required in (
        (GROUPS_FILE, groups, ["entity_type", "view", "entity_id", "group_id"]),
        (ANSWERS_FILE, answers, ["entity_type", "view", "group_id", "model"]),
    ):
        bad = frame.where(_invalid(required)).count()
        if bad:
            raise ConfigError(
                f"{folder / name}: {bad} rows lack one of {', '.join(required)} or name an unknown "
                f"entity_type/view (items: view item; users: views positive, negative)"
            )
    return groups, answers


def _invalid(required: list[str]) -> Column:
    missing = F.lit(False)
    for column in required:
        missing = missing | blank_to_null(column).isNull()
    known = ((F.col("entity_type") == "item") & F.col("view").isin(VIEWS["item"])) | (
        (F.col("entity_type") == "user") & F.col("view").isin(VIEWS["user"])
    )
    return missing | ~known


def _single_model(answers: DataFrame) -> str:
    models = [row["model"] for row in answers.select("model").distinct().limit(3).collect()]  # at most 3
    if len(models) != 1:
        raise ConfigError(f"{ANSWERS_FILE} must hold the answers of one model, found {models or 'none'}")
    return models[0]


def _cluster_id() -> Column:
    return F.concat_ws("-", F.lit(IMPORTED), F.col("view"), F.col("group_id"))


def _write(lake: Lake, groups: DataFrame, answers: DataFrame, model: str) -> ImportSummary:
    summary = ImportSummary(model_id=f"{IMPORTED}:{model}")
    grouped = groups.dropDuplicates(["entity_type", "view", "entity_id"]).withColumn("cluster_id", _cluster_id())
    items = lake.read(ITEMS).select(F.col("item_id").alias("entity_id"))
    users = lake.read(USERS).select(F.col("user_id").alias("entity_id"))
    item_members = grouped.where(F.col("entity_type") == "item").join(items, "entity_id")
    user_members = grouped.where(F.col("entity_type") == "user").join(users, "entity_id")
    lake.overwrite(item_members.select(F.col("entity_id").alias("item_id"), "view", "cluster_id"), ITEM_CLUSTERS)
    lake.overwrite(
        user_members.select(F.col("entity_id").alias("user_id"), "view", "cluster_id", F.lit(False).alias("imputed")),
        USER_CLUSTERS,
    )
    members = item_members.unionByName(user_members)
    lake.overwrite(_clusters(members), CLUSTERS)
    prompts = _prompts(answers, model)
    lake.overwrite(prompts.drop("text", "prompt_tokens", "completion_tokens"), PROMPTS)
    lake.merge(_knowledge(prompts, summary.model_id), KNOWLEDGE, ["prompt_id", "model_id"])

    summary.groups = _count_by_view(grouped, "group_id")
    totals = answers.agg(
        F.count("*"), F.sum(_no_text().cast("int")), F.sum("prompt_tokens"), F.sum("completion_tokens")
    ).first()
    summary.answers, summary.failed = int(totals[0]), int(totals[1] or 0)
    summary.prompt_tokens, summary.completion_tokens = int(totals[2] or 0), int(totals[3] or 0)
    summary.items, summary.users = items.count(), users.count()
    summary.items_mapped = item_members.select("entity_id").distinct().count()
    summary.users_mapped = _count_by_view(user_members, "entity_id")
    summary.unknown_entities = grouped.count() - members.count()
    return summary


def _count_by_view(frame: DataFrame, column: str) -> dict[str, int]:
    counts = frame.groupBy("view").agg(F.countDistinct(column).alias("count")).collect()  # one per view
    return {row["view"]: row["count"] for row in sorted(counts, key=lambda row: row["view"])}


def _clusters(members: DataFrame) -> DataFrame:
    return members.groupBy("cluster_id", "entity_type", "view").agg(
        F.count("*").alias("size"),
        F.array().cast("array<double>").alias("centroid"),  # groups made elsewhere: no centre here
        F.slice(F.sort_array(F.collect_list("entity_id")), 1, REPRESENTATIVES).alias("representatives"),
    )


def _prompts(answers: DataFrame, model: str) -> DataFrame:
    kind = F.concat(F.col("entity_type"), F.lit("_cluster"))
    key = F.concat_ws("\u0001", F.lit(IMPORTED), F.lit(model), "entity_type", "view", "group_id")
    return answers.select(
        F.substring(F.sha2(key, 256), 1, 32).alias("prompt_id"),
        kind.alias("kind"),
        F.lit("collective").alias("mode"),
        "entity_type",
        _cluster_id().alias("entity_id"),
        "view",
        F.lit("").alias("system"),
        F.coalesce("prompt", F.lit("")).alias("prompt"),
        F.lit(None).cast("string").alias("context"),
        F.lit(IMPORTED).alias("template_version"),
        "text",
        "prompt_tokens",
        "completion_tokens",
    )


def _no_text() -> Column:
    return blank_to_null("text").isNull()


def _knowledge(prompts: DataFrame, model_id: str) -> DataFrame:
    empty = _no_text()
    return prompts.select(
        "prompt_id",
        F.lit(model_id).alias("model_id"),
        "kind",
        "entity_type",
        "entity_id",
        "view",
        "text",
        prompt_hash(),
        "prompt_tokens",
        "completion_tokens",
        F.lit(None).cast("double").alias("latency_s"),
        F.lit(1).alias("attempts"),
        F.when(empty, "failed").otherwise("ok").alias("status"),
        F.when(empty, "empty answer").alias("reason"),
        F.current_timestamp().alias("created_at"),
    )


def convert_reki_release(release: Path, out: Path) -> Path:
    """The REKI authors' release (item and user groups, GPT answers as chat-completion JSONL,
    `item_ids.csv`/`user_ids.csv` mapping their ids to MovieLens ids) as the generic input."""
    item_ids = _id_map(release / "item_ids.csv")
    user_ids = _id_map(release / "user_ids.csv")
    sources = [
        ("item", "item", release / "item", item_ids),
        ("user", "positive", release / "user" / "positive", user_ids),
        ("user", "negative", release / "user" / "negative", user_ids),
    ]
    out.mkdir(parents=True, exist_ok=True)
    with (out / GROUPS_FILE).open("w", newline="") as groups_file, (out / ANSWERS_FILE).open("w") as answers_file:
        groups = csv.writer(groups_file)
        groups.writerow(["entity_type", "view", "entity_id", "group_id"])
        for entity_type, view, folder, ids in sources:
            membership = json.loads((folder / "result" / "id2group.json").read_text())
            for release_id, group in membership.items():
                groups.writerow([entity_type, view, ids.get(release_id, f"unmapped:{release_id}"), group])
            for line in (folder / "knowledge.json").read_text().splitlines():
                if line.strip():
                    answers_file.write(json.dumps(_answer(json.loads(line), entity_type, view)) + "\n")
    return out


def _answer(record: dict[str, Any], entity_type: str, view: str) -> dict[str, Any]:
    """One chat.completion record of the release; its `prompt` field is the group id."""
    usage = record.get("usage") or {}
    return {
        "entity_type": entity_type,
        "view": view,
        "group_id": str(record["prompt"]),
        "text": record["choices"][0]["message"]["content"],
        "model": record["model"],
        "prompt": record.get("prompt_txt"),
        "prompt_tokens": usage.get("prompt_tokens"),
        "completion_tokens": usage.get("completion_tokens"),
    }


def _id_map(path: Path) -> dict[str, str]:
    with path.open() as handle:
        rows = list(csv.reader(handle))
    return {release_id: source_id for release_id, source_id in rows[1:]}
