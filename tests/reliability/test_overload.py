"""A full engine queue through the orchestrator: 429 over HTTP (plain and streaming), RESOURCE_EXHAUSTED over
gRPC, refused at once, nothing cached; service as usual once the queue drains."""

from __future__ import annotations

import json
import time
import uuid

import grpc
import httpx
import pytest
import tritonclient.grpc.aio as grpcaio

from orchestrator.api.proto.orchestrator.v1 import orchestrator_pb2 as pb
from orchestrator.api.proto.orchestrator.v1 import orchestrator_pb2_grpc as pb_grpc
from stack.orchestrator_process import OrchestratorProcess
from stack.triton import TritonServer
from tests.engine_queue import full_queue
from tests.chats import grpc_chat, http_chat
from tests.reliability.conftest import ACME_KEY, auth, report

pytestmark = pytest.mark.integration

#: A refusal must not wait for the running generations (each of which takes seconds).
FAST_S = 5.0


async def test_a_full_engine_queue_is_429_and_resource_exhausted_at_once_and_nothing_is_cached(
        triton: TritonServer, orchestrator: OrchestratorProcess) -> None:
    question = http_chat(f"Name a colour of autumn leaves ({uuid.uuid4().hex[:6]}).")
    headers = auth(ACME_KEY)
    client = grpcaio.InferenceServerClient(triton.grpc_url)
    try:
        async with full_queue(client) as queue, \
                httpx.AsyncClient(base_url=orchestrator.http_url, timeout=60) as http, \
                grpc.aio.insecure_channel(orchestrator.grpc_target) as channel:
            started = time.monotonic()
            refused = await http.post("/v1/chat/completions", json=question, headers=headers)
            refused_s = time.monotonic() - started
            streamed = await http.post("/v1/chat/completions", json={**question, "stream": True}, headers=headers)
            stub = pb_grpc.OrchestratorStub(channel)
            request = grpc_chat(question["messages"][0]["content"],
                                params=pb.SamplingParams(max_tokens=question["max_tokens"]))
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.Generate(request, metadata=(("authorization", f"Bearer {ACME_KEY}"),), timeout=60)
            queue.release()
            await queue.waiting

        for response in (refused, streamed):
            assert response.status_code == 429, response.text
            error = response.json()["error"]
            assert error["type"] == "rate_limit_error" and "queue" in error["message"], error
        report("queue_full", refused_in_s=round(refused_s, 3))
        assert refused_s < FAST_S
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "queue" in raised.value.details()

        async with httpx.AsyncClient(base_url=orchestrator.http_url, timeout=120) as http:
            after = await http.post("/v1/chat/completions", json=question, headers=headers)
        assert after.status_code == 200 and after.headers["x-cache"] == "miss"  # the refusals stored nothing
    finally:
        await client.close()
