"""The chat template is found where transformers finds it, in its order of precedence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model_assets.chat import template_source


def folder(tmp_path: Path, **files: object) -> Path:
    for name, content in files.items():
        path = tmp_path / name.replace("__", ".")
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    return tmp_path


def test_a_jinja_file_overrides_the_tokenizer_config(tmp_path: Path) -> None:
    found = folder(tmp_path, chat_template__jinja="from-file",
                   tokenizer_config__json={"chat_template": "from-config"})
    assert template_source(found) == "from-file"


def test_a_checkpoint_keeps_it_in_tokenizer_config(tmp_path: Path) -> None:
    assert template_source(folder(tmp_path, tokenizer_config__json={"chat_template": "qwen"})) == "qwen"


def test_named_templates_use_the_default_one(tmp_path: Path) -> None:
    named = [{"name": "tool_use", "template": "tools"}, {"name": "default", "template": "plain"}]
    assert template_source(folder(tmp_path, tokenizer_config__json={"chat_template": named})) == "plain"


def test_a_processor_template_is_the_last_resort(tmp_path: Path) -> None:
    found = folder(tmp_path, tokenizer_config__json={"eos_token": "</s>"},
                   chat_template__json={"chat_template": "processor"})
    assert template_source(found) == "processor"


def test_no_template_names_the_folder_and_the_places_looked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=rf"no chat template in {tmp_path} .*chat_template.jinja"):
        template_source(folder(tmp_path, tokenizer_config__json={}))
