"""Talk to the orchestrator: each answer streams in as it is generated and says which layer served it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import openai

from orchestrator.api.proto.orchestrator.v1 import orchestrator_pb2 as pb
from orchestrator.api.proto.orchestrator.v1 import orchestrator_pb2_grpc as pb_grpc

#: orchestrator.v1.CacheLayer → the names the HTTP API's x-cache header uses.
GRPC_LAYERS = {pb.CACHE_LAYER_MISS: "miss", pb.CACHE_LAYER_EXACT: "exact", pb.CACHE_LAYER_SEMANTIC: "semantic"}


@dataclass(frozen=True)
class Reply:
    text: str
    layer: str  # exact | semantic | miss (the x-cache header), "?" when absent
    ttft_s: float | None
    total_s: float
    finished: bool  # the stream ended with a finish_reason (not cut off)


async def chat_turn(client: openai.AsyncOpenAI, model: str, messages: list[dict[str, str]], max_tokens: int,
                    on_text: Callable[[str], None]) -> Reply:
    """Stream one answer over the OpenAI-compatible API, handing each piece of text to on_text."""
    start = time.perf_counter()
    ttft, pieces, finished = None, [], False
    async with client.chat.completions.with_streaming_response.create(
        model=model, messages=messages, max_tokens=max_tokens, stream=True,
    ) as response:
        layer = response.headers.get("x-cache", "?")
        async for chunk in await response.parse():
            for choice in chunk.choices:
                if choice.delta.content:
                    ttft = ttft if ttft is not None else time.perf_counter() - start
                    pieces.append(choice.delta.content)
                    on_text(choice.delta.content)
                finished = finished or bool(choice.finish_reason)
    return Reply("".join(pieces), layer, ttft, time.perf_counter() - start, finished)


async def grpc_chat_turn(stub: pb_grpc.OrchestratorStub, api_key: str, model: str, messages: list[dict[str, str]],
                         max_tokens: int, on_text: Callable[[str], None], timeout_s: float = 120.0) -> Reply:
    """Stream one answer over orchestrator.v1 GenerateStream; the first message names the cache layer.
    Raises grpc.aio.AioRpcError with the server's status and message."""
    start = time.perf_counter()
    ttft, pieces, layer, finished = None, [], "?", False
    request = pb.GenerateRequest(model=model, messages=[pb.ChatMessage(**m) for m in messages],
                                 params=pb.SamplingParams(max_tokens=max_tokens))
    call = stub.GenerateStream(request, metadata=(("authorization", f"Bearer {api_key}"),), timeout=timeout_s)
    async for message in call:
        if message.HasField("cache"):
            layer = GRPC_LAYERS.get(message.cache.layer, layer)
        if message.text:
            ttft = ttft if ttft is not None else time.perf_counter() - start
            pieces.append(message.text)
            on_text(message.text)
        finished = finished or bool(message.finish_reason)
    return Reply("".join(pieces), layer, ttft, time.perf_counter() - start, finished)


def grpc_stub(target: str) -> tuple[grpc.aio.Channel, pb_grpc.OrchestratorStub]:
    channel = grpc.aio.insecure_channel(target)
    return channel, pb_grpc.OrchestratorStub(channel)
