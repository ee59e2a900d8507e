"""ReplicaRouter: prefix affinity by rendezvous hashing, failover, bounded loads, round-robin, a changing replica
set, per-replica metrics, bookkeeping; the health checker."""

from __future__ import annotations

import random
import string
from collections import Counter

import pytest

from orchestrator import metrics
from orchestrator.backends.replicas import (
    DnsReplicas,
    NoReplicaAvailable,
    Placement,
    ReplicaHealthChecker,
    ReplicaRouter,
    Route,
    prefix_key,
    resolve_ipv4,
    split_host_port,
)
from orchestrator.errors import BackendUnavailable
from stack.ports import free_port

URLS = ["10.0.0.1:8001", "10.0.0.2:8001", "10.0.0.3:8001"]


def random_text(rng: random.Random, length: int) -> str:
    return "".join(rng.choice(string.ascii_letters + "  .,") for _ in range(length))


def test_prompts_sharing_the_prefix_go_to_the_same_replica() -> None:
    rng = random.Random(1)
    router = ReplicaRouter(URLS, prefix_chars=256)
    for _ in range(20):
        document = random_text(rng, 256)
        chosen = set()
        for _ in range(10):
            replica = router.pick(document + random_text(rng, rng.randint(0, 400)))
            chosen.add(replica.url)
            router.release(replica)
        assert len(chosen) == 1
    assert router.decisions == Counter({Route.AFFINITY: 200})


def test_only_the_prefix_counts() -> None:
    assert prefix_key("a" * 10 + "b", prefix_chars=10) == prefix_key("a" * 10 + "c", prefix_chars=10)
    assert prefix_key("a" * 9 + "b", prefix_chars=10) != prefix_key("a" * 9 + "c", prefix_chars=10)
    # A prompt shorter than the prefix is hashed whole.
    assert prefix_key("short one", prefix_chars=1024) != prefix_key("short two", prefix_chars=1024)


def test_distinct_prefixes_spread_evenly() -> None:
    rng = random.Random(2)
    router = ReplicaRouter(URLS)
    counts = Counter(router.ranking(random_text(rng, 40))[0].url for _ in range(3000))
    assert set(counts) == set(URLS)
    for url in URLS:
        assert 850 <= counts[url] <= 1150, counts


def test_every_router_ranks_alike_whatever_the_order_of_urls() -> None:
    """Orchestrator pods share no state: each must compute the same choice from the same replica set."""
    rng = random.Random(3)
    forward, backward = ReplicaRouter(URLS), ReplicaRouter(list(reversed(URLS)))
    for _ in range(200):
        prompt = random_text(rng, 80)
        assert [r.url for r in forward.ranking(prompt)] == [r.url for r in backward.ranking(prompt)]


def test_a_replica_going_down_moves_only_its_own_prefixes_and_they_come_back() -> None:
    rng = random.Random(4)
    router = ReplicaRouter(URLS)
    prompts = [random_text(rng, 60) for _ in range(600)]

    def assignment() -> dict[str, str]:
        result = {}
        for prompt in prompts:
            replica = router.pick(prompt)
            router.release(replica)
            result[prompt] = replica.url
        return result

    before = assignment()
    router.mark_down(URLS[1])
    during = assignment()
    assert URLS[1] not in during.values()
    moved = [p for p in prompts if before[p] != during[p]]
    assert moved and all(before[p] == URLS[1] for p in moved)
    # The moved prefixes spread over both survivors instead of piling onto one.
    assert len({during[p] for p in moved}) == 2
    assert router.decisions[Route.FAILOVER] == len(moved)
    router.mark_up(URLS[1])
    assert assignment() == before


def test_saturated_replica_overflows_to_the_least_loaded() -> None:
    router = ReplicaRouter(URLS, max_in_flight=2, load_factor=None)
    prompt = "a shared system prompt " * 10
    preferred, second, third = router.ranking(prompt)
    held = [router.pick(prompt), router.pick(prompt)]
    assert held == [preferred, preferred]
    second.in_flight = 1  # busier than the third one
    spilled = router.pick(prompt)
    assert spilled is third
    assert router.decisions[Route.OVERFLOW] == 1
    # Ties between replicas with room go to the better-ranked one.
    second.in_flight = 0
    third.in_flight = 0
    assert router.pick(prompt) is second
    # Once the preferred replica has room again, affinity resumes.
    router.release(held.pop())
    assert router.pick(prompt) is preferred


def test_when_every_replica_is_saturated_the_least_loaded_takes_it() -> None:
    router = ReplicaRouter(URLS, max_in_flight=1, load_factor=None)
    prompt = "x" * 50
    preferred, second, third = router.ranking(prompt)
    preferred.in_flight, second.in_flight, third.in_flight = 3, 1, 2
    assert router.pick(prompt) is second
    assert second.in_flight == 2
    assert router.decisions[Route.ALL_SATURATED] == 1


def test_no_healthy_replica_is_a_clear_error() -> None:
    router = ReplicaRouter(URLS[:2])
    for url in URLS[:2]:
        router.mark_down(url)
    with pytest.raises(NoReplicaAvailable, match="no healthy Triton replica"):
        router.pick("hello")
    assert all(replica.in_flight == 0 for replica in router.replicas)
    # An empty set (DNS not answered yet) is the same error, and one both APIs answer with 503 / UNAVAILABLE.
    with pytest.raises(BackendUnavailable, match=r"no healthy Triton replica \(none known yet\)"):
        ReplicaRouter().pick("hello")


def test_lease_releases_on_error_and_release_is_checked() -> None:
    router = ReplicaRouter(URLS)
    with pytest.raises(RuntimeError, match="stream broke"):
        with router.lease("prompt") as replica:
            assert replica.in_flight == 1
            raise RuntimeError("stream broke")
    assert replica.in_flight == 0
    with pytest.raises(ValueError, match="without a matching pick"):
        router.release(replica)
    with pytest.raises(ValueError, match="does not belong"):
        ReplicaRouter(URLS).release(replica)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"urls": ["a:1"], "load_factor": 0.9}, "load_factor"),
    ({"urls": ["a:1"], "policy": "random"}, "policy must be one of affinity, round_robin"),
    ({"urls": ["a:1", "b:1", "a:1"]}, "more than once: a:1"),
    ({"urls": ["a:1"], "max_in_flight": 0}, "max_in_flight"),
    ({"urls": ["a:1"], "prefix_chars": 0}, "prefix_chars"),
])
def test_bad_configuration_is_refused(kwargs: dict, message: str) -> None:
    urls = kwargs.pop("urls")
    with pytest.raises(ValueError, match=message):
        ReplicaRouter(urls, **kwargs)


def test_unknown_replica_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown replica 'nope:1'"):
        ReplicaRouter(URLS).mark_down("nope:1")


async def test_health_checker_marks_an_unreachable_replica_down() -> None:
    url = f"127.0.0.1:{free_port()}"  # nothing listens there
    router = ReplicaRouter([url])
    checker = ReplicaHealthChecker(router, interval_s=0.05, timeout_s=0.5)
    try:
        assert await checker.check_once() == {url: False}
        assert not router.replica(url).healthy
    finally:
        await checker.aclose()


def test_every_router_picks_alike_under_the_same_load() -> None:
    """Two orchestrator pods with the same set and the same loads choose the same replica for every prompt."""
    rng = random.Random(5)
    first, second = ReplicaRouter(URLS), ReplicaRouter(list(reversed(URLS)))
    for _ in range(300):
        prompt = random_text(rng, 120)
        a, b = first.pick(prompt), second.pick(prompt)
        assert a.url == b.url
        if rng.random() < 0.5:  # some requests finish, others stay in flight: the loads stay equal
            first.release(a)
            second.release(b)
    assert first.decisions == second.decisions
    assert first.decisions[Route.OVERFLOW] > 0  # the bound came into play along the way


def test_bounded_loads_spill_a_hot_prefix_and_keep_every_replica_within_the_bound() -> None:
    router = ReplicaRouter(URLS[:2], load_factor=1.25)
    prompt = "one very popular system prompt " * 40
    preferred, other = router.ranking(prompt)
    # Low load: affinity holds (ceil(1.25 * 2 / 2) = 2 may share the preferred replica)...
    assert [router.pick(prompt), router.pick(prompt)] == [preferred, preferred]
    # ...the third would make it 3 > ceil(1.25 * 3 / 2) = 2: the least-loaded replica within its bound takes it.
    assert router.pick(prompt) is other
    assert router.decisions == Counter({Route.AFFINITY: 2, Route.OVERFLOW: 1})
    for _ in range(97):
        router.pick(prompt)
        total = preferred.in_flight + other.in_flight
        assert max(preferred.in_flight, other.in_flight) <= -(-1.25 * total // 2)  # ceil(c * mean)
    assert preferred.in_flight == 63 and other.in_flight == 37  # ceil(1.25 * 100 / 2) = 63
    # Once load drains, affinity resumes.
    while preferred.in_flight:
        router.release(preferred)
    while other.in_flight:
        router.release(other)
    assert router.pick(prompt) is preferred


def test_a_placed_prefix_goes_back_to_its_holder_within_the_bound_even_against_the_hash() -> None:
    router = ReplicaRouter(URLS[:2], load_factor=1.25)
    prompt = "a long shared document " * 60
    preferred, other = router.ranking(prompt)
    held_by_other = Placement(other.url)
    assert [router.pick(prompt, placement=held_by_other) for _ in range(2)] == [other, other]
    # A third would carry 3 > ceil(1.25 * 3 / 2) = 2: the least-loaded replica takes it.
    assert router.pick(prompt, placement=held_by_other) is preferred
    assert router.decisions == Counter({Route.AFFINITY: 2, Route.OVERFLOW: 1})


def test_a_prefix_no_replica_holds_goes_to_the_fewest_held_blocks_within_the_tight_bound() -> None:
    router = ReplicaRouter(URLS[:2], load_factor=1.25)
    prompt = "a prompt that shares nothing " * 60
    preferred, other = router.ranking(prompt)
    assert router.pick(prompt, placement=Placement(None)) is preferred  # nothing held, equal loads: the rank
    router.release(preferred)
    fuller = Placement(None, {preferred.url: 40, other.url: 8})
    assert router.pick(prompt, placement=fuller) is other  # the replica with more room for the new prefix
    # The tight bound (load factor 1: ceil(1 * 2 / 2) = 1) keeps a second one off `other` while `preferred` idles,
    # where the router's own bound (ceil(1.25 * 2 / 2) = 2) would not...
    assert router.pick(prompt, placement=fuller) is preferred
    # ...and, hashing alone, both would have stacked on the preferred replica.
    assert router.pick(prompt) is preferred
    assert router.decisions == Counter({Route.NEW_PREFIX: 3, Route.AFFINITY: 1})


def test_a_new_prefix_with_every_replica_at_max_in_flight_queues_on_the_least_loaded() -> None:
    router = ReplicaRouter(URLS[:2], load_factor=1.25, max_in_flight=1)
    prompt = "nothing shared " * 80
    first = router.pick(prompt, placement=Placement(None))
    second = router.pick(prompt, placement=Placement(None, {first.url: 99}))  # the one with room, whatever it holds
    assert second is not first
    router.release(first)
    assert router.pick(prompt, placement=Placement(None, {first.url: 99})) is first
    third = router.pick(prompt, placement=Placement(None, {second.url: 99}))
    assert third.in_flight == 2  # both at the cap: one of them queues it


def test_a_placement_on_a_replica_that_is_down_or_gone_counts_as_new() -> None:
    router = ReplicaRouter(URLS, load_factor=1.25)
    prompt = "document " * 200
    holder = router.ranking(prompt)[1]
    router.mark_down(holder)
    chosen = router.pick(prompt, placement=Placement(holder.url))
    assert chosen is not holder and router.decisions == Counter({Route.NEW_PREFIX: 1})
    assert router.pick(prompt, placement=Placement("10.9.9.9:8001")) is not holder


def test_without_a_load_factor_affinity_ignores_load() -> None:
    router = ReplicaRouter(URLS, load_factor=None)
    prompt = "x" * 300
    assert {router.pick(prompt).url for _ in range(50)} == {router.ranking(prompt)[0].url}


def test_an_unhealthy_preferred_replica_fails_over_by_rank_and_its_load_bound_still_applies() -> None:
    router = ReplicaRouter(URLS, load_factor=1.0)
    prompt = "document " * 100
    first, second, third = router.ranking(prompt)
    router.mark_down(first)
    assert router.pick(prompt) is second
    assert router.pick(prompt) is third  # second would carry 2 > ceil(1.0 * 2 / 2): least-loaded instead
    assert router.decisions == Counter({Route.FAILOVER: 1, Route.OVERFLOW: 1})
    router.mark_up(first)
    assert router.pick(prompt) is first


def test_excluded_replicas_are_skipped() -> None:
    router = ReplicaRouter(URLS)
    prompt = "exclude me"
    first, second, _ = router.ranking(prompt)
    assert router.pick(prompt, exclude={first.url}) is second
    with pytest.raises(NoReplicaAvailable):
        router.pick(prompt, exclude=set(URLS))


def test_round_robin_takes_healthy_replicas_in_turn_whatever_the_prompt() -> None:
    router = ReplicaRouter(URLS, policy="round_robin")
    assert [router.pick("same prompt").url for _ in range(6)] == URLS + URLS
    router.mark_down(URLS[1])
    assert {router.pick("same prompt").url for _ in range(4)} == {URLS[0], URLS[2]}
    assert router.decisions == Counter({Route.ROUND_ROBIN: 10})


def test_a_changing_set_keeps_what_stays_and_releases_what_left_with_requests_in_flight() -> None:
    router = ReplicaRouter(URLS[:2])
    leaving, kept = router.replicas
    held = router.pick(next(p for p in map(str, range(100)) if router.ranking(p)[0] is leaving))
    assert held is leaving
    router.mark_down(kept)
    added, removed = router.set_urls([URLS[1], URLS[2]], healthy=False)
    assert [r.url for r in added] == [URLS[2]] and removed == [leaving]
    assert router.urls == [URLS[1], URLS[2]] and router.replicas[0] is kept and not kept.healthy
    assert not router.replicas[1].healthy  # a new replica waits for its first health check
    assert router.holds(leaving.url) and not router.is_active(leaving)
    router.release(held)  # its generation ends after it left
    assert not router.holds(leaving.url) and leaving.in_flight == 0
    with pytest.raises(ValueError, match="does not belong"):
        router.release(leaving)
    with pytest.raises(ValueError, match="more than once"):
        router.set_urls(["a:1", "a:1"])


def sample(name: str, **labels: str) -> float | None:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels)


def test_per_replica_metrics_follow_routing_health_and_the_set() -> None:
    urls = ["10.9.0.1:8001", "10.9.0.2:8001"]
    router = ReplicaRouter(urls, policy="round_robin")
    first = router.pick("p")
    assert sample("orchestrator_triton_replica_in_flight", replica=first.url) == 1
    assert sample("orchestrator_triton_replica_routed_total", replica=first.url, route="round_robin") == 1
    router.release(first)
    assert sample("orchestrator_triton_replica_in_flight", replica=first.url) == 0
    router.mark_down(urls[1])
    assert sample("orchestrator_triton_replica_healthy", replica=urls[1]) == 0
    assert sample("orchestrator_triton_replica_healthy", replica=urls[0]) == 1
    router.mark_up(urls[1])
    assert sample("orchestrator_triton_replica_healthy", replica=urls[1]) == 1
    # A replica that leaves the set takes its series with it.
    router.set_urls(urls[1:])
    assert sample("orchestrator_triton_replica_healthy", replica=urls[0]) is None
    assert sample("orchestrator_triton_replica_routed_total", replica=urls[0], route="round_robin") is None
    assert metrics.TRITON_REPLICA_HEALTHY.labels(urls[1])._value.get() == 1


class ProbeClient:
    """What the health checker calls on a replica's client."""

    def __init__(self, server: bool = True, model: bool = True) -> None:
        self.server, self.model = server, model
        self.models: list[str] = []

    async def is_server_ready(self, client_timeout=None) -> bool:
        if self.server is None:
            raise ConnectionError("connection refused")
        return self.server

    async def is_model_ready(self, name, client_timeout=None) -> bool:
        self.models.append(name)
        return self.model


async def test_health_checker_probes_server_and_model_on_the_clients_given_and_readmits() -> None:
    clients = {URLS[0]: ProbeClient(), URLS[1]: ProbeClient(model=False), URLS[2]: ProbeClient(server=None)}
    router = ReplicaRouter(URLS)
    checker = ReplicaHealthChecker(router, model="tensorrt_llm_bls", client_for=clients.__getitem__)
    assert await checker.check_once() == {URLS[0]: True, URLS[1]: False, URLS[2]: False}
    assert [r.url for r in router.replicas if r.healthy] == [URLS[0]]
    assert clients[URLS[0]].models == ["tensorrt_llm_bls"]
    clients[URLS[1]].model = True
    clients[URLS[2]].server = True
    assert await checker.check_once([router.replica(URLS[2])]) == {URLS[2]: True}  # only those asked for
    assert not router.replica(URLS[1]).healthy
    await checker.check_once()
    assert all(r.healthy for r in router.replicas)
    await checker.aclose()


def test_host_port_targets() -> None:
    assert split_host_port("triton.llm-stack.svc:8001") == ("triton.llm-stack.svc", 8001)
    assert split_host_port("[::1]:8001") == ("::1", 8001)
    for bad in ("triton", "triton:", ":8001", "triton:http", "triton:70000"):
        with pytest.raises(ValueError, match="is not host:port"):
            split_host_port(bad)


async def test_dns_replicas_are_every_address_and_a_failed_lookup_keeps_the_last_set() -> None:
    answers: list = [["10.0.0.2:8001", "10.0.0.1:8001", "10.0.0.1:8001"], OSError("NXDOMAIN"), []]
    asked = []

    async def resolver(host: str, port: int) -> list[str]:
        asked.append((host, port))
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    dns = DnsReplicas("triton:8001", resolver)
    assert await dns.resolve() == ["10.0.0.1:8001", "10.0.0.2:8001"]
    assert await dns.resolve() is None  # lookup failed
    assert await dns.resolve() is None  # no address
    assert asked == [("triton", 8001)] * 3


async def test_the_system_resolver_returns_ipv4_addresses_with_the_port() -> None:
    assert await resolve_ipv4("localhost", 8001) == ["127.0.0.1:8001"]
