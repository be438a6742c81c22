"""The embedded `sample` dataset: a deterministic synthetic movie catalogue generated inside Spark.

Every value is a hash of (seed, id, purpose), so the output does not depend on partitioning and
1e8 interactions generate as easily as 1e5. Users have latent tastes (two favourite genres, one
disliked genre); an item's genre shows in its title words, category and studio, and drives both
who watches it and how they rate it, so item text carries signal a recommender can learn from."""

from __future__ import annotations

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
PRIME_STRIDE = 1_000_003  # coprime with any genre size below it


def _uniform(seed: int, purpose: str, *columns: Column | str) -> Column:
    """A deterministic value in [0, 1) from the hash of (seed, purpose, columns)."""
    return F.pmod(F.xxhash64(F.lit(seed), F.lit(purpose), *columns), F.lit(1_000_003)) / F.lit(1_000_003.0)


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
    row = F.col("id")
    user = row % size.users
    favourite, second, disliked = _user_tastes(seed, user)
    n_genres = len(GENRE_NAMES)
    choice = _uniform(seed, "choice", row)
    genre = (
        F.when(choice < 0.45, favourite)
        .when(choice < 0.70, second)
        .when(choice < 0.78, disliked)
        .otherwise(_index(seed, "any_genre", n_genres, row))
    )
    # Items of genre g are g, g + G, g + 2G, ...; the user's k-th pick walks its genre from a
    # per-user offset with a prime stride, so a user meets each item at most once (until the
    # genre is exhausted), as in rating datasets.
    items_in_genre = F.floor((F.lit(size.items - 1) - genre) / n_genres) + 1
    nth_pick = F.floor(row / size.users).cast("long")
    offset = F.pmod(F.xxhash64(F.lit(seed), F.lit("offset"), user, genre), items_in_genre)
    rank = F.pmod(offset + nth_pick * F.lit(PRIME_STRIDE), items_in_genre)
    item = genre + rank * n_genres
    affinity = F.when(genre == favourite, 1.3).when(genre == second, 0.8).when(genre == disliked, -1.6).otherwise(-0.2)
    quality = (_uniform(seed, "quality", item) - 0.5) * 1.6
    noise = (_uniform(seed, "noise", row) - 0.5) * 2.0
    rating = F.greatest(F.lit(1), F.least(F.lit(5), F.round(F.lit(3.0) + affinity + quality + noise)))
    # Each user's rows arrive in id order, one day apart plus a jitter within the day.
    ts = F.lit(EPOCH_START) + nth_pick * DAY + _index(seed, "time", DAY - 1, row)
    return spark.range(size.interactions).select(
        "id",
        (user + 1).cast("string").alias("user_id"),
        (item + 1).cast("string").alias("item_id"),
        rating.cast("int").cast("string").alias("rating_text"),
        ts.cast("long").cast("string").alias("ts_text"),
    )
