"""Set-up of the generative model's tokenizer: exported once from the GGUF (transformers' GGUF reader) to
model_assets.llm.TOKENIZER_DIR, so no tokenizer blob is committed; the Python models and the orchestrator read
the exported `tokenizer.json` and chat template from there (model_assets)."""

from __future__ import annotations

from pathlib import Path

from model_assets.llm import TOKENIZER_DIR, gguf_path


def export_tokenizer() -> Path:
    if (TOKENIZER_DIR / "tokenizer.json").exists():
        return TOKENIZER_DIR
    from transformers import AutoTokenizer

    source = gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    staging = TOKENIZER_DIR.with_suffix(".tmp")
    tokenizer.save_pretrained(str(staging))
    staging.rename(TOKENIZER_DIR)
    return TOKENIZER_DIR
