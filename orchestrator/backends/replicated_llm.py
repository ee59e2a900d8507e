"""Generations across several Triton replicas, behind the same interface as one `TritonLLM`.

`llm_backend(settings.triton, settings.model)` is what the service builds: a plain `TritonLLM` on
`triton.url` when no replica set is configured (one replica, unchanged behaviour), otherwise a
`ReplicatedLLM`:

- the replica set is `triton.replicas`, or every A record of `triton.replicas_dns` (a Kubernetes headless
  Service), resolved again every `triton.dns_refresh_s`; an address that appears is health-checked before it
  gets requests, one that disappears gets no new ones and is closed once its last generation has ended;
- each replica has its own `TritonLLM` with its own gRPC channel, so everything `TritonLLM` does for a
  generation (stopping an abandoned one by request id and reading it to its end in the background) happens on
  the replica that holds it;
- `ReplicaRouter` chooses the replica per request (prefix affinity with bounded loads, or round-robin),
  told by `PrefixPlacements` (a table in Redis that every pod shares) which replica holds the prompt's prefix,
  if any; the replica chosen is written back to the table;
- `ReplicaHealthChecker` probes server and model readiness every `triton.health_interval_s` on each replica's
  own channel and takes a replica out of the set until it answers ready again; a call that finds a replica
  unreachable (BackendUnavailable) marks it down at once and, when nothing has been streamed yet, is sent to
  the next choice.

Embeddings are not routed: the embedder uses `triton.url` (the first listed replica or the DNS name unless set).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE, KeepAliveOptions
from tritonclient.grpc import aio as grpcclient

from orchestrator import metrics
from orchestrator.backends.placements import PrefixPlacements
from orchestrator.backends.replicas import (
    DnsReplicas,
    NoReplicaAvailable,
    ReplicaHealthChecker,
    ReplicaRouter,
    Resolver,
    resolve_ipv4,
)
from orchestrator.backends.triton_llm import BackendDelta, TritonLLM
from orchestrator.config import ModelSettings, TritonSettings
from orchestrator.errors import BackendUnavailable
from orchestrator.schemas import SamplingParams

log = logging.getLogger(__name__)


def llm_backend(settings: TritonSettings, model: ModelSettings,
                placements: PrefixPlacements | None = None) -> TritonLLM | ReplicatedLLM:
    """The service's LLM backend: one `TritonLLM` on `settings.url`, or a `ReplicatedLLM` when a replica set is
    configured (routing with `placements` when given)."""
    if settings.replicated:
        return ReplicatedLLM(settings, model, placements=placements)
    return TritonLLM(settings, model)


def channel_args(max_reconnect_backoff_ms: int) -> list[tuple[str, int]]:
    """tritonclient's default channel arguments, with reconnection attempts at most `max_reconnect_backoff_ms`
    apart. gRPC's default backoff grows to 120 s, so a replica that was down for a minute would otherwise stay
    out of the set for up to two more minutes after it is back (every probe fails fast until the channel
    tries again)."""
    keepalive = KeepAliveOptions()
    return [("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
            ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
            ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
            ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
            ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
            ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
            ("grpc.initial_reconnect_backoff_ms", min(1000, max_reconnect_backoff_ms)),
            ("grpc.max_reconnect_backoff_ms", max_reconnect_backoff_ms)]


class ReplicatedLLM:
    """The generative model on several Triton replicas; the service sees one backend (stream, ready, aclose).

    Starts itself on first use (first DNS lookup, first health check, then both on timers); `start()` does it
    explicitly."""

    def __init__(self, settings: TritonSettings, model: ModelSettings, *, resolver: Resolver = resolve_ipv4,
                 llm_factory: Callable[[str], TritonLLM] | None = None,
                 placements: PrefixPlacements | None = None) -> None:
        if not settings.replicated:
            raise ValueError("ReplicatedLLM needs triton.replicas or triton.replicas_dns")
        self.settings = settings
        self.model = model
        self.router = ReplicaRouter(settings.replicas, policy=settings.routing,
                                    load_factor=settings.routing_load_factor,
                                    max_in_flight=settings.replica_max_in_flight,
                                    prefix_chars=settings.routing_prefix_chars)
        self.dns = DnsReplicas(settings.replicas_dns, resolver) if settings.replicas_dns else None
        self.placements = placements if settings.routing == "affinity" else None
        self._llm_factory = llm_factory or self._new_llm
        #: One TritonLLM per replica in the set, or that left it with generations still running.
        self.llms: dict[str, TritonLLM] = {}
        self.health = ReplicaHealthChecker(self.router, model=settings.llm_model,
                                           interval_s=settings.health_interval_s,
                                           timeout_s=settings.health_timeout_s,
                                           client_for=lambda url: self.llms[url].client)
        self._starting: asyncio.Future[None] | None = None
        self._dns_task: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task] = set()
        #: Placements being written (in the background: a request does not wait for Redis to store one).
        self._recording: set[asyncio.Task] = set()
        self._sync_llms()

    def _new_llm(self, url: str) -> TritonLLM:
        backoff_ms = max(100, int(self.settings.health_interval_s * 1000))
        client = grpcclient.InferenceServerClient(url, channel_args=channel_args(backoff_ms))
        return TritonLLM(self.settings.model_copy(update={"url": url}), self.model, client=client)

    def _sync_llms(self) -> None:
        """A TritonLLM for every replica in the set; close those of replicas that left it and are idle."""
        for replica in self.router.replicas:
            if replica.url not in self.llms:
                self.llms[replica.url] = self._llm_factory(replica.url)
        for url in [url for url in self.llms if not self.router.holds(url)]:
            task = asyncio.get_running_loop().create_task(self.llms.pop(url).aclose())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    # Lifecycle ---------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Resolve the set (DNS), check every replica once, then keep doing both in the background."""
        if self.dns is not None:
            await self.refresh()
        await self.health.start()
        if self.dns is not None and self._dns_task is None:
            self._dns_task = asyncio.create_task(self._dns_loop(), name="triton-replica-dns")

    async def _started(self) -> None:
        if self._starting is None:
            self._starting = asyncio.ensure_future(self.start())
        await asyncio.shield(self._starting)

    async def refresh(self) -> None:
        """Resolve the DNS name again and apply the answer; new replicas are checked before they get requests."""
        assert self.dns is not None
        urls = await self.dns.resolve()
        if urls is None or urls == self.router.urls:
            return
        added, removed = self.router.set_urls(urls, healthy=False)
        self._sync_llms()
        if added or removed:
            log.info("Triton replicas of %s: %s (added %s, removed %s)", self.dns.target, ", ".join(urls),
                     ", ".join(r.url for r in added) or "none", ", ".join(r.url for r in removed) or "none")
        if added:
            await self.health.check_once(added)

    async def _dns_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.dns_refresh_s)
            try:
                await self.refresh()
            except Exception:  # noqa: BLE001 - the set stays as it was; the next period tries again
                log.exception("refreshing the Triton replica set failed")

    async def ready(self) -> bool:
        """Ready while at least one replica is (as of its last health check)."""
        await self._started()
        return any(replica.healthy for replica in self.router.replicas)

    async def aclose(self) -> None:
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._starting
        if self._dns_task is not None:
            self._dns_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dns_task
            self._dns_task = None
        await self.health.aclose()
        llms, self.llms = list(self.llms.values()), {}
        await asyncio.gather(*(llm.aclose() for llm in llms), *self._closing, *self._recording)

    # Generation --------------------------------------------------------------------------------------------------

    def _record(self, prompt: str, url: str) -> None:
        if self.placements is not None:
            task = asyncio.get_running_loop().create_task(self.placements.record(prompt, url))
            self._recording.add(task)
            task.add_done_callback(self._recording.discard)

    async def stream(self, prompt: str, params: SamplingParams, request_id: str = "") -> AsyncIterator[BackendDelta]:
        """`TritonLLM.stream` on the replica the router picks. A replica found unreachable is marked down; the
        request moves to the next choice as long as nothing was streamed, and fails with the last error when
        no replica is left."""
        await self._started()
        tried: set[str] = set()
        failure: BackendUnavailable | None = None
        placement = await self.placements.lookup(prompt, self.router.urls) if self.placements is not None else None
        while True:
            try:
                replica = self.router.pick(prompt, exclude=tried, placement=placement)
            except NoReplicaAvailable as error:
                if failure is not None:  # already counted by the replica's TritonLLM
                    raise failure from error
                metrics.BACKEND_REQUESTS.labels("BackendUnavailable").inc()
                raise
            self._record(prompt, replica.url)
            streamed = False
            try:
                async with contextlib.aclosing(self.llms[replica.url].stream(prompt, params, request_id)) as deltas:
                    async for delta in deltas:
                        streamed = True
                        yield delta
                return
            except BackendUnavailable as error:
                if self.router.is_active(replica):
                    metrics.TRITON_REPLICA_UNAVAILABLE.labels(replica.url).inc()
                self.router.mark_down(replica)
                if streamed:
                    raise
                log.warning("Triton replica %s unavailable (%s); trying another", replica.url, error.message)
                tried.add(replica.url)
                failure = error
            finally:
                self.router.release(replica)
                if not self.router.holds(replica.url):
                    self._sync_llms()
