"""vLLM on Ray clusters through `ray.data.llm`: a processor config plus pre/post-processing over the
prompts dataset. `ray.data.llm` is imported lazily: it is only needed where this backend runs (the
LLM-worker environment, requirements/worker-*.txt: vLLM cannot share the Spark one)."""

from __future__ import annotations

from typing import Any

from reki_spark.config import ConfigError, LlmConfig

# The prompt's columns that its answer row keeps (ray.data.llm carries a row's keys through).
CARRIED = ["prompt_id", "kind", "entity_type", "entity_id", "view", "prompt_hash"]


def engine_bundle(cluster_resources: dict[str, float], settings: LlmConfig) -> dict[str, float]:
    """The resources of one engine actor. vLLM's stage would wait forever for a GPU on a CPU-only
    cluster, so a config that asks for GPUs the cluster lacks is refused up front."""
    vllm = settings.vllm
    gpus = cluster_resources.get("GPU", 0)
    device = vllm.device
    if device == "auto":
        device = "gpu" if gpus >= vllm.gpus_per_actor else "cpu"
    if device == "cpu":
        return {"CPU": vllm.cpus_per_actor}
    if gpus < vllm.gpus_per_actor:
        raise ConfigError(
            f"llm.vllm.device=gpu needs {vllm.gpus_per_actor:g} GPU per engine but this Ray cluster has {gpus:g}: "
            "submit to a GPU cluster, or set llm.vllm.device=cpu (vLLM's CPU build) or another llm.backend"
        )
    return {"GPU": vllm.gpus_per_actor}


def processor_config(settings: LlmConfig, bundle: dict[str, float]) -> Any:
    from ray.data.llm import vLLMEngineProcessorConfig

    vllm = settings.vllm
    return vLLMEngineProcessorConfig(
        model_source=settings.model,
        engine_kwargs=dict(vllm.engine_kwargs),
        batch_size=settings.batch_size,
        concurrency=vllm.concurrency,
        accelerator_type=vllm.accelerator_type if "GPU" in bundle else None,
        placement_group_config={"bundles": [bundle]},
        should_continue_on_error=True,
    )


def build(settings: LlmConfig, bundle: dict[str, float], sampling_seed: int) -> Any:
    from ray.data.llm import build_processor

    def preprocess(row: dict[str, Any]) -> dict[str, Any]:
        return {
            **{name: row[name] for name in CARRIED},
            "messages": [{"role": "system", "content": row["system"]}, {"role": "user", "content": row["prompt"]}],
            "sampling_params": {
                "temperature": settings.temperature,
                "max_tokens": settings.max_tokens,
                "repetition_penalty": settings.repetition_penalty,
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

    return build_processor(processor_config(settings, bundle), preprocess=preprocess, postprocess=postprocess)
