"""What each test costs in CPU, to decide where `make test` can shed time: the suite's work with
no contention, to set beside what `make test`'s parallel processes spend on the same tests (a
3-worker run kept this 2-core machine 98.7% busy and spent ~50% more CPU than one at a time).

    make test-cost                                  # the whole suite, one test at a time
    make test-cost PYTEST_ARGS=tests/integration/test_faults.py

One process, no xdist: each test's CPU is the machine's busy time between its setup and its
teardown (every process it started, JVMs and Ray included), so nothing else heavy may run beside
it; work at nice > 0 (a background benchmark) is left out of the count. A session fixture counts
against the first test that uses it. Writes bench/results/test_cost.json and test_cost.md.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.common import RESULTS
from reki_spark.provenance import checkout_version

TOP = 20


def busy_seconds() -> float:
    """CPU seconds the machine has spent busy at nice 0 (user, system, interrupts, steal)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, _nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields[:8])
    return (user + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


@dataclass
class Cost:
    test: str
    wall_s: float
    cpu_s: float
    outcome: str = "passed"


class Recorder:
    """A pytest plugin: the wall and busy CPU of each test, setup and teardown included."""

    def __init__(self) -> None:
        self.costs: list[Cost] = []
        self._started: tuple[float, float] = (0.0, 0.0)
        self._outcomes: dict[str, str] = {}

    def pytest_runtest_logstart(self, nodeid: str, location: object) -> None:
        self._started = (time.monotonic(), busy_seconds())

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.outcome != "passed":  # a failed setup or teardown marks the test too
            self._outcomes[report.nodeid] = report.outcome

    def pytest_runtest_logfinish(self, nodeid: str, location: object) -> None:
        wall, cpu = time.monotonic() - self._started[0], busy_seconds() - self._started[1]
        self.costs.append(Cost(nodeid, round(wall, 1), round(cpu, 1), self._outcomes.get(nodeid, "passed")))


def by_file(costs: list[Cost]) -> dict[str, dict[str, float]]:
    files: dict[str, dict[str, float]] = defaultdict(lambda: {"tests": 0, "wall_s": 0.0, "cpu_s": 0.0})
    for cost in costs:
        total = files[cost.test.split("::")[0]]
        total["tests"] += 1
        total["wall_s"] = round(total["wall_s"] + cost.wall_s, 1)
        total["cpu_s"] = round(total["cpu_s"] + cost.cpu_s, 1)
    return dict(sorted(files.items(), key=lambda item: -item[1]["cpu_s"]))


def markdown(costs: list[Cost], files: dict[str, dict[str, float]], cpu: float, wall: float) -> str:
    lines = [
        f"# Test cost ({len(costs)} tests, one at a time, {os.cpu_count()} cores): "
        f"{cpu:,.0f} CPU s, {wall:,.0f} s wall; on 2 busy cores ~{cpu / 2 / 60:.0f} min",
        "",
        "| file | tests | CPU s | share | wall s |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {name} | {f['tests']:.0f} | {f['cpu_s']:,.0f} | {f['cpu_s'] / max(cpu, 1):.0%} | {f['wall_s']:,.0f} |"
        for name, f in files.items()
    ]
    lines += ["", f"| test (top {TOP} by CPU) | CPU s | wall s |", "|---|---:|---:|"]
    lines += [f"| {c.test} | {c.cpu_s:,.0f} | {c.wall_s:,.0f} |" for c in costs[:TOP]]
    return "\n".join(lines) + "\n"


def main(arguments: list[str]) -> int:
    recorder = Recorder()
    code = pytest.main(["-p", "no:xdist", "-q", *arguments], plugins=[recorder])
    costs = sorted(recorder.costs, key=lambda cost: -cost.cpu_s)
    cpu, wall = sum(c.cpu_s for c in costs), sum(c.wall_s for c in costs)
    files = by_file(costs)
    result = {
        "benchmark": "test_cost",
        "code_version": checkout_version(Path(__file__).resolve().parents[1]),
        "arguments": arguments,
        "cores": os.cpu_count(),
        "pytest_exit": int(code),
        "cpu_s": round(cpu, 1),
        "wall_s": round(wall, 1),
        "files": files,
        "tests": [cost.__dict__ for cost in costs],
    }
    table = markdown(costs, files, cpu, wall)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "test_cost.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "test_cost.md").write_text(table)
    print(table)
    return int(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
