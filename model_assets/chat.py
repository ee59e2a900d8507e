"""Chat messages → the prompt text (`text_input`) the LLM model on Triton expects (the BLS or the ensemble),
with the model's own chat template.

The template is found in the tokenizer folder as transformers finds it (tokenization_utils_base,
`PreTrainedTokenizerBase.from_pretrained`): `chat_template.jinja` first (it overrides the config), else the
`chat_template` of `tokenizer_config.json` (a string, or a list of named templates of which "default" is used),
else a processor's `chat_template.json`. The CPU profile's folder (exported from the GGUF at set-up) has the
.jinja file; Hugging Face instruct checkpoints (Qwen2.5-Instruct, Llama 3) keep it in tokenizer_config.json.
It is rendered the way transformers renders it (sandboxed Jinja, `add_generation_prompt`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

from jinja2.sandbox import ImmutableSandboxedEnvironment

from model_assets import llm

TEMPLATE_FILE = "chat_template.jinja"
TOKENIZER_CONFIG = "tokenizer_config.json"
PROCESSOR_TEMPLATE = "chat_template.json"


def _from_json(path: Path) -> str | None:
    if not path.is_file():
        return None
    template = json.loads(path.read_text()).get("chat_template")
    if isinstance(template, list):  # named templates: [{"name": "default", "template": "..."}, ...]
        template = {entry.get("name"): entry.get("template") for entry in template}.get("default")
    return template if isinstance(template, str) and template else None


def template_source(folder: Path) -> str:
    """The folder's chat template, looked up in transformers' order; a ValueError naming the folder if none."""
    if (folder / TEMPLATE_FILE).is_file():
        return (folder / TEMPLATE_FILE).read_text()
    for name in (TOKENIZER_CONFIG, PROCESSOR_TEMPLATE):
        if (source := _from_json(folder / name)) is not None:
            return source
    raise ValueError(f"no chat template in {folder} (looked for {TEMPLATE_FILE}, 'chat_template' in "
                     f"{TOKENIZER_CONFIG} and in {PROCESSOR_TEMPLATE})")


@lru_cache(maxsize=4)
def _template(tokenizer_dir: str):
    source = template_source(llm.tokenizer_dir(tokenizer_dir))
    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return environment.from_string(source)


def format_chat(messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True,
                tokenizer_dir: str = "") -> str:
    """Render [{"role": ..., "content": ...}, ...]; send the result as `text_input`."""
    for index, message in enumerate(messages):
        if not isinstance(message.get("role"), str) or not isinstance(message.get("content"), str):
            raise ValueError(f"messages[{index}]: needs string 'role' and 'content'")
    return _template(tokenizer_dir).render(messages=[dict(m) for m in messages],
                                           add_generation_prompt=add_generation_prompt)
