"""LLM backends behind one small interface: `generate(system, prompt, seed, temperature)`."""

from __future__ import annotations

from ray_workers.backends.base import BackendUnavailable, Generation, LlmBackend, model_id

__all__ = ["BackendUnavailable", "Generation", "LlmBackend", "make_backend", "model_id"]


def make_backend(settings) -> LlmBackend:
    """The configured per-actor backend (vLLM runs as a whole Ray Data stage instead)."""
    if settings.backend == "llama_cpp":
        from ray_workers.backends.llama_cpp import LlamaCppBackend

        return LlamaCppBackend(settings)
    if settings.backend == "openai":
        from ray_workers.backends.openai import OpenAiBackend

        return OpenAiBackend(settings)
    if settings.backend == "imported":
        raise ValueError(
            f"llm.backend=imported asks no LLM: the answers of {settings.model} come from `reki import-knowledge`"
        )
    raise ValueError(f"llm.backend={settings.backend} has no per-actor backend (vllm runs through ray.data.llm)")
