from pathlib import Path

import pytest

from reki_spark.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "jobs" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    config = load_config(path)
    assert config.lake and config.output
    assert config.dataset.name in path.read_text()


def test_the_four_named_configs_ship():
    assert {p.name for p in CONFIGS} >= {
        "sample.yaml",
        "movielens-100k.yaml",
        "movielens-1m.yaml",
        "amazon-beauty.yaml",
    }


def test_overrides_are_typed_and_nested():
    config = load_config(
        REPO / "jobs/configs/sample.yaml",
        ["seed=7", "dataset.sample.users=50", "lake=/tmp/x", "features.prompt_window.cap=10"],
    )
    assert config.seed == 7
    assert config.dataset.sample.users == 50
    assert config.lake == "/tmp/x"
    assert config.features.prompt_window.cap == 10


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("datset.name=sample", "config error at datset: unknown key"),
        ("features.label_threshhold=3", "config error at features.label_threshhold: unknown key"),
        ("seed=abc", "config error at seed:"),
        ("dataset.name=netflix", "config error at dataset.name:"),
        ("features.split.train=0.9", "features.split fractions must sum to 1"),
        ("dataset.name=movielens-1m", "dataset.path is required"),
        ("no-equals-sign", "--set expects dotted.key=value"),
    ],
)
def test_bad_keys_and_values_are_one_line_errors_naming_the_key(override, expected):
    with pytest.raises(ConfigError) as caught:
        load_config(None, [override])
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message


def test_unreadable_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_a_dataset_brings_its_published_setup_unless_the_config_says_otherwise():
    amazon = load_config(None, ["dataset.name=amazon-2018", "dataset.path=x", "dataset.category=Beauty"])
    assert amazon.knowledge.domain == "ecommerce"
    assert amazon.features.label_threshold == 4.0
    assert (amazon.features.prompt_window.rule, amazon.features.prompt_window.cap) == ("fixed", 15)
    movielens = load_config(None, ["dataset.name=movielens-1m", "dataset.path=x"])
    assert (movielens.knowledge.domain, movielens.features.label_threshold) == ("movies", 3.0)
    assert movielens.features.prompt_window.rule == "half"
    explicit = load_config(
        None, ["dataset.name=amazon-2014", "dataset.path=x", "dataset.category=Beauty", "knowledge.domain=books"]
    )
    assert explicit.knowledge.domain == "books"
    assert explicit.features.label_threshold == 4.0
    partial = load_config(
        None, ["dataset.name=amazon-2014", "dataset.path=x", "dataset.category=Beauty", "features.prompt_window.cap=20"]
    )
    assert (partial.features.prompt_window.rule, partial.features.prompt_window.cap) == ("fixed", 20)


def test_training_follows_the_extracted_knowledge_mode_by_default():
    assert load_config(None, ["knowledge.mode=individual"]).training.knowledge == ["none", "individual"]
    assert load_config(None).training.knowledge == ["none", "collective"]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["knowledge.mode=collective", "training.knowledge=[none, individual]"], "training.knowledge lists individual"),
        (["training.knowledge=[none]", "export.knowledge=collective"], "export.knowledge is collective"),
    ],
)
def test_knowledge_settings_that_contradict_each_other_fail_at_load(overrides, expected):
    with pytest.raises(ConfigError, match=expected):
        load_config(None, overrides)


def test_knowledge_controls_come_with_collective_knowledge_only():
    config = load_config(None, ["training.knowledge=[none, collective, shuffled, cluster_only]"])
    assert config.training.knowledge[-2:] == ["shuffled", "cluster_only"]
    with pytest.raises(ConfigError, match=r"training\.knowledge lists shuffled"):
        load_config(None, ["knowledge.mode=individual", "training.knowledge=[none, individual, shuffled]"])


def test_sparse_id_tables_are_refused_where_nccl_would_all_reduce_them():
    assert load_config(None, ["training.sparse_embeddings=true", "training.num_processes=2"]).training.sparse_embeddings
    assert load_config(None, ["training.sparse_embeddings=true", "training.use_gpu=true"]).training.use_gpu
    gpus = ["training.sparse_embeddings=true", "training.use_gpu=true", "training.num_processes=2"]
    with pytest.raises(ConfigError, match="NCCL has no sparse all-reduce"):
        load_config(None, gpus)


def test_the_growing_tables_train_sparse_unless_ddp_runs_on_nccl():
    def sparse(*overrides: str) -> bool:
        return load_config(None, list(overrides)).training.sparse_tables()

    assert sparse() and sparse("training.num_processes=2") and sparse("training.use_gpu=true")
    assert not sparse("training.use_gpu=true", "training.num_processes=2")  # NCCL: dense
    assert not sparse("training.sparse_embeddings=false")
