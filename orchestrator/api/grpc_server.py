"""The gRPC service `orchestrator.v1.Orchestrator` on grpc.aio, with the standard health service and reflection.

Callers authenticate with `authorization: Bearer <key>` (or `x-api-key`) metadata. Errors become status codes
(orchestrator.api.errors); a stream that fails after it started is aborted with the error's code; a client that
cancels a stream closes the service's iterator, which stops the generation. The health service reports
SERVING while Triton and Redis are ready, re-checked every `health_interval_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from orchestrator.api.auth import Authenticator, Principal, bearer_token
from orchestrator.api.context import GenerationService, ServedModels, close_stream, open_stream
from orchestrator.api.errors import grpc_status
from orchestrator.api.metrics import RequestObservation
from orchestrator.api.proto.orchestrator.v1 import orchestrator_pb2 as pb
from orchestrator.api.proto.orchestrator.v1 import orchestrator_pb2_grpc as pb_grpc
from orchestrator.errors import InvalidRequest
from orchestrator.schemas import (
    CacheControls,
    CacheInfo,
    ChatMessage,
    GenerationRequest,
    GenerationResult,
    SamplingParams,
    StreamChunk,
    Usage,
)

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Orchestrator"].full_name
LAYERS = {"miss": pb.CACHE_LAYER_MISS, "exact": pb.CACHE_LAYER_EXACT, "semantic": pb.CACHE_LAYER_SEMANTIC}


class Undecodable:
    """Request bytes that are not a valid message of the method's type (invalid UTF-8 in a string, a
    truncated field): the handler answers INVALID_ARGUMENT, where grpc's own deserializer failing gives UNKNOWN."""

    def __init__(self, message_type: str, error: DecodeError) -> None:
        self.message_type = message_type
        self.error = error


def _tolerant(message_class: Any) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return message_class.FromString(data)
        except DecodeError as error:
            return Undecodable(message_class.DESCRIPTOR.full_name, error)

    return deserialize


def add_servicer(servicer: OrchestratorServicer, server: grpc.aio.Server) -> None:
    """What the generated add_OrchestratorServicer_to_server does, with deserializers that pass an
    undecodable request on to the servicer (see Undecodable)."""
    service = pb.DESCRIPTOR.services_by_name["Orchestrator"]
    handlers = {}
    for method in service.methods:
        make = grpc.unary_stream_rpc_method_handler if method.server_streaming \
            else grpc.unary_unary_rpc_method_handler
        handlers[method.name] = make(getattr(servicer, method.name),
                                     request_deserializer=_tolerant(getattr(pb, method.input_type.name)),
                                     response_serializer=getattr(pb, method.output_type.name).SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))


def _rpc(endpoint: str) -> Callable:
    """Count and time the call; turn any error into a gRPC status (unexpected ones into a generic INTERNAL).
    Streaming methods write with `context.write`, so a cancelled call is a CancelledError in the handler."""

    def decorate(method: Callable) -> Callable:
        @functools.wraps(method)
        async def handler(self: OrchestratorServicer, request: Any, context: grpc.aio.ServicerContext) -> Any:
            observation = RequestObservation("grpc", endpoint)
            try:
                with observation.measured():
                    if isinstance(request, Undecodable):
                        raise InvalidRequest("request", f"not a valid {request.message_type} message "
                                                        f"({request.error})")
                    return await method(self, request, context, observation)
            except Exception as exc:
                await context.abort(*grpc_status(exc))
        return handler

    return decorate


class OrchestratorServicer(pb_grpc.OrchestratorServicer):
    def __init__(self, service: GenerationService, auth: Authenticator, models: ServedModels) -> None:
        self.service = service
        self.auth = auth
        self.models = models

    @_rpc("generate")
    async def Generate(self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext,
                       observation: RequestObservation) -> pb.GenerateResponse:
        generation, controls = self._translate(request, self._principal(context))
        result = await self.service.generate(generation, controls)
        observation.layer = result.cache.layer
        return _response(result)

    @_rpc("generate_stream")
    async def GenerateStream(self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext,
                             observation: RequestObservation) -> None:
        generation, controls = self._translate(request, self._principal(context))
        first, chunks = await open_stream(self.service, generation, controls)
        observation.layer = first.cache.layer if first.cache else "none"
        try:
            await context.write(_stream_response(first))
            observation.first_chunk()
            async for chunk in chunks:
                await context.write(_stream_response(chunk))
        finally:
            await close_stream(chunks)

    @_rpc("embed")
    async def Embed(self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext,
                    observation: RequestObservation) -> pb.EmbedResponse:
        self._principal(context)
        if request.model:
            self.models.check_embedding_model(request.model)
        vectors = await self.service.embed(list(request.texts))
        return pb.EmbedResponse(embeddings=[pb.Embedding(values=vector.tolist()) for vector in vectors],
                                dimensions=vectors.shape[1], model=self.models.embedding)

    @_rpc("cache_stats")
    async def CacheStats(self, request: pb.CacheStatsRequest, context: grpc.aio.ServicerContext,
                         observation: RequestObservation) -> pb.CacheStatsResponse:
        self._principal(context).require_admin()
        stats = struct_pb2.Struct()
        json_format.ParseDict(await self.service.stats(request.tenant or None), stats)
        return pb.CacheStatsResponse(stats=stats)

    @_rpc("invalidate")
    async def Invalidate(self, request: pb.InvalidateRequest, context: grpc.aio.ServicerContext,
                         observation: RequestObservation) -> pb.InvalidateResponse:
        self._principal(context).require_admin()
        removed = await self.service.invalidate(tenant=request.tenant or None, key=request.key or None,
                                                namespace=request.namespace or None)
        return pb.InvalidateResponse(removed=removed)

    def _principal(self, context: grpc.aio.ServicerContext) -> Principal:
        metadata = {key: value for key, value in (context.invocation_metadata() or ())}
        return self.auth.authenticate(metadata.get("x-api-key") or bearer_token(metadata.get("authorization")))

    def _translate(self, request: pb.GenerateRequest, caller: Principal) -> tuple[GenerationRequest, CacheControls]:
        messages = [ChatMessage(role=m.role, content=m.content, name=m.name or None) for m in request.messages]
        params = request.params
        given = {name: getattr(params, name) for name in ("max_tokens", "temperature", "top_p", "top_k", "seed")
                 if params.HasField(name)}
        generation = GenerationRequest(
            tenant=caller.tenant,
            model=request.model,
            messages=tuple(messages),
            prompt=request.prompt if request.HasField("prompt") else None,
            params=SamplingParams(**given, stop=tuple(params.stop)),
        )
        cache = request.cache
        controls = CacheControls(
            no_cache=cache.no_cache,
            no_store=cache.no_store,
            ttl_s=cache.ttl_seconds if cache.HasField("ttl_seconds") else None,
            namespace=caller.resolve_namespace(cache.namespace or None),
        )
        return generation, controls


def _cache_info(info: CacheInfo) -> pb.CacheInfo:
    return pb.CacheInfo(layer=LAYERS[info.layer], key=info.key, similarity=info.similarity,
                        tokens_saved=info.tokens_saved)


def _usage(usage: Usage) -> pb.Usage:
    return pb.Usage(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                    total_tokens=usage.total_tokens)


def _response(result: GenerationResult) -> pb.GenerateResponse:
    return pb.GenerateResponse(text=result.text, finish_reason=result.finish_reason, usage=_usage(result.usage),
                               cache=_cache_info(result.cache), kv_cache_reused_blocks=result.kv_cache_reused_blocks,
                               ttft_ms=result.ttft_ms)


def _stream_response(chunk: StreamChunk) -> pb.GenerateStreamResponse:
    return pb.GenerateStreamResponse(
        text=chunk.text,
        cache=_cache_info(chunk.cache) if chunk.cache else None,
        finish_reason=chunk.finish_reason or "",
        usage=_usage(chunk.usage) if chunk.usage else None,
        kv_cache_reused_blocks=chunk.kv_cache_reused_blocks,
    )


class GrpcServer:
    """The aio server with the orchestrator, health and reflection services on one port."""

    def __init__(self, service: GenerationService, auth: Authenticator, models: ServedModels, host: str, port: int,
                 health_interval_s: float = 5.0) -> None:
        self.service = service
        self.server = grpc.aio.server()
        add_servicer(OrchestratorServicer(service, auth, models), self.server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self.server)
        self.port = self.server.add_insecure_port(f"{host}:{port}")
        self.health_interval_s = health_interval_s
        self._health_task: asyncio.Task | None = None

    async def start(self) -> None:
        await self.server.start()
        await self._update_health()
        self._health_task = asyncio.create_task(self._watch_health())

    async def stop(self, grace_s: float = 5.0) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)

    async def _watch_health(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval_s)
            await self._update_health()

    async def _update_health(self) -> None:
        try:
            ready = all((await self.service.readiness()).values())
        except Exception:
            log.exception("readiness check failed")
            ready = False
        status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)
