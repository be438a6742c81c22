"""Any OpenAI-compatible chat endpoint (vLLM server, TGI, llama.cpp server, hosted APIs). The key is
read from the environment variable named in `llm.api_key_env` and never stored or printed. The
client is thread-safe: an actor keeps `llm.concurrency` requests in flight through it, and it retries
408/409/429/5xx and dropped connections `llm.request_retries` times with exponential backoff,
honouring the server's Retry-After."""

from __future__ import annotations

import os

from ray_workers.backends.base import BackendUnavailable, Generation
from reki_spark.config import LlmConfig


class OpenAiBackend:
    def __init__(self, settings: LlmConfig) -> None:
        from openai import OpenAI

        self.settings = settings
        # Local servers often need no key; a placeholder keeps the client from refusing to start.
        key = os.environ.get(settings.api_key_env) or "not-needed"
        self._client = OpenAI(
            base_url=settings.base_url,
            api_key=key,
            timeout=settings.request_timeout_s,
            max_retries=settings.request_retries,
        )

    def __repr__(self) -> str:
        return f"OpenAiBackend(base_url={self.settings.base_url!r}, model={self.settings.model!r})"

    def generate(self, system: str, prompt: str, seed: int, temperature: float) -> Generation:
        import openai

        try:
            response = self._client.chat.completions.create(
                model=self.settings.model or "",
                messages=[{"role": "system", "content": system}, {"role": "user", "content": prompt}],
                max_tokens=self.settings.max_tokens,
                temperature=temperature,
                seed=seed,
            )
        except (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError) as err:
            raise BackendUnavailable(
                f"the LLM endpoint {self.settings.base_url} did not answer after {self.settings.request_retries} "
                f"retries ({type(err).__name__}); the answers so far are kept: rerun to ask the rest"
            ) from err
        usage = response.usage
        return Generation(
            text=response.choices[0].message.content or "",
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
        )
