"""Chat messages → the prompt text the ensemble expects, with the model's own chat template.

The template is the one exported from the GGUF at set-up (`chat_template.jinja`), rendered the way
transformers renders it (sandboxed Jinja, `add_generation_prompt`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache

from jinja2.sandbox import ImmutableSandboxedEnvironment

from cpu_engine.tokenizer import resolve_dir

TEMPLATE_FILE = "chat_template.jinja"


@lru_cache(maxsize=4)
def _template(tokenizer_dir: str):
    source = (resolve_dir(tokenizer_dir) / TEMPLATE_FILE).read_text()
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
