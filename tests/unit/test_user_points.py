"""The per-partition user means of clustering (no Spark: a partition is an iterator of pandas
frames): each listed (user, view) gets the mean of its window items' vectors, read from the
embeddings' Parquet files, or None when it has no window items."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from reki_spark.knowledge.clustering import _window_means

VECTORS = {"a": [1.0, 0.0], "b": [0.0, 1.0], "c": [4.0, 4.0]}


def _embedding_files(tmp_path) -> list[str]:
    files = []
    for part, names in enumerate([["a", "b"], ["c"]]):
        vectors = pa.array([VECTORS[name] for name in names], type=pa.list_(pa.float32()))
        path = tmp_path / f"part-{part}.parquet"
        pq.write_table(pa.table({"item_id": names, "vector": vectors}), path)
        files.append(path.as_uri())
    return files


def _rows(*triples: tuple) -> pd.DataFrame:
    return pd.DataFrame(triples, columns=["user_id", "view", "item_id"])


def test_listed_users_get_their_window_mean_or_none(tmp_path):
    # One user's rows split over two Arrow batches; None lists a (user, view); "z" has no vector.
    first = _rows(("u1", "positive", "a"), ("u1", "positive", None), ("u1", "negative", None), ("u3", "positive", "c"))
    second = _rows(("u1", "positive", "b"), ("u1", "positive", "z"), ("u2", "positive", None), ("u1", "negative", "c"))
    (result,) = list(_window_means(_embedding_files(tmp_path), iter([first, second])))
    means = {(row.user_id, row.view): row.mean for row in result.itertuples()}
    assert set(means) == {("u1", "positive"), ("u1", "negative"), ("u2", "positive")}  # u3 is not listed
    np.testing.assert_allclose(means["u1", "positive"], [0.5, 0.5])
    np.testing.assert_allclose(means["u1", "negative"], [4.0, 4.0])
    assert means["u2", "positive"] is None


def test_an_empty_partition_yields_nothing(tmp_path):
    assert list(_window_means(_embedding_files(tmp_path), iter([]))) == []
