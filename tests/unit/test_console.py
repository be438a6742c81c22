"""Progress bars only where someone watches a terminal: in a log file (CI, spark-submit's
output, `make demo > log`) tqdm's carriage-return updates pile up into one line of kilobytes."""

from __future__ import annotations

import io
import sys

from reki_spark import console


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_draws_on_a_terminal_and_nowhere_else(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with console.progress(4, "extract", "prompt") as bar:
        bar.update(4)
    assert bar.disable and sys.stderr.getvalue() == ""
    monkeypatch.setattr(sys, "stderr", _Terminal())
    with console.progress(4, "extract", "prompt") as bar:
        bar.update(4)
    assert "extract: 100%" in sys.stderr.getvalue()
