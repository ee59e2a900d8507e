"""Bad input against the real stack: schemathesis generates requests from the HTTP API's own OpenAPI document,
hypothesis fills every field of the gRPC GenerateRequest; neither may get a 5xx / INTERNAL / UNKNOWN, refusals
name the field, and the orchestrator's memory stays bounded.

The orchestrator here caps max_tokens at 8 so that whatever valid request the fuzzers find generates briefly
on the CPU engine. Case counts: CI-sized by default, RELIABILITY_FULL=1 for the documented full run.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import grpc
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.api.proto.orchestrator.v1 import orchestrator_pb2 as pb
from orchestrator.api.proto.orchestrator.v1 import orchestrator_pb2_grpc as pb_grpc
from stack.orchestrator_process import OrchestratorProcess
from stack.triton import TritonServer
from stack.valkey import ValkeyServer
from tests.chats import MODEL
from tests.reliability.conftest import ADMIN_KEY, FULL, orchestrator_env, report
from tests.reliability.stack_probe import rss_kib

pytestmark = pytest.mark.integration

HTTP_CASES = 150 if FULL else 12  # per operation (about a dozen): the full run makes well over 1,000
GRPC_CASES = 2000 if FULL else 200
RSS_GROWTH_LIMIT_KIB = 300 * 1024
FUZZ_LIMITS = {"ORCH_MODEL__MAX_TOKENS_LIMIT": "8"}
GRPC_OK = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
           grpc.StatusCode.RESOURCE_EXHAUSTED}


@pytest.fixture(scope="module")
def fuzz_orchestrator(triton: TritonServer, valkey: ValkeyServer, tmp_path_factory: pytest.TempPathFactory
                      ) -> Iterator[OrchestratorProcess]:
    env = orchestrator_env(f"fuzz-{uuid.uuid4().hex[:8]}", **FUZZ_LIMITS)
    with OrchestratorProcess(triton.grpc_url, valkey.url, env=env,
                             log_path=tmp_path_factory.mktemp("fuzz-logs") / "orchestrator.log") as server:
        yield server


@pytest.fixture(scope="module")
def rss_before(fuzz_orchestrator: OrchestratorProcess) -> int:
    return rss_kib(fuzz_orchestrator.pid)


def test_http_api_never_answers_5xx(fuzz_orchestrator: OrchestratorProcess, rss_before: int) -> None:
    """Every operation of the served OpenAPI document, with schemathesis' generated cases (valid and not).
    (Driven through hypothesis directly: schemathesis' pytest loader does not run under pytest 9.)"""
    schema = schemathesis.openapi.from_url(f"{fuzz_orchestrator.http_url}/openapi.json")
    statuses: dict[str, dict[int, int]] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        seen = statuses.setdefault(operation.label, {})

        @settings(max_examples=HTTP_CASES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy())
        def fuzz(case: schemathesis.Case) -> None:
            response = case.call(headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=60)
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            assert response.status_code < 500, \
                f"{case.method} {case.path}: {response.status_code} {response.text[:500]}"
            if response.status_code == 400:
                assert response.json()["error"]["message"], response.text

        fuzz()
    cases = sum(n for seen in statuses.values() for n in seen.values())
    report("schemathesis", operations=len(statuses), cases=cases, statuses=statuses)
    assert len(statuses) >= 8


def _oversized_http_body_is_refused(url: str) -> None:
    import httpx

    body = {"model": MODEL, "messages": [{"role": "user", "content": "x" * 8_000_000}], "max_tokens": 4}
    response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60,
                          headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert response.status_code in (400, 413), response.text[:300]
    assert "messages" in response.json()["error"]["message"]


def test_oversized_http_body_is_refused_with_the_field_named(fuzz_orchestrator: OrchestratorProcess) -> None:
    _oversized_http_body_is_refused(fuzz_orchestrator.http_url)


int32 = st.integers(-2**31, 2**31 - 1)
texts = st.text(max_size=40) | st.sampled_from(["", " ", "\x00", "\ud7ff", "😀" * 10]) | st.just("y" * 70_000)
messages = st.builds(pb.ChatMessage, role=st.sampled_from(["system", "user", "assistant", "tool", "", "root"]) | texts,
                     content=texts, name=st.text(max_size=10))
params = st.builds(
    pb.SamplingParams,
    max_tokens=st.none() | int32 | st.sampled_from([1, 8, 9, 0, -1]),
    temperature=st.none() | st.floats(width=32, allow_nan=True, allow_infinity=True),
    top_p=st.none() | st.floats(width=32, allow_nan=True, allow_infinity=True),
    top_k=st.none() | int32,
    seed=st.none() | st.integers(-2**63, 2**63 - 1),
    stop=st.lists(texts, max_size=8),
)
controls = st.builds(pb.CacheControls, no_cache=st.booleans(), no_store=st.booleans(),
                     ttl_seconds=st.none() | int32, namespace=texts)
requests = st.builds(pb.GenerateRequest, model=st.sampled_from([MODEL, ""]) | texts,
                     messages=st.lists(messages, max_size=4), prompt=st.none() | texts, params=params, cache=controls)


def _checked(call, request) -> None:
    try:
        result = call(request)
        if not isinstance(result, pb.GenerateResponse):
            list(result)
    except grpc.RpcError as error:
        assert error.code() in GRPC_OK, f"{error.code()}: {error.details()} for {request}"
        if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
            assert ":" in error.details(), error.details()  # "<field>: <problem>"


def test_grpc_generate_fields_fuzzed(fuzz_orchestrator: OrchestratorProcess, rss_before: int) -> None:
    metadata = (("authorization", f"Bearer {ADMIN_KEY}"),)
    with grpc.insecure_channel(fuzz_orchestrator.grpc_target) as channel:
        stub = pb_grpc.OrchestratorStub(channel)

        @settings(max_examples=GRPC_CASES, deadline=None, suppress_health_check=list(HealthCheck))
        @given(request=requests, streaming=st.booleans())
        def fuzz(request: pb.GenerateRequest, streaming: bool) -> None:
            call = stub.GenerateStream if streaming else stub.Generate
            _checked(lambda r: call(r, metadata=metadata, timeout=60), request)

        fuzz()


RAW_GENERATE_BODIES = {
    "invalid utf-8": b"\x0a\x02\xff\xfe",  # field 1 (model): 2 bytes that are not UTF-8
    "truncated": b"\x12\x10\x0a",  # messages: length 16, 1 byte present
    "wrong wire type": b"\x0d\x00\x00\x00\x00",  # field 1 as fixed32
}


def _raw_generate(target: str, data: bytes) -> grpc.StatusCode:
    with grpc.insecure_channel(target) as channel:
        generate = channel.unary_unary("/orchestrator.v1.Orchestrator/Generate",
                                       request_serializer=lambda data: data, response_deserializer=lambda data: data)
        try:
            generate(data, metadata=(("authorization", f"Bearer {ADMIN_KEY}"),), timeout=30)
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


def test_grpc_malformed_and_oversized_messages_are_refused(fuzz_orchestrator: OrchestratorProcess) -> None:
    """Bytes no stub would send, an empty message and a 5 MB one: refused, and the server goes on serving."""
    target = fuzz_orchestrator.grpc_target
    codes = {name: _raw_generate(target, data) for name, data in RAW_GENERATE_BODIES.items()}
    codes["empty"] = _raw_generate(target, b"")
    codes["5 MB message"] = _raw_generate(target, pb.GenerateRequest(model=MODEL, prompt="z" * 5_000_000)
                                          .SerializeToString())
    report("grpc_malformed_bytes", **{k: v.name for k, v in codes.items()})
    assert codes["empty"] == grpc.StatusCode.INVALID_ARGUMENT
    assert codes["5 MB message"] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert grpc.StatusCode.OK not in codes.values()
    assert _raw_generate(target, pb.GenerateRequest(model="no-such-model", prompt="hi").SerializeToString()) \
        == grpc.StatusCode.INVALID_ARGUMENT


def test_grpc_undecodable_message_is_invalid_argument(fuzz_orchestrator: OrchestratorProcess) -> None:
    for name in ("invalid utf-8", "truncated"):
        assert _raw_generate(fuzz_orchestrator.grpc_target, RAW_GENERATE_BODIES[name]) \
            == grpc.StatusCode.INVALID_ARGUMENT, name


def test_memory_stays_bounded_after_fuzzing(fuzz_orchestrator: OrchestratorProcess, rss_before: int) -> None:
    after = rss_kib(fuzz_orchestrator.pid)
    report("fuzz_rss", rss_before_mib=rss_before // 1024, rss_after_mib=after // 1024)
    assert after - rss_before < RSS_GROWTH_LIMIT_KIB
