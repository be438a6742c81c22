"""Pure-Python parts of the DataFrame helpers."""

from __future__ import annotations

from reki_spark.frames import starts


def test_each_key_starts_after_the_rows_of_the_keys_before_it():
    assert starts([("a", 2), ("b", 0), ("c", 3)]) == [("a", 0), ("b", 2), ("c", 2)]
    assert starts([]) == []
