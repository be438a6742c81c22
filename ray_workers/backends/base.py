"""What every LLM backend returns, and the model id that keys the `knowledge` table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ray_workers.backends.gguf import gguf_file_name
from reki_spark.config import LlmConfig


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int


class BackendUnavailable(RuntimeError):
    """The LLM endpoint did not answer (after the backend's own retries): not an answer to record
    as failed, but a reason to stop the run and ask again later."""


class LlmBackend(Protocol):
    def generate(self, system: str, prompt: str, seed: int, temperature: float) -> Generation: ...


def model_id(settings: LlmConfig) -> str:
    """Identifies the answers' model: the backend plus the model file or name."""
    if settings.backend == "llama_cpp":
        return f"llama_cpp:{gguf_file_name(settings.model)}"
    return f"{settings.backend}:{settings.model}"
