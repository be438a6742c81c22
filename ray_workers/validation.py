"""Answer validation: an LLM answer is accepted only if it has substance. Rejected answers are
retried with a new seed and, after the last attempt, stored as `failed` with the reason. A
reason starts with its kind ("too short", "repeated line", ...), the part before any colon, which
the ledger counts per kind."""

from __future__ import annotations

import re
from collections import Counter

from reki_spark.config import LlmConfig

_WORD = re.compile(r"\w+", re.UNICODE)
# List markers ("1.", "2)", "-", "*") are not content: numbered copies of a line are copies.
_LIST_MARKER = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s*")
# Repetition is judged only on answers long enough for word shares to mean something.
MIN_WORDS_FOR_REPETITION = 20
# Lines shorter than this many words (headings, "Genre:") may legitimately repeat.
MIN_WORDS_PER_REPEATED_LINE = 3
PHRASE = 3


def answer_problem(text: str, settings: LlmConfig) -> str | None:
    """None for an acceptable answer, else why it is not."""
    stripped = text.strip()
    if not stripped:
        return "empty answer"
    if len(stripped) < settings.min_chars:
        return f"too short: {len(stripped)} characters"
    return _repeated_line(stripped, settings.max_line_repeats) or _repeated_words(stripped, settings)


def reason_kind(reason: str) -> str:
    return reason.split(":", 1)[0]


def _repeated_line(text: str, max_repeats: int) -> str | None:
    lines = [_LIST_MARKER.sub("", line).strip().lower() for line in text.splitlines()]
    counted = Counter(line for line in lines if len(_WORD.findall(line)) >= MIN_WORDS_PER_REPEATED_LINE)
    if not counted:
        return None
    line, times = counted.most_common(1)[0]
    return f"repeated line: {times} times {line[:60]!r}" if times > max_repeats else None


def _repeated_words(text: str, settings: LlmConfig) -> str | None:
    words = _WORD.findall(text.lower())
    if len(words) < MIN_WORDS_FOR_REPETITION:
        return None
    distinct = len(set(words)) / len(words)
    if distinct < settings.min_distinct_word_ratio:
        return f"degenerate repetition: {distinct:.0%} distinct words"
    phrases = Counter(tuple(words[i : i + PHRASE]) for i in range(len(words) - PHRASE + 1))
    phrase, times = phrases.most_common(1)[0]
    share = times * PHRASE / len(words)
    if times > 1 and share > settings.max_phrase_share:
        return f"repeated phrase: {' '.join(phrase)!r} covers {share:.0%} of the words"
    return None
