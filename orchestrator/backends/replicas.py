"""Prefix-affinity routing across Triton replicas.

TensorRT-LLM reuses the KV blocks of a prompt prefix only on the replica that computed them, so requests that
share a prefix should land on the same replica. `ReplicaRouter` ranks the replicas by rendezvous (highest
random weight) hashing on a key derived from the first `prefix_chars` characters of the prompt, and sends the
request to the best-ranked healthy replica. Rendezvous hashing needs no ring and no shared state between
orchestrator pods: every pod computes the same ranking, and when a replica goes down only its keys move,
spread evenly over the others, and come back when it returns.

Why text and not token ids: the orchestrator sends text to the `ensemble` (tokenization happens inside
Triton's `preprocessing` model), so token ids would cost a second tokenization per request just to route it.
Identical leading text gives identical leading tokens (byte-level BPE splits on whitespace and punctuation
first, so only the last pre-token at the cut may differ), so a text prefix names the same KV blocks. With
~4 characters per token the default 1,024 characters cover ~256 tokens, eight 32-token KV blocks (the
profiles' tokens_per_block): enough to get past a shared chat-template header and into the system prompt or
document that makes a prefix worth reusing. A prompt shorter than that is hashed whole; it has little to reuse anyway.

Load: an LLM engine batches requests internally, so up to its batch size more requests on one replica cost
little, while beyond it they queue and the wait outweighs the prefill saved. A replica with `max_in_flight`
requests in flight is saturated; the request then goes to the least-loaded healthy replica that is not
(ties broken by rank), and when every replica is saturated, to the least-loaded one (Triton queues it).

`pick`/`release` (or the `lease` context manager) and `mark_down`/`mark_up` are pure and synchronous:
call them from one event loop. `ReplicaHealthChecker` probes the replicas over gRPC with tritonclient and
marks them up or down.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum

from tritonclient.grpc import aio as grpcclient

log = logging.getLogger(__name__)

#: Characters of the prompt that choose the replica (~256 tokens, eight 32-token KV blocks).
DEFAULT_PREFIX_CHARS = 1024


class NoReplicaAvailable(RuntimeError):
    """Every replica is marked down; the caller answers 503 / UNAVAILABLE."""


class Route(str, Enum):
    """Why a replica was chosen (counted in `ReplicaRouter.decisions`)."""

    AFFINITY = "affinity"  # the best-ranked replica of all
    FAILOVER = "failover"  # the best-ranked one was down: the best-ranked healthy replica
    OVERFLOW = "overflow"  # the preferred replica was saturated: the least-loaded one that is not
    ALL_SATURATED = "all_saturated"  # every healthy replica was saturated: the least-loaded one


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
    """Chooses a Triton replica per request: prefix affinity first, load when the preferred one is full."""

    def __init__(self, urls: Iterable[str], *, max_in_flight: int | None = None,
                 prefix_chars: int = DEFAULT_PREFIX_CHARS) -> None:
        self.replicas = [Replica(url) for url in urls]
        if not self.replicas:
            raise ValueError("urls: at least one Triton replica is needed")
        duplicates = sorted(url for url, n in Counter(r.url for r in self.replicas).items() if n > 1)
        if duplicates:
            raise ValueError(f"urls: listed more than once: {', '.join(duplicates)}")
        if max_in_flight is not None and max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1 (or None for no limit)")
        if prefix_chars < 1:
            raise ValueError("prefix_chars must be at least 1")
        self.max_in_flight = max_in_flight
        self.prefix_chars = prefix_chars
        self.decisions: Counter[Route] = Counter()
        self._by_url = {replica.url: replica for replica in self.replicas}

    def ranking(self, prompt: str) -> list[Replica]:
        """Every replica, healthy or not, best first for this prompt's prefix."""
        key = prefix_key(prompt, self.prefix_chars)
        return sorted(self.replicas, key=lambda r: rendezvous_score(r.url, key), reverse=True)

    def saturated(self, replica: Replica) -> bool:
        return self.max_in_flight is not None and replica.in_flight >= self.max_in_flight

    def pick(self, prompt: str) -> Replica:
        """Choose a replica for `prompt` and count the request in flight there; `release` it when done."""
        ranked = self.ranking(prompt)
        healthy = [replica for replica in ranked if replica.healthy]
        if not healthy:
            raise NoReplicaAvailable(f"no healthy Triton replica among {', '.join(self._by_url)}")
        preferred = healthy[0]
        if not self.saturated(preferred):
            chosen, route = preferred, Route.AFFINITY if preferred is ranked[0] else Route.FAILOVER
        else:
            room = [replica for replica in healthy if not self.saturated(replica)]
            # min() keeps the first of equals: ties go to the better-ranked replica.
            chosen = min(room or healthy, key=lambda replica: replica.in_flight)
            route = Route.OVERFLOW if room else Route.ALL_SATURATED
        chosen.in_flight += 1
        self.decisions[route] += 1
        return chosen

    def release(self, replica: Replica) -> None:
        """The request picked for `replica` has finished (completed, failed or cancelled)."""
        if self._by_url.get(replica.url) is not replica:
            raise ValueError(f"replica {replica.url} does not belong to this router")
        if replica.in_flight <= 0:
            raise ValueError(f"replica {replica.url}: release() without a matching pick()")
        replica.in_flight -= 1

    @contextlib.contextmanager
    def lease(self, prompt: str) -> Iterator[Replica]:
        """`pick` on entry, `release` on exit, whatever happens in between."""
        replica = self.pick(prompt)
        try:
            yield replica
        finally:
            self.release(replica)

    def replica(self, url: str) -> Replica:
        try:
            return self._by_url[url]
        except KeyError:
            raise ValueError(f"unknown replica {url!r}") from None

    def mark_down(self, replica: Replica | str) -> None:
        """Stop routing to a replica (a failed health check, or a connection error seen by a caller)."""
        target = self.replica(replica) if isinstance(replica, str) else replica
        if target.healthy:
            log.warning("Triton replica %s marked down", target.url)
        target.healthy = False

    def mark_up(self, replica: Replica | str) -> None:
        target = self.replica(replica) if isinstance(replica, str) else replica
        if not target.healthy:
            log.info("Triton replica %s back up", target.url)
        target.healthy = True


class ReplicaHealthChecker:
    """Probes every replica's readiness over gRPC (`is_server_ready`, and `is_model_ready(model)` when a
    model is named) and marks it up or down; `start()` repeats that every `interval_s` until `aclose()`."""

    def __init__(self, router: ReplicaRouter, *, model: str | None = None, interval_s: float = 2.0,
                 timeout_s: float = 1.0) -> None:
        if interval_s <= 0 or timeout_s <= 0:
            raise ValueError("interval_s and timeout_s must be positive")
        self.router = router
        self.model = model
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._clients: dict[str, grpcclient.InferenceServerClient] = {}
        self._task: asyncio.Task[None] | None = None

    def _client(self, url: str) -> grpcclient.InferenceServerClient:
        if url not in self._clients:
            self._clients[url] = grpcclient.InferenceServerClient(url)
        return self._clients[url]

    async def _ready(self, replica: Replica) -> bool:
        client = self._client(replica.url)
        try:
            if not await client.is_server_ready(client_timeout=self.timeout_s):
                return False
            return self.model is None or await client.is_model_ready(self.model, client_timeout=self.timeout_s)
        except Exception as error:  # noqa: BLE001 - any failure to answer means "not ready"
            log.debug("health check of %s failed: %s", replica.url, error)
            return False

    async def check_once(self) -> dict[str, bool]:
        """Probe every replica concurrently, update the router, return {url: ready}."""
        results = await asyncio.gather(*(self._ready(replica) for replica in self.router.replicas))
        for replica, ready in zip(self.router.replicas, results, strict=True):
            (self.router.mark_up if ready else self.router.mark_down)(replica)
        return {replica.url: ready for replica, ready in zip(self.router.replicas, results, strict=True)}

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
