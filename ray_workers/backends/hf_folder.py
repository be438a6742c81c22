"""A Hugging Face model folder made from a GGUF file, for engines that load those (vLLM): the
embedded SmolLM2 ships only as GGUF, and nothing may download weights at run time. Run in the
LLM-worker environment at setup: `python -m ray_workers.backends.hf_folder --out DIR [--model M]`.
The GGUF blocks are dequantized to bf16 (transformers refuses to save them quantized)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ray_workers.backends.gguf import resolve_gguf


def gguf_to_hf_folder(gguf: str, out: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    source = Path(gguf)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(
        source.parent,
        gguf_file=source.name,
        dtype=torch.bfloat16,
        quantization_config=GgufConfig(dequantize=True),
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the model folder to write")
    parser.add_argument("--model", default=None, help="a llama.cpp preset or .gguf path (default: smollm2-135m)")
    args = parser.parse_args(argv)
    if (args.out / "config.json").exists():
        print(f"{args.out}: already made")
        return
    gguf = resolve_gguf(args.model)
    print(f"{gguf_to_hf_folder(gguf, args.out)}: made from {gguf}")


if __name__ == "__main__":
    main()
