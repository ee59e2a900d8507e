"""Request validation for both APIs: every rule about what a request may contain lives here (the front ends
check wire shape only: types, and fields that have no place in a service request). Every problem is an
InvalidRequest naming the field (OpenAI's field names), raised before anything touches the cache or the
backend."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import get_args

from orchestrator.config import CacheSettings, ModelSettings
from orchestrator.errors import InvalidRequest
from orchestrator.schemas import CacheControls, ChatMessage, GenerationRequest, Role

ROLES = frozenset(get_args(Role))
#: Tenants and namespaces become parts of Redis keys: no separators, glob characters or hash-tag braces.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.@-]{1,128}$")
SEED_RANGE = 2**64
#: Why tools, tool calls, message names and structured output are refused: the model never sees them (only
#: roles and contents go through its chat template), so an answer would silently ignore them.
NOT_PASSED_ON = "not supported: the model is given only each message's role and content"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _shown(value: object) -> str:
    return "NaN" if isinstance(value, float) and math.isnan(value) else repr(value)


def _check_number(field: str, value: object, low: float, high: float) -> None:
    """A finite number within [low, high]; NaN is named as such."""
    if not (_is_int(value) or isinstance(value, float)) or not math.isfinite(value) or not low <= value <= high:
        raise InvalidRequest(field, f"must be a number within [{low:g}, {high:g}], got {_shown(value)}")


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
    for index, message in enumerate(request.messages):
        _validate_message(f"messages[{index}]", message)
    if sum(len(m.content) for m in request.messages) > limits.max_prompt_chars:
        raise InvalidRequest("messages", f"longer than {limits.max_prompt_chars} characters in all")
    if not any(m.content for m in request.messages):
        raise InvalidRequest("messages", "every message is empty")


def _validate_message(field: str, message: ChatMessage) -> None:
    if message.role not in ROLES:
        raise InvalidRequest(f"{field}.role", f"{message.role!r} is not one of {', '.join(sorted(ROLES))}")
    if not isinstance(message.content, str):
        raise InvalidRequest(f"{field}.content", "must be a string")
    if message.name is not None:
        raise InvalidRequest(f"{field}.name", NOT_PASSED_ON)
    if message.tool_calls:
        raise InvalidRequest(f"{field}.tool_calls", NOT_PASSED_ON)


def _validate_params(request: GenerationRequest, limits: ModelSettings) -> None:
    params = request.params
    if not _is_int(params.max_tokens) or not 1 <= params.max_tokens <= limits.max_tokens_limit:
        raise InvalidRequest("max_tokens", f"must be an integer within 1..{limits.max_tokens_limit}, "
                                           f"got {params.max_tokens!r}")
    _check_number("temperature", params.temperature, 0.0, 2.0)
    _check_number("top_p", params.top_p, 0.0, 1.0)
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
    if params.tools:
        raise InvalidRequest("tools", NOT_PASSED_ON)
    if params.response_format not in (None, {"type": "text"}):
        raise InvalidRequest("response_format", 'not supported: only {"type": "text"}, the model\'s plain output')


def validate_controls(controls: CacheControls, cache: CacheSettings) -> None:
    if controls.namespace is not None:
        validate_name("namespace", controls.namespace)
    if controls.ttl_s is not None and (not _is_int(controls.ttl_s) or not 1 <= controls.ttl_s <= cache.max_ttl_s):
        raise InvalidRequest("ttl", f"must be an integer number of seconds within 1..{cache.max_ttl_s}, "
                                    f"got {controls.ttl_s!r}")


def validate_embedding_input(texts: Sequence[object]) -> None:
    if not texts:
        raise InvalidRequest("input", "must not be empty")
    if not all(isinstance(text, str) and text for text in texts):
        raise InvalidRequest("input", "every text must be a non-empty string")
