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


def test_a_known_notice_on_file_descriptor_2_is_held_back_and_the_rest_kept(tmp_path):
    """Ray's C++ layer writes to the process's stderr descriptor, not to sys.stderr: the filter
    works on descriptor 2, as a child process writing there shows."""
    import subprocess

    script = (
        "import subprocess, sys\n"
        "from reki_spark import console\n"
        "with console.without_stderr_line('Set ray log level'):\n"
        "    subprocess.run(['sh', '-c', 'echo Set ray log level to 3 >&2; echo kept >&2'])\n"
        "print('after', file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env={"REKI_VERBOSE": "0"})
    assert done.stderr.splitlines() == ["kept", "after"]
    loud = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env={"REKI_VERBOSE": "1"})
    assert "Set ray log level to 3" in loud.stderr
