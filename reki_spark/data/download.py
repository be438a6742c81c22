"""Fetching a public dataset archive into `dataset.path` (`reki download`). Works with http(s)://
and file:// URLs; zip archives are unpacked with their single top folder flattened away, other
files (e.g. Amazon's .json.gz) are stored as they are."""

from __future__ import annotations

import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

# The public homes of the datasets the loaders read; users may point download_url elsewhere.
PUBLIC_URLS = {
    "movielens-100k": "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
    "movielens-1m": "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
    "amazon-2014": "https://snap.stanford.edu/data/amazon/productGraph/categoryFiles/",
    "amazon-2018": "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_v2/",
}


def download(url: str, destination: str | Path) -> list[Path]:
    """Fetch `url` into folder `destination`; returns the files written."""
    target = Path(destination)
    target.mkdir(parents=True, exist_ok=True)
    name = PurePosixPath(urlparse(url).path).name or "download"
    with tempfile.TemporaryDirectory() as scratch:
        fetched = Path(scratch, name)
        with urllib.request.urlopen(url, timeout=600) as response, fetched.open("wb") as out:
            shutil.copyfileobj(response, out)
        if zipfile.is_zipfile(fetched):
            return _unzip_flat(fetched, target)
        final = target / name
        shutil.move(str(fetched), final)
        return [final]


def amazon_urls(base_url: str, release: str, category: str) -> list[str]:
    """The review and metadata file URLs of one Amazon category."""
    base = base_url.rstrip("/")
    if release == "amazon-2014":
        return [f"{base}/reviews_{category}_5.json.gz", f"{base}/meta_{category}.json.gz"]
    return [f"{base}/categoryFilesSmall/{category}_5.json.gz", f"{base}/metaFiles2/meta_{category}.json.gz"]


def _unzip_flat(archive: Path, target: Path) -> list[Path]:
    written = []
    with zipfile.ZipFile(archive) as bundle:
        members = [m for m in bundle.infolist() if not m.is_dir()]
        tops = {PurePosixPath(m.filename).parts[0] for m in members}
        strip = 1 if len(tops) == 1 and all(len(PurePosixPath(m.filename).parts) > 1 for m in members) else 0
        for member in members:
            parts = PurePosixPath(member.filename).parts[strip:]
            if not parts or ".." in parts:
                continue
            out = target.joinpath(*parts)
            out.parent.mkdir(parents=True, exist_ok=True)
            with bundle.open(member) as src, out.open("wb") as dst:
                shutil.copyfileobj(src, dst)
            written.append(out)
    return written
