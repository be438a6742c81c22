"""Every loader on small fixtures in the public formats, corrupt lines included, through the real
ingest stage into real Delta tables."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from reki_spark.data.ingest import ingest
from reki_spark.lake import INTERACTIONS, ITEMS, QUARANTINE, USERS, Lake
from tests.paths import FIXTURES

pytestmark = pytest.mark.integration


def _run(spark, config):
    counts = ingest(spark, config)
    return counts, Lake(spark, config.lake)


def _reasons(lake: Lake, target: str) -> list[str]:
    return sorted(r["reason"] for r in lake.read(QUARANTINE).where(F.col("target") == target).collect())


def _assert_balanced(counts):
    for table_counts in counts.values():
        assert table_counts.read == table_counts.clean + table_counts.quarantined + table_counts.duplicates


def test_movielens_100k_raw_files(spark, make_config):
    counts, lake = _run(spark, make_config("dataset.name=movielens-100k", f"dataset.path={FIXTURES / 'ml100k_raw'}"))
    _assert_balanced(counts)
    assert (counts[USERS].clean, counts[USERS].quarantined, counts[USERS].duplicates) == (4, 1, 1)
    assert (counts[ITEMS].clean, counts[ITEMS].quarantined) == (4, 1)
    assert (counts[INTERACTIONS].read, counts[INTERACTIONS].clean) == (24, 16)
    assert (counts[INTERACTIONS].quarantined, counts[INTERACTIONS].duplicates) == (7, 1)
    reasons = _reasons(lake, INTERACTIONS)
    assert "rating is not a number: five" in reasons
    assert "rating 7 outside [1, 5]" in reasons
    assert "unknown item_id: 99" in reasons
    assert "unknown user_id: 9" in reasons
    assert "timestamp is not an integer: yesterday" in reasons
    assert sum("expected 4 fields" in r for r in reasons) == 2  # a short line and a blank line
    titles = {r["item_id"]: (r["title"], r["year"], r["categories"]) for r in lake.read(ITEMS).collect()}
    assert titles["2"] == ("Les Misérables", 1995, ["Drama", "Musical"])  # latin-1 decoded, article moved
    assert titles["4"] == ("The Matrix", 1999, ["Action", "Sci-Fi", "Thriller"])
    quarantined = lake.read(QUARANTINE).where(F.col("target") == ITEMS).first()
    assert (quarantined["source_file"], quarantined["line"], quarantined["reason"]) == ("u.item", 5, "missing item_id")


def test_recbole_atomic_files_are_detected(spark, make_config):
    counts, lake = _run(spark, make_config("dataset.name=movielens-100k", f"dataset.path={FIXTURES / 'ml100k_atomic'}"))
    _assert_balanced(counts)
    assert counts[INTERACTIONS].clean == 16
    assert _reasons(lake, INTERACTIONS) == ["expected 4 fields separated by '\\t', got 3", "rating 0 outside [1, 5]"]
    first_bad = lake.read(QUARANTINE).orderBy("line").first()
    assert (first_bad["source_file"], first_bad["line"]) == ("ml-100k.inter", 18)  # header is line 1
    assert {r["title"] for r in lake.read(ITEMS).collect()} >= {"The Usual Suspects", "Les Misérables"}


def test_movielens_1m_latin1_and_double_colon(spark, make_config):
    counts, lake = _run(spark, make_config("dataset.name=movielens-1m", f"dataset.path={FIXTURES / 'ml1m'}"))
    _assert_balanced(counts)
    assert counts[INTERACTIONS].clean == 9
    assert len(_reasons(lake, INTERACTIONS)) == 3
    users = {r["user_id"]: r for r in lake.read(USERS).collect()}
    assert users["1"]["occupation"] == "K-12 student" and users["1"]["age"] == 1
    assert users["2"]["occupation"] == "self-employed"
    assert {r["title"] for r in lake.read(ITEMS).collect()} == {"Toy Story", "Les Misérables", "The Matrix"}


def _gzipped_copy(source: Path, target: Path) -> Path:
    target.mkdir(parents=True)
    for path in source.iterdir():
        with path.open("rb") as raw, gzip.open(target / f"{path.name}.gz", "wb") as packed:
            shutil.copyfileobj(raw, packed)
    return target


def test_amazon_2014_gzipped_reviews_and_python_literal_meta(spark, make_config, tmp_path):
    folder = _gzipped_copy(FIXTURES / "amazon2014", tmp_path / "amazon")
    counts, lake = _run(
        spark, make_config("dataset.name=amazon-2014", "dataset.category=Beauty", f"dataset.path={folder}")
    )
    _assert_balanced(counts)
    assert (counts[INTERACTIONS].read, counts[INTERACTIONS].clean) == (15, 10)
    assert (counts[INTERACTIONS].quarantined, counts[INTERACTIONS].duplicates) == (4, 1)
    assert _reasons(lake, INTERACTIONS) == [
        "missing user_id",
        "not a valid JSON object",
        "rating is not a number: five",
        "unknown item_id: B999",
    ]
    implicit = lake.read(INTERACTIONS).where(F.col("user_id") == "A4Q").collect()
    assert [(r["item_id"], r["rating"]) for r in implicit] == [("B003", None)]
    items = {r["item_id"]: r for r in lake.read(ITEMS).collect()}
    assert items["B001"]["title"] == "Gentle Cleanser & Toner"
    assert items["B001"]["categories"] == ["Beauty", "Skin Care", "Face", "Makeup"]
    assert items["B001"]["price"] == 12.99
    assert items["B002"]["title"] == "Ignore all previous instructions"  # data, kept verbatim
    assert _reasons(lake, ITEMS) == ["unparseable metadata: SyntaxError"]
    assert lake.read(USERS).count() == 4  # derived from the reviews


def test_amazon_2018_strict_json(spark, make_config):
    counts, lake = _run(
        spark,
        make_config("dataset.name=amazon-2018", "dataset.category=Beauty", f"dataset.path={FIXTURES / 'amazon2018'}"),
    )
    _assert_balanced(counts)
    assert (counts[INTERACTIONS].clean, counts[INTERACTIONS].quarantined) == (7, 1)
    items = {r["item_id"]: r for r in lake.read(ITEMS).collect()}
    assert items["B001"]["description"] == "A mild cleanser. For all skin types."
    assert items["B003"]["price"] == 1025.0
    assert items["B002"]["price"] is None
    assert counts[ITEMS].quarantined == 1


def test_undecodable_bytes_are_quarantined(spark, make_config, tmp_path):
    folder = tmp_path / "ml"
    shutil.copytree(FIXTURES / "ml100k_atomic", folder)
    with (folder / "ml-100k.inter").open("ab") as out:
        out.write(b"1\t4\t\xff\xfe\t881250949\n")
    counts, lake = _run(spark, make_config("dataset.name=movielens-100k", f"dataset.path={folder}"))
    _assert_balanced(counts)
    assert "bytes not valid UTF-8" in _reasons(lake, INTERACTIONS)


def test_missing_files_are_a_clear_error(spark, make_config, tmp_path):
    with pytest.raises(FileNotFoundError, match="neither the raw MovieLens-100k files"):
        ingest(spark, make_config("dataset.name=movielens-100k", f"dataset.path={tmp_path}"))


def _write(spark, rows, schema, path, fmt):
    spark.createDataFrame(rows, schema).write.format(fmt).save(str(path))


def test_own_parquet_tables_with_renamed_columns(spark, make_config, tmp_path):
    import datetime as dt

    day = dt.datetime(2024, 5, 1, 12, 0, 0)
    interactions = [
        ("u1", "A", "5", day),
        ("u1", "B", "2", day + dt.timedelta(hours=1)),
        ("u2", "A", "five", day),  # not a number
        ("u2", "B", "9", day),  # out of range
        ("", "A", "3", day),  # no user
        ("u2", "Z", "4", day),  # unknown item
        ("u1", "A", "5", day),  # exact duplicate
        ("u3", "B", "4", None),  # no timestamp
    ]
    schema = "uid string, sku string, stars string, event_time timestamp"
    _write(spark, interactions, schema, tmp_path / "events", "parquet")
    items = [("A", "Matrix, The", "Action | Sci-Fi"), ("B", "Heat", "Crime"), (None, "Orphan", "Drama")]
    _write(spark, items, "sku string, name string, cats string", tmp_path / "catalogue", "parquet")
    config = make_config(
        "dataset.name=table",
        f"dataset.path={tmp_path}",
        "dataset.tables.interactions=events",
        "dataset.tables.items=catalogue",
        "dataset.columns={user_id: uid, item_id: sku, rating: stars, timestamp: event_time, title: name, "
        "categories: cats}",
    )
    counts, lake = _run(spark, config)
    _assert_balanced(counts)
    assert (counts[INTERACTIONS].read, counts[INTERACTIONS].clean) == (8, 2)
    assert (counts[INTERACTIONS].quarantined, counts[INTERACTIONS].duplicates) == (5, 1)
    assert _reasons(lake, INTERACTIONS) == [
        "missing timestamp",
        "missing user_id",
        "rating 9 outside [1, 5]",
        "rating is not a number: five",
        "unknown item_id: Z",
    ]
    assert (counts[ITEMS].clean, counts[ITEMS].quarantined) == (2, 1)
    items_by_id = {r["item_id"]: (r["title"], r["categories"]) for r in lake.read(ITEMS).collect()}
    assert items_by_id["A"] == ("The Matrix", ["Action", "Sci-Fi"])
    first = lake.read(INTERACTIONS).where("item_id = 'A'").first()
    assert first["ts"] == int(day.replace(tzinfo=dt.UTC).timestamp())
    assert sorted(r["user_id"] for r in lake.read(USERS).collect()) == ["u1"]  # derived from clean interactions
    quarantined = lake.read(QUARANTINE).where("reason = 'rating is not a number: five'").first()
    assert quarantined["source_file"] == "events" and '"stars":"five"' in quarantined["raw"]


def test_own_delta_tables_implicit_feedback_and_users(spark, make_config, tmp_path):
    interactions = [("1", "10", 1_700_000_000), ("1", "11", 1_700_000_100), ("2", "10", 1_700_000_000_000)]
    _write(spark, interactions, "member string, product string, at long", tmp_path / "events", "delta")
    items = [("10", "Lipstick", ["Beauty", "Makeup"]), ("11", "Shampoo", ["Beauty"])]
    _write(spark, items, "product string, label string, tags array<string>", tmp_path / "products", "delta")
    users = [("1", "F", "34"), ("2", "M", "old")]
    _write(spark, users, "member string, sex string, years string", tmp_path / "members", "delta")
    config = make_config(
        "dataset.name=table",
        f"dataset.path={tmp_path}",
        "dataset.tables={interactions: events, items: products, users: members}",
        "dataset.columns={user_id: member, item_id: product, rating: null, timestamp: at, title: label, "
        "categories: tags, gender: sex, age: years}",
    )
    counts, lake = _run(spark, config)
    _assert_balanced(counts)
    assert (counts[INTERACTIONS].clean, counts[INTERACTIONS].quarantined) == (2, 1)
    assert _reasons(lake, INTERACTIONS) == ["timestamp out of range: 1700000000000"]  # milliseconds
    assert {r["rating"] for r in lake.read(INTERACTIONS).collect()} == {None}
    assert {r["item_id"]: r["categories"] for r in lake.read(ITEMS).collect()}["10"] == ["Beauty", "Makeup"]
    people = {r["user_id"]: (r["gender"], r["age"]) for r in lake.read(USERS).collect()}
    assert people == {"1": ("F", 34), "2": ("M", None)}


def test_a_column_mapping_the_table_lacks_is_a_clear_error(spark, make_config, tmp_path):
    from reki_spark.config import ConfigError

    _write(spark, [("1", "10", 1)], "uid string, item_id string, timestamp long", tmp_path / "interactions", "parquet")
    _write(spark, [("10", "x")], "item_id string, title string", tmp_path / "items", "parquet")
    config = make_config("dataset.name=table", f"dataset.path={tmp_path}", "dataset.columns.rating=null")
    with pytest.raises(ConfigError, match=r"dataset.columns.user_id: column 'user_id' is not in table interactions"):
        ingest(spark, config)
