"""A team's own data (`dataset.name: table`): interactions, items and optionally users from Parquet
or Delta tables, with the team's column names mapped in `dataset.columns`. Every row becomes a
bronze row like the public loaders' lines (fields as text; provenance: the table, the row number,
the row as JSON), so typing, range checks, duplicates and quarantine are the ones every dataset
goes through."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from reki_spark.config import ConfigError, DatasetConfig, TableColumns
from reki_spark.data.bronze import BronzeTables, regex_quote
from reki_spark.frames import with_row_index

# bronze field <- TableColumns field, for the fields read as plain text
INTERACTION_TEXT = {"user_id": "user_id", "item_id": "item_id", "rating_text": "rating"}
ITEM_TEXT = {
    "item_id": "item_id",
    "title": "title",
    "brand": "brand",
    "description": "description",
    "price_text": "price",
    "year_text": "year",
}
USER_TEXT = {
    "user_id": "user_id",
    "gender": "gender",
    "age_text": "age",
    "occupation": "occupation",
    "location": "location",
}


def load_tables(spark: SparkSession, dataset: DatasetConfig) -> BronzeTables:
    assert dataset.path is not None  # the config validator guarantees it
    sources, columns = dataset.tables, dataset.columns
    interactions = _read(spark, dataset.path, sources.interactions)
    items = _read(spark, dataset.path, sources.items)
    users = _read(spark, dataset.path, sources.users) if sources.users else None
    return BronzeTables(
        users=_bronze(users, sources.users, columns, USER_TEXT, {}) if users is not None else None,
        items=_bronze(
            items, sources.items, columns, ITEM_TEXT, {"categories": _categories(items, sources.items, columns)}
        ),
        interactions=_bronze(
            interactions,
            sources.interactions,
            columns,
            INTERACTION_TEXT,
            {"ts_text": _seconds(interactions, sources.interactions, columns)},
        ),
        users_from_file=users is not None,
    )


def _read(spark: SparkSession, base: str, location: str) -> DataFrame:
    from delta.tables import DeltaTable

    path = location if "://" in location or location.startswith("/") else f"{base.rstrip('/')}/{location}"
    try:
        if DeltaTable.isDeltaTable(spark, path):
            return spark.read.format("delta").load(path)
        return spark.read.parquet(path)
    except Exception as err:  # Spark's AnalysisException for a missing path or a non-Parquet folder
        raise ConfigError(
            f"dataset.tables: cannot read {path} as Delta or Parquet: {str(err).splitlines()[0]}"
        ) from None


def _bronze(
    frame: DataFrame, table: str, columns: TableColumns, text_fields: dict[str, str], computed: dict[str, Column]
) -> DataFrame:
    """The table's fields as text (a null where the mapping leaves an optional field unset), plus
    provenance. Fields in `computed` are already converted by the caller."""
    fields = [_text(frame, table, columns, field).alias(target) for target, field in text_fields.items()]
    numbered = with_row_index(frame.select("*", F.to_json(F.struct(*frame.columns)).alias("_raw")), "_line")
    return numbered.select(
        *fields,
        *[column.alias(target) for target, column in computed.items()],
        F.lit(table).alias("_source_file"),
        (F.col("_line") + 1).alias("_line"),
        "_raw",
        F.lit(None).cast("string").alias("_reason"),
    )


def _column(frame: DataFrame, table: str, columns: TableColumns, field: str) -> Column | None:
    name = getattr(columns, field)
    if name is None:
        return None
    if name not in frame.columns:
        raise ConfigError(
            f"dataset.columns.{field}: column {name!r} is not in table {table} (it has {', '.join(frame.columns)})"
        )
    return F.col(f"`{name}`")


def _text(frame: DataFrame, table: str, columns: TableColumns, field: str) -> Column:
    column = _column(frame, table, columns, field)
    return F.lit(None).cast("string") if column is None else column.cast("string")


def _seconds(frame: DataFrame, table: str, columns: TableColumns) -> Column:
    """Seconds since the epoch as text: timestamp and date columns converted, numbers kept as they
    are, so a value in milliseconds fails the range check with its reason instead of passing."""
    column = _column(frame, table, columns, "timestamp")
    assert column is not None  # timestamp is required
    kind = frame.schema[columns.timestamp].dataType
    if isinstance(kind, T.TimestampType | T.TimestampNTZType | T.DateType):
        return F.unix_timestamp(column.cast("timestamp")).cast("string")
    return column.cast("string")


def _categories(frame: DataFrame, table: str, columns: TableColumns) -> Column:
    column = _column(frame, table, columns, "categories")
    if column is None:
        return F.lit(None).cast("array<string>")
    if isinstance(frame.schema[columns.categories].dataType, T.ArrayType):
        return column.cast("array<string>")
    parts = F.split(column.cast("string"), regex_quote(columns.category_separator))
    return F.filter(F.transform(parts, F.trim), lambda category: category != "")
