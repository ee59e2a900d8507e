"""OpenAI request bodies (the parts the orchestrator serves) and their translation into service requests.

Only wire shape is checked here: types, and OpenAI parameters that have no place in a service request and
would change the output (n > 1, penalties, logit_bias, logprobs, echo, suffix, best_of), refused rather than
ignored so a cached answer is never served for a request it does not answer. Every rule about the values
(ranges, limits, roles, names, what the model is not given) is orchestrator.validation's, for both APIs.
Unknown fields are ignored, as OpenAI's clients send optional extras.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from orchestrator.errors import InvalidRequest
from orchestrator.schemas import CacheControls, ChatMessage, GenerationRequest, SamplingParams


class CacheExtension(BaseModel):
    """The body's `cache` field: per-request cache behaviour (same meaning as CacheControls)."""

    model_config = ConfigDict(extra="forbid")

    no_cache: bool = False
    no_store: bool = False
    ttl: int | None = None
    namespace: str | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class WireMessage(BaseModel):
    role: str
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None

    def to_message(self) -> ChatMessage:
        content = self.content if isinstance(self.content, str) or self.content is None else \
            "".join(part.text for part in self.content)
        # OpenAI's newer name for the system role.
        role = "system" if self.role == "developer" else self.role
        return ChatMessage(role=role, content=content or "", name=self.name,
                           tool_calls=tuple(self.tool_calls or ()))


class GenerationBody(BaseModel):
    """Fields chat and text completions share."""

    model: str
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None  # extension (OpenAI has none; vLLM and Triton do)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None
    user: str | None = None  # accepted for compatibility; not part of the answer
    cache: CacheExtension | None = None

    @model_validator(mode="after")
    def _refuse_unsupported(self) -> GenerationBody:
        if self.n != 1:
            raise InvalidRequest("n", "only n=1 is supported")
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name):
                raise InvalidRequest(name, "not supported; omit it or send 0")
        if self.logit_bias:
            raise InvalidRequest("logit_bias", "not supported")
        return self

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def sampling_params(self, **extra: Any) -> SamplingParams:
        given = {name: getattr(self, name) for name in ("max_tokens", "temperature", "top_p", "top_k", "seed")
                 if getattr(self, name) is not None}
        if self.stop is not None:
            given["stop"] = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        return SamplingParams(**given, **extra)


class ChatCompletionBody(GenerationBody):
    messages: list[WireMessage]
    max_completion_tokens: int | None = None
    logprobs: bool = False
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None

    @model_validator(mode="after")
    def _refuse_logprobs(self) -> ChatCompletionBody:
        if self.logprobs:
            raise InvalidRequest("logprobs", "not supported")
        if self.max_completion_tokens is not None:
            self.max_tokens = self.max_completion_tokens
        return self

    def to_request(self, tenant: str) -> GenerationRequest:
        extra: dict[str, Any] = {}
        if self.response_format is not None:
            extra["response_format"] = self.response_format
        if self.tools:
            extra["tools"] = tuple(self.tools)
        return GenerationRequest(tenant=tenant, model=self.model,
                                 messages=tuple(m.to_message() for m in self.messages),
                                 params=self.sampling_params(**extra))


class CompletionBody(GenerationBody):
    prompt: str | list[str]
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None
    logprobs: int | None = None

    @model_validator(mode="after")
    def _refuse_unsupported_completion(self) -> CompletionBody:
        if isinstance(self.prompt, list) and len(self.prompt) != 1:
            raise InvalidRequest("prompt", "exactly one prompt per request is supported")
        for name in ("echo", "suffix", "logprobs"):
            if getattr(self, name):
                raise InvalidRequest(name, "not supported")
        if self.best_of not in (None, 1):
            raise InvalidRequest("best_of", "only best_of=1 is supported")
        return self

    def to_request(self, tenant: str) -> GenerationRequest:
        prompt = self.prompt if isinstance(self.prompt, str) else self.prompt[0]
        return GenerationRequest(tenant=tenant, model=self.model, prompt=prompt, params=self.sampling_params())


class EmbeddingBody(BaseModel):
    model: str
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None

    @property
    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class InvalidateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: str | None = None
    key: str | None = None
    namespace: str | None = None


def cache_controls(extension: CacheExtension | None, cache_control_header: str | None,
                   namespace: str | None) -> CacheControls:
    """Merge the Cache-Control header (no-cache, no-store) with the body's `cache` field; either may ask."""
    directives = {d.strip().lower() for d in (cache_control_header or "").split(",")}
    extension = extension or CacheExtension()
    return CacheControls(
        no_cache=extension.no_cache or "no-cache" in directives,
        no_store=extension.no_store or "no-store" in directives,
        ttl_s=extension.ttl,
        namespace=namespace,
    )
