"""Prefix-affinity routing against two real CPU Triton servers: the session one and a second started here.

KV blocks live in one replica's engine; the router must send a shared prefix back to the replica that holds
it, notice a replica that goes away, and route around it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import tritonclient.grpc.aio as grpcaio

from cpu_engine.chat import format_chat
from cpu_engine.client import generate, text_inputs
from orchestrator.backends.replicas import ReplicaHealthChecker, ReplicaRouter, Route
from stack.triton import TritonServer

LLM_MODELS = ("preprocessing", "tensorrt_llm", "postprocessing", "ensemble")


@pytest.fixture(scope="module")
def second_triton(triton_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    server = TritonServer(triton_repository, model_control_mode="explicit", load_models=LLM_MODELS,
                          log_path=tmp_path_factory.mktemp("logs") / "triton-second.log")
    with server:
        yield server


def prompt(document: str, question: str) -> str:
    return format_chat([{"role": "system", "content": document}, {"role": "user", "content": question}])


async def ask(url: str, text: str) -> int:
    """Generate a few tokens on one replica; the number of KV blocks it reused."""
    client = grpcaio.InferenceServerClient(url)
    try:
        result = await generate(client, "ensemble", text_inputs(text, 4, stream=True, temperature=0.0))
    finally:
        await client.close()
    assert result.error is None, result.error
    return result.outputs["kv_cache_reused_blocks"]


async def test_shared_prefix_is_reused_only_on_the_replica_the_router_chose(triton: TritonServer,
                                                                            second_triton: TritonServer) -> None:
    router = ReplicaRouter([triton.grpc_url, second_triton.grpc_url], max_in_flight=4)
    checker = ReplicaHealthChecker(router, model="ensemble", timeout_s=5)
    try:
        assert await checker.check_once() == {triton.grpc_url: True, second_triton.grpc_url: True}
    finally:
        await checker.aclose()
    document = f"Handbook {uuid.uuid4().hex}. " + "Refunds are paid within 14 days of a written request. " * 40
    first, second = prompt(document, "When are refunds paid?"), prompt(document, "Who must write the request?")

    with router.lease(first) as replica:
        assert await ask(replica.url, first) == 0
    with router.lease(second) as chosen:
        assert chosen is replica
        reused = await ask(chosen.url, second)
    # The shared system prompt (~400 tokens) is reused in whole 32-token blocks on the chosen replica...
    assert reused >= 8
    # ...and the other replica has nothing of it: sending the prefix there would have recomputed it all.
    other = next(r for r in router.replicas if r is not replica)
    assert await ask(other.url, prompt(document, "How long do refunds take?")) == 0
    assert router.decisions == {Route.AFFINITY: 2}


async def test_a_stopped_replica_is_marked_down_and_its_prefixes_fail_over(triton: TritonServer,
                                                                           triton_repository: Path,
                                                                           tmp_path: Path) -> None:
    doomed = TritonServer(triton_repository, model_control_mode="explicit", load_models=LLM_MODELS,
                          log_path=tmp_path / "doomed.log")
    with doomed:
        router = ReplicaRouter([triton.grpc_url, doomed.grpc_url])
        checker = ReplicaHealthChecker(router, model="ensemble", timeout_s=5)
        try:
            assert all((await checker.check_once()).values())
            text = next(p for p in (prompt(f"Doc {i}", "Hi") for i in range(100))
                        if router.ranking(p)[0].url == doomed.grpc_url)
            doomed.stop()
            assert await checker.check_once() == {triton.grpc_url: True, doomed.grpc_url: False}
        finally:
            await checker.aclose()
    with router.lease(text) as replica:
        assert replica.url == triton.grpc_url
        await ask(replica.url, text)
    assert router.decisions == {Route.FAILOVER: 1}
