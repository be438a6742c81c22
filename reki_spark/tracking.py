"""MLflow tracking (`tracking.*`): one run per trained model x knowledge x seed, with the whole
config as parameters, the per-epoch train loss and validation metric as metric histories and the
test metrics; one `report` run with the report, its chart and the cost ledger as artifacts.

Runs are logged from the driver after each training job returns (its epoch history travels in the
result), so TorchDistributor ranks never talk to the tracking server."""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from reki_spark import console, storage
from reki_spark.config import RekiConfig

MAX_BATCH = 100  # MLflow's per-call limit on params and on metrics batches kept small
RUN_KEYS = ("task", "model", "knowledge", "seed")
# Tags too: which code and settings (reki_spark/provenance.py) trained the run.
PROVENANCE_KEYS = ("commit", "config_hash")


def local_store(config: RekiConfig) -> Path:
    """The default MLflow store: the output folder when it is local; for an object-store output, a
    folder of the driver's (a SQLite file cannot live in a bucket; set tracking.mlflow_uri to a
    tracking server on a cluster)."""
    output = storage.resolve(config.output)
    if storage.is_local(output):
        return Path(output)
    return Path.home() / ".cache" / "reki" / "mlflow" / output.replace("://", "/").replace("/", "_")


def tracking_uri(config: RekiConfig) -> str:
    return config.tracking.mlflow_uri or f"sqlite:///{local_store(config) / 'mlflow.db'}"


def experiment_name(config: RekiConfig) -> str:
    return config.tracking.experiment or f"reki-{config.dataset.name}"


def log_training_run(config: RekiConfig, result: dict[str, Any], history: list[dict[str, float]]) -> str | None:
    """One MLflow run for one finished job; returns its id (None when tracking is off)."""
    if not config.tracking.enabled:
        return None
    from mlflow.entities import Metric

    client, experiment = _client(config)
    name = "-".join(str(result[key]) for key in RUN_KEYS)
    tags = {key: str(result[key]) for key in RUN_KEYS} | {key: str(result.get(key, "")) for key in PROVENANCE_KEYS}
    run = client.create_run(experiment, run_name=name, tags=tags)
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    settings = {f"config.{key}": value for key, value in _flat(config.model_dump(mode="json"))}
    settings.update({f"run.{key}": value for key, value in config.training.optimisation(result["model"]).items()})
    metrics = [
        Metric(key, float(entry[key]), now, int(entry["epoch"]))
        for entry in history
        for key in ("train_loss", "valid")
        if not math.isnan(entry[key])
    ]
    metrics += [
        Metric(f"test_{key}".replace("@", "_at_"), float(value), now, 0)  # MLflow names allow no "@"
        for key, value in result.items()
        if isinstance(value, int | float) and not isinstance(value, bool) and key not in RUN_KEYS
    ]
    _log(client, run_id, settings, metrics)
    client.set_terminated(run_id)
    return run_id


def log_report(config: RekiConfig, files: list[Path], ledger: list[dict[str, Any]]) -> str | None:
    """The `report` run: the report and its chart, and the ledger as JSON."""
    if not config.tracking.enabled:
        return None
    client, experiment = _client(config)
    run_id = client.create_run(experiment, run_name="report", tags={"stage": "report"}).info.run_id
    for path in files:
        client.log_artifact(run_id, str(path))
    with tempfile.TemporaryDirectory() as folder:
        ledger_file = Path(folder) / "ledger.json"
        ledger_file.write_text(json.dumps(ledger, indent=2, default=str))
        client.log_artifact(run_id, str(ledger_file))
    client.set_terminated(run_id)
    return run_id


def _client(config: RekiConfig) -> tuple[Any, str]:
    from mlflow.tracking import MlflowClient

    if not console.verbose():
        logging.getLogger("mlflow").setLevel(logging.WARNING)  # database set-up INFO lines
        logging.getLogger("alembic").setLevel(logging.WARNING)
    if not config.tracking.mlflow_uri:
        local_store(config).mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri(config))
    name = experiment_name(config)
    found = client.get_experiment_by_name(name)
    if found is not None:
        return client, found.experiment_id
    artifacts = None if config.tracking.mlflow_uri else (local_store(config) / "mlruns").as_uri()
    return client, client.create_experiment(name, artifact_location=artifacts)


def _log(client: Any, run_id: str, settings: dict[str, Any], metrics: list[Any]) -> None:
    from mlflow.entities import Param

    params = [Param(key, str(value)[:6000]) for key, value in settings.items()]
    for start in range(0, max(len(params), len(metrics)), MAX_BATCH):
        chunk_params, chunk_metrics = params[start : start + MAX_BATCH], metrics[start : start + MAX_BATCH]
        client.log_batch(run_id, metrics=chunk_metrics, params=chunk_params)


def _flat(tree: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value
