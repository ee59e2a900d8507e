"""Routing generations across Triton replicas: prefix affinity with bounded loads, health, DNS discovery.

TensorRT-LLM reuses the KV blocks of a prompt prefix only on the replica that computed them, so requests that
share a prefix should land on the same replica. `ReplicaRouter` ranks the replicas by rendezvous (highest
random weight) hashing on a key derived from the first `prefix_chars` characters of the prompt, and sends the
request to the best-ranked healthy replica. Rendezvous hashing needs no ring and no shared state between
orchestrator pods: every pod computes the same ranking from the same replica set, and when a replica goes
down only its keys move, spread evenly over the others (each key to its second-ranked replica, the same on
every pod), and come back when it returns.

Why text and not token ids: the orchestrator sends text to Triton (tokenization happens inside Triton's BLS or
`preprocessing` model), so token ids would cost a second tokenization per request just to route it.
Identical leading text gives identical leading tokens (byte-level BPE splits on whitespace and punctuation
first, so only the last pre-token at the cut may differ), so a text prefix names the same KV blocks. With
~4 characters per token the default 1,024 characters cover ~256 tokens, eight 32-token KV blocks (the
profiles' tokens_per_block): enough to get past a shared chat-template header and into the system prompt or
document that makes a prefix worth reusing. A prompt shorter than that is hashed whole; it has little to reuse
anyway (a conversation whose earlier turns are shorter than the prefix changes key from turn to turn).

Load: consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam, SODA 2018). With `load_factor`
c, a replica is over its bound when it already carries ceil(c * (T + 1) / n) requests, T being the requests in
flight on the n healthy replicas (through this router); the request then goes to the least-loaded healthy
replica within its bound (ties broken by rank). No replica carries more than c times the mean, and at least
one is always within the bound, so a hot prefix spills over instead of queueing on one replica while the
others idle. `max_in_flight` optionally caps every replica in absolute terms as well (e.g. the engine's
batch size); when every healthy replica is at that cap, the least-loaded one takes the request (Triton
queues it). Each orchestrator pod counts only its own requests, so the bound holds per pod.

With a table of prefix placements (orchestrator/backends/placements.py, shared by the pods through Redis) the
router knows more than the hash: `pick(prompt, placement=...)` sends a prefix that a replica holds back to that
replica (within the bound). A prefix that no replica holds has nothing to reuse anywhere, so it gets the tight
bound (load factor 1: no replica above the mean after it), and among the replicas within that bound the one
that holds the fewest KV blocks according to the table (ties: fewer in flight, then rank). That spreads new
prefixes by the cache they will occupy, not only by the requests in flight at the moment they arrive, which
leaves every replica's share of documents even (SGLang's cache-aware router places unmatched requests on the
worker with the smallest radix tree for the same reason). Without the table (`placement=None`: none
configured, or Redis unavailable) routing is the rendezvous hashing above.

The `round_robin` policy ignores prompts and loads: each request goes to the next healthy replica (the
baseline that scripts/bench/prefix_routing.py measures affinity against).

`pick`/`release` (or the `lease` context manager), `mark_down`/`mark_up` and `set_urls` are pure and
synchronous: call them from one event loop. They keep the per-replica Prometheus series up to date.
`ReplicaHealthChecker` probes the replicas over gRPC with tritonclient and marks them up or down;
`DnsReplicas` turns a DNS name (a Kubernetes headless Service) into the replica set.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import socket
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal, get_args

from tritonclient.grpc import aio as grpcclient

from orchestrator import metrics
from orchestrator.errors import BackendUnavailable

log = logging.getLogger(__name__)

#: Characters of the prompt that choose the replica (~256 tokens, eight 32-token KV blocks).
DEFAULT_PREFIX_CHARS = 1024
#: Bounded loads' c: no replica above 1.25x the mean load (the paper's and common practice's value).
DEFAULT_LOAD_FACTOR = 1.25

Policy = Literal["affinity", "round_robin"]
POLICIES: tuple[str, ...] = get_args(Policy)


class NoReplicaAvailable(BackendUnavailable):
    """No healthy replica is known; both APIs answer 503 / UNAVAILABLE."""


class Route(str, Enum):
    """Why a replica was chosen (counted in `ReplicaRouter.decisions` and the routed-requests metric)."""

    AFFINITY = "affinity"  # the replica holding the prefix (placement), or else the best-ranked replica of all
    NEW_PREFIX = "new_prefix"  # no healthy replica holds the prefix (placement): the least-loaded one
    FAILOVER = "failover"  # the best-ranked one was down (or already failed this request): the best-ranked healthy one
    OVERFLOW = "overflow"  # the holder or preferred replica was over its bound: the least-loaded one within it
    ALL_SATURATED = "all_saturated"  # every healthy replica was at max_in_flight: the least-loaded one
    ROUND_ROBIN = "round_robin"  # the round_robin policy's next replica


@dataclass(frozen=True)
class Placement:
    """What the shared table (orchestrator/backends/placements.py) says about a prompt: the replica that last
    computed its longest known prefix (None when no replica has computed any of it recently), and how many KV
    blocks each replica has been given recently (replicas missing from `held` hold none)."""

    url: str | None
    held: Mapping[str, int] = field(default_factory=dict)


@dataclass(eq=False)
class Replica:
    """One Triton server: its gRPC url ("host:port"), health and requests in flight through this router."""

    url: str
    healthy: bool = True
    in_flight: int = 0


def prefix_key(prompt: str, prefix_chars: int = DEFAULT_PREFIX_CHARS) -> bytes:
    """The digest that chooses a replica: a hash of the prompt's first `prefix_chars` characters."""
    return hashlib.blake2b(prompt[:prefix_chars].encode("utf-8"), digest_size=16).digest()


def rendezvous_score(url: str, key: bytes) -> int:
    """Highest-random-weight score of one replica for one key."""
    return int.from_bytes(hashlib.blake2b(url.encode("utf-8") + b"\0" + key, digest_size=8).digest(), "big")


class ReplicaRouter:
    """Chooses a Triton replica per request: prefix affinity first, load when the preferred one is over its
    bound (or round-robin, with `policy="round_robin"`)."""

    def __init__(self, urls: Iterable[str] = (), *, policy: Policy = "affinity",
                 load_factor: float | None = DEFAULT_LOAD_FACTOR, max_in_flight: int | None = None,
                 prefix_chars: int = DEFAULT_PREFIX_CHARS) -> None:
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, not {policy!r}")
        if load_factor is not None and load_factor < 1:
            raise ValueError("load_factor must be at least 1 (or None for no relative bound)")
        if max_in_flight is not None and max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1 (or None for no limit)")
        if prefix_chars < 1:
            raise ValueError("prefix_chars must be at least 1")
        self.policy = policy
        self.load_factor = load_factor
        self.max_in_flight = max_in_flight
        self.prefix_chars = prefix_chars
        self.decisions: Counter[Route] = Counter()
        self.replicas: list[Replica] = []
        self._by_url: dict[str, Replica] = {}
        #: Replicas that left the set while requests were still in flight on them, until those end.
        self._retired: dict[str, Replica] = {}
        self._turn = 0
        self.set_urls(urls)

    # The replica set ---------------------------------------------------------------------------------------------

    def set_urls(self, urls: Iterable[str], *, healthy: bool = True) -> tuple[list[Replica], list[Replica]]:
        """Make `urls` the replica set (in this order); returns (added, removed). Replicas that stay keep their
        health and load; new ones start `healthy` (False: wait for a health check); a removed one with requests
        in flight is still released normally."""
        urls = list(urls)
        duplicates = sorted(url for url, n in Counter(urls).items() if n > 1)
        if duplicates:
            raise ValueError(f"urls: listed more than once: {', '.join(duplicates)}")
        wanted = set(urls)
        removed = [replica for replica in self.replicas if replica.url not in wanted]
        for replica in removed:
            _forget_series(replica.url)
            if replica.in_flight:
                self._retired[replica.url] = replica
        added, replicas = [], []
        for url in urls:
            replica = self._by_url.get(url) or self._retired.pop(url, None)
            if replica is None:
                replica = Replica(url, healthy=healthy)
                added.append(replica)
            replicas.append(replica)
        self.replicas, self._by_url = replicas, {replica.url: replica for replica in replicas}
        for replica in replicas:
            _publish(replica)
        return added, removed

    @property
    def urls(self) -> list[str]:
        return [replica.url for replica in self.replicas]

    def is_active(self, replica: Replica) -> bool:
        """Whether `replica` is (still) in the set."""
        return self._by_url.get(replica.url) is replica

    def holds(self, url: str) -> bool:
        """Whether `url` is in the set or still has requests in flight from before it left."""
        return url in self._by_url or url in self._retired

    def replica(self, url: str) -> Replica:
        try:
            return self._by_url[url]
        except KeyError:
            raise ValueError(f"unknown replica {url!r}") from None

    # Routing -----------------------------------------------------------------------------------------------------

    def ranking(self, prompt: str) -> list[Replica]:
        """Every replica, healthy or not, best first for this prompt's prefix."""
        key = prefix_key(prompt, self.prefix_chars)
        return sorted(self.replicas, key=lambda r: rendezvous_score(r.url, key), reverse=True)

    def bound(self, candidates: Collection[Replica], load_factor: float | None = None) -> int | None:
        """Bounded loads: the most requests one of `candidates` may carry before the next one goes elsewhere
        (at `load_factor`, the router's own by default)."""
        load_factor = self.load_factor if load_factor is None else load_factor
        if load_factor is None or not candidates:
            return None
        total = sum(replica.in_flight for replica in candidates)
        # The epsilon keeps float noise (1.1 * 10 = 11.000000000000002) from raising the bound by one.
        return max(1, math.ceil(load_factor * (total + 1) / len(candidates) - 1e-9))

    def saturated(self, replica: Replica) -> bool:
        """At `max_in_flight`, whatever the others carry."""
        return self.max_in_flight is not None and replica.in_flight >= self.max_in_flight

    def pick(self, prompt: str, exclude: Collection[str] = (), placement: Placement | None = None) -> Replica:
        """Choose a replica for `prompt` (none of the urls in `exclude`) and count the request in flight there;
        `release` it when done. `placement` is what the shared table says about the prompt's prefix (None:
        no table to ask)."""
        candidates = [replica for replica in self.replicas if replica.healthy and replica.url not in exclude]
        if not candidates:
            known = ", ".join(self._by_url) or "none known yet"
            raise NoReplicaAvailable(f"no healthy Triton replica ({known})")
        if self.policy == "round_robin":
            chosen, route = candidates[self._turn % len(candidates)], Route.ROUND_ROBIN
            self._turn += 1
        else:
            chosen, route = self._by_affinity(prompt, candidates, placement)
        chosen.in_flight += 1
        self.decisions[route] += 1
        metrics.TRITON_REPLICA_ROUTED.labels(chosen.url, route.value).inc()
        metrics.TRITON_REPLICA_IN_FLIGHT.labels(chosen.url).set(chosen.in_flight)
        return chosen

    def _by_affinity(self, prompt: str, candidates: list[Replica],
                     placement: Placement | None) -> tuple[Replica, Route]:
        ranked = self.ranking(prompt)
        allowed = set(map(id, candidates))
        ordered = [replica for replica in ranked if id(replica) in allowed]
        bound = self.bound(ordered)

        def within(replica: Replica) -> bool:
            return not self.saturated(replica) and (bound is None or replica.in_flight < bound)

        room = [replica for replica in ordered if within(replica)]
        # min() keeps the first of equals: ties go to the better-ranked replica.
        least_loaded = min(room or ordered, key=lambda replica: replica.in_flight)
        if placement is not None:
            holder = next((replica for replica in ordered if replica.url == placement.url), None)
            if holder is None:  # no replica (in the set, healthy) holds the prefix: balance is all that counts
                return self._for_new_prefix(ordered, placement.held), Route.NEW_PREFIX
            if within(holder):
                return holder, Route.AFFINITY
        else:
            preferred = ordered[0]
            if within(preferred):
                return preferred, Route.AFFINITY if preferred is ranked[0] else Route.FAILOVER
        return least_loaded, Route.OVERFLOW if room else Route.ALL_SATURATED

    def _for_new_prefix(self, ordered: list[Replica], held: Mapping[str, int]) -> Replica:
        """Among the replicas within the tight bound (none above the mean load after this request), the one
        holding the fewest KV blocks; ties go to fewer in flight, then to rank."""
        tight = self.bound(ordered, load_factor=1.0) or 1  # never None: `ordered` is not empty
        room = [replica for replica in ordered if not self.saturated(replica) and replica.in_flight < tight]
        if not room:  # every replica at max_in_flight: the least loaded queues it
            return min(ordered, key=lambda replica: replica.in_flight)
        return min(room, key=lambda replica: (held.get(replica.url, 0), replica.in_flight))

    def release(self, replica: Replica) -> None:
        """The request picked for `replica` has finished (completed, failed or cancelled)."""
        active = self.is_active(replica)
        if not active and self._retired.get(replica.url) is not replica:
            raise ValueError(f"replica {replica.url} does not belong to this router")
        if replica.in_flight <= 0:
            raise ValueError(f"replica {replica.url}: release() without a matching pick()")
        replica.in_flight -= 1
        if active:
            metrics.TRITON_REPLICA_IN_FLIGHT.labels(replica.url).set(replica.in_flight)
        elif replica.in_flight == 0:
            del self._retired[replica.url]

    @contextlib.contextmanager
    def lease(self, prompt: str) -> Iterator[Replica]:
        """`pick` on entry, `release` on exit, whatever happens in between."""
        replica = self.pick(prompt)
        try:
            yield replica
        finally:
            self.release(replica)

    # Health ------------------------------------------------------------------------------------------------------

    def mark_down(self, replica: Replica | str) -> None:
        """Stop routing to a replica (a failed health check, or a connection error seen by a caller)."""
        self._set_health(self.replica(replica) if isinstance(replica, str) else replica, False)

    def mark_up(self, replica: Replica | str) -> None:
        self._set_health(self.replica(replica) if isinstance(replica, str) else replica, True)

    def _set_health(self, replica: Replica, healthy: bool) -> None:
        if replica.healthy != healthy and self.is_active(replica):
            if healthy:
                log.info("Triton replica %s is up", replica.url)
            else:
                log.warning("Triton replica %s marked down", replica.url)
        replica.healthy = healthy
        if self.is_active(replica):
            metrics.TRITON_REPLICA_HEALTHY.labels(replica.url).set(int(healthy))


def _publish(replica: Replica) -> None:
    metrics.TRITON_REPLICA_HEALTHY.labels(replica.url).set(int(replica.healthy))
    metrics.TRITON_REPLICA_IN_FLIGHT.labels(replica.url).set(replica.in_flight)


def _forget_series(url: str) -> None:
    """A replica that left the set: drop its series, so a churning set (pod IPs) does not grow them forever."""
    for family in (metrics.TRITON_REPLICA_HEALTHY, metrics.TRITON_REPLICA_IN_FLIGHT,
                  metrics.TRITON_REPLICA_UNAVAILABLE):
        with contextlib.suppress(KeyError):
            family.remove(url)
    for route in Route:
        with contextlib.suppress(KeyError):
            metrics.TRITON_REPLICA_ROUTED.remove(url, route.value)


class ReplicaHealthChecker:
    """Probes every replica's readiness over gRPC (`is_server_ready`, and `is_model_ready(model)` when a
    model is named) and marks it up or down; `start()` repeats that every `interval_s` until `aclose()`.

    `client_for(url)` supplies the client of each replica (the one its generations use, so the probe sees that
    channel); without it the checker opens and closes its own."""

    def __init__(self, router: ReplicaRouter, *, model: str | None = None, interval_s: float = 2.0,
                 timeout_s: float = 1.0,
                 client_for: Callable[[str], grpcclient.InferenceServerClient] | None = None) -> None:
        if interval_s <= 0 or timeout_s <= 0:
            raise ValueError("interval_s and timeout_s must be positive")
        self.router = router
        self.model = model
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._client_for = client_for
        self._clients: dict[str, grpcclient.InferenceServerClient] = {}
        self._task: asyncio.Task[None] | None = None

    def _client(self, url: str) -> grpcclient.InferenceServerClient:
        if self._client_for is not None:
            return self._client_for(url)
        if url not in self._clients:
            self._clients[url] = grpcclient.InferenceServerClient(url)
        return self._clients[url]

    async def _ready(self, replica: Replica) -> bool:
        try:
            client = self._client(replica.url)
            if not await client.is_server_ready(client_timeout=self.timeout_s):
                return False
            return self.model is None or await client.is_model_ready(self.model, client_timeout=self.timeout_s)
        except Exception as error:  # noqa: BLE001 - any failure to answer means "not ready"
            log.debug("health check of %s failed: %s", replica.url, error)
            return False

    async def check_once(self, replicas: Iterable[Replica] | None = None) -> dict[str, bool]:
        """Probe the replicas (all of the set by default) concurrently, update the router, return {url: ready}."""
        targets = list(self.router.replicas if replicas is None else replicas)
        results = await asyncio.gather(*(self._ready(replica) for replica in targets))
        for replica, ready in zip(targets, results, strict=True):
            (self.router.mark_up if ready else self.router.mark_down)(replica)
        for url in [url for url in self._clients if not self.router.holds(url)]:
            await self._clients.pop(url).close()
        return {replica.url: ready for replica, ready in zip(targets, results, strict=True)}

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.check_once()

    async def start(self) -> None:
        """Check once now (so the first request sees real health), then keep checking in the background."""
        await self.check_once()
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="triton-replica-health")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.close()


#: (host, port) -> the replica urls behind them.
Resolver = Callable[[str, int], Awaitable[list[str]]]


def split_host_port(target: str) -> tuple[str, int]:
    """"name:port" -> (name, port); ValueError naming what is wrong."""
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{target!r} is not host:port")
    return host.strip("[]"), int(port)


async def resolve_ipv4(host: str, port: int) -> list[str]:
    """Every A record of `host`, as sorted "address:port" urls (the system resolver, off the event loop)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, family=socket.AF_INET,
                                                         type=socket.SOCK_STREAM)
    return sorted({f"{info[4][0]}:{port}" for info in infos})


class DnsReplicas:
    """The replicas behind one DNS name, e.g. a Kubernetes headless Service ("triton:8001"), which resolves to
    the address of every ready pod. Resolved on demand; the caller repeats it on a timer."""

    def __init__(self, target: str, resolver: Resolver = resolve_ipv4) -> None:
        self.target = target
        self.host, self.port = split_host_port(target)
        self.resolver = resolver

    async def resolve(self) -> list[str] | None:
        """The replica urls now, or None when the lookup failed or found nothing (keep the last set: health
        checks take replicas that really went away out of it)."""
        try:
            urls = await self.resolver(self.host, self.port)
        except OSError as error:  # socket.gaierror included
            log.warning("resolving Triton replicas %s failed: %s", self.target, error)
            return None
        if not urls:
            log.warning("resolving Triton replicas %s found no address", self.target)
            return None
        return sorted(set(urls))
