"""Routing across two real CPU Triton servers through ReplicatedLLM (the backend the service builds from
ORCH_TRITON__REPLICAS): the session one and a second started here.

KV blocks live in one replica's engine; the backend must send a shared prefix back to the replica that holds it,
notice a replica that dies (within 5 s), keep serving from the other one meanwhile, and take the replica back
once it is ready again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from model_assets.chat import format_chat
from orchestrator.backends.replicas import Route
from orchestrator.backends.replicated_llm import ReplicatedLLM
from orchestrator.backends.triton_llm import TritonLLM
from orchestrator.config import ModelSettings, TritonSettings
from orchestrator.schemas import SamplingParams
from stack.triton import TritonServer

#: What ReplicatedLLM calls: the BLS (the service's default) and the engine it stops generations on.
LLM_MODELS = ("tensorrt_llm", "tensorrt_llm_bls")


def replica(repository: Path, log_path: Path, shm_prefix: str, **ports: int) -> TritonServer:
    """A Triton replica with its own Python-backend shared-memory prefix, so what a SIGKILL leaves in /dev/shm
    can be removed."""
    return TritonServer(repository, model_control_mode="explicit", load_models=LLM_MODELS, log_path=log_path,
                        extra_args=(f"--backend-config=python,shm-region-prefix-name={shm_prefix}",), **ports)


@pytest.fixture(scope="module")
def second_triton(triton_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    with replica(triton_repository, tmp_path_factory.mktemp("logs") / "triton-second.log",
                 f"second{uuid.uuid4().hex[:8]}_") as server:
        yield server


def prompt(document: str, question: str) -> str:
    return format_chat([{"role": "system", "content": document}, {"role": "user", "content": question}])


async def generate(llm: ReplicatedLLM | TritonLLM, text: str) -> tuple[str, int | None]:
    """A few greedy tokens; the text and the KV blocks the engine reused."""
    reused, parts = None, []
    async for delta in llm.stream(text, SamplingParams(max_tokens=4), uuid.uuid4().hex):
        parts.append(delta.text)
        reused = delta.kv_cache_reused_blocks if delta.kv_cache_reused_blocks is not None else reused
    return "".join(parts), reused


async def until(condition: Callable[[], bool], timeout_s: float) -> float:
    """Seconds until `condition()` holds; fails after `timeout_s`."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout_s, f"not within {timeout_s} s"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_a_shared_prefix_is_reused_on_the_replica_the_backend_chose(triton: TritonServer,
                                                                          second_triton: TritonServer) -> None:
    backend = ReplicatedLLM(TritonSettings(replicas=[triton.grpc_url, second_triton.grpc_url]), ModelSettings())
    try:
        assert await backend.ready()
        assert all(r.healthy for r in backend.router.replicas)
        document = f"Handbook {uuid.uuid4().hex}. " + "Refunds are paid within 14 days of a written request. " * 40
        chosen = backend.router.ranking(prompt(document, "When are refunds paid?"))[0]
        assert (await generate(backend, prompt(document, "When are refunds paid?")))[1] == 0
        text, reused = await generate(backend, prompt(document, "Who must write the request?"))
        assert text
        # The shared system prompt (~400 tokens) is reused in whole 32-token blocks on the chosen replica...
        assert reused >= 8
        assert backend.router.decisions == {Route.AFFINITY: 2}
        # ...and the other replica has nothing of it: sending the prefix there would have recomputed it all.
        other = next(r for r in backend.router.replicas if r is not chosen)
        assert (await generate(backend.llms[other.url], prompt(document, "How long do refunds take?")))[1] == 0
    finally:
        await backend.aclose()


async def test_a_killed_replica_leaves_the_set_within_5_s_requests_go_on_and_it_comes_back(
        triton: TritonServer, triton_repository: Path, tmp_path: Path) -> None:
    shm_prefix = f"doomed{uuid.uuid4().hex[:8]}_"
    doomed = replica(triton_repository, tmp_path / "doomed.log", shm_prefix)
    ports = {"http_port": doomed.http_port, "grpc_port": doomed.grpc_port, "metrics_port": doomed.metrics_port}
    # Default health settings: probes every 1 s with a 2 s timeout.
    backend = ReplicatedLLM(TritonSettings(replicas=[triton.grpc_url, doomed.grpc_url]), ModelSettings())
    try:
        with doomed:
            assert await backend.ready() and all(r.healthy for r in backend.router.replicas)
            documents = [f"Manual {i} {uuid.uuid4().hex}. " + "Keep the device dry and charged. " * 30
                         for i in range(40)]
            on_doomed = [d for d in documents if backend.router.ranking(prompt(d, "Hi"))[0].url == doomed.grpc_url]
            assert len(on_doomed) >= 4
            assert (await generate(backend, prompt(on_doomed[0], "Hi")))[0]
            assert backend.router.decisions == {Route.AFFINITY: 1}

            os.killpg(doomed._process.pid, signal.SIGKILL)  # a crash: no graceful shutdown
            # No request is sent: the health probes alone take it out of the set, within 5 s.
            left = await until(lambda: not backend.router.replica(doomed.grpc_url).healthy, 5)
            print(f"the killed replica left the set {left:.2f} s after SIGKILL")
            # Its prefixes now go to the other replica, and succeed.
            for document in on_doomed[1:4]:
                assert (await generate(backend, prompt(document, "Hi")))[0]
            assert backend.router.decisions == {Route.AFFINITY: 1, Route.FAILOVER: 3}
            assert not backend.router.replica(doomed.grpc_url).healthy
        # The same replica comes back on the same address: the next probes take it back into the set.
        with replica(triton_repository, tmp_path / "back.log", shm_prefix + "b", **ports):
            back = await until(lambda: backend.router.replica(doomed.grpc_url).healthy, 10)
            print(f"it was back in the set {back:.2f} s after it was ready again")
            assert (await generate(backend, prompt(on_doomed[0], "Hello again")))[0]
            assert backend.router.decisions[Route.AFFINITY] == 2
    finally:
        await backend.aclose()
        for leftover in Path("/dev/shm").glob(f"{shm_prefix}*"):
            with contextlib.suppress(OSError):
                leftover.unlink()
