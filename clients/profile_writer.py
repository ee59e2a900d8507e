"""`sweep --write`: put the chosen batcher configuration into a deployment profile, touching only its keys.

The profile (model_repository/profiles/NAME.toml) stays the one source of truth: the keys are edited in
place with tomlkit, so comments and layout survive, and the result is rendered once before it replaces the
file, so a profile that would no longer render is never written."""

from __future__ import annotations

import tempfile
from pathlib import Path

import tomlkit

from clients.sweep import BatcherConfig
from stack.render import profile_path, render_profile

#: Profile key (template placeholder) for each batcher field the sweep varies.
PROFILE_KEYS = {
    "max_batch_size": "max_batch_size",
    "preferred_batch_size": "preferred_batch_size",
    "max_queue_delay_microseconds": "max_queue_delay_microseconds",
    "instance_count": "instance_count",
}


def _model_table(profile: str, model: str) -> tuple[Path, tomlkit.TOMLDocument, dict]:
    """The profile, parsed, and its [models.MODEL] table; an error names what is missing."""
    path = profile_path(profile)
    if not path.exists():
        raise ValueError(f"{path}: no such profile")
    document = tomlkit.parse(path.read_text())
    table = document.get("models", {}).get(model)
    if table is None:
        raise ValueError(f"{path}: no [models.{model}] table")
    for key in PROFILE_KEYS.values():
        if key not in table:
            raise ValueError(f"{path}: [models.{model}] has no key {key!r}; its template must expose ${{{key}}}")
    return path, document, table


def check_writable(profile: str, model: str) -> None:
    """Fail before a sweep, not after it, when its result could not be written."""
    _model_table(profile, model)


def write_batcher(profile: str, model: str, config: BatcherConfig) -> Path:
    path, document, table = _model_table(profile, model)
    for field, key in PROFILE_KEYS.items():
        value = getattr(config, field)
        table[key] = list(value) if isinstance(value, tuple) else value
    text = tomlkit.dumps(document)
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as draft:
        draft.write(text)
    draft_path = Path(draft.name)
    try:
        render_profile(draft_path)
    finally:
        draft_path.unlink()
    path.write_text(text)
    return path
