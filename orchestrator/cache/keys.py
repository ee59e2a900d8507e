"""Cache keys: the exact-layer key of a request and the semantic layer's context scope.

Both are SHA-256 over canonical JSON (sorted keys, compact separators, NFC-normalised strings, floats as
floats) of a versioned schema, so the same request always gets the same key whatever order its JSON came in,
and any change to what can change the answer gives another key. Bump KEY_SCHEMA_VERSION when the schema
changes: old entries then simply stop matching.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from typing import Any

from orchestrator.schemas import ChatMessage, GenerationRequest, SamplingParams

KEY_SCHEMA_VERSION = 1


def canonical(value: Any) -> Any:
    """The value with every string (dict keys included) NFC-normalised, tuples as lists."""
    if isinstance(value, str):
        return unicodedata.normalize("NFC", value)
    if isinstance(value, dict):
        return {canonical(k): canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    return value


def canonical_json(value: Any) -> str:
    return json.dumps(canonical(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def digest(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def _message(message: ChatMessage) -> dict[str, Any]:
    return {"role": message.role, "content": message.content, "name": message.name,
            "tool_calls": list(message.tool_calls)}


def _params(params: SamplingParams) -> dict[str, Any]:
    # float()/int() so that 1 and 1.0 (as different JSON clients send them) give the same key.
    return {
        "max_tokens": int(params.max_tokens),
        "temperature": float(params.temperature),
        "top_p": float(params.top_p),
        "top_k": int(params.top_k),
        "seed": None if params.seed is None else int(params.seed),
        "stop": list(params.stop),
        "response_format": params.response_format,
        "tools": list(params.tools),
    }


def request_key(request: GenerationRequest) -> str:
    """The exact-layer key: everything that can change the answer."""
    return digest({
        "v": KEY_SCHEMA_VERSION,
        "tenant": request.tenant,
        "model": request.model,
        "messages": [_message(m) for m in request.messages],
        "prompt": request.prompt,
        "params": _params(request.params),
    })


def semantic_query(request: GenerationRequest) -> str | None:
    """The text the semantic layer compares: the prompt, or the last message when a user wrote it."""
    if request.prompt is not None:
        return request.prompt
    if request.messages and request.messages[-1].role == "user":
        return request.messages[-1].content
    return None


def sampling_class(params: SamplingParams) -> dict[str, Any]:
    """What a paraphrase must share with a cached request besides its context: the answer's shape and
    sampling mode. The seed and exact temperature are left out: sampled requests that reach the cache at all
    (a policy choice) are treated as one class."""
    return {
        "mode": "greedy" if params.greedy else "sampled",
        "max_tokens": int(params.max_tokens),
        "stop": list(params.stop),
        "response_format": params.response_format,
        "tools": list(params.tools),
    }


def scope_digest(request: GenerationRequest, namespace: str) -> str:
    """The semantic scope: tenant, namespace, model, the system prompt and earlier turns (every message but
    the last) and the sampling class, so paraphrases only match within the same conversation context."""
    earlier = request.messages[:-1] if request.prompt is None else ()
    return digest({
        "v": KEY_SCHEMA_VERSION,
        "tenant": request.tenant,
        "namespace": namespace,
        "model": request.model,
        "kind": "completion" if request.prompt is not None else "chat",
        "context": [_message(m) for m in earlier],
        "sampling": sampling_class(request.params),
    })
