"""Title cleaning as in the REKI release: HTML unescape, "Matrix, The" -> "The Matrix", a trailing
"(1999)" year removed, whitespace collapsed, cut to 150 characters."""

from __future__ import annotations

import html
import re

import pandas as pd
from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql import types as T

MAX_TITLE_LENGTH = 150
_YEAR_SUFFIX = re.compile(r"\s*\((\d{4})\)\s*$")
_TRAILING_ARTICLE = re.compile(
    r"^(?P<body>.+?), (?P<article>The|A|An|Les|La|Le|L'|Il|Das|Der|Die|El|Los|Las|Det|Den)"
    r"(?P<rest>\s*\(.*\))?$"
)
_SPACES = re.compile(r"\s+")


def clean_title(title: str | None) -> str | None:
    if title is None:
        return None
    text = _SPACES.sub(" ", html.unescape(html.unescape(title))).strip()
    text = _YEAR_SUFFIX.sub("", text)
    match = _TRAILING_ARTICLE.match(text)
    if match:
        article = match["article"]
        joiner = "" if article.endswith("'") else " "
        text = f"{article}{joiner}{match['body']}{match['rest'] or ''}"
    return text[:MAX_TITLE_LENGTH].strip() or None


@F.pandas_udf(T.StringType())
def clean_title_udf(titles: pd.Series) -> pd.Series:
    return titles.map(clean_title, na_action="ignore")


def year_in_title(title: Column) -> Column:
    """The (YYYY) at the end of a MovieLens title, as an int column (null when absent)."""
    return F.regexp_extract(title, r"\((\d{4})\)\s*$", 1)
