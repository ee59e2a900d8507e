"""Bad requests fail with InvalidRequest naming the field; good ones pass."""

from __future__ import annotations

import dataclasses
import functools
import re

import pytest

from orchestrator.config import CacheSettings, ModelSettings
from orchestrator.errors import InvalidRequest
from orchestrator.schemas import CacheControls, ChatMessage, GenerationRequest
from orchestrator.validation import validate_controls, validate_embedding_input, validate_request
from tests import chats

LIMITS = ModelSettings(name="m", max_tokens_limit=300, max_stop_words=2, max_messages=3, max_prompt_chars=50)


chat = functools.partial(chats.chat, "Hi", model="m")


def test_valid_chat_and_prompt_pass() -> None:
    validate_request(chat(max_tokens=300, temperature=2, top_p=0.5, top_k=5, seed=3, stop=("a", "b")), LIMITS)
    validate_request(GenerationRequest(tenant="t", model="m", prompt="Once"), LIMITS)
    validate_request(chat(response_format={"type": "text"}), LIMITS)  # what the model produces anyway


@pytest.mark.parametrize(("request_", "field"), [
    (dataclasses.replace(chat(), messages=()), "messages"),
    (dataclasses.replace(chat(), messages=(ChatMessage("user", "x"),) * 4), "messages"),
    (dataclasses.replace(chat(), messages=(ChatMessage("user", "x" * 51),)), "messages"),
    (dataclasses.replace(chat(), messages=(ChatMessage("user", ""),)), "messages"),
    (dataclasses.replace(chat(), messages=(ChatMessage("wizard", "x"),)), "messages[0].role"),  # type: ignore[arg-type]
    (dataclasses.replace(chat(), messages=(ChatMessage("user", "x"), ChatMessage("user", 5))),  # type: ignore[arg-type]
     "messages[1].content"),
    (dataclasses.replace(chat(), prompt="x"), "prompt"),
    (GenerationRequest(tenant="t", model="m", prompt=""), "prompt"),
    (dataclasses.replace(chat(), model="gpt-4"), "model"),
    (dataclasses.replace(chat(), tenant=""), "tenant"),
    (dataclasses.replace(chat(), tenant="a:b"), "tenant"),
    (chat(max_tokens=0), "max_tokens"),
    (chat(max_tokens=-5), "max_tokens"),
    (chat(max_tokens=301), "max_tokens"),
    (chat(max_tokens=10**12), "max_tokens"),
    (chat(max_tokens=True), "max_tokens"),
    (chat(temperature=-0.1), "temperature"),
    (chat(temperature=float("nan")), "temperature"),
    (chat(top_p=1.5), "top_p"),
    (chat(top_k=-1), "top_k"),
    (chat(seed=-1), "seed"),
    (chat(stop=("a", "b", "c")), "stop"),
    (chat(stop=("",)), "stop"),
    (chat(response_format={"type": "xml"}), "response_format"),
    (chat(response_format={"type": "json_object"}), "response_format"),
    (chat(tools=({"type": "function", "function": {"name": "f"}},)), "tools"),
    (dataclasses.replace(chat(), messages=(ChatMessage("user", "x", name="ann"),)), "messages[0].name"),
    (dataclasses.replace(chat(), messages=(ChatMessage("user", "x"), ChatMessage("assistant", "", tool_calls=(
        {"id": "1", "type": "function"},)))), "messages[1].tool_calls"),
])
def test_invalid_requests_name_the_field(request_: GenerationRequest, field: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        validate_request(request_, LIMITS)
    assert raised.value.field == field
    assert raised.value.http_status == 400 and raised.value.grpc_code == "INVALID_ARGUMENT"


@pytest.mark.parametrize(("controls", "field"), [
    (CacheControls(namespace="a:b"), "namespace"),
    (CacheControls(namespace="*"), "namespace"),
    (CacheControls(ttl_s=0), "ttl"),
    (CacheControls(ttl_s=10**9), "ttl"),
])
def test_invalid_controls_name_the_field(controls: CacheControls, field: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        validate_controls(controls, CacheSettings())
    assert raised.value.field == field


def test_valid_controls_pass() -> None:
    validate_controls(CacheControls(no_cache=True, no_store=True, ttl_s=60, namespace="docs-v2"), CacheSettings())


def test_what_the_model_is_never_given_is_refused_by_name() -> None:
    for request_, field in ((chat(tools=({"type": "function"},)), "tools"),
                            (chat(response_format={"type": "json_object"}), "response_format"),
                            (dataclasses.replace(chat(), messages=(ChatMessage("user", "x", name="ann"),)),
                             "messages[0].name")):
        with pytest.raises(InvalidRequest, match=f"^{re.escape(field)}: not supported"):
            validate_request(request_, LIMITS)


@pytest.mark.parametrize("field", ["temperature", "top_p"])
def test_a_nan_is_called_nan(field: str) -> None:
    with pytest.raises(InvalidRequest, match=f"^{field}: must be a number within .*, got NaN$"):
        validate_request(chat(**{field: float("nan")}), LIMITS)


def test_empty_embedding_input_is_refused() -> None:
    for texts in ([], [""], ["a", 5]):
        with pytest.raises(InvalidRequest) as raised:
            validate_embedding_input(texts)
        assert raised.value.field == "input"
    validate_embedding_input(["a", "b"])
