import pytest

from ray_workers.backends import Generation, model_id
from ray_workers.backends import vllm as vllm_backend
from ray_workers.backends.openai import OpenAiBackend
from ray_workers.extract import FAILED, OK, answer_prompt
from ray_workers.validation import answer_problem, reason_kind
from reki_spark.config import ConfigError, LlmConfig, load_config

GOOD = "Genre: dark crime thrillers with moral ambiguity. Mood: tense, gritty and slow-burning throughout."


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty answer"),
        ("   \n\t ", "empty answer"),
        ("Too short.", "too short: 10 characters"),
        ("gritty " * 60, "degenerate repetition: 2% distinct words"),
        (GOOD, None),
    ],
)
def test_answer_problems(text, problem):
    assert answer_problem(text, LlmConfig(min_chars=40, min_distinct_word_ratio=0.25)) == problem


# Real degenerate answers, stored `ok` by the old distinct-word check: an e-commerce item answer
# (one product on ten numbered lines) and two of SmolLM2's collective MovieLens-style answers.
PACK_OF_TWO = "Here are the products this group likes:\n" + "\n".join(
    f"{i}. Nature's Gate Herbal Daily Shampoo, 5 Ounce (Pack of 2)" for i in range(1, 11)
)
NUMBERED_TITLES = (
    'Based on the above analysis, the group of users dislikes the film "The Crimson Lighthouse" with the '
    "following factors:\n1. The Crimson Lighthouse\n"
    + "\n".join(f"{i}. The Haunted Cellar\n{i}. The Silent Cellar" for i in range(2, 8))
)
LOOPING_FACTORS = (
    "I have identified the following factors to compare: genre, director/actors, time period, plot/theme, "
    "mood/tone, soundtrack, production quality, " + "soundtrack quality, production quality, " * 12
)
FACTOR_ANSWER = (
    "Genre: the group favours tense crime thrillers and neo-noir.\nDirector/actors: Michael Mann, "
    "Al Pacino and Robert De Niro recur.\nTime period/country: mostly American films of the 1990s.\n"
    "Mood/tone: gritty, melancholic and slow-burning.\nCritical acclaim: several were festival winners.\n"
    "Soundtrack: sparse electronic scores."
)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        (PACK_OF_TWO, "repeated line"),
        (NUMBERED_TITLES, "repeated line"),
        (LOOPING_FACTORS, "repeated phrase"),
        (FACTOR_ANSWER, None),
        (GOOD, None),
    ],
)
def test_line_and_phrase_repetition_is_degenerate(text, kind):
    problem = answer_problem(text, LlmConfig())
    assert (reason_kind(problem) if problem else None) == kind


def test_rejected_attempts_are_counted_per_reason():
    backend = ScriptedBackend([PACK_OF_TWO, "", GOOD])
    row = answer_prompt(backend, SETTINGS, ROW, "m")
    assert row["status"] == OK
    assert row["rejections"] == ["repeated line", "empty answer"]


class ScriptedBackend:
    """Answers from a script, one entry per call; an Exception entry is raised."""

    def __init__(self, script):
        self.script = list(script)
        self.seeds = []

    def generate(self, system, prompt, seed, temperature):
        self.seeds.append((seed, temperature))
        entry = self.script.pop(0)
        if isinstance(entry, Exception):
            raise entry
        return Generation(entry, prompt_tokens=10, completion_tokens=len(entry.split()))


ROW = {
    "prompt_id": "p1",
    "kind": "item",
    "entity_type": "item",
    "entity_id": "1",
    "view": "item",
    "system": "sys",
    "prompt": "Introduce it.",
    "prompt_hash": "h1",  # computed by Spark with the pending prompts
}
SETTINGS = LlmConfig(max_attempts=3, min_chars=40, temperature=0.0, seed=5)


def test_retry_with_new_seed_then_accept():
    backend = ScriptedBackend(["", "word " * 50, GOOD])
    row = answer_prompt(backend, SETTINGS, ROW, "m")
    assert (row["status"], row["attempts"], row["reason"]) == (OK, 3, None)
    assert row["text"] == GOOD
    assert [seed for seed, _ in backend.seeds] == [5, 6, 7]
    assert backend.seeds[1][1] > 0  # retries sample, or a temperature-0 retry would repeat itself
    assert row["prompt_tokens"] == 30


def test_exhausted_attempts_are_stored_failed_never_ok():
    row = answer_prompt(ScriptedBackend(["", "  ", "spam " * 80]), SETTINGS, ROW, "m")
    assert row["status"] == FAILED
    assert row["attempts"] == 3
    assert row["reason"].startswith("degenerate repetition")


def test_backend_errors_are_failed_attempts_with_the_reason():
    row = answer_prompt(ScriptedBackend([ValueError("Requested tokens exceed context window")] * 3), SETTINGS, ROW, "m")
    assert row["status"] == FAILED
    assert "exceed context window" in row["reason"]


def test_model_ids_name_backend_and_model():
    assert model_id(LlmConfig()) == "llama_cpp:SmolLM2-135M-Instruct.Q4_1.gguf"
    assert model_id(LlmConfig(backend="vllm", model="org/model")) == "vllm:org/model"


def test_openai_backend_needs_url_and_model_and_never_shows_the_key(monkeypatch):
    with pytest.raises(ConfigError, match=r"llm\.base_url and llm\.model are required"):
        load_config(None, ["llm.backend=openai"])
    monkeypatch.setenv("REKI_TEST_KEY", "sk-secret-value")
    settings = LlmConfig(backend="openai", base_url="http://127.0.0.1:9/v1", model="m", api_key_env="REKI_TEST_KEY")
    backend = OpenAiBackend(settings)
    assert "sk-secret-value" not in repr(backend)
    assert "sk-secret-value" not in repr(settings.model_dump())


def test_vllm_processor_config_from_settings():
    settings = LlmConfig(
        backend="vllm",
        model="HuggingFaceTB/SmolLM2-135M-Instruct",
        batch_size=16,
        vllm={"engine_kwargs": {"max_model_len": 2048}, "concurrency": 2, "accelerator_type": "H100"},
    )
    config = vllm_backend.processor_config(settings, {"GPU": 1.0})
    assert config.model_source == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert config.batch_size == 16
    assert config.concurrency == 2
    assert config.engine_kwargs["max_model_len"] == 2048
    assert config.should_continue_on_error is True
    assert config.placement_group_config["bundles"] == [{"CPU": 0.0, "GPU": 1.0}]
    assert config.accelerator_type == "H100"
    on_cpu = vllm_backend.processor_config(settings, {"CPU": 1.0})
    # Ray fills in the absent resource: no GPU asked, so the engine actor fits a CPU-only node.
    assert on_cpu.placement_group_config["bundles"] == [{"CPU": 1.0, "GPU": 0.0}]
    assert on_cpu.accelerator_type is None


def test_vllm_engine_bundle_follows_the_cluster_unless_told():
    auto = LlmConfig(backend="vllm", model="m")
    assert vllm_backend.engine_bundle({"CPU": 2.0}, auto) == {"CPU": 1.0}
    assert vllm_backend.engine_bundle({"CPU": 2.0, "GPU": 4.0}, auto) == {"GPU": 1.0}
    on_gpu = LlmConfig(backend="vllm", model="m", vllm={"device": "gpu", "gpus_per_actor": 2})
    with pytest.raises(ConfigError, match="needs 2 GPU per engine but this Ray cluster has 1"):
        vllm_backend.engine_bundle({"CPU": 2.0, "GPU": 1.0}, on_gpu)
    on_cpu = LlmConfig(backend="vllm", model="m", vllm={"device": "cpu", "cpus_per_actor": 4})
    assert vllm_backend.engine_bundle({"CPU": 8.0, "GPU": 1.0}, on_cpu) == {"CPU": 4.0}


def test_requests_in_flight_only_where_the_backend_can_take_them():
    with pytest.raises(ConfigError, match=r"llm\.concurrency > 1 needs llm\.backend=openai"):
        load_config(None, ["llm.concurrency=4"])
    config = load_config(None, ["llm.backend=openai", "llm.base_url=http://h/v1", "llm.model=m", "llm.concurrency=4"])
    assert config.llm.concurrency == 4 and config.llm.request_retries == 5
