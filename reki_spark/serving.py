"""The online scoring API: ranks candidate items for a user from an export folder (`reki export`),
with PyTorch and pandas only: no Spark, no Ray, no LLM at request time."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch

from reki_spark.models.base import CTR_FIELDS

MODEL_FILE = "model.pt"
FEATURES_FILE = "entity_features.parquet"
META_FILE = "export.json"
USER_FIELDS = ["user_id", "user_gender", "user_age", "user_occupation"]
ITEM_FIELDS = ["item_id", "item_category", "item_brand", "item_year"]


class Scorer:
    def __init__(self, folder: str | Path) -> None:
        folder = Path(folder)
        self.meta = json.loads((folder / META_FILE).read_text())
        self.model = torch.jit.load(str(folder / MODEL_FILE)).eval()
        features = pd.read_parquet(folder / FEATURES_FILE)
        self.users = features[features["entity_type"] == "user"].set_index("entity_id")[USER_FIELDS]
        self.items = features[features["entity_type"] == "item"].set_index("entity_id")[ITEM_FIELDS]
        self.history_length = int(self.meta["history_length"])

    def _codes(self, table: pd.DataFrame, ids: list[str], fields: list[str]) -> pd.DataFrame:
        # Unknown ids score with the padding code 0, as unseen values did in training.
        return table.reindex(ids)[fields].fillna(0).astype("int64")

    def score(self, user_id: str, item_ids: list[str], history: list[str]) -> list[float]:
        user = self._codes(self.users, [user_id] * len(item_ids), USER_FIELDS)
        items = self._codes(self.items, item_ids, ITEM_FIELDS)
        recent = history[-self.history_length :]
        codes = self._codes(self.items, recent, ["item_id"])["item_id"].tolist()
        padded = [0] * (self.history_length - len(codes)) + codes
        columns = {**{f: user[f].to_numpy() for f in USER_FIELDS}, **{f: items[f].to_numpy() for f in ITEM_FIELDS}}
        tensors = [torch.as_tensor(columns[name]) for name in CTR_FIELDS]
        history_tensor = torch.tensor([padded] * len(item_ids), dtype=torch.long)
        with torch.no_grad():
            return self.model(*tensors, history_tensor).tolist()

    def rank(
        self, user_id: str, candidates: list[str], history: list[str] | None = None, top_k: int | None = None
    ) -> list[tuple[str, float]]:
        """Candidates ordered by predicted click probability, best first."""
        if not candidates:
            return []
        scores = self.score(user_id, candidates, history or [])
        ranked = sorted(zip(candidates, scores, strict=True), key=lambda pair: pair[1], reverse=True)
        return ranked[:top_k] if top_k else ranked
