"""The OpenAI-compatible HTTP API (FastAPI), plus health, readiness, Prometheus metrics and admin endpoints.

Every generation response says where its answer came from: headers `x-cache` (exact|semantic|miss) and
`x-cache-similarity`, and a `cache` object in the body (and in the first chunk of a stream). Requests pick
cache behaviour with `Cache-Control: no-cache / no-store` or the body's `cache` field.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from functools import cache
from typing import Annotated, Any

import anyio
import numpy as np
from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from orchestrator.api.auth import Authenticator, Principal, bearer_token
from orchestrator.api.context import GenerationService, ServedModels, close_stream, open_stream
from orchestrator.api.errors import http_status_and_body, openai_error
from orchestrator.api.metrics import RequestObservation
from orchestrator.api.openai_types import (
    ChatCompletionBody,
    CompletionBody,
    EmbeddingBody,
    GenerationBody,
    InvalidateBody,
    cache_controls,
)
from orchestrator.errors import InvalidRequest, OrchestratorError
from orchestrator.schemas import CacheInfo, GenerationRequest, GenerationResult, StreamChunk, Usage

log = logging.getLogger(__name__)


def _caller(request: Request, authorization: Annotated[str | None, Header()] = None,
            x_api_key: Annotated[str | None, Header()] = None) -> Principal:
    auth: Authenticator = request.app.state.auth
    return auth.authenticate(x_api_key or bearer_token(authorization))


Caller = Annotated[Principal, Depends(_caller)]


def create_app(service: GenerationService, auth: Authenticator, models: ServedModels) -> FastAPI:
    app = FastAPI(title="orchestrator", summary="OpenAI-compatible API with exact and semantic caching",
                  version="1")
    _install_error_handlers(app)
    app.state.auth = auth
    served = (*models.generation, models.embedding)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        checks = await service.readiness()
        ready = all(checks.values())
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def list_models(caller: Caller) -> dict:
        return {"object": "list", "data": [_model_card(model) for model in served]}

    @app.get("/v1/models/{model_id}")
    async def get_model(model_id: str, caller: Caller) -> JSONResponse:
        if model_id not in served:
            return JSONResponse(openai_error(404, f"model {model_id!r} not found", "model", "model_not_found"),
                                status_code=404)
        return JSONResponse(_model_card(model_id))

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionBody, caller: Caller,
                               cache_control: Annotated[str | None, Header()] = None) -> Response:
        return await _generate(service, body, body.to_request(caller.tenant), caller, cache_control,
                               _ChatFormat(body.model))

    @app.post("/v1/completions")
    async def completions(body: CompletionBody, caller: Caller,
                          cache_control: Annotated[str | None, Header()] = None) -> Response:
        return await _generate(service, body, body.to_request(caller.tenant), caller, cache_control,
                               _CompletionFormat(body.model))

    @app.post("/v1/embeddings")
    async def embeddings(body: EmbeddingBody, caller: Caller) -> dict:
        models.check_embedding_model(body.model)
        with RequestObservation("http", "embeddings").measured():
            vectors = await service.embed(body.texts)
        if body.dimensions is not None and body.dimensions != vectors.shape[1]:
            raise InvalidRequest("dimensions", f"{body.model} produces {vectors.shape[1]} dimensions only")
        tokens = embedding_token_count(body.texts)
        return {
            "object": "list",
            "model": body.model,
            "data": [{"object": "embedding", "index": i, "embedding": _encode_vector(vector, body.encoding_format)}
                     for i, vector in enumerate(vectors)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    @app.get("/admin/stats")
    async def admin_stats(caller: Caller, tenant: str | None = None) -> dict:
        caller.require_admin()
        return await service.stats(tenant)

    @app.post("/admin/invalidate")
    async def admin_invalidate(body: InvalidateBody, caller: Caller) -> dict:
        caller.require_admin()
        return {"removed": await service.invalidate(tenant=body.tenant, key=body.key, namespace=body.namespace)}

    return app


async def _generate(service: GenerationService, body: GenerationBody, request: GenerationRequest,
                    caller: Principal, cache_control: str | None, fmt: _ResponseFormat) -> Response:
    namespace = caller.resolve_namespace(body.cache.namespace if body.cache else None)
    controls = cache_controls(body.cache, cache_control, namespace)
    observation = RequestObservation("http", fmt.endpoint)
    if not body.stream:
        with observation.measured():
            result = await service.generate(request, controls)
            observation.layer = result.cache.layer
        return JSONResponse(fmt.complete(result), headers=_cache_headers(result.cache))
    with observation.measured(ends_request=False):  # the events below finish it
        first, chunks = await open_stream(service, request, controls)
        observation.layer = first.cache.layer if first.cache else "none"
    events = _server_sent_events(first, chunks, fmt, body.include_usage, observation)
    return CancellingStreamingResponse(events, media_type="text/event-stream",
                                       headers={**_cache_headers(first.cache), "cache-control": "no-cache"})


async def _server_sent_events(first: StreamChunk, chunks: AsyncIterator[StreamChunk], fmt: _ResponseFormat,
                              include_usage: bool, observation: RequestObservation) -> AsyncIterator[str]:
    """OpenAI's SSE framing; a failure after the stream started ends it with an `error` event (no [DONE])."""
    try:
        with observation.measured():
            for payload in fmt.stream_payloads(first, include_usage, first=True):
                yield _event(payload)
            observation.first_chunk()
            async for chunk in chunks:
                for payload in fmt.stream_payloads(chunk, include_usage):
                    yield _event(payload)
            yield "data: [DONE]\n\n"
    except Exception as exc:
        log.warning("stream ended by an error after it started: %s: %s", type(exc).__name__, exc,
                    exc_info=not isinstance(exc, OrchestratorError))
        yield _event(http_status_and_body(exc)[1])
    finally:
        await close_stream(chunks)


class CancellingStreamingResponse(StreamingResponse):
    """A stream that stops as soon as the client disconnects and always closes its body iterator, which closes
    the service stream and so stops the generation. (Starlette's own watches for the disconnect only
    under ASGI < 2.4 servers, notices it otherwise at the next write, and leaves the iterator to the garbage
    collector when the cancellation lands in a write.)"""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as task_group:
                async def stream() -> None:
                    try:
                        await self.stream_response(send)
                    except OSError:  # the client went away mid-write
                        pass
                    task_group.cancel_scope.cancel()

                task_group.start_soon(stream)
                await self.listen_for_disconnect(receive)
                task_group.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self.body_iterator.aclose()


class _ResponseFormat:
    """OpenAI's response and chunk objects for one endpoint."""

    endpoint: str
    object_name: str
    chunk_object_name: str
    id_prefix: str

    def __init__(self, model: str) -> None:
        self.model = model
        self.id = f"{self.id_prefix}-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def complete(self, result: GenerationResult) -> dict[str, Any]:
        return {**self._envelope(self.object_name),
                "choices": [self._final_choice(result.text, result.finish_reason)],
                "usage": _usage(result.usage),
                "cache": _cache_info(result.cache, result.kv_cache_reused_blocks)}

    def stream_payloads(self, chunk: StreamChunk, include_usage: bool, first: bool = False) -> list[dict]:
        payloads = []
        if first or chunk.text:
            payload = {**self._envelope(self.chunk_object_name), "choices": [self._delta(chunk.text, None, first)]}
            if chunk.cache is not None:
                payload["cache"] = _cache_info(chunk.cache, None)
            payloads.append(payload)
        if chunk.finish_reason is not None:
            payloads.append({**self._envelope(self.chunk_object_name),
                             "choices": [self._delta("", chunk.finish_reason, False)]})
        if include_usage and chunk.usage is not None:
            payloads.append({**self._envelope(self.chunk_object_name), "choices": [], "usage": _usage(chunk.usage)})
        return payloads

    def _envelope(self, object_name: str) -> dict[str, Any]:
        return {"id": self.id, "object": object_name, "created": self.created, "model": self.model}

    def _final_choice(self, text: str, finish_reason: str) -> dict[str, Any]:
        raise NotImplementedError

    def _delta(self, text: str, finish_reason: str | None, first: bool) -> dict[str, Any]:
        raise NotImplementedError


class _ChatFormat(_ResponseFormat):
    endpoint = "chat_completions"
    object_name = "chat.completion"
    chunk_object_name = "chat.completion.chunk"
    id_prefix = "chatcmpl"

    def _final_choice(self, text: str, finish_reason: str) -> dict[str, Any]:
        return {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason,
                "logprobs": None}

    def _delta(self, text: str, finish_reason: str | None, first: bool) -> dict[str, Any]:
        delta: dict[str, Any] = {"role": "assistant", "content": text} if first else \
            ({"content": text} if text else {})
        return {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}


class _CompletionFormat(_ResponseFormat):
    endpoint = "completions"
    object_name = "text_completion"
    chunk_object_name = "text_completion"
    id_prefix = "cmpl"

    def _final_choice(self, text: str, finish_reason: str) -> dict[str, Any]:
        return {"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": None}

    def _delta(self, text: str, finish_reason: str | None, first: bool) -> dict[str, Any]:
        return {"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": None}


def _event(payload: dict) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


def _usage(usage: Usage) -> dict[str, int]:
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens}


def _cache_info(info: CacheInfo, kv_cache_reused_blocks: int | None) -> dict[str, Any]:
    body = {"layer": info.layer, "key": info.key, "similarity": info.similarity, "tokens_saved": info.tokens_saved}
    if kv_cache_reused_blocks is not None:
        body["kv_cache_reused_blocks"] = kv_cache_reused_blocks
    return body


def _cache_headers(info: CacheInfo | None) -> dict[str, str]:
    if info is None:
        return {}
    headers = {"x-cache": info.layer}
    if info.similarity is not None:
        headers["x-cache-similarity"] = f"{info.similarity:.4f}"
    return headers


def _model_card(model: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": 0, "owned_by": "orchestrator"}


def _encode_vector(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":  # what the openai SDK asks for by default: little-endian float32
        return base64.b64encode(vector.astype("<f4").tobytes()).decode()
    return vector.astype(float).tolist()


@cache
def _embedding_tokenizer():  # noqa: ANN202 - tokenizers.Tokenizer, imported lazily (onnxruntime comes with it)
    from model_assets.minilm import load_tokenizer

    return load_tokenizer()


def embedding_token_count(texts: list[str]) -> int:
    """Tokens the embedding model read (after its truncation), for the response's `usage`."""
    return sum(len(encoding.ids) for encoding in _embedding_tokenizer().encode_batch(texts))


def _install_error_handlers(app: FastAPI) -> None:
    """Every error leaves as OpenAI's `{"error": {message, type, param, code}}` with the right status."""

    async def error_response(request: Request, exc: Exception) -> JSONResponse:
        status, body = http_status_and_body(exc)
        headers = {"www-authenticate": "Bearer"} if status == 401 else None
        return JSONResponse(body, status_code=status, headers=headers)

    app.add_exception_handler(OrchestratorError, error_response)
    # Starlette answers with this and then re-raises, so the server logs the traceback too.
    app.add_exception_handler(Exception, error_response)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        error = exc.errors()[0]
        location = [str(part) for part in error["loc"] if part != "body"]
        if error["type"] == "json_invalid":
            param, message = None, "request body is not valid JSON"
        else:
            param = _param_path(location) or None
            message = f"{param}: {error['msg']}" if param else error["msg"]
        return JSONResponse(openai_error(400, message, param, "invalid_argument"), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(openai_error(exc.status_code, str(exc.detail)), status_code=exc.status_code,
                            headers=exc.headers)


def _param_path(location: list[str]) -> str:
    """("messages", "0", "role") → "messages[0].role". Pydantic also names the member of a union that failed
    ("str", "list[TextPart]"); those are not fields and are left out."""
    path = ""
    for part in location:
        if part.isdigit():
            path += f"[{part}]"
        elif part.isidentifier() and part not in UNION_MEMBER_TAGS:
            path += f".{part}" if path else part
    return path


UNION_MEMBER_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict"})
