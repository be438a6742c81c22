"""vLLM on GPU clusters through `ray.data.llm`: a processor config plus pre/post-processing over the
prompts dataset. `ray.data.llm` is imported lazily: it is only needed where this backend runs."""

from __future__ import annotations

from typing import Any

from reki_spark.config import LlmConfig

# The prompt's columns that its answer row keeps (ray.data.llm carries a row's keys through).
CARRIED = ["prompt_id", "kind", "entity_type", "entity_id", "view", "prompt_hash"]


def processor_config(settings: LlmConfig) -> Any:
    from ray.data.llm import vLLMEngineProcessorConfig

    vllm = settings.vllm
    return vLLMEngineProcessorConfig(
        model_source=settings.model,
        engine_kwargs=dict(vllm.engine_kwargs),
        batch_size=settings.batch_size,
        concurrency=vllm.concurrency,
        accelerator_type=vllm.accelerator_type,
        should_continue_on_error=True,
    )


def require_gpus(cluster_resources: dict[str, float], settings: LlmConfig) -> None:
    """vLLM's stage waits forever for a GPU on a CPU-only cluster: refuse up front instead."""
    gpus = cluster_resources.get("GPU", 0)
    if gpus < settings.vllm.gpus_per_actor:
        raise RuntimeError(
            f"llm.backend=vllm needs GPUs but this Ray cluster has {gpus:g}: use llm.backend=llama_cpp "
            "or openai here, or submit to a GPU cluster"
        )


def build(settings: LlmConfig, sampling_seed: int) -> Any:
    from ray.data.llm import build_processor

    def preprocess(row: dict[str, Any]) -> dict[str, Any]:
        return {
            **{name: row[name] for name in CARRIED},
            "messages": [{"role": "system", "content": row["system"]}, {"role": "user", "content": row["prompt"]}],
            "sampling_params": {
                "temperature": settings.temperature,
                "max_tokens": settings.max_tokens,
                "seed": sampling_seed,
            },
        }

    def postprocess(row: dict[str, Any]) -> dict[str, Any]:
        return {
            **{name: row[name] for name in CARRIED},
            "text": row.get("generated_text") or "",
            "prompt_tokens": int(row.get("num_input_tokens") or 0),
            "completion_tokens": int(row.get("num_generated_tokens") or 0),
        }

    return build_processor(processor_config(settings), preprocess=preprocess, postprocess=postprocess)
