"""The typed experiment configuration: one YAML file plus `--set dotted.key=value` overrides,
validated once into a `RekiConfig`. Unknown keys and bad values are one-line errors naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DatasetName = Literal["sample", "movielens-100k", "movielens-1m", "amazon-2014", "amazon-2018"]


class ConfigError(ValueError):
    """A configuration problem, worded as one line that names the offending key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SampleSize(_Strict):
    users: int = Field(2000, ge=1)
    items: int = Field(1000, ge=12)
    interactions: int = Field(100_000, ge=1)


class DatasetConfig(_Strict):
    name: DatasetName = "sample"
    # Folder with the dataset's raw files; unused by `sample`, which is generated inside Spark.
    path: str | None = None
    # Amazon category as it appears in the file names, e.g. "Beauty" for reviews_Beauty_5.json.gz.
    category: str | None = None
    # Where `reki download` fetches the public archive from (http(s):// or file://).
    download_url: str | None = None
    rating_min: float = 1.0
    rating_max: float = 5.0
    sample: SampleSize = SampleSize()

    @model_validator(mode="after")
    def _needs_what_it_reads(self) -> DatasetConfig:
        if self.name != "sample" and not self.path:
            raise ValueError(f"dataset.path is required for dataset.name={self.name}")
        if self.name.startswith("amazon") and not self.category:
            raise ValueError(f"dataset.category is required for dataset.name={self.name}")
        if self.rating_min >= self.rating_max:
            raise ValueError("dataset.rating_min must be below dataset.rating_max")
        return self


class SparkConfig(_Strict):
    # Used in local mode only: under spark-submit the cluster's own settings win.
    master: str = "local[2]"
    driver_memory: str = "6g"
    shuffle_partitions: int = Field(8, ge=1)
    app_name: str = "reki"
    ui: bool = False


class PromptWindow(_Strict):
    # half: n = min((len + 1) // 2, cap) as on MovieLens; fixed: n = min(cap, len) as on Amazon.
    rule: Literal["half", "fixed"] = "half"
    cap: int = Field(30, ge=1)


class SplitFractions(_Strict):
    train: float = Field(0.8, gt=0)
    valid: float = Field(0.1, ge=0)
    test: float = Field(0.1, gt=0)

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitFractions:
        if abs(self.train + self.valid + self.test - 1.0) > 1e-6:
            raise ValueError("features.split fractions must sum to 1")
        return self


class FeaturesConfig(_Strict):
    # CTR label = rating > label_threshold; data without ratings is implicit feedback (all
    # observed interactions are positives and negatives are sampled).
    label_threshold: float = 3.0
    prompt_window: PromptWindow = PromptWindow()
    history_length: int = Field(5, ge=1)
    split: SplitFractions = SplitFractions()
    negatives_per_positive: int = Field(1, ge=0)
    sequence_max_length: int = Field(50, ge=3)


class RekiConfig(_Strict):
    dataset: DatasetConfig = DatasetConfig()
    lake: str = "lake/sample"
    output: str = "runs/sample"
    seed: int = 42
    spark: SparkConfig = SparkConfig()
    features: FeaturesConfig = FeaturesConfig()


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RekiConfig:
    """Read a YAML experiment file, apply `dotted.key=value` overrides, validate."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as err:
            raise ConfigError(f"cannot read config {path}: {err.strerror}") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"config {path} is not valid YAML: {str(err).splitlines()[0]}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config {path} must be a mapping at the top level")
    for override in overrides or []:
        _apply_override(raw, override)
    try:
        return RekiConfig.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or "(top level)"
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown key"
        raise ConfigError(f"config error at {key}: {message}") from None


def _apply_override(raw: dict[str, Any], override: str) -> None:
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects dotted.key=value, got {override!r}")
    *parents, leaf = key.strip().split(".")
    node = raw
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config error at {key}: {part} is not a section")
        node = child
    # YAML typing, so that `--set seed=7` is an int and `--set dataset.path=null` is None.
    node[leaf] = yaml.safe_load(text) if text.strip() else ""
