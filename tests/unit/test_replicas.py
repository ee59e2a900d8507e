"""ReplicaRouter: prefix affinity by rendezvous hashing, failover, overflow by load, bookkeeping."""

from __future__ import annotations

import random
import string
from collections import Counter

import pytest

from orchestrator.backends.replicas import (
    NoReplicaAvailable,
    ReplicaHealthChecker,
    ReplicaRouter,
    Route,
    prefix_key,
)
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
    router = ReplicaRouter(URLS, max_in_flight=2)
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
    router = ReplicaRouter(URLS, max_in_flight=1)
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
    ({"urls": []}, "at least one"),
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
