"""Answer validation: an LLM answer is accepted only if it has substance. Rejected answers are
retried with a new seed and, after the last attempt, stored as `failed` with the reason."""

from __future__ import annotations

import re

_WORD = re.compile(r"\w+", re.UNICODE)
# Repetition is judged only on answers long enough for the distinct-word share to mean something.
MIN_WORDS_FOR_REPETITION = 20


def answer_problem(text: str, min_chars: int, min_distinct_word_ratio: float) -> str | None:
    """None for an acceptable answer, else why it is not."""
    stripped = text.strip()
    if not stripped:
        return "empty answer"
    if len(stripped) < min_chars:
        return f"too short: {len(stripped)} characters"
    words = _WORD.findall(stripped.lower())
    if len(words) >= MIN_WORDS_FOR_REPETITION:
        distinct = len(set(words)) / len(words)
        if distinct < min_distinct_word_ratio:
            return f"degenerate repetition: {distinct:.0%} distinct words"
    return None
