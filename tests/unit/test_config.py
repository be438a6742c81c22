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
