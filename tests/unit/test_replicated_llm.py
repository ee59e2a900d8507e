"""ReplicatedLLM without servers: the backend the service builds from the triton settings, the replica set from
settings or DNS, health on a timer, failover on an unreachable replica, one TritonLLM (and channel) per replica;
and the settings that configure it."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from pydantic import ValidationError
from prometheus_client import REGISTRY

from orchestrator.backends.replicas import NoReplicaAvailable, Placement, Route
from orchestrator.backends.replicated_llm import ReplicatedLLM, channel_args, llm_backend
from orchestrator.backends.triton_llm import TritonLLM
from orchestrator.config import ModelSettings, Settings, TritonSettings, UnknownSettingError
from orchestrator.errors import BackendUnavailable
from orchestrator.schemas import SamplingParams
from tests.unit.test_service_triton_llm import FakeClient, StoppingClient, response, rpc_error

A, B, C = "10.1.0.1:8001", "10.1.0.2:8001", "10.1.0.3:8001"
OK = [(response(b"ok"), None), (response(None, final=True), None)]


class Readiness:
    """Triton's readiness calls, answering `ready` (None: the connection fails)."""

    ready: bool | None = True
    closed = False

    async def is_server_ready(self, client_timeout=None) -> bool:
        if self.ready is None:
            raise ConnectionError("connection refused")
        return self.ready

    async def is_model_ready(self, name, client_timeout=None) -> bool:
        return bool(self.ready)

    async def close(self) -> None:
        self.closed = True


class ReplicaClient(Readiness, FakeClient):
    """One replica's client: scripted generation streams (one script per call) and readiness."""


class StoppingReplica(Readiness, StoppingClient):
    """A replica whose generation runs until a stop request for it arrives."""


class Fleet:
    """`llm_factory` for ReplicatedLLM: a TritonLLM per url over that replica's fake client."""

    def __init__(self, **clients: FakeClient) -> None:
        self.clients: dict[str, FakeClient] = dict(clients)
        self.built: list[str] = []

    def __call__(self, url: str) -> TritonLLM:
        self.built.append(url)
        client = self.clients.setdefault(url, ReplicaClient())
        return TritonLLM(TritonSettings(url=url, connect_retries=0), ModelSettings(), client=client)


class Table:
    """PrefixPlacements in a dict keyed by the prompt's first 1,024 characters (None from lookup while `down`,
    like a Redis that fails)."""

    def __init__(self) -> None:
        self.placements: dict[str, str] = {}
        self.down = False

    async def lookup(self, prompt: str, urls: list[str]) -> Placement | None:
        held = {url: sum(holder == url for holder in self.placements.values()) for url in urls}
        return None if self.down else Placement(self.placements.get(prompt[:1024]), held)

    async def record(self, prompt: str, url: str) -> None:
        self.placements[prompt[:1024]] = url


def replicated(fleet: Fleet, resolver=None, placements: Table | None = None, **settings) -> ReplicatedLLM:
    return ReplicatedLLM(TritonSettings(**settings), ModelSettings(), llm_factory=fleet, resolver=resolver or _no_dns,
                         placements=placements)


async def _no_dns(host: str, port: int) -> list[str]:
    raise AssertionError("no DNS expected")


def prompt_for(backend: ReplicatedLLM, url: str) -> str:
    """A prompt whose best-ranked replica is `url`, longer than the routing prefix (so a question may follow)."""
    return next(p for p in (f"document {i} " * 100 for i in range(200)) if backend.router.ranking(p)[0].url == url)


async def text(backend: ReplicatedLLM, prompt: str, request_id: str = "") -> str:
    return "".join([d.text async for d in backend.stream(prompt, SamplingParams(), request_id)])


def test_one_url_stays_one_tritonllm_and_a_replica_set_is_routed() -> None:
    assert type(llm_backend(TritonSettings(), ModelSettings())) is TritonLLM
    backend = llm_backend(TritonSettings(replicas=[A, B]), ModelSettings())
    assert isinstance(backend, ReplicatedLLM) and backend.router.urls == [A, B]
    # Each replica has its own TritonLLM on its own channel, which reconnects at most ~1 s apart.
    assert set(backend.llms) == {A, B} and backend.llms[A].client is not backend.llms[B].client
    assert backend.llms[A].settings.url == A
    assert ("grpc.max_reconnect_backoff_ms", 1000) in channel_args(1000)
    with pytest.raises(ValueError, match="needs triton.replicas"):
        ReplicatedLLM(TritonSettings(), ModelSettings())


async def test_a_shared_prefix_goes_to_one_replica_on_its_own_channel() -> None:
    fleet = Fleet(**{A: ReplicaClient(OK, OK), B: ReplicaClient(OK, OK)})
    backend = replicated(fleet, replicas=[A, B])
    prompt = prompt_for(backend, B)
    assert await text(backend, prompt + "first question") == "ok"
    assert await text(backend, prompt + "second question") == "ok"
    assert len(fleet.clients[B].streams) == 2 and not fleet.clients[A].streams
    assert backend.router.decisions == {Route.AFFINITY: 2}
    assert all(r.in_flight == 0 for r in backend.router.replicas)
    await backend.aclose()
    assert fleet.clients[A].closed and fleet.clients[B].closed


async def test_pods_sharing_the_placement_table_follow_the_replica_that_computed_a_prefix() -> None:
    table = Table()
    fleet = Fleet(**{A: ReplicaClient(*[OK] * 4), B: ReplicaClient(*[OK] * 4)})
    first, second = replicated(fleet, placements=table, replicas=[A, B]), replicated(fleet, placements=table,
                                                                                        replicas=[A, B])
    document = prompt_for(first, A)
    busy = first.router.pick(prompt_for(first, B))  # the first pod has a generation on B already
    assert await text(first, document + "Q1") == "ok"  # a new prefix: the least-loaded replica, A
    first.router.release(busy)
    assert list(table.placements.values()) == [A]
    table.placements[next(iter(table.placements))] = B  # say B computed it (e.g. A was busy then)
    assert await text(second, document + "Q2") == "ok"  # the other pod follows the table, against the hash
    assert second.router.decisions == {Route.AFFINITY: 1} and len(fleet.clients[B].streams) == 1
    table.down = True  # no table: rendezvous hashing, as without placements
    assert await text(second, document + "Q3") == "ok"
    assert len(fleet.clients[A].streams) == 2
    await asyncio.gather(first.aclose(), second.aclose())


async def test_an_abandoned_generation_is_stopped_on_the_replica_that_holds_it() -> None:
    holder = StoppingReplica([(response(b"a"), None), (response(b"b"), None)], [(response(None, final=True), None)])
    fleet = Fleet(**{A: holder, B: ReplicaClient()})
    backend = replicated(fleet, replicas=[A, B])
    stream = backend.stream(prompt_for(backend, A), SamplingParams(), "gen-7")
    assert (await anext(stream)).text == "a"
    await stream.aclose()
    assert backend.router.replica(A).in_flight == 0
    await backend.aclose()  # waits for the stop and the generation's end, replica by replica
    generation, stop = holder.streams
    assert stop.sent[0]["request_id"] == "gen-7" and stop.sent[0]["model_name"] == "tensorrt_llm"
    assert not generation.cancelled and not generation.items  # read to its final response
    assert not fleet.clients[B].streams  # nothing went to the other replica


async def test_an_unreachable_replica_is_marked_down_and_the_request_moves_on() -> None:
    unavailable = [rpc_error(grpc.StatusCode.UNAVAILABLE)]
    fleet = Fleet(**{A: ReplicaClient(unavailable), B: ReplicaClient(OK, OK)})
    backend = replicated(fleet, replicas=[A, B])
    prompt = prompt_for(backend, A)
    await backend.start()
    before = REGISTRY.get_sample_value("orchestrator_triton_replica_unavailable_total", {"replica": A}) or 0
    assert await text(backend, prompt) == "ok"
    assert not backend.router.replica(A).healthy
    assert REGISTRY.get_sample_value("orchestrator_triton_replica_unavailable_total", {"replica": A}) == before + 1
    assert backend.router.decisions == {Route.AFFINITY: 1, Route.FAILOVER: 1}
    assert await text(backend, prompt) == "ok"  # while down, its prefixes go to the next-ranked replica
    assert len(fleet.clients[B].streams) == 2
    # The next health check finds it ready again (it was a blip): back in the set.
    await backend.health.check_once()
    assert backend.router.replica(A).healthy
    await backend.aclose()


async def test_a_failure_after_the_first_delta_is_not_retried_elsewhere() -> None:
    broken = [(response(b"half"), None), rpc_error(grpc.StatusCode.UNAVAILABLE)]
    fleet = Fleet(**{A: ReplicaClient(broken), B: ReplicaClient(OK)})
    backend = replicated(fleet, replicas=[A, B])
    received = []
    with pytest.raises(BackendUnavailable):
        async for delta in backend.stream(prompt_for(backend, A), SamplingParams()):
            received.append(delta.text)
    assert received == ["half"] and not fleet.clients[B].streams
    assert not backend.router.replica(A).healthy
    await backend.aclose()


async def test_with_every_replica_down_requests_fail_fast_with_503_and_ready_is_false() -> None:
    down = ReplicaClient()
    down.ready = None
    fleet = Fleet(**{A: down, B: ReplicaClient(OK)})
    fleet.clients[B].ready = False
    backend = replicated(fleet, replicas=[A, B])
    assert not await backend.ready()
    with pytest.raises(NoReplicaAvailable) as error:
        await text(backend, "hello")
    assert error.value.http_status == 503 and error.value.grpc_code == "UNAVAILABLE"
    fleet.clients[B].ready = True
    await backend.health.check_once()
    assert await backend.ready() and await text(backend, "hello") == "ok"
    await backend.aclose()


async def test_the_health_timer_takes_a_dead_replica_out_within_its_interval_and_readmits_it() -> None:
    fleet = Fleet(**{A: ReplicaClient(), B: ReplicaClient()})
    backend = replicated(fleet, replicas=[A, B], health_interval_s=0.05, health_timeout_s=0.05)
    assert await backend.ready()

    async def until(condition) -> float:
        started = time.monotonic()
        async with asyncio.timeout(2):
            while not condition():
                await asyncio.sleep(0.01)
        return time.monotonic() - started

    fleet.clients[A].ready = None  # dies
    assert await until(lambda: not backend.router.replica(A).healthy) < 0.5
    fleet.clients[A].ready = True  # back
    assert await until(lambda: backend.router.replica(A).healthy) < 0.5
    await backend.aclose()


async def test_dns_sets_the_replicas_checks_new_ones_first_and_closes_departed_ones_when_idle() -> None:
    answers = [[A, B], [B, C]]
    asked = []

    async def resolver(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return answers[0] if len(answers) == 1 else answers.pop(0)

    held = asyncio.Event()
    fleet = Fleet(**{A: ReplicaClient([held, *OK]), C: ReplicaClient()})
    fleet.clients[C].ready = False  # not ready yet when it first appears
    backend = replicated(fleet, replicas_dns="triton:8001", resolver=resolver)
    assert backend.settings.url == "triton:8001"  # the embedder's address: the Service name
    assert backend.router.urls == []
    assert await backend.ready()
    assert backend.router.urls == [A, B] and asked == [("triton", 8001)]

    # A generation is running on A when A leaves the set.
    running = asyncio.create_task(text(backend, prompt_for(backend, A)))
    await asyncio.sleep(0.01)
    await backend.refresh()
    assert backend.router.urls == [B, C]
    assert not backend.router.replica(C).healthy  # checked before it gets a request: not ready
    assert not fleet.clients[A].closed  # still serving its generation
    held.set()
    assert await running == "ok"
    await asyncio.sleep(0)  # the close runs in the background
    assert fleet.clients[A].closed and A not in backend.llms
    fleet.clients[C].ready = True
    await backend.health.check_once()
    assert backend.router.replica(C).healthy
    await backend.aclose()


async def test_dns_is_resolved_again_on_its_timer_and_a_failed_lookup_changes_nothing() -> None:
    answers: list = [[A], OSError("temporary failure in name resolution"), [A, B]]

    async def resolver(host: str, port: int) -> list[str]:
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer

    fleet = Fleet()
    backend = replicated(fleet, replicas_dns="triton:8001", resolver=resolver, dns_refresh_s=0.02)
    await backend.start()
    assert backend.router.urls == [A]
    async with asyncio.timeout(2):
        while backend.router.urls != [A, B]:
            await asyncio.sleep(0.01)
    assert fleet.built == [A, B]
    await backend.aclose()


# Settings --------------------------------------------------------------------------------------------------------

def test_replica_settings_parse_lists_and_default_the_embedding_url(monkeypatch: pytest.MonkeyPatch) -> None:
    assert TritonSettings(replicas=f"{A}, {B}").replicas == (A, B)
    assert TritonSettings(replicas=f'["{A}", "{B}"]').replicas == (A, B)
    assert TritonSettings(replicas=[A, B]).url == A
    assert TritonSettings(url="embed:8001", replicas=[A]).url == "embed:8001"
    assert TritonSettings().replicas == () and TritonSettings().url == "127.0.0.1:8001"
    monkeypatch.setenv("ORCH_TRITON__REPLICAS_DNS", "triton:8001")
    monkeypatch.setenv("ORCH_TRITON__ROUTING", "round_robin")
    monkeypatch.setenv("ORCH_TRITON__ROUTING_LOAD_FACTOR", "none")
    triton = Settings().triton
    assert (triton.replicas_dns, triton.url, triton.routing, triton.routing_load_factor) == (
        "triton:8001", "triton:8001", "round_robin", None)


@pytest.mark.parametrize(("fields", "message"), [
    ({"replicas": "a:1,a:1"}, "listed more than once: a:1"),
    ({"replicas": "triton"}, "'triton' is not host:port"),
    ({"replicas_dns": "triton"}, "'triton' is not host:port"),
    ({"replicas": ["a:1"], "replicas_dns": "t:1"}, "set replicas or replicas_dns, not both"),
    ({"routing": "random"}, "'affinity' or 'round_robin'"),
    ({"routing_load_factor": 0.5}, "greater than or equal to 1"),
    ({"health_interval_s": 0}, "greater than 0"),
    ({"replica": ["a:1"]}, "Extra inputs are not permitted"),
])
def test_bad_replica_settings_are_refused(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TritonSettings(**fields)


def test_an_unknown_triton_variable_stops_the_start_with_the_nearest_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_TRITON__REPLICA_DNS", "triton:8001")
    with pytest.raises(UnknownSettingError, match="did you mean ORCH_TRITON__REPLICAS_DNS"):
        Settings()
