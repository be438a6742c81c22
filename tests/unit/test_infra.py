"""The cluster manifests: the Ray launcher YAML against the schema that ships inside ray, the
Kubernetes manifests' kinds and API versions, and the Spark defaults' Delta settings."""

import json
from pathlib import Path

import jsonschema
import ray
import yaml

from reki_spark.session import DELTA_SETTINGS
from tests.paths import REPO

INFRA = REPO / "infra"


def test_ray_cluster_yaml_matches_the_schema_shipped_with_ray():
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load((INFRA / "ray" / "cluster.yaml").read_text())
    jsonschema.validate(config, schema)
    assert config["head_node_type"] in config["available_node_types"]


def test_kubernetes_manifests_have_the_right_kinds_and_versions():
    spark_app = yaml.safe_load((INFRA / "k8s" / "spark-application.yaml").read_text())
    assert (spark_app["apiVersion"], spark_app["kind"]) == ("sparkoperator.k8s.io/v1beta2", "SparkApplication")
    assert spark_app["spec"]["mainApplicationFile"].endswith("jobs/features.py")
    assert (REPO / "jobs" / "features.py").exists()
    ray_job = yaml.safe_load((INFRA / "k8s" / "ray-job.yaml").read_text())
    assert (ray_job["apiVersion"], ray_job["kind"]) == ("ray.io/v1", "RayJob")
    assert "jobs/answer.py" in ray_job["spec"]["entrypoint"] and (REPO / "jobs" / "answer.py").exists()
    # The LLM-worker image's Ray, not the Spark image's: that cluster runs only the worker image.
    assert ray_job["spec"]["rayClusterSpec"]["rayVersion"] == _pinned("ray", "worker-constraints.txt")
    images = {c["image"] for group in _pod_groups(ray_job) for c in group["template"]["spec"]["containers"]}
    assert images == {"registry.example.com/reki/llm-worker:0.1.0"}


def _pinned(package: str, constraints: str) -> str:
    lines = (REPO / "requirements" / constraints).read_text().splitlines()
    return next(line.split("==")[1] for line in lines if line.lower().startswith(f"{package}=="))


def _pod_groups(ray_job: dict) -> list[dict]:
    cluster = ray_job["spec"]["rayClusterSpec"]
    return [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]


def test_spark_defaults_carry_the_delta_settings():
    settings = dict(
        line.split(None, 1)
        for line in (INFRA / "spark" / "spark-defaults.conf").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    for key, value in DELTA_SETTINGS.items():
        assert settings[key].strip() == value
    assert "delta-spark_2.12:3.3.3" in settings["spark.jars.packages"]
    assert "hadoop-aws:3.3.4" in settings["spark.jars.packages"]  # the S3A connector of Spark 3.5's Hadoop


def test_dockerfiles_install_the_pinned_stack_and_the_delta_jars():
    for name in ("Dockerfile.spark", "Dockerfile.ray-cpu"):
        text = (INFRA / "docker" / name).read_text()
        assert "--constraint requirements/constraints.txt" in text
        assert "reki_spark.jars --version 3.3.3" in text
        # The built wheel, never the source tree.
        assert "dist/reki_spark-*.whl" in text
        assert "COPY reki_spark/" not in text and "COPY --chown=ray reki_spark/" not in text


def test_the_llm_worker_image_installs_the_worker_set_as_make_worker_setup_does():
    text = (INFRA / "docker" / "Dockerfile.llm-worker").read_text()
    assert 'infra/llm-worker/install.sh python "$LLM_DEVICE" "$(ls dist/reki_spark-*.whl)"' in text
    assert f"rayproject/ray:{_pinned('ray', 'worker-constraints.txt')}-py311-gpu" in text
    assert "constraints.txt" not in text.replace("worker-constraints.txt", "")  # never the Spark set
    makefile = (REPO / "Makefile").read_text()
    assert "infra/llm-worker/install.sh $(WORKER_VENV)/bin/python $(LLM_DEVICE) ." in makefile
    assert _pinned("ray", "constraints.txt") == ray.__version__  # this (Spark) environment's Ray


def test_the_stages_on_the_slim_executor_environment_import_nothing_it_lacks():
    """requirements/executor.txt (the packed archive) carries pandas, pyarrow, numpy, pydantic and
    PyYAML: what the ingest, features and prompts stages import where their UDFs run."""
    import subprocess
    import sys

    modules = ["reki_spark.data.ingest", "reki_spark.features", "reki_spark.knowledge.prompts"]
    probe = f"import json, sys; import {', '.join(modules)}; print(json.dumps(sorted(sys.modules)))"
    loaded = set(json.loads(subprocess.run([sys.executable, "-c", probe], capture_output=True, check=True).stdout))
    assert loaded.isdisjoint({"scipy", "sklearn", "torch", "fsspec", "ray", "petastorm"})


def test_the_library_reaches_training_only_through_its_entry_points():
    """Outside `training/`, code runs training (`training.train`) or reads a finished run
    (`training.runs`), nothing deeper; the evaluation package imports nothing of training, whose
    loop imports evaluation's metrics: the arrows point one way."""
    import ast

    package = REPO / "reki_spark"
    reached: dict[str, set[str]] = {}
    for path in package.rglob("*.py"):
        if "training" in path.relative_to(package).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("reki_spark.training"):
                reached.setdefault(node.module, set()).add(str(path.relative_to(package)))
    assert set(reached) <= {"reki_spark.training.train", "reki_spark.training.runs"}, reached
    assert not any(user.startswith("evaluation") for users in reached.values() for user in users), reached
