"""Model presets for llama.cpp: names, the GGUF header reader, and the chunked Qwen preset's
integrity checks (the real chunks where the llm-qwen05 extra is installed)."""

from __future__ import annotations

import hashlib
import shutil
import struct
from pathlib import Path

import pytest

from ray_workers.backends import model_id
from ray_workers.backends.gguf import (
    CHUNKED_PRESETS,
    ChunkedGguf,
    ModelIntegrityError,
    assemble,
    gguf_header_strings,
    installed_chunks,
    resolve_gguf,
)
from reki_spark.config import LLAMA_CPP_PRESETS, QWEN05_PRESET, SMOLLM2_PRESET, ConfigError, LlmConfig, load_config

QWEN = CHUNKED_PRESETS[QWEN05_PRESET]


def _gguf(path: Path, strings: dict[str, str]) -> Path:
    """A GGUF head: magic, version 3, no tensors, the string metadata, then one uint32 value."""
    encoded = [(key.encode(), value.encode()) for key, value in strings.items()]
    with path.open("wb") as out:
        out.write(struct.pack("<4sIQQ", b"GGUF", 3, 0, len(encoded) + 1))
        for key, value in encoded:
            out.write(struct.pack("<Q", len(key)) + key + struct.pack("<I", 8) + struct.pack("<Q", len(value)) + value)
        out.write(struct.pack("<Q", 5) + b"count" + struct.pack("<II", 4, 24))
    return path


def _preset_for(path: Path, **changes) -> ChunkedGguf:
    data = path.read_bytes()
    fields = {
        "file_name": "tiny.gguf",
        "extra": "tiny",
        "distributions": (),
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "architecture": "qwen2",
        "name_pattern": r"qwen2\.5coder0\.5binstruct",
    }
    return ChunkedGguf(**{**fields, **changes})


def test_presets_are_the_configs_and_name_their_files_without_assembling():
    assert set(CHUNKED_PRESETS) | {SMOLLM2_PRESET} == set(LLAMA_CPP_PRESETS)
    assert model_id(LlmConfig(model=QWEN05_PRESET)) == "llama_cpp:qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
    assert model_id(LlmConfig(model=SMOLLM2_PRESET)) == model_id(LlmConfig())
    assert QWEN.size == 491_400_064 and len(QWEN.distributions) == 6


def test_config_refuses_unknown_models_and_qwen_per_entity():
    with pytest.raises(ConfigError, match="a preset"):
        load_config(None, ["llm.model=qwen-7b"])
    with pytest.raises(ConfigError, match=r"knowledge\.mode=collective"):
        load_config(None, [f"llm.model={QWEN05_PRESET}", "knowledge.mode=individual"])
    assert load_config(None, [f"llm.model={QWEN05_PRESET}"]).llm.model == QWEN05_PRESET
    with pytest.raises(FileNotFoundError, match="neither a preset"):
        resolve_gguf("/nowhere/model.gguf")


def test_header_reader_and_checks_on_a_small_file(tmp_path):
    good = _gguf(
        tmp_path / "good.gguf", {"general.architecture": "qwen2", "general.name": "Qwen2.5 Coder 0.5B Instruct AWQ"}
    )
    assert gguf_header_strings(good)["general.name"] == "Qwen2.5 Coder 0.5B Instruct AWQ"
    data = good.read_bytes()
    (tmp_path / "part1.bin").write_bytes(data[:20])
    (tmp_path / "part2.bin").write_bytes(data[20:])
    chunks = [tmp_path / "part1.bin", tmp_path / "part2.bin"]
    assembled = assemble(_preset_for(good), tmp_path / "cache", chunks)
    assert assembled.read_bytes() == data
    other = _gguf(tmp_path / "other.gguf", {"general.architecture": "llama", "general.name": "SmolLM2 135M"})
    with pytest.raises(ModelIntegrityError, match="does not name"):
        assemble(_preset_for(other), tmp_path / "cache2", [other])
    with pytest.raises(ModelIntegrityError, match="bytes, expected"):
        assemble(_preset_for(good, size=len(data) + 1), tmp_path / "cache3", chunks)
    assert not list((tmp_path / "cache3").iterdir())  # the refused file is not left behind


def _installed_qwen_chunks() -> list[Path]:
    try:
        return installed_chunks(QWEN)
    except FileNotFoundError as missing:
        pytest.skip(f"the llm-qwen05 extra is not installed ({missing})")


def test_the_qwen_preset_assembles_and_a_corrupted_chunk_is_refused(tmp_path):
    chunks = _installed_qwen_chunks()
    copies = [Path(shutil.copy(chunk, tmp_path / chunk.name)) for chunk in chunks]
    with copies[2].open("r+b") as part:  # one flipped byte in the middle of the third chunk
        part.seek(1_000_000)
        byte = part.read(1)
        part.seek(1_000_000)
        part.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ModelIntegrityError, match="SHA-256"):
        assemble(QWEN, tmp_path / "corrupted", copies)
    assert not list((tmp_path / "corrupted").iterdir())
    with pytest.raises(ModelIntegrityError, match="bytes, expected"):
        assemble(QWEN, tmp_path / "short", copies[:-1])
    assembled = assemble(QWEN, tmp_path / "cache")
    assert assembled.stat().st_size == QWEN.size
    assert "Qwen2.5 Coder 0.5B Instruct" in gguf_header_strings(assembled)["general.name"]
