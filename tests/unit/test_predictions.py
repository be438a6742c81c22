"""The rank-side half of the predictions table: each rank streams its scored rows into one file."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from reki_spark.training.predictions import CTR_COLUMNS, scored_rows


def test_a_rank_stages_every_batch_in_one_file(tmp_path):
    folder = tmp_path / "staged"
    with scored_rows(str(folder), 1, CTR_COLUMNS) as sink:
        assert sink is not None
        for start in (0, 3):
            codes = np.arange(start, start + 3, dtype=np.int32)
            sink(codes, codes + 10, np.array([1.0, 0.0, 1.0]), np.array([0.9, 0.2, 0.7], dtype=np.float32))
    assert [path.name for path in folder.iterdir()] == ["rank-1.parquet"]
    table = pq.read_table(folder / "rank-1.parquet")
    assert table.column_names == list(CTR_COLUMNS)
    assert table["user_code"].to_pylist() == [0, 1, 2, 3, 4, 5]
    assert table["item_code"].to_pylist() == [10, 11, 12, 13, 14, 15]


def test_no_folder_no_sink_and_a_short_batch_is_refused(tmp_path):
    with scored_rows(None, 0, CTR_COLUMNS) as sink:
        assert sink is None
    with scored_rows(str(tmp_path), 0, CTR_COLUMNS) as sink, pytest.raises(ValueError):
        sink(np.zeros(2), np.zeros(2), np.zeros(2))  # a column missing: no silently shorter file
