"""How much the product prints. Quiet by default: each stage prints its header, its accounting
line and, on a terminal, a progress bar, while the chatter of the libraries underneath (Spark's start-up warnings
and stage bars, petastorm's pyarrow deprecation warnings, Ray Data's INFO lines and worker output,
model-loading bars, per-epoch lines) is held back. `reki --verbose` (REKI_VERBOSE=1) lets it all
through. The switch is an environment variable so that Spark, TorchDistributor and Ray workers,
which inherit the driver's environment, follow it too."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

VERBOSE = "REKI_VERBOSE"
# Spark's log4j2 settings for quiet runs: WARN, minus the start-up notices every local run prints.
QUIET_LOG4J = Path(__file__).resolve().parent / "log4j2-quiet.properties"
# Read when Ray workers and transformers start: set before either starts.
QUIET_ENVIRONMENT = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    # Opts into Ray's announced default (CPU-only tasks leave CUDA_VISIBLE_DEVICES alone) instead of
    # a FutureWarning at every start; GPU actors (vLLM) ask for GPUs and are unaffected.
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
    # Ray's C++ layer logs at ERROR, on every run, that Ray Data's actor pools pass their
    # constructor arguments through the object store while restartable (ray#53727: by design of
    # Ray Data, nothing to fix here). Quiet runs keep Ray's C++ logs to fatal: a real failure still
    # reaches the stage as a Python exception, and --verbose shows them all.
    "RAY_BACKEND_LOG_LEVEL": "fatal",
}
# ...which Ray's C++ layer acknowledges on stderr, unconditionally, when the driver connects.
RAY_LOG_LEVEL_NOTICE = "Set ray log level from environment variable RAY_BACKEND_LOG_LEVEL"


def verbose() -> bool:
    return os.environ.get(VERBOSE) == "1"


def configure(loud: bool) -> None:
    """Called once by the CLI, before any session starts."""
    os.environ[VERBOSE] = "1" if loud else "0"
    if not loud:
        for name, value in QUIET_ENVIRONMENT.items():
            os.environ.setdefault(name, value)


@contextmanager
def without_stderr_line(notice: str) -> Iterator[None]:
    """Holds back the stderr lines (of this process and its C++ libraries alike: file descriptor
    2) that contain `notice` while the block runs, in quiet runs; every other line is written
    out after it, in order. Not with RAY_LOG_TO_STDERR=1: the processes Ray starts meanwhile would
    keep writing their logs into the held file for their whole lives."""
    if verbose() or os.environ.get("RAY_LOG_TO_STDERR") == "1":
        yield
        return
    sys.stderr.flush()
    with tempfile.TemporaryFile() as held:
        saved = os.dup(2)
        try:
            os.dup2(held.fileno(), 2)
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [line for line in held.read().decode(errors="replace").splitlines(True) if notice not in line]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


def progress(total: int, desc: str, unit: str) -> Any:
    """A progress bar where the output is a terminal; none elsewhere (a log file, CI), where its
    carriage-return updates would make one line of kilobytes: the stage's own accounting line
    reports what it did."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=None)


def detail(message: str) -> None:
    """A line only a verbose run prints."""
    if verbose():
        print(message, flush=True)


def spark_settings() -> dict[str, str]:
    """Local-session settings that keep Spark to real warnings and no stage bars."""
    if verbose():
        return {}
    return {
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile={QUIET_LOG4J.as_uri()}",
    }


def quiet_petastorm() -> None:
    """petastorm 0.12 calls pyarrow APIs that pyarrow 14 deprecates: one FutureWarning per call,
    a screenful per epoch, none of it actionable here. Its BatchedDataLoader also hands Arrow's
    read-only arrays to `torch.as_tensor`, which warns once per rank, though nothing writes to a
    batch (the models only read their inputs). Only those warnings are silenced."""
    if verbose():
        return
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"petastorm(\.|$)")
    warnings.filterwarnings("ignore", "The given NumPy array is not writable", UserWarning, r"petastorm(\.|$)")
    logging.getLogger("petastorm").setLevel(logging.ERROR)


def quiet_ray_data() -> None:
    """Ray Data's INFO and resource notices stay in its session log file, off the console."""
    if verbose():
        return
    for handler in logging.getLogger("ray.data").handlers:
        if not isinstance(handler, logging.FileHandler) and "File" not in type(handler).__name__:
            handler.setLevel(logging.ERROR)
