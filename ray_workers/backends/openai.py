"""Any OpenAI-compatible chat endpoint (vLLM server, TGI, llama.cpp server, hosted APIs). The key is
read from the environment variable named in `llm.api_key_env` and never stored or printed."""

from __future__ import annotations

import os

from ray_workers.backends.base import Generation
from reki_spark.config import LlmConfig


class OpenAiBackend:
    def __init__(self, settings: LlmConfig) -> None:
        from openai import OpenAI

        self.settings = settings
        # Local servers often need no key; a placeholder keeps the client from refusing to start.
        key = os.environ.get(settings.api_key_env) or "not-needed"
        self._client = OpenAI(base_url=settings.base_url, api_key=key, timeout=settings.request_timeout_s)

    def __repr__(self) -> str:
        return f"OpenAiBackend(base_url={self.settings.base_url!r}, model={self.settings.model!r})"

    def generate(self, system: str, prompt: str, seed: int, temperature: float) -> Generation:
        response = self._client.chat.completions.create(
            model=self.settings.model or "",
            messages=[{"role": "system", "content": system}, {"role": "user", "content": prompt}],
            max_tokens=self.settings.max_tokens,
            temperature=temperature,
            seed=seed,
        )
        usage = response.usage
        return Generation(
            text=response.choices[0].message.content or "",
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
        )
