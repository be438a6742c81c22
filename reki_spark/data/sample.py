"""The embedded `sample` dataset: a deterministic synthetic movie catalogue generated inside Spark.

Every value is a hash of (seed, id, purpose), so the output does not depend on partitioning and
1e8 interactions generate as easily as 1e5. Users have latent tastes (two favourite genres, one
disliked genre); an item's genre shows in its title words, category and studio, and drives both
who watches it and how they rate it, so item text carries signal a recommender can learn from.
Activity is heavy-tailed and popularity within a genre follows Zipf's law, as in real logs."""

from __future__ import annotations

import math

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from reki_spark.config import SampleSize
from reki_spark.data.bronze import BronzeTables

# genre -> (title adjectives, title nouns, studios)
GENRES: dict[str, tuple[list[str], list[str], list[str]]] = {
    "Horror": (
        ["Haunted", "Cursed", "Silent", "Bleeding", "Hollow", "Crimson", "Forsaken", "Wicked", "Buried", "Sleepless"],
        ["Lighthouse", "Asylum", "Cellar", "Doll", "Ritual", "Woods", "Manor", "Whisper", "Grave", "Night"],
        ["Nightfall Pictures", "Dread Films"],
    ),
    "Comedy": (
        ["Crazy", "Awkward", "Lucky", "Accidental", "Clumsy", "Merry", "Upside-Down", "Sneaky", "Happy", "Wild"],
        [
            "Wedding",
            "Roommates",
            "Vacation",
            "Neighbours",
            "Road Trip",
            "Office",
            "Reunion",
            "Babysitter",
            "Party",
            "Uncle",
        ],
        ["Sunny Side Studios", "Giggle Box"],
    ),
    "Romance": (
        ["Endless", "Secret", "Parisian", "Summer", "Unspoken", "Tender", "Second", "Moonlit", "Sweet", "Forever"],
        ["Love", "Letters", "Kiss", "Promise", "Heart", "Affair", "Garden", "Waltz", "Serenade", "Vows"],
        ["Rosewood Romance", "Heartline Films"],
    ),
    "Sci-Fi": (
        ["Quantum", "Galactic", "Stellar", "Cyber", "Orbital", "Infinite", "Synthetic", "Alien", "Neon", "Temporal"],
        ["Frontier", "Colony", "Odyssey", "Android", "Nebula", "Protocol", "Horizon", "Paradox", "Signal", "Empire"],
        ["Nova Studios", "Orbit Pictures"],
    ),
    "Action": (
        ["Deadly", "Iron", "Rogue", "Maximum", "Lethal", "Fast", "Final", "Black", "Steel", "Furious"],
        ["Strike", "Mission", "Pursuit", "Vengeance", "Force", "Heist", "Showdown", "Squad", "Target", "Fury"],
        ["Thunder Bay Films", "Apex Action"],
    ),
    "Drama": (
        ["Quiet", "Broken", "Distant", "Long", "Fragile", "Last", "Honest", "Bitter", "Golden", "Winter"],
        ["Years", "Family", "Harvest", "Inheritance", "Silence", "Journey", "River", "Father", "Mother", "Season"],
        ["Meridian Drama", "Old Oak Pictures"],
    ),
    "Animation": (
        ["Little", "Magic", "Brave", "Tiny", "Fluffy", "Curious", "Dancing", "Jolly", "Sparkly", "Wandering"],
        ["Dragon", "Penguin", "Robot", "Kingdom", "Fox", "Balloon", "Forest", "Island", "Toys", "Bear"],
        ["Pixelwood Animation", "Doodle Works"],
    ),
    "Documentary": (
        ["Hidden", "True", "Untold", "Deep", "Vanishing", "Wild", "Frozen", "Sacred", "Urban", "Ancient"],
        ["Oceans", "History", "Planet", "Machines", "Cities", "Tribes", "Climate", "Reefs", "Empires", "Science"],
        ["Open Lens Docs", "Verity Films"],
    ),
    "Thriller": (
        ["Twisted", "Dark", "Perfect", "Cold", "Hidden", "Fatal", "Double", "Midnight", "Silent", "Deceptive"],
        ["Witness", "Alibi", "Conspiracy", "Stranger", "Cover-Up", "Motive", "Obsession", "Suspect", "Trap", "Secret"],
        ["Razor Edge Films", "Shadowline"],
    ),
    "Western": (
        ["Dusty", "Lone", "Outlaw", "Golden", "Rusty", "High", "Wild", "Desert", "Bloody", "Restless"],
        ["Trail", "Sheriff", "Canyon", "Saloon", "Ranch", "Frontier", "Gunslinger", "Mesa", "Stagecoach", "Rider"],
        ["Red Mesa Pictures", "Tumbleweed Films"],
    ),
    "Musical": (
        ["Singing", "Broadway", "Jazz", "Rhythm", "Velvet", "Golden", "Starry", "Swinging", "Melodic", "Dancing"],
        ["Nights", "Revue", "Chorus", "Stage", "Symphony", "Ballroom", "Serenade", "Tune", "Cabaret", "Overture"],
        ["Harmony Hall", "Encore Films"],
    ),
    "Crime": (
        ["Dirty", "Corrupt", "Underground", "Stolen", "Smoking", "Sharp", "Crooked", "Hard", "Concrete", "Noir"],
        ["Money", "Syndicate", "Mob", "Streets", "Deal", "Badge", "Racket", "Cartel", "Informant", "Precinct"],
        ["Blackstone Crime", "Gritty City Films"],
    ),
}
GENRE_NAMES = list(GENRES)
TASTES = ("favourite", "second", "disliked")
OCCUPATIONS = [
    "student",
    "engineer",
    "teacher",
    "artist",
    "doctor",
    "lawyer",
    "writer",
    "retired",
    "programmer",
    "salesperson",
    "scientist",
    "homemaker",
    "technician",
    "executive",
]
AGE_BUCKETS = [18, 25, 35, 45, 50, 56]
EPOCH_START = 1_577_836_800  # 2020-01-01, so timestamps look like a real log
DAY = 86_400
# user = floor(U * u^ACTIVITY_SKEW) for a uniform u: activity density ~ x^(1/skew - 1).
ACTIVITY_SKEW = 2.0
# Rating points between a genre's most and least popular items.
POPULARITY_WEIGHT = 0.8


UNIFORM_LEVELS = 1_000_003
# Above this many users the user draw takes two hashes (about 1e12 levels): with one hash's
# 1,000,003 levels, floor(U * u^2) skips users once the levels near u = 1 are more than one user
# apart (from U ~ 5e5: about a quarter of 1e6 users were never drawn) and aliases before that. The
# default sample (2,000 users) keeps its one-hash draws, and with them its published numbers.
FINE_USER_DRAW_ABOVE = 10_000


def _uniform(seed: int, purpose: str, *columns: Column | str) -> Column:
    """A deterministic value in [0, 1) from the hash of (seed, purpose, columns)."""
    return F.pmod(F.xxhash64(F.lit(seed), F.lit(purpose), *columns), F.lit(UNIFORM_LEVELS)) / F.lit(
        float(UNIFORM_LEVELS)
    )


def _fine_uniform(seed: int, purpose: str, *columns: Column | str) -> Column:
    """`_uniform` refined by a second hash below its level spacing: about 1e12 levels."""
    return _uniform(seed, purpose, *columns) + _uniform(seed, f"{purpose}:fine", *columns) / F.lit(
        float(UNIFORM_LEVELS)
    )


def _pick(options: list, index: Column) -> Column:
    return F.element_at(F.array(*[F.lit(o) for o in options]), (index % len(options)).cast("int") + 1)


def _index(seed: int, purpose: str, size: int, *columns: Column | str) -> Column:
    return F.floor(_uniform(seed, purpose, *columns) * size).cast("long")


def _genre_words(part: int, genre: Column) -> Column:
    """The genre's word list `part` (0 adjectives, 1 nouns, 2 studios) as an array column."""
    per_genre = [F.array(*[F.lit(word) for word in GENRES[name][part]]) for name in GENRE_NAMES]
    return F.element_at(F.array(*per_genre), genre.cast("int") + 1)


def _bronze(frame: DataFrame, source: str) -> DataFrame:
    return frame.select(
        "*",
        F.lit(source).alias("_source_file"),
        (F.col("id") + 1).alias("_line"),
        F.lit(None).cast("string").alias("_raw"),
        F.lit(None).cast("string").alias("_reason"),
    ).drop("id")


def _user_tastes(seed: int, user: Column) -> tuple[Column, Column, Column]:
    """Favourite genre, second favourite, disliked genre (three distinct genre indices)."""
    n = len(GENRE_NAMES)
    favourite = _index(seed, "fav1", n, user)
    second = (favourite + 1 + _index(seed, "fav2", n - 1, user)) % n
    step = 1 + _index(seed, "dislike", n - 2, user)
    disliked = F.when((favourite + step) % n == second, (favourite + step + 1) % n).otherwise((favourite + step) % n)
    return favourite, second, disliked


def planted_tastes(frame: DataFrame, seed: int) -> DataFrame:
    """`frame` (any rows with the sample's `user_id`) plus the genres planted in its users:
    `favourite`, `second`, `disliked`. What knowledge about a user group should say, for tests and demos that
    check the signal survives the pipeline."""
    index = F.col("user_id").cast("long") - 1
    return frame.select(
        "*",
        *(_pick(GENRE_NAMES, genre).alias(name) for name, genre in zip(TASTES, _user_tastes(seed, index), strict=True)),
    )


def generate_sample(spark: SparkSession, size: SampleSize, seed: int) -> BronzeTables:
    return BronzeTables(
        users=_bronze(_users(spark, size, seed), "sample:users"),
        items=_bronze(_items(spark, size, seed), "sample:items"),
        interactions=_bronze(_interactions(spark, size, seed), "sample:interactions"),
    )


def _users(spark: SparkSession, size: SampleSize, seed: int) -> DataFrame:
    user = F.col("id")
    return spark.range(size.users).select(
        "id",
        (user + 1).cast("string").alias("user_id"),
        _pick(AGE_BUCKETS, _index(seed, "age", len(AGE_BUCKETS), user)).cast("string").alias("age_text"),
        _pick(["F", "M"], _index(seed, "gender", 2, user)).alias("gender"),
        _pick(OCCUPATIONS, _index(seed, "occupation", len(OCCUPATIONS), user)).alias("occupation"),
        F.format_string("%05d", _index(seed, "zip", 100_000, user)).alias("location"),
    )


def _items(spark: SparkSession, size: SampleSize, seed: int) -> DataFrame:
    item = F.col("id")
    n_genres = len(GENRE_NAMES)
    genre = item % n_genres
    rank_in_genre = F.floor(item / n_genres).cast("long")
    adjective, noun, studio = (_genre_words(part, genre) for part in range(3))
    # 100 distinct adjective-noun titles per genre; later ranks become sequels ("... 2").
    base_title = F.concat_ws(
        " ",
        F.lit("The"),
        F.element_at(adjective, (rank_in_genre % 10).cast("int") + 1),
        F.element_at(noun, (F.floor(rank_in_genre / 10) % 10).cast("int") + 1),
    )
    sequel = F.floor(rank_in_genre / 100)
    title = F.when(sequel > 0, F.concat_ws(" ", base_title, (sequel + 1).cast("string"))).otherwise(base_title)
    second_genre = _pick(GENRE_NAMES, genre + 1 + _index(seed, "genre2", n_genres - 1, item))
    has_second = _uniform(seed, "has_genre2", item) < 0.3
    categories = F.when(has_second, F.array(_pick(GENRE_NAMES, genre), second_genre)).otherwise(
        F.array(_pick(GENRE_NAMES, genre))
    )
    return spark.range(size.items).select(
        "id",
        (item + 1).cast("string").alias("item_id"),
        title.alias("title"),
        (1970 + _index(seed, "year", 55, item)).cast("string").alias("year_text"),
        categories.alias("categories"),
        F.element_at(studio, _index(seed, "studio", 2, item).cast("int") + 1).alias("brand"),
        F.lit(None).cast("string").alias("description"),
        F.format_string("%.2f", 2.99 + _uniform(seed, "price", item) * 17).alias("price_text"),
    )


def _interactions(spark: SparkSession, size: SampleSize, seed: int) -> DataFrame:
    """Draws `size.interactions` rows and keeps each (user, item) pair's first draw, as a rating
    log holds one rating per pair: fewer rows than drawn where users meet a popular item again
    (72,872 of 100,000 at the default size). Every row is a function of its draw number alone, so
    a larger `interactions` gives a superset of a smaller one (what `reki refresh` ingests)."""
    draws = spark.range(size.interactions).select(F.col("id").alias("draw"))
    drawn = draws.select("draw", *_drawn_pair(seed, size, F.col("draw")))
    first = drawn.groupBy("user", "item").agg(F.min("draw").alias("draw"))
    rating = _rating(seed, size, F.col("user"), F.col("item"), F.col("draw"))
    return first.select(
        F.col("draw").alias("id"),
        (F.col("user") + 1).cast("string").alias("user_id"),
        (F.col("item") + 1).cast("string").alias("item_id"),
        rating.cast("int").cast("string").alias("rating_text"),
        _timestamp(seed, size, F.col("draw")).cast("long").cast("string").alias("ts_text"),
    )


def _drawn_pair(seed: int, size: SampleSize, draw: Column) -> tuple[Column, Column]:
    """(user, item) of one draw. Activity is heavy-tailed (user = floor(U * u^ACTIVITY_SKEW): the
    most active user draws about sqrt(U) times the mean, the least active half of it); the genre
    follows the user's tastes; within a genre, item popularity follows Zipf's law (rank k drawn
    with probability ~ 1 / (k + 1))."""
    user = drawn_user(seed, size, draw)
    favourite, second, disliked = _user_tastes(seed, user)
    n_genres = len(GENRE_NAMES)
    choice = _uniform(seed, "choice", draw)
    genre = (
        F.when(choice < 0.45, favourite)
        .when(choice < 0.70, second)
        .when(choice < 0.78, disliked)
        .otherwise(_index(seed, "any_genre", n_genres, draw))
    )
    # Items of genre g are g, g + G, g + 2G, ...; its item of rank k is g + k G.
    rank = F.least(_zipf_rank(seed, _items_in_genre(size, genre), draw), _items_in_genre(size, genre) - 1)
    return user.alias("user"), (genre + rank * n_genres).alias("item")


def drawn_user(seed: int, size: SampleSize, draw: Column) -> Column:
    """The 0-based user of one draw: the heavy-tailed law over the active users; a light user
    (uniform among the last `light_users` share of ids) for the share of draws that gives each
    about `light_interactions`."""
    light = math.floor(size.users * size.light_users)
    active = size.users - light
    fine = size.users > FINE_USER_DRAW_ABOVE
    u = (_fine_uniform if fine else _uniform)(seed, "user", draw)
    heavy = F.floor(F.lit(active) * F.pow(u, ACTIVITY_SKEW)).cast("long")
    if not light:
        return heavy
    light_share = light * size.light_interactions / size.interactions
    light_user = active + F.floor(_uniform(seed, "light_user", draw) * light).cast("long")
    return F.when(_uniform(seed, "light", draw) < light_share, light_user).otherwise(heavy)


def _items_in_genre(size: SampleSize, genre: Column) -> Column:
    return F.floor((F.lit(size.items - 1) - genre) / len(GENRE_NAMES)) + 1


def _zipf_rank(seed: int, count: Column, draw: Column) -> Column:
    """A rank in [0, count) with P(k) = log((k + 2) / (k + 1)) / log(count + 1), Zipf's 1 / k."""
    return (F.floor(F.exp(_uniform(seed, "rank", draw) * F.log(count + 1))) - 1).cast("long")


def _rating(seed: int, size: SampleSize, user: Column, item: Column, draw: Column) -> Column:
    """Taste, popularity, the item's own quality and noise, on the 1-5 scale."""
    favourite, second, disliked = _user_tastes(seed, user)
    genre = item % len(GENRE_NAMES)
    affinity = F.when(genre == favourite, 1.3).when(genre == second, 0.8).when(genre == disliked, -1.6).otherwise(-0.2)
    rank_share = F.floor(item / len(GENRE_NAMES)) / _items_in_genre(size, genre)
    popularity = (0.5 - rank_share) * POPULARITY_WEIGHT
    quality = (_uniform(seed, "quality", item) - 0.5) * 1.2
    noise = (_uniform(seed, "noise", draw) - 0.5) * 2.0
    return F.greatest(F.lit(1), F.least(F.lit(5), F.round(F.lit(3.0) + affinity + popularity + quality + noise)))


def _timestamp(seed: int, size: SampleSize, draw: Column) -> Column:
    """Draws come in rounds of one per user on average, a day per round, at a random second."""
    return F.lit(EPOCH_START) + F.floor(draw / size.users) * DAY + _index(seed, "time", DAY - 1, draw)
