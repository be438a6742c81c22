"""Where the tests find the repository, their fixtures and the shared MovieLens-100k copy."""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
SHARED_ML100K = Path(os.environ.get("REKI_ML100K", REPO.parent / "shared" / "data" / "movielens_100k"))
