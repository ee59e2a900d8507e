"""Request validation shared by both APIs: every problem is an InvalidRequest naming the field (OpenAI's
field names), raised before anything touches the cache or the backend."""

from __future__ import annotations

import math
import re
from typing import get_args

from orchestrator.config import CacheSettings, ModelSettings
from orchestrator.errors import InvalidRequest
from orchestrator.schemas import CacheControls, GenerationRequest, Role

ROLES = frozenset(get_args(Role))
#: Tenants and namespaces become parts of Redis keys: no separators, glob characters or hash-tag braces.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.@-]{1,128}$")
RESPONSE_FORMATS = frozenset({"text", "json_object", "json_schema"})
SEED_RANGE = 2**64


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def validate_name(field: str, value: object) -> None:
    """A tenant or namespace: it becomes part of Redis keys."""
    if not isinstance(value, str) or not NAME_PATTERN.match(value):
        raise InvalidRequest(field, "must be 1-128 characters of letters, digits, '_', '.', '@' or '-'")


def validate_request(request: GenerationRequest, limits: ModelSettings) -> None:
    validate_name("tenant", request.tenant)
    if request.model != limits.name:
        raise InvalidRequest("model", f"unknown model {request.model!r}; this server serves {limits.name!r}")
    _validate_input(request, limits)
    _validate_params(request, limits)


def _validate_input(request: GenerationRequest, limits: ModelSettings) -> None:
    if request.prompt is not None:
        if request.messages:
            raise InvalidRequest("prompt", "give either prompt or messages, not both")
        if not isinstance(request.prompt, str) or not request.prompt:
            raise InvalidRequest("prompt", "must be a non-empty string")
        if len(request.prompt) > limits.max_prompt_chars:
            raise InvalidRequest("prompt", f"longer than {limits.max_prompt_chars} characters")
        return
    if not request.messages:
        raise InvalidRequest("messages", "must not be empty")
    if len(request.messages) > limits.max_messages:
        raise InvalidRequest("messages", f"more than {limits.max_messages} messages")
    total = 0
    for index, message in enumerate(request.messages):
        if message.role not in ROLES:
            raise InvalidRequest(f"messages[{index}].role",
                                 f"{message.role!r} is not one of {', '.join(sorted(ROLES))}")
        if not isinstance(message.content, str):
            raise InvalidRequest(f"messages[{index}].content", "must be a string")
        if message.name is not None and not isinstance(message.name, str):
            raise InvalidRequest(f"messages[{index}].name", "must be a string")
        total += len(message.content)
    if total > limits.max_prompt_chars:
        raise InvalidRequest("messages", f"longer than {limits.max_prompt_chars} characters in all")
    if not any(m.content for m in request.messages):
        raise InvalidRequest("messages", "every message is empty")


def _validate_params(request: GenerationRequest, limits: ModelSettings) -> None:
    params = request.params
    if not _is_int(params.max_tokens) or not 1 <= params.max_tokens <= limits.max_tokens_limit:
        raise InvalidRequest("max_tokens", f"must be an integer within 1..{limits.max_tokens_limit}, "
                                           f"got {params.max_tokens!r}")
    if not _is_number(params.temperature) or not 0.0 <= params.temperature <= 2.0:
        raise InvalidRequest("temperature", f"must be a number within [0, 2], got {params.temperature!r}")
    if not _is_number(params.top_p) or not 0.0 <= params.top_p <= 1.0:
        raise InvalidRequest("top_p", f"must be a number within [0, 1], got {params.top_p!r}")
    if not _is_int(params.top_k) or params.top_k < 0:
        raise InvalidRequest("top_k", f"must be an integer >= 0, got {params.top_k!r}")
    if params.seed is not None and (not _is_int(params.seed) or not 0 <= params.seed < SEED_RANGE):
        raise InvalidRequest("seed", f"must be an integer within 0..2^64-1, got {params.seed!r}")
    if len(params.stop) > limits.max_stop_words:
        raise InvalidRequest("stop", f"at most {limits.max_stop_words} stop sequences, got {len(params.stop)}")
    for word in params.stop:
        if not isinstance(word, str) or not word or len(word) > limits.max_stop_word_chars:
            raise InvalidRequest("stop", f"each stop sequence must be a non-empty string of at most "
                                         f"{limits.max_stop_word_chars} characters, got {word!r}")
    fmt = params.response_format
    if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") not in RESPONSE_FORMATS):
        raise InvalidRequest("response_format", f"type must be one of {', '.join(sorted(RESPONSE_FORMATS))}")
    for tool in params.tools:
        if not isinstance(tool, dict):
            raise InvalidRequest("tools", "each tool must be an object")


def validate_controls(controls: CacheControls, cache: CacheSettings) -> None:
    if controls.namespace is not None:
        validate_name("namespace", controls.namespace)
    if controls.ttl_s is not None and (not _is_int(controls.ttl_s) or not 1 <= controls.ttl_s <= cache.max_ttl_s):
        raise InvalidRequest("ttl", f"must be an integer number of seconds within 1..{cache.max_ttl_s}, "
                                    f"got {controls.ttl_s!r}")
