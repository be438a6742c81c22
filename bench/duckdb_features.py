"""The single-machine reference for `reki features`: the same work in DuckDB, so that the Spark /
DuckDB time ratio measures the engines. It reads the lake's `interactions`, `users` and `items`
(their current Delta snapshot files), orders each user's interactions the same way (ts, source
line, item id), and writes Parquet files (snappy, as Delta's default) of the four tables the stage
writes — `prompt_windows`, `user_histories`, `samples` (with the previous-5 history, the
prompt-window exclusion, the label, the by-user split and the user and item side-feature joins) and
`sequences` (built from the written histories, as Spark reads its Delta table back) — then counts
them.

Where it differs, and why the difference does not favour DuckDB: the split hashes with DuckDB's
`hash` instead of Spark's xxhash64 (same cost, other users in each split); sampled negatives for
implicit feedback are left out (the synthetic sample has ratings, and Spark skips its negative
branch on such data); Delta's transaction log and per-file statistics have no counterpart (that is part
of what Spark's side pays for the table format)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import duckdb
from deltalake import DeltaTable

from reki_spark.config import FeaturesConfig
from reki_spark.features import RESERVED_TAIL

TABLES = ("prompt_windows", "user_histories", "samples", "sequences")


def _snapshot(lake: Path, table: str) -> str:
    """`read_parquet` over exactly the files of the table's current Delta version (a Delta folder
    also holds files of older versions, never to be read as plain Parquet)."""
    files = ", ".join(f"'{uri}'" for uri in DeltaTable(str(lake / table)).file_uris())
    return f"read_parquet([{files}])"


def _window_size(settings: FeaturesConfig) -> str:
    window = settings.prompt_window
    by_rule = "floor((length + 1) / 2)" if window.rule == "half" else "length"
    return f"greatest(0, least({by_rule}, {window.cap}, length - {RESERVED_TAIL}))::integer"


def _split(settings: FeaturesConfig, seed: int) -> str:
    draw = f"(hash({seed}, 'split', o.user_id) % 1000000) / 1000000.0"
    train, valid = settings.split.train, settings.split.train + settings.split.valid
    return f"case when {draw} < {train} then 'train' when {draw} < {valid} then 'valid' else 'test' end"


def _statements(lake: Path, out: Path, settings: FeaturesConfig, seed: int) -> list[str]:
    parquet = "(format parquet, compression snappy, per_thread_output true)"
    history = settings.history_length
    return [
        f"""create temp table positioned as
          select *, {_window_size(settings)} as prompt_window_size from (
            select user_id, item_id, rating, ts,
                   (row_number() over (partition by user_id order by ts, source_line nulls first, item_id) - 1)::integer
                     as position,
                   (count(*) over (partition by user_id))::integer as length
            from {_snapshot(lake, "interactions")})""",
        f"""copy (select user_id, item_id, position, rating, ts from positioned where position < prompt_window_size)
          to '{out}/prompt_windows' {parquet}""",
        f"""copy (select user_id, list(item_id order by position) as item_ids,
                         list(rating order by position) as ratings, list(ts order by position) as timestamps,
                         any_value(length) as length, any_value(prompt_window_size) as prompt_window_size
                  from positioned group by user_id)
          to '{out}/user_histories' {parquet}""",
        f"""copy (
          with observed as (
            select *, coalesce(list(item_id) over previous, []) as history_item_ids,
                      coalesce(list(rating) over previous, []) as history_ratings,
                      list(item_id) filter (where position < prompt_window_size) over (partition by user_id)
                        as window_items
            from positioned
            window previous as (partition by user_id order by position
                                rows between {history} preceding and 1 preceding))
          select o.user_id, o.item_id, o.ts, o.position, o.rating,
                 coalesce((o.rating > {settings.label_threshold})::integer, 1) as label,
                 false as is_sampled_negative, o.history_item_ids, o.history_ratings,
                 u.gender as user_gender, u.age as user_age, u.occupation as user_occupation,
                 i.categories as item_categories, i.brand as item_brand, i.year as item_year,
                 {_split(settings, seed)} as split
          from observed o
            left join {_snapshot(lake, "users")} u on o.user_id = u.user_id
            left join {_snapshot(lake, "items")} i on o.item_id = i.item_id
          where o.position >= o.prompt_window_size and not list_contains(o.window_items, o.item_id))
          to '{out}/samples' {parquet}""",
        f"""copy (select user_id, item_ids[1:len(item_ids) - 2] as item_ids, item_ids[-2] as valid_item_id,
                         item_ids[-1] as test_item_id, len(item_ids) - 2 as length
                  from read_parquet('{out}/user_histories/*.parquet') where len(item_ids) >= 3)
          to '{out}/sequences' {parquet}""",
    ]


def duckdb_features(lake: str, out: str, settings: FeaturesConfig, seed: int, threads: int) -> dict:
    """Runs the reference over `lake` into Parquet folders under `out` (replaced); returns its wall
    seconds and each table's row count, for the like-for-like check against Spark's counts."""
    out_path = Path(out).resolve()
    shutil.rmtree(out_path, ignore_errors=True)
    out_path.mkdir(parents=True)
    connection = duckdb.connect()
    connection.execute(f"SET threads TO {threads}")
    start = time.perf_counter()
    for statement in _statements(Path(lake).resolve(), out_path, settings, seed):
        connection.execute(statement)
    counts = {
        table: connection.execute(f"select count(*) from read_parquet('{out_path}/{table}/*.parquet')").fetchone()[0]
        for table in TABLES
    }
    return {"seconds": time.perf_counter() - start, "counts": counts}
