"""Security against the real stack: tenants never see each other's answers (both layers), admin-only
endpoints, per-key rate limits, no prompts or keys in the logs, poisoned cache entries deleted and never
served, and every TCP listener of the stack on loopback and documented (docs/reliability.md).

Cache keys covering every output-affecting field is the mutation test tests/unit/test_keys.py."""

from __future__ import annotations

import uuid
from pathlib import Path

import grpc
import httpx
import msgpack
import pytest
import redis as redis_client

from orchestrator.api.proto.orchestrator.v1 import orchestrator_pb2 as pb
from orchestrator.api.proto.orchestrator.v1 import orchestrator_pb2_grpc as pb_grpc
from stack.orchestrator_process import OrchestratorProcess
from stack.triton import TritonServer
from stack.valkey import ValkeyServer
from tests.chats import http_chat
from tests.reliability.conftest import ACME_KEY, ADMIN_KEY, BETA_KEY, KEYS, LIMITED_KEY, auth
from tests.reliability.stack_probe import descendants, listener_pid, tcp_listeners

pytestmark = pytest.mark.integration

NO_STORE = {"cache-control": "no-store"}


def ask(http: httpx.Client, key: str, body: dict, headers: dict | None = None) -> httpx.Response:
    response = http.post("/v1/chat/completions", json=body, headers={**auth(key), **(headers or {})})
    assert response.status_code == 200, response.text
    return response


def test_tenants_never_see_each_others_answers_in_either_layer(http: httpx.Client) -> None:
    question = http_chat("What is the tallest mountain in the Alps?")
    paraphrase = http_chat("Which mountain in the Alps is the tallest?")
    first = ask(http, ACME_KEY, question)
    assert first.headers["x-cache"] == "miss"
    assert ask(http, ACME_KEY, question).headers["x-cache"] == "exact"
    # Positive control: within acme the paraphrase is a semantic hit, so a miss for beta means isolation.
    assert ask(http, ACME_KEY, paraphrase).headers["x-cache"] == "semantic"

    # no-store: beta's own answers must not be what it hits next.
    assert ask(http, BETA_KEY, paraphrase, NO_STORE).headers["x-cache"] == "miss"
    beta_same = ask(http, BETA_KEY, question, NO_STORE)
    assert beta_same.headers["x-cache"] == "miss"
    assert beta_same.json()["cache"]["key"] != first.json()["cache"]["key"]


def test_admin_endpoints_need_the_admin_key(orchestrator: OrchestratorProcess, http: httpx.Client) -> None:
    assert http.get("/admin/stats").status_code == 401
    assert http.get("/admin/stats", headers=auth("sk-rel-not-a-key")).status_code == 401
    assert http.get("/admin/stats", headers=auth(ACME_KEY)).status_code == 403
    assert http.post("/admin/invalidate", json={}, headers=auth(ACME_KEY)).status_code == 403
    assert http.get("/admin/stats", headers=auth(ADMIN_KEY)).status_code == 200
    with grpc.insecure_channel(orchestrator.grpc_target) as channel:
        stub = pb_grpc.OrchestratorStub(channel)
        for metadata, code in ((None, grpc.StatusCode.UNAUTHENTICATED),
                               ((("authorization", f"Bearer {ACME_KEY}"),), grpc.StatusCode.PERMISSION_DENIED)):
            with pytest.raises(grpc.RpcError) as raised:
                stub.Invalidate(pb.InvalidateRequest(), metadata=metadata, timeout=10)
            assert raised.value.code() == code
        assert stub.CacheStats(pb.CacheStatsRequest(), metadata=(("authorization", f"Bearer {ADMIN_KEY}"),),
                               timeout=10).stats is not None


def test_rate_limit_is_per_key(orchestrator: OrchestratorProcess, http: httpx.Client) -> None:
    burst = KEYS[LIMITED_KEY]["rate_limit_burst"]
    limited = [http.get("/v1/models", headers=auth(LIMITED_KEY)) for _ in range(burst + 5)]
    statuses = [r.status_code for r in limited]
    assert statuses[:burst] == [200] * burst and 429 in statuses[burst:], statuses
    refused = next(r for r in limited if r.status_code == 429).json()["error"]
    assert refused["type"] == "rate_limit_error" and "rate limit" in refused["message"]
    assert all(http.get("/v1/models", headers=auth(ACME_KEY)).status_code == 200 for _ in range(burst + 5))
    with grpc.insecure_channel(orchestrator.grpc_target) as channel:
        stub = pb_grpc.OrchestratorStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            for _ in range(burst + 5):
                stub.Embed(pb.EmbedRequest(texts=["rate"]), metadata=(("authorization", f"Bearer {LIMITED_KEY}"),),
                           timeout=30)
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_prompts_and_keys_never_reach_the_log(http: httpx.Client, orchestrator_log: Path) -> None:
    secret = f"my passport number is X{uuid.uuid4().hex[:10]}"
    ask(http, ACME_KEY, http_chat(secret))
    bad_key = f"sk-rel-wrong-{uuid.uuid4().hex[:8]}"
    assert http.post("/v1/chat/completions", json=http_chat(secret), headers=auth(bad_key)).status_code == 401
    assert http.post("/v1/chat/completions", json=http_chat(secret, max_tokens=-1),
                     headers=auth(ACME_KEY)).status_code == 400
    text = orchestrator_log.read_text(errors="replace")
    assert text, "the orchestrator wrote no log at all"
    for secret_text in (secret, secret.split()[-1], bad_key, *KEYS, ADMIN_KEY):
        assert secret_text not in text, f"{secret_text!r} found in {orchestrator_log}"


def _exact_entry(redis: redis_client.Redis, prefix: str, tenant: str, key: str) -> str:
    (name,) = list(redis.scan_iter(match=f"{prefix}:exact:{{{tenant}}}:*:{key}"))
    return name.decode()


@pytest.mark.parametrize("poison", ["garbage", "wrong_types", "other_key"])
def test_poisoned_exact_entry_is_deleted_not_served(http: httpx.Client, valkey: ValkeyServer, key_prefix: str,
                                                    poison: str) -> None:
    redis = redis_client.Redis.from_url(valkey.url)
    body = http_chat(f"Name a river in Europe ({poison}).")
    # no-cache: a fresh answer (not a semantic hit on another parametrization's question), stored.
    key = ask(http, ACME_KEY, body, {"cache-control": "no-cache"}).json()["cache"]["key"]
    name = _exact_entry(redis, key_prefix, "acme", key)
    planted = "POISONED ANSWER"
    value = {
        "garbage": b"\xc1\xff not msgpack",
        "wrong_types": msgpack.packb([1, 12345, "m", 1, 1, "stop", 0.0, key]),
        "other_key": msgpack.packb([1, planted, "m", 1, 1, "stop", 0.0, "0" * 64]),
    }[poison]
    redis.hset(name, "a", value)
    served = ask(http, ACME_KEY, body, NO_STORE)
    assert served.headers["x-cache"] != "exact"
    content = served.json()["choices"][0]["message"]["content"]
    assert planted not in content and content != "12345"
    assert not redis.exists(name), "the poisoned entry is still in Redis"


def test_poisoned_semantic_entry_is_deleted_not_served(http: httpx.Client, valkey: ValkeyServer,
                                                       key_prefix: str) -> None:
    redis = redis_client.Redis.from_url(valkey.url)
    ask(http, BETA_KEY, http_chat("How many legs does a spider have?"))
    paraphrase = http_chat("A spider has how many legs?")
    assert ask(http, BETA_KEY, paraphrase, {"cache-control": "no-store"}).headers["x-cache"] == "semantic"
    names = list(redis.scan_iter(match=f"{key_prefix}:sem:{{beta}}:*"))
    assert names
    for name in names:
        redis.hset(name, "answer", '{"text": 7}')
    served = ask(http, BETA_KEY, paraphrase, NO_STORE)
    assert served.headers["x-cache"] == "miss"
    assert not any(redis.exists(name) for name in names)


def test_every_listener_of_the_stack_is_loopback_and_documented(orchestrator: OrchestratorProcess,
                                                                 triton: TritonServer, valkey: ValkeyServer) -> None:
    documented = {
        orchestrator.http_port: "orchestrator HTTP (API key)",
        orchestrator.grpc_port: "orchestrator gRPC (API key)",
        triton.http_port: "Triton HTTP (no auth, loopback)",
        triton.grpc_port: "Triton gRPC (no auth, loopback)",
        triton.metrics_port: "Triton metrics (no auth, loopback)",
        valkey.port: "Valkey (no auth, loopback)",
    }
    pids = set()
    for port in (orchestrator.http_port, triton.grpc_port, valkey.port):
        pids |= descendants(listener_pid(port))
    ours = [listener for listener in tcp_listeners() if listener.pid in pids]
    assert {listener.port for listener in ours} == set(documented), ours
    assert all(listener.loopback for listener in ours), ours
    # xllamacpp's own HTTP server (inside Triton's tensorrt_llm stub) is on a Unix socket with a random key:
    # no TCP port is among the listeners above.
