"""The online scoring API: ranks candidate items for a user from an export folder (`reki export`),
with PyTorch and pandas only: no Spark, no Ray, no LLM at request time."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch

from reki_spark.models.base import CTR_FIELDS, ITEM_KNOWLEDGE, USER_KNOWLEDGE

CATEGORY_FIELD = "item_category"

MODEL_FILE = "model.pt"
FEATURES_FILE = "entity_features.parquet"  # a folder of Parquet parts
VECTORS_FILE = "serving_vectors.parquet"  # likewise
META_FILE = "export.json"
USER_FIELDS = ["user_id", "user_gender", "user_age", "user_occupation"]
ITEM_FIELDS = ["item_id", "item_category", "item_brand", "item_year"]


class Scorer:
    def __init__(self, folder: str | Path) -> None:
        folder = Path(folder)
        self.meta = json.loads((folder / META_FILE).read_text())
        self.model = torch.jit.load(str(folder / MODEL_FILE)).eval()
        features = pd.read_parquet(folder / FEATURES_FILE)
        self.users = features[features["entity_type"] == "user"].set_index("entity_id")[[*USER_FIELDS, USER_KNOWLEDGE]]
        self.items = features[features["entity_type"] == "item"].set_index("entity_id")[[*ITEM_FIELDS, ITEM_KNOWLEDGE]]
        self.user_views = int(self.meta["user_knowledge_views"])
        self.history_length = int(self.meta["history_length"])
        self.slots = int(self.meta["category_slots"])
        self.rating_codes = {float(value): code for value, code in self.meta["rating_codes"].items()}

    def _codes(self, table: pd.DataFrame, ids: list[str], fields: list[str]) -> pd.DataFrame:
        # Unknown ids score with the padding code 0, as unseen values did in training.
        return table.reindex(ids)[fields].fillna(0).astype("int64")

    def _categories(self, ids: list[str]) -> torch.Tensor:
        """(len(ids), slots) category codes, 0 for unknown items and empty slots."""
        rows = torch.zeros(len(ids), self.slots, dtype=torch.long)
        for row, codes in enumerate(self.items[CATEGORY_FIELD].reindex(ids)):
            if hasattr(codes, "__len__"):  # an unknown item reads as NaN
                kept = list(codes)[: self.slots]
                rows[row, : len(kept)] = torch.as_tensor(kept, dtype=torch.long)
        return rows

    def _knowledge_rows(self, user_id: str, item_ids: list[str]) -> dict[str, torch.Tensor]:
        """The knowledge rows the model looks its precomputed HEIN terms up by (0: none, as for
        unknown entities)."""
        rows = self.users[USER_KNOWLEDGE].get(user_id)
        user = torch.zeros(self.user_views, dtype=torch.long) if rows is None else torch.as_tensor(list(rows))
        items = self._codes(self.items, item_ids, [ITEM_KNOWLEDGE])[ITEM_KNOWLEDGE].to_numpy()
        return {
            USER_KNOWLEDGE: user.long().unsqueeze(0).expand(len(item_ids), -1),
            ITEM_KNOWLEDGE: torch.as_tensor(items),
        }

    def score(
        self, user_id: str, item_ids: list[str], history: list[str], ratings: list[float] | None = None
    ) -> list[float]:
        """Click probabilities of `item_ids` for the user after `history` (item ids, oldest
        first) with the ratings the user gave them (None: unknown)."""
        n = len(item_ids)
        user = self._codes(self.users, [user_id] * n, USER_FIELDS)
        single = [f for f in ITEM_FIELDS if f != CATEGORY_FIELD]
        items = self._codes(self.items, item_ids, single)
        columns = {**{f: user[f].to_numpy() for f in USER_FIELDS}, **{f: items[f].to_numpy() for f in single}}
        tensors = {name: torch.as_tensor(columns[name]) for name in CTR_FIELDS if name != CATEGORY_FIELD}
        tensors[CATEGORY_FIELD] = self._categories(item_ids)
        tensors.update(self._knowledge_rows(user_id, item_ids))
        recent = history[-self.history_length :]
        known = (ratings or [None] * len(history))[-self.history_length :]
        padding = self.history_length - len(recent)
        item_codes = [0] * padding + self._codes(self.items, recent, ["item_id"])["item_id"].tolist()
        rating_codes = [0] * padding + [self.rating_codes.get(r, 0) if r is not None else 0 for r in known]
        categories = torch.cat([torch.zeros(padding, self.slots, dtype=torch.long), self._categories(recent)])
        inputs = [
            *(tensors[name] for name in CTR_FIELDS),
            torch.tensor([item_codes] * n, dtype=torch.long),
            torch.tensor([rating_codes] * n, dtype=torch.long),
            categories.unsqueeze(0).expand(n, -1, -1),
            tensors[USER_KNOWLEDGE],
            tensors[ITEM_KNOWLEDGE],
        ]
        with torch.no_grad():
            return self.model(*inputs).tolist()

    def rank(
        self,
        user_id: str,
        candidates: list[str],
        history: list[str] | None = None,
        ratings: list[float] | None = None,
        top_k: int | None = None,
    ) -> list[tuple[str, float]]:
        """Candidates ordered by predicted click probability, best first."""
        if not candidates:
            return []
        scores = self.score(user_id, candidates, history or [], ratings)
        ranked = sorted(zip(candidates, scores, strict=True), key=lambda pair: pair[1], reverse=True)
        return ranked[:top_k] if top_k else ranked
