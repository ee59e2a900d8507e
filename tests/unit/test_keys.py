"""Exact keys change with every output-affecting field and ignore JSON key order; scopes separate contexts."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from orchestrator.cache.keys import canonical_json, request_key, scope_digest, semantic_query
from orchestrator.schemas import ChatMessage, GenerationRequest, SamplingParams

TOOL = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object", "properties": {}}}}


def base() -> GenerationRequest:
    return GenerationRequest(
        tenant="acme",
        model="m",
        messages=(
            ChatMessage("system", "Be brief."),
            ChatMessage("user", "What is the capital of France?", name="ann",
                        tool_calls=({"id": "1", "function": {"name": "f", "arguments": "{}"}},)),
        ),
        params=SamplingParams(max_tokens=64, temperature=0.5, top_p=0.9, top_k=40, seed=7, stop=("\n",),
                              response_format={"type": "json_object"}, tools=(TOOL,)),
    )


def with_message(request: GenerationRequest, **changes) -> GenerationRequest:
    last = dataclasses.replace(request.messages[-1], **changes)
    return dataclasses.replace(request, messages=request.messages[:-1] + (last,))


def with_params(request: GenerationRequest, **changes) -> GenerationRequest:
    return dataclasses.replace(request, params=dataclasses.replace(request.params, **changes))


REQUEST_MUTATIONS = {
    "tenant": lambda r: dataclasses.replace(r, tenant="other"),
    "model": lambda r: dataclasses.replace(r, model="m2"),
    "messages": lambda r: dataclasses.replace(r, messages=r.messages[1:]),
    "prompt": lambda r: dataclasses.replace(r, prompt="What is the capital of France?"),
    "params": lambda r: with_params(r, max_tokens=65),
}
MESSAGE_MUTATIONS = {
    "role": lambda r: with_message(r, role="assistant"),
    "content": lambda r: with_message(r, content="What is the capital of Germany?"),
    "name": lambda r: with_message(r, name="bob"),
    "tool_calls": lambda r: with_message(r, tool_calls=()),
}
PARAM_MUTATIONS = {
    "max_tokens": lambda r: with_params(r, max_tokens=63),
    "temperature": lambda r: with_params(r, temperature=0.6),
    "top_p": lambda r: with_params(r, top_p=0.95),
    "top_k": lambda r: with_params(r, top_k=41),
    "seed": lambda r: with_params(r, seed=None),
    "stop": lambda r: with_params(r, stop=("\n", "END")),
    "response_format": lambda r: with_params(r, response_format=None),
    "tools": lambda r: with_params(r, tools=()),
}


def test_every_field_has_a_mutation() -> None:
    """A new field in the request types must be added to the key (and to this test)."""
    assert set(REQUEST_MUTATIONS) == {f.name for f in dataclasses.fields(GenerationRequest)}
    assert set(MESSAGE_MUTATIONS) == {f.name for f in dataclasses.fields(ChatMessage)}
    assert set(PARAM_MUTATIONS) == {f.name for f in dataclasses.fields(SamplingParams)}


@pytest.mark.parametrize("mutation", [*REQUEST_MUTATIONS.items(), *MESSAGE_MUTATIONS.items(),
                                      *PARAM_MUTATIONS.items()], ids=lambda item: item[0])
def test_mutating_a_field_changes_the_key(mutation) -> None:
    _, mutate = mutation
    original = base()
    assert request_key(mutate(original)) != request_key(original)


def test_key_is_stable_and_hex_sha256() -> None:
    key = request_key(base())
    assert key == request_key(base())
    assert re.fullmatch(r"[0-9a-f]{64}", key)


def test_json_key_order_does_not_matter() -> None:
    reordered_tool = json.loads(json.dumps({"function": {"parameters": {"properties": {}, "type": "object"},
                                                         "name": "weather"}, "type": "function"}))
    assert list(reordered_tool) != list(TOOL)
    changed = with_params(base(), tools=(reordered_tool,), response_format={"type": "json_object"})
    changed = with_message(changed, tool_calls=({"function": {"arguments": "{}", "name": "f"}, "id": "1"},))
    assert request_key(changed) == request_key(base())


def test_unicode_is_nfc_normalised() -> None:
    composed = with_message(base(), content="Caf\u00e9?")
    decomposed = with_message(base(), content="Cafe\u0301?")
    assert request_key(composed) == request_key(decomposed)


def test_numbers_compare_by_value_not_json_spelling() -> None:
    assert request_key(with_params(base(), temperature=1)) == request_key(with_params(base(), temperature=1.0))


def test_canonical_json_is_compact_and_sorted() -> None:
    assert canonical_json({"b": 1, "a": [1, {"d": "x", "c": None}]}) == '{"a":[1,{"c":null,"d":"x"}],"b":1}'


def test_scope_separates_system_prompts_turns_tenants_namespaces_and_sampling() -> None:
    request = base()
    scope = scope_digest(request, "default")
    other_system = dataclasses.replace(request, messages=(ChatMessage("system", "Be verbose."),)
                                       + request.messages[1:])
    more_turns = dataclasses.replace(request, messages=(request.messages[0], ChatMessage("user", "Hi"),
                                                        ChatMessage("assistant", "Hello!"), request.messages[1]))
    assert scope_digest(other_system, "default") != scope
    assert scope_digest(more_turns, "default") != scope
    assert scope_digest(dataclasses.replace(request, tenant="other"), "default") != scope
    assert scope_digest(dataclasses.replace(request, model="m2"), "default") != scope
    assert scope_digest(request, "ns2") != scope
    assert scope_digest(with_params(request, temperature=0.0), "default") != scope
    assert scope_digest(with_params(request, max_tokens=10), "default") != scope


def test_scope_ignores_the_query_itself_and_the_exact_temperature() -> None:
    request = base()
    paraphrase = with_message(request, content="Which city is France's capital?")
    assert scope_digest(paraphrase, "default") == scope_digest(request, "default")
    assert scope_digest(with_params(request, temperature=0.9), "default") == scope_digest(request, "default")


def test_semantic_query_is_the_last_user_message_or_the_prompt() -> None:
    request = base()
    assert semantic_query(request) == "What is the capital of France?"
    assert semantic_query(dataclasses.replace(request, messages=request.messages[:1])) is None
    assert semantic_query(GenerationRequest(tenant="t", model="m", prompt="Once upon")) == "Once upon"
