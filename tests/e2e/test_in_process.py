"""The orchestrator started in-process (BackgroundOrchestrator: a thread with its own event loop), as the demo
and benchmarks may run it, serves both APIs on the free ports it picked and stops cleanly."""

from __future__ import annotations

import uuid

import grpc
import openai
import pytest

from orchestrator.api.proto.orchestrator.v1 import orchestrator_pb2 as pb
from orchestrator.api.proto.orchestrator.v1 import orchestrator_pb2_grpc as pb_grpc
from orchestrator.api.server import BackgroundOrchestrator
from orchestrator.api.settings import ApiSettings
from orchestrator.config import RedisSettings, Settings, TritonSettings
from stack.triton import TritonServer
from stack.valkey import ValkeyServer

pytestmark = pytest.mark.integration


def test_background_orchestrator(triton: TritonServer, valkey: ValkeyServer) -> None:
    settings = Settings(triton=TritonSettings(url=triton.grpc_url),
                        redis=RedisSettings(url=valkey.url, key_prefix=f"inproc-{uuid.uuid4().hex[:8]}"),
                        api=ApiSettings(http_port=0, grpc_port=0))
    with BackgroundOrchestrator(settings) as orchestrator:
        assert orchestrator.http_port and orchestrator.grpc_port
        client = openai.OpenAI(base_url=f"{orchestrator.http_url}/v1", api_key="local", max_retries=0)
        question = [{"role": "user", "content": "Say hello."}]
        first = client.chat.completions.with_raw_response.create(model=settings.model.name, messages=question,
                                                                 max_tokens=8)
        assert first.headers["x-cache"] == "miss" and first.parse().choices[0].message.content
        with grpc.insecure_channel(orchestrator.grpc_target) as channel:
            again = pb_grpc.OrchestratorStub(channel).Generate(pb.GenerateRequest(
                model=settings.model.name, messages=[pb.ChatMessage(role="user", content="Say hello.")],
                params=pb.SamplingParams(max_tokens=8), cache=pb.CacheControls(no_cache=True)), timeout=60)
        assert again.cache.layer == pb.CACHE_LAYER_MISS and again.text == first.parse().choices[0].message.content
    with pytest.raises(openai.APIConnectionError):
        client.models.list()
