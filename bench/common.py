"""Shared benchmark plumbing: repeated side-by-side measurements reported as ratios (median and
min-max over repetitions), one JSON per benchmark, a markdown table of all, and a PNG each."""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Measure:
    name: str
    target: str  # e.g. ">= 0.9"
    ratios: list[float]
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.ratios)

    @property
    def met(self) -> bool:
        operator, bound = self.target.split()
        return self.median >= float(bound) if operator == ">=" else self.median <= float(bound)

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "median": self.median,
            "min": min(self.ratios),
            "max": max(self.ratios),
            "repetitions": len(self.ratios),
            "met": self.met,
        }


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def save(benchmark: str, measures: list[Measure], notes: str = "") -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{benchmark}.json"
    path.write_text(
        json.dumps({"benchmark": benchmark, "notes": notes, "measures": [m.as_dict() for m in measures]}, indent=2)
        + "\n"
    )
    _chart(benchmark, measures)
    write_table()
    return path


def _chart(benchmark: str, measures: list[Measure]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 3.5))
    names = [m.name for m in measures]
    medians = [m.median for m in measures]
    errors = [[m.median - min(m.ratios) for m in measures], [max(m.ratios) - m.median for m in measures]]
    colors = ["tab:green" if m.met else "tab:red" for m in measures]
    axis.barh(names, medians, xerr=errors, color=colors, capsize=3)
    for i, m in enumerate(measures):
        axis.axvline(
            float(m.target.split()[1]),
            ymin=i / len(measures),
            ymax=(i + 1) / len(measures),
            color="black",
            linestyle="--",
        )
    axis.set_xlabel("ratio (median, min-max); dashed: target")
    axis.set_title(benchmark)
    figure.tight_layout()
    figure.savefig(RESULTS / f"{benchmark}.png", dpi=100)
    plt.close(figure)


def write_table() -> Path:
    lines = [
        "# Benchmark results",
        "",
        "Each ratio compares two runs made side by side in one process tree, repeated; median "
        "(min-max). Machine: 2 cores, 24 GiB, CPU only.",
        "",
        "| benchmark | measure | ratio | target | met | repetitions |",
        "|---|---|---|---|---|---|",
    ]
    notes = []
    for path in sorted(RESULTS.glob("*.json")):
        result = json.loads(path.read_text())
        if "measures" not in result:  # a profile or per-run detail file, not a ratio benchmark
            continue
        for m in result["measures"]:
            bound = float(m["target"].split()[1])
            met = "yes" if m["met"] else f"no, missed by {abs(m['median'] - bound) / bound:.1%}"
            lines.append(
                f"| {result['benchmark']} | {m['name']} | {m['median']:.3f} ({m['min']:.3f}-{m['max']:.3f})"
                f" | {m['target']} | {met} | {m['repetitions']} |"
            )
        if result.get("notes"):
            notes.append(f"- **{result['benchmark']}**: {result['notes']}")
    table = RESULTS / "README.md"
    analysis = "Why each missed target was missed, and what would close it: [ANALYSIS.md](ANALYSIS.md)."
    table.write_text("\n".join([*lines, "", analysis, "", "## Notes", "", *notes]) + "\n")
    return table


class PeakMemory:
    """Polls the resident memory of this process tree (driver, JVM, Python workers)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for process in [me, *me.children(recursive=True)]:
                try:
                    total += process.memory_info().rss
                except psutil.Error:
                    continue
            self.peak = max(self.peak, total)
            time.sleep(0.5)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
