"""A one-question chat as the tests send it, in each of its three forms: the service's GenerationRequest, the
gRPC GenerateRequest and the OpenAI request body. Each takes the question and the fields to set or change."""

from __future__ import annotations

from typing import Any

from orchestrator.api.proto.orchestrator.v1 import orchestrator_pb2 as pb
from orchestrator.config import ModelSettings
from orchestrator.schemas import ChatMessage, GenerationRequest, SamplingParams

#: The served model's name (the default setting), as clients send it.
MODEL = ModelSettings().name


def chat(text: str = "What is the capital of France?", system: str | None = None, tenant: str = "acme",
         model: str = MODEL, **params: Any) -> GenerationRequest:
    """The service's request: an optional system prompt, the question; `params` are SamplingParams fields."""
    messages = ((ChatMessage("system", system),) if system is not None else ()) + (ChatMessage("user", text),)
    return GenerationRequest(tenant=tenant, model=model, messages=messages, params=SamplingParams(**params))


def grpc_chat(text: str = "hello there", **fields: Any) -> pb.GenerateRequest:
    """The gRPC request; `fields` are GenerateRequest fields (params, cache, model)."""
    return pb.GenerateRequest(**{"model": MODEL, **fields}, messages=[pb.ChatMessage(role="user", content=text)])


def http_chat(text: str, max_tokens: int = 4, **fields: Any) -> dict[str, Any]:
    """The body of POST /v1/chat/completions; `fields` are further body fields."""
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens, **fields}
