"""llama.cpp in-process (the default, for laptops and CI): one model per Ray actor."""

from __future__ import annotations

from ray_workers.backends.base import Generation
from ray_workers.backends.gguf import resolve_gguf
from reki_spark.config import LlmConfig


class LlamaCppBackend:
    def __init__(self, settings: LlmConfig) -> None:
        from llama_cpp import Llama

        self.settings = settings
        self._llm = Llama(
            model_path=resolve_gguf(settings.model, settings.model_cache),
            n_ctx=settings.context_tokens,
            n_threads=settings.threads_per_actor,
            n_threads_batch=settings.threads_per_actor,
            seed=settings.seed,
            verbose=False,
        )

    def generate(self, system: str, prompt: str, seed: int, temperature: float) -> Generation:
        result = self._llm.create_chat_completion(
            messages=[{"role": "system", "content": system}, {"role": "user", "content": prompt}],
            max_tokens=self.settings.max_tokens,
            temperature=temperature,
            repeat_penalty=self.settings.repetition_penalty,
            seed=seed,
        )
        usage = result["usage"]
        return Generation(
            text=result["choices"][0]["message"]["content"] or "",
            prompt_tokens=int(usage["prompt_tokens"]),
            completion_tokens=int(usage["completion_tokens"]),
        )
