"""MovieLens loaders: ML-100k raw files (u.data, u.item, u.user), the RecBole atomic files
(ml-100k.inter/.item/.user, typed headers) and ML-1M ('::' separated, latin-1)."""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from reki_spark import storage
from reki_spark.data.bronze import BronzeTables, find_file, read_lines, split_fields
from reki_spark.data.titles import year_in_title

ML100K_GENRES = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]
ML1M_OCCUPATIONS = [
    "other",
    "academic/educator",
    "artist",
    "clerical/admin",
    "college/grad student",
    "customer service",
    "doctor/health care",
    "executive/managerial",
    "farmer",
    "homemaker",
    "K-12 student",
    "lawyer",
    "programmer",
    "retired",
    "sales/marketing",
    "scientist",
    "self-employed",
    "technician/engineer",
    "tradesman/craftsman",
    "unemployed",
    "writer",
]
INTERACTION_FIELDS = ["user_id", "item_id", "rating_text", "ts_text"]
USER_FIELDS = ["user_id", "age_text", "gender", "occupation", "location"]


def _with_item_extras(frame: DataFrame, categories: F.Column, year_text: F.Column) -> DataFrame:
    return frame.select(
        "item_id",
        F.col("title"),
        year_text.alias("year_text"),
        categories.alias("categories"),
        F.lit(None).cast("string").alias("brand"),
        F.lit(None).cast("string").alias("description"),
        F.lit(None).cast("string").alias("price_text"),
        "_source_file",
        "_line",
        "_raw",
        "_reason",
    )


def load_movielens_100k(spark: SparkSession, folder: str) -> BronzeTables:
    if storage.exists(storage.join(folder, "u.data")):
        return _load_100k_raw(spark, folder)
    if storage.exists(storage.join(folder, "ml-100k.inter")):
        return _load_recbole_atomic(spark, folder, "ml-100k")
    raise FileNotFoundError(
        f"{folder} holds neither the raw MovieLens-100k files (u.data, u.item, u.user) "
        "nor the RecBole atomic files (ml-100k.inter, ml-100k.item, ml-100k.user)"
    )


def _load_100k_raw(spark: SparkSession, folder: str) -> BronzeTables:
    interactions = split_fields(read_lines(spark, find_file(folder, "u.data")), "\t", INTERACTION_FIELDS)
    users = split_fields(read_lines(spark, find_file(folder, "u.user"), "ISO-8859-1"), "|", USER_FIELDS)
    item_fields = ["item_id", "title", "release_date", "video_release_date", "url", *ML100K_GENRES]
    items = split_fields(read_lines(spark, find_file(folder, "u.item"), "ISO-8859-1"), "|", item_fields)
    genre_flags = F.array(*[F.when(F.col(g) == "1", F.lit(g)) for g in ML100K_GENRES])
    release_year = F.regexp_extract("release_date", r"(\d{4})$", 1)
    year_text = F.when(year_in_title(F.col("title")) != "", year_in_title(F.col("title"))).otherwise(release_year)
    items = _with_item_extras(items, F.filter(genre_flags, lambda g: g.isNotNull()), year_text)
    return BronzeTables(users=users, items=items, interactions=interactions)


def _load_recbole_atomic(spark: SparkSession, folder: str, stem: str) -> BronzeTables:
    interactions = _atomic(
        spark,
        folder,
        f"{stem}.inter",
        {"user_id": "user_id", "item_id": "item_id", "rating": "rating_text", "timestamp": "ts_text"},
    )
    users = _atomic(
        spark,
        folder,
        f"{stem}.user",
        {
            "user_id": "user_id",
            "age": "age_text",
            "gender": "gender",
            "occupation": "occupation",
            "zip_code": "location",
        },
    )
    items = _atomic(
        spark,
        folder,
        f"{stem}.item",
        {"item_id": "item_id", "movie_title": "title", "release_year": "year_text", "class": "genres"},
    )
    categories = F.filter(F.split(F.coalesce(F.col("genres"), F.lit("")), " "), lambda g: g != "")
    items = _with_item_extras(items, categories, F.col("year_text"))
    return BronzeTables(users=users, items=items, interactions=interactions)


def _atomic(spark: SparkSession, folder: str, file_name: str, wanted: dict[str, str]) -> DataFrame:
    """A RecBole atomic file: a `name:type` header, then tab-separated values."""
    path = find_file(folder, file_name)
    header = spark.read.text(path).first()
    if header is None:
        raise ValueError(f"{path} is empty: a RecBole atomic file starts with a typed header")
    columns = [field.split(":", 1)[0] for field in header["value"].rstrip("\r").split("\t")]
    missing = [name for name in wanted if name not in columns]
    if missing:
        raise ValueError(f"{path}: header lacks {missing} (found {columns})")
    parsed = split_fields(read_lines(spark, path, skip_header=True), "\t", columns)
    return parsed.select(
        *[F.col(src).alias(dst) for src, dst in wanted.items()], "_source_file", "_line", "_raw", "_reason"
    )


def load_movielens_1m(spark: SparkSession, folder: str) -> BronzeTables:
    def dat(name: str, fields: list[str]) -> DataFrame:
        return split_fields(read_lines(spark, find_file(folder, name), "ISO-8859-1"), "::", fields)

    interactions = dat("ratings.dat", INTERACTION_FIELDS)
    users = dat("users.dat", ["user_id", "gender", "age_text", "occupation_code", "location"])
    occupation_names = F.array(*[F.lit(name) for name in ML1M_OCCUPATIONS])
    occupation = F.coalesce(F.get(occupation_names, F.col("occupation_code").cast("int")), F.col("occupation_code"))
    users = users.select(
        "user_id",
        "age_text",
        "gender",
        occupation.alias("occupation"),
        "location",
        "_source_file",
        "_line",
        "_raw",
        "_reason",
    )
    items = dat("movies.dat", ["item_id", "title", "genres"])
    categories = F.filter(F.split(F.coalesce(F.col("genres"), F.lit("")), r"\|"), lambda g: g != "")
    items = _with_item_extras(items, categories, year_in_title(F.col("title")))
    return BronzeTables(users=users, items=items, interactions=interactions)
