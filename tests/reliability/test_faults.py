"""Faults injected into real processes: a Valkey and a Triton started here (not the session's), killed with
SIGKILL or frozen with SIGSTOP while the orchestrator in front of them serves real requests.

Figures (downtime, recovery times, request counts) are printed as `RELIABILITY {json}` lines for
docs/reliability.md (conftest.report); run with `-s` to see them.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
import redis as redis_client
from prometheus_client.parser import text_string_to_metric_families

from clients.load import Plan, run_load
from clients.targets import OrchestratorHttpTarget
from clients.workload import workload
from orchestrator.api.proto.orchestrator.v1 import orchestrator_pb2 as pb
from orchestrator.api.proto.orchestrator.v1 import orchestrator_pb2_grpc as pb_grpc
from stack.orchestrator_process import OrchestratorProcess
from stack.triton import TritonServer
from stack.valkey import ValkeyServer
from tests.chats import MODEL, http_chat
from tests.reliability.conftest import ACME_KEY, auth, orchestrator_env, report
from tests.reliability.stack_probe import signal_group

pytestmark = pytest.mark.integration

LLM_MODELS = ("preprocessing", "tensorrt_llm", "postprocessing", "ensemble", "tensorrt_llm_bls", "embedding")
#: What the orchestrator under fault is configured with (and what the tests hold it to).
#: Generous enough that a busy 2-core machine does not time out healthy requests under the test load.
FIRST_RESPONSE_TIMEOUT_S = 15.0
#: Deadline of a whole generation (the slow-backend test runs into it).
REQUEST_TIMEOUT_S = 12.0
#: Deadline of the embedding call the semantic lookup makes first (a frozen Triton costs both, one after other).
UNARY_TIMEOUT_S = 5.0
REDIS_RETRY_AFTER_S = 0.5


class Trio:
    """Valkey + Triton + orchestrator, all started by this module, on fixed ports so they can be restarted."""

    def __init__(self, repository: Path, logs: Path) -> None:
        self.valkey = ValkeyServer(log_path=logs / "valkey.log")
        self.triton = TritonServer(repository, model_control_mode="explicit", load_models=LLM_MODELS,
                                   log_path=logs / "triton.log")
        self.key_prefix = f"fault-{uuid.uuid4().hex[:8]}"
        env = orchestrator_env(self.key_prefix,
                               ORCH_TRITON__FIRST_RESPONSE_TIMEOUT_S=str(FIRST_RESPONSE_TIMEOUT_S),
                               ORCH_TRITON__UNARY_TIMEOUT_S=str(UNARY_TIMEOUT_S),
                               ORCH_TRITON__REQUEST_TIMEOUT_S=str(REQUEST_TIMEOUT_S),
                               ORCH_REDIS__RETRY_AFTER_S=str(REDIS_RETRY_AFTER_S),
                               ORCH_API__HEALTH_INTERVAL_S="0.5")
        self.orchestrator = OrchestratorProcess(self.triton.grpc_url, self.valkey.url, env=env,
                                                log_path=logs / "orchestrator.log")

    def post(self, body: dict, timeout: float = 120) -> httpx.Response:
        return httpx.post(f"{self.orchestrator.http_url}/v1/chat/completions", json=body, headers=auth(ACME_KEY),
                          timeout=timeout)

    def revive_triton(self) -> bool:
        """Restart Triton if an earlier fault left it dead (Triton 2.51's Python backend may crash after a
        SIGSTOP/SIGCONT, even seconds later), and wait until the orchestrator serves again.
        Returns whether Triton was alive."""
        alive = self.triton.running() and self.triton.ready()
        if not alive:
            self.triton.stop()
            self.triton.start()
        _until(lambda: self.post(http_chat(f"Alive? ({uuid.uuid4().hex[:6]})")).status_code == 200, timeout_s=90,
               interval_s=0.5)
        return alive


@pytest.fixture(scope="module")
def trio(triton_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trio]:
    stack = Trio(triton_repository, tmp_path_factory.mktemp("fault-logs"))
    stack.valkey.start()
    try:
        stack.triton.start()
        try:
            stack.orchestrator.start(timeout_s=180)  # a busy machine makes the first readiness checks slow
            try:
                yield stack
            finally:
                stack.orchestrator.stop()
        finally:
            stack.triton.stop()
    finally:
        stack.valkey.stop()


def _until(predicate, timeout_s: float, interval_s: float = 0.1) -> float:
    """Seconds until `predicate()` held; fails after `timeout_s`."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout_s, f"not within {timeout_s} s"
        time.sleep(interval_s)
    return time.monotonic() - started


def _background_load(url: str, duration_s: float, result: dict) -> threading.Thread:
    """The load generator (clients.load) in a thread: closed loop, 2 clients, mostly repeats and paraphrases."""
    async def drive() -> None:
        target = OrchestratorHttpTarget(url, MODEL, max_tokens=4, api_key=ACME_KEY, timeout_s=60)
        await target.open()
        try:
            summary = await run_load(target, workload("exact=0.5,paraphrase=0.2,fresh=0.3", seed=7),
                                     Plan(concurrency=2, duration_s=duration_s))
        finally:
            await target.close()
        result.update(summary.to_dict())

    def main() -> None:
        try:
            asyncio.run(drive())
        except BaseException as error:  # the test reports it: a load that died is a failed request
            result["exception"] = repr(error)
            raise

    thread = threading.Thread(target=main, name="load")
    thread.start()
    return thread


def _lookups(redis: redis_client.Redis) -> int:
    """Key lookups Redis has answered (hits and misses, as Redis counts them)."""
    stats = redis.info("stats")
    return stats["keyspace_hits"] + stats["keyspace_misses"]


def _orchestrator_total(trio: Trio, name: str) -> float:
    """A counter of the orchestrator's /metrics, summed over its labels."""
    text = httpx.get(f"{trio.orchestrator.http_url}/metrics", timeout=10).text
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == name)


def test_redis_killed_under_load_no_request_fails_and_the_cache_resumes(trio: Trio) -> None:
    result: dict = {}
    load = _background_load(trio.orchestrator.http_url, duration_s=14, result=result)
    # Kill Redis once the load is using it, and bring it back once the orchestrator has noticed (a Redis error
    # counted) and then served the load without it for a few more requests.
    first_redis = redis_client.Redis.from_url(trio.valkey.url)
    _until(lambda: _lookups(first_redis) >= 4, timeout_s=30, interval_s=0.05)
    errors = _orchestrator_total(trio, "orchestrator_redis_errors_total")
    signal_group(trio.valkey.port, signal.SIGKILL)
    killed = time.monotonic()
    _until(lambda: _orchestrator_total(trio, "orchestrator_redis_errors_total") > errors, timeout_s=30,
           interval_s=0.05)
    served = _orchestrator_total(trio, "orchestrator_api_requests_total")
    _until(lambda: _orchestrator_total(trio, "orchestrator_api_requests_total") >= served + 4, timeout_s=30,
           interval_s=0.1)
    trio.valkey.stop()  # reaps the dead process
    trio.valkey.start()  # same port, empty (no persistence)
    returned = time.monotonic()
    # Cache use resumes: the load's lookups reach the new Redis (key lookups counted by Redis itself), and
    # its answers are written there.
    redis = redis_client.Redis.from_url(trio.valkey.url)

    # The load (still running) makes the lookups. No probe of ours: one that gave up early would cancel its
    # generation each time, and a stream of cancellations stalls Triton 2.51 (docs/reliability.md).
    first_use_s = _until(lambda: _lookups(redis) > 0, timeout_s=5.0, interval_s=0.05)
    first_write_s = first_use_s + _until(
        lambda: any(True for _ in redis.scan_iter(match=f"{trio.key_prefix}:exact:*")), timeout_s=30.0,
        interval_s=0.05)

    probe = http_chat(f"Name one colour of the rainbow ({uuid.uuid4().hex[:6]}).", max_tokens=2)

    def exact_hit() -> bool:
        response = trio.post(probe)
        return response.status_code == 200 and response.headers["x-cache"] == "exact"

    # A hit costs the probe's own miss first (a generation, queued behind the load's backlog on a busy machine:
    # the 5 s resumption bound is the lookup above; this only shows that writes resume too).
    resumed_s = _until(exact_hit, timeout_s=90.0, interval_s=0.05)
    # The semantic layer works again too (its RediSearch index went with the old process): the same question
    # with other punctuation is another exact key in the same semantic scope.
    variant = http_chat(probe["messages"][0]["content"].replace(").", ")?"), max_tokens=2)
    semantic_s = _until(lambda: trio.post(variant).headers["x-cache"] == "semantic", timeout_s=10.0,
                        interval_s=0.2)
    load.join(60)
    assert not load.is_alive()
    assert "exception" not in result, result["exception"]
    report("redis_killed", downtime_s=round(returned - killed, 2), first_lookup_s=round(first_use_s, 2),
           first_write_s=round(first_write_s, 2),
           exact_hit_s=round(first_write_s + resumed_s, 2),
           semantic_hit_s=round(first_write_s + resumed_s + semantic_s, 2), requests=result["requests"], ok=result["ok"],
           errors=result["errors"], hit_rate=result["hit_rate"], latency_ms=result["latency_ms"])
    assert result["requests"] > 0
    assert result["errors"] == {}, result
    assert result["ok"] == result["requests"]


def _sse_events(response: httpx.Response) -> Iterator[dict | str]:
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line[len("data: "):]
            yield data if data == "[DONE]" else json.loads(data)


def test_triton_killed_fails_fast_ends_streams_caches_nothing_partial_and_recovers(trio: Trio) -> None:
    prompt = http_chat(f"Write a long story about a lighthouse keeper ({uuid.uuid4().hex[:6]}).", max_tokens=400)
    events: list = []
    with httpx.stream("POST", f"{trio.orchestrator.http_url}/v1/chat/completions", timeout=60,
                      json={**prompt, "stream": True}, headers=auth(ACME_KEY)) as response:
        assert response.status_code == 200
        for event in _sse_events(response):
            events.append(event)
            if len(events) == 3:  # the stream is under way: kill Triton and its Python stubs
                signal_group(trio.triton.grpc_port, signal.SIGKILL)
                killed = time.monotonic()
        stream_end_s = time.monotonic() - killed
    assert "[DONE]" not in events
    assert "error" in events[-1], events[-1]
    assert events[-1]["error"]["message"]

    # While Triton is down: 503 / UNAVAILABLE, fast.
    started = time.monotonic()
    down = trio.post(http_chat("Are you there?"))
    http_503_s = time.monotonic() - started
    assert down.status_code == 503, down.text
    with grpc.insecure_channel(trio.orchestrator.grpc_target) as channel:
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as raised:
            pb_grpc.OrchestratorStub(channel).Generate(pb.GenerateRequest(model=MODEL, prompt="Hello?"),
                                                       metadata=(("authorization", f"Bearer {ACME_KEY}"),),
                                                       timeout=30)
        grpc_unavailable_s = time.monotonic() - started
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert http_503_s < FIRST_RESPONSE_TIMEOUT_S and grpc_unavailable_s < FIRST_RESPONSE_TIMEOUT_S

    # Nothing of the cut stream was stored, in either layer.
    key = events[0]["cache"]["key"]
    redis = redis_client.Redis.from_url(trio.valkey.url)
    assert not list(redis.scan_iter(match=f"{trio.key_prefix}:exact:*:{key}"))
    queries = {redis.hget(name, "query") for name in redis.scan_iter(match=f"{trio.key_prefix}:sem:*")}
    assert prompt["messages"][0]["content"].encode() not in queries

    trio.triton.stop()
    trio.triton.start()
    back = time.monotonic()
    # The orchestrator reconnects by itself.
    answers: list[httpx.Response] = []
    recovered_s = _until(lambda: answers.append(trio.post(http_chat(f"Back? ({uuid.uuid4().hex[:6]})"))) or
                         answers[-1].status_code == 200, timeout_s=120, interval_s=0.5)
    report("triton_killed", stream_error_after_kill_s=round(stream_end_s, 2), http_503_s=round(http_503_s, 3),
           grpc_unavailable_s=round(grpc_unavailable_s, 3), recovered_after_triton_ready_s=round(recovered_s, 2),
           failed_attempts_before_recovery=len(answers) - 1,
           last_error=answers[-2].status_code if len(answers) > 1 else None, since_back_s=round(time.monotonic() - back, 2))


def _engine_requests(trio: Trio, kind: str) -> float:
    """The CPU engine's nv_trt_llm_request_metrics{request_type=kind} from Triton's metrics endpoint."""
    text = httpx.get(trio.triton.metrics_url, timeout=10).text
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith("nv_trt_llm_request_metrics") and f'request_type="{kind}"' in line]
    assert values, "no nv_trt_llm_request_metrics on Triton's metrics endpoint"
    return sum(values)


def _slow_generation(trio: Trio) -> tuple[httpx.Response, float]:
    """A plain completion that keeps counting (a chat answer of the small model would end early)."""
    body = {"model": MODEL, "prompt": f"[{uuid.uuid4().hex[:6]}] " + ", ".join(map(str, range(1, 40))) + ",",
            "max_tokens": 1500}
    started = time.monotonic()
    response = httpx.post(f"{trio.orchestrator.http_url}/v1/completions", json=body, headers=auth(ACME_KEY),
                          timeout=120)
    return response, time.monotonic() - started


def test_slow_generation_times_out_and_the_engine_request_is_cancelled(trio: Trio) -> None:
    """The orchestrator gives up at its deadline and cancels its Triton stream; the engine frees the slot
    (the default LLM model, tensorrt_llm_bls, passes the cancellation on; Triton 2.51's ensemble would not)."""
    trio.revive_triton()
    response, elapsed = _slow_generation(trio)
    assert response.status_code == 504, response.text[:300]
    assert response.json()["error"]["type"] == "timeout"
    assert elapsed < REQUEST_TIMEOUT_S + UNARY_TIMEOUT_S + 5
    freed_s = _until(lambda: _engine_requests(trio, "active") == 0, timeout_s=15, interval_s=0.2)
    report("slow_generation", status=response.status_code, elapsed_s=round(elapsed, 2),
           request_timeout_s=REQUEST_TIMEOUT_S, engine_slot_freed_after_s=round(freed_s, 2))


def test_frozen_triton_times_out_at_the_configured_deadline(trio: Trio) -> None:
    """A Triton that accepts and never answers (SIGSTOP): the request ends at the earlier of the first-response
    and whole-request deadlines (the semantic lookup's embedding runs beside the generation, not before it).
    Last in the module: what the freeze may do to Triton afterwards must not reach the other tests."""
    group = signal_group(trio.triton.grpc_port, signal.SIGSTOP)
    try:
        started = time.monotonic()
        response = trio.post(http_chat(f"Frozen? ({uuid.uuid4().hex[:6]})"), timeout=60)
        elapsed = time.monotonic() - started
    finally:
        os.killpg(group, signal.SIGCONT)
    # Triton 2.51's Python backend may not survive the freeze (its stub heartbeat lapses; seen: SIGSEGV on thaw,
    # even seconds later: hence this test runs last). Thawed: it generates again, or it died.
    _until(lambda: not trio.triton.running() or trio.post(http_chat(f"Thawed? ({uuid.uuid4().hex[:6]})"),
                                                          timeout=30).status_code == 200, timeout_s=60, interval_s=0.5)
    survived = trio.revive_triton()
    deadline = min(FIRST_RESPONSE_TIMEOUT_S, REQUEST_TIMEOUT_S)
    report("triton_frozen", status=response.status_code, elapsed_s=round(elapsed, 2), deadline_s=deadline,
           triton_survived_thaw=survived)
    assert response.status_code == 504, response.text
    assert deadline - 0.5 <= elapsed < deadline + UNARY_TIMEOUT_S + 5
