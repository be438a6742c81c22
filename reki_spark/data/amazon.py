"""Amazon review loaders (McAuley et al.): the 2014 release (reviews as JSON lines, metadata as one
Python dict literal per line) and the 2018 release (strict JSON lines for both). Users have no
attribute file: they are derived from the reviews."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from reki_spark.data.bronze import PROVENANCE, BronzeTables, find_file, read_lines

MAX_DESCRIPTION_LENGTH = 1000
_REVIEW_SCHEMA = "reviewerID string, asin string, overall string, unixReviewTime string, _corrupt string"
_META_SCHEMA = (
    "item_id string, title string, year_text string, categories array<string>, brand string, "
    "description string, price_text string, _source_file string, _line long, _raw string, _reason string"
)
_PRICE = re.compile(r"\d+(?:\.\d+)?")


def load_amazon_2014(spark: SparkSession, folder: str, category: str) -> BronzeTables:
    reviews = find_file(folder, f"reviews_{category}_5.json.gz", f"reviews_{category}_5.json")
    meta = find_file(folder, f"meta_{category}.json.gz", f"meta_{category}.json")
    return _load(spark, reviews, meta, ast.literal_eval)


def load_amazon_2018(spark: SparkSession, folder: str, category: str) -> BronzeTables:
    reviews = find_file(folder, f"{category}_5.json.gz", f"{category}_5.json", f"reviews_{category}_5.json.gz")
    meta = find_file(folder, f"meta_{category}.json.gz", f"meta_{category}.json")
    return _load(spark, reviews, meta, json.loads)


def _load(spark: SparkSession, reviews_path: str, meta_path: str, parse_meta: Callable[[str], Any]) -> BronzeTables:
    return BronzeTables(
        users=None,
        items=_parse_meta(read_lines(spark, meta_path), parse_meta),
        interactions=_parse_reviews(read_lines(spark, reviews_path)),
        users_from_file=False,
    )


def _parse_reviews(lines: DataFrame) -> DataFrame:
    # Every field is read as text so that a wrong type becomes a precise quarantine reason later.
    parsed = F.from_json("_raw", _REVIEW_SCHEMA, {"columnNameOfCorruptRecord": "_corrupt", "mode": "PERMISSIVE"})
    row = lines.select("*", parsed.alias("review"))
    reason = F.coalesce(
        F.col("_reason"),
        F.when(F.col("review").isNull() | F.col("review._corrupt").isNotNull(), F.lit("not a valid JSON object")),
    )
    return row.select(
        F.col("review.reviewerID").alias("user_id"),
        F.col("review.asin").alias("item_id"),
        F.col("review.overall").alias("rating_text"),
        F.col("review.unixReviewTime").alias("ts_text"),
        "_source_file",
        "_line",
        "_raw",
        reason.alias("_reason"),
    )


_META_FIELDS = ["item_id", "title", "year_text", "categories", "brand", "description", "price_text"]


def _parse_meta(lines: DataFrame, parse: Callable[[str], Any]) -> DataFrame:
    def parse_batches(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            records = [
                meta_record(raw, parse) if reason is None else _rejected(reason)
                for raw, reason in zip(batch["_raw"], batch["_reason"], strict=True)
            ]
            fields = pd.DataFrame.from_records(records, columns=[*_META_FIELDS, "_reason"])
            provenance = batch[PROVENANCE[:3]].reset_index(drop=True)
            yield pd.concat([fields[_META_FIELDS], provenance, fields[["_reason"]]], axis=1)

    return lines.mapInPandas(parse_batches, _META_SCHEMA)


def _rejected(reason: str) -> dict[str, Any]:
    return {**dict.fromkeys(_META_FIELDS), "categories": [], "_reason": reason}


def meta_record(raw: str, parse: Callable[[str], Any]) -> dict[str, Any]:
    """One metadata line as the items fields (text), or a `_reason` when it cannot be read."""
    try:
        meta = parse(raw)
    except (ValueError, SyntaxError, MemoryError, RecursionError) as err:
        return _rejected(f"unparseable metadata: {type(err).__name__}")
    if not isinstance(meta, dict):
        return _rejected("metadata line is not an object")
    return {
        "item_id": _text(meta.get("asin")),
        "title": _text(meta.get("title")),
        "year_text": None,
        "categories": _flat_categories(meta.get("categories", meta.get("category"))),
        "brand": _text(meta.get("brand")),
        "description": (_joined(meta.get("description")) or "")[:MAX_DESCRIPTION_LENGTH] or None,
        "price_text": _price(meta.get("price")),
        "_reason": None,
    }


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    return str(value).strip() or None


def _joined(value: Any) -> str | None:
    if isinstance(value, list):
        return " ".join(str(part).strip() for part in value if str(part).strip()) or None
    return _text(value)


def _flat_categories(value: Any) -> list[str]:
    """2014: a list of category paths (lists); 2018: one flat list. Order kept, repeats dropped."""
    flat: list[str] = []
    for entry in value if isinstance(value, list) else []:
        for name in entry if isinstance(entry, list) else [entry]:
            text = _text(name)
            if text and text not in flat:
                flat.append(text)
    return flat


def _price(value: Any) -> str | None:
    match = _PRICE.search(str(value).replace(",", "")) if value is not None else None
    return match.group(0) if match else None
