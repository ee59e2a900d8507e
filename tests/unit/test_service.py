"""The layered service with in-memory fakes for Redis, the semantic layer and Triton: layer order, policies,
single-flight, streaming, what is (never) stored, and pass-through when a cache part fails."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools

import pytest

from orchestrator import metrics
from orchestrator.backends.triton_llm import BackendDelta
from orchestrator.cache.exact import ExactCache, connect
from orchestrator.cache.types import CachedAnswer, Scope, SemanticHit
from orchestrator.config import CacheSettings, ModelSettings, RedisSettings, SemanticSettings, Settings
from orchestrator.errors import BackendUnavailable, InvalidRequest
from orchestrator.schemas import CacheControls
from orchestrator.service import CachedLLMService
from stack.ports import free_port
from tests import chats


class FakeExact:
    """ExactCache's interface over a dict."""

    def __init__(self, max_text_chars: int = 10_000) -> None:
        self.entries: dict[tuple[str, str, str], tuple[CachedAnswer, int]] = {}
        self.counts: dict[str, int] = {}
        self.max_text_chars = max_text_chars

    def fits(self, answer):
        return len(answer.text) <= self.max_text_chars

    async def get(self, tenant, namespace, key):
        found = self.entries.get((tenant, namespace, key))
        if found:
            self.counts["exact_hits"] = self.counts.get("exact_hits", 0) + 1
        return found[0] if found else None

    async def set(self, tenant, namespace, answer, ttl_s):
        self.entries[(tenant, namespace, answer.key)] = (answer, ttl_s)
        return True

    async def record(self, tenant, outcome, tokens=0):
        self.counts[outcome] = self.counts.get(outcome, 0) + 1

    async def stats(self, tenant=None):
        return {f: self.counts.get(f, 0) for f in ("exact_hits", "semantic_hits", "misses", "tokens_saved")}

    async def count_entries(self, tenant=None):
        return len(self.entries)

    async def invalidate(self, tenant=None, namespace=None, key=None):
        doomed = [k for k in self.entries if (tenant in (None, k[0]) and namespace in (None, k[1])
                                              and key in (None, k[2]))]
        for k in doomed:
            del self.entries[k]
        return len(doomed)

    async def ping(self):
        return True

    async def aclose(self):
        pass


class FakeSemantic:
    """Answers a lookup with any answer stored under the same scope (paraphrase detection is not tested
    here), or raises when told to."""

    def __init__(self, fail: bool = False) -> None:
        self.entries: dict[Scope, list[tuple[str, CachedAnswer]]] = {}
        self.fail = fail
        self.lookups = 0
        self.invalidated: list[str | None] = []

    async def lookup(self, target):
        self.lookups += 1
        if self.fail:
            raise ConnectionError("index down")
        for cached_query, answer in self.entries.get(target.scope, []):
            return SemanticHit(answer, 0.93, cached_query)
        return None

    async def store(self, target, answer, ttl_s):
        if self.fail:
            raise ConnectionError("index down")
        self.entries.setdefault(target.scope, []).append((target.query, answer))

    async def invalidate_tenant(self, tenant):
        self.invalidated.append(tenant)
        return 1

    async def invalidate_all(self):
        self.invalidated.append(None)
        return 1


class FakeBackend:
    """Streams `tokens` one per response; holds at `gate` before every token after the first `hold_after`,
    can fail after some tokens, and records calls and streams closed before their end."""

    def __init__(self, tokens=("The ", "capital ", "is ", "Paris."), fail_after: int | None = None,
                 hold_after: int = 0) -> None:
        self.tokens = tokens
        self.fail_after = fail_after
        self.hold_after = hold_after
        self.calls: list[str] = []
        self.gate: asyncio.Event | None = None
        self.closed_early = 0

    async def stream(self, prompt, params, request_id=""):
        self.calls.append(prompt)
        sent = 0
        try:
            for sent, token in enumerate(self.tokens[:params.max_tokens], 1):
                if self.gate is not None and sent > self.hold_after:
                    await self.gate.wait()
                if self.fail_after is not None and sent > self.fail_after:
                    raise BackendUnavailable("Triton went away")
                yield BackendDelta(text=token)
            final, sent = BackendDelta(text="", final=True, input_tokens=11, output_tokens=sent,
                                       kv_cache_reused_blocks=2), -1
            yield final
        finally:
            if sent != -1:
                self.closed_early += 1

    async def ready(self):
        return True

    async def aclose(self):
        pass


def make_service(backend=None, semantic=None, exact=None, **cache) -> CachedLLMService:
    """Backend calls start only after the lookups unless a test turns speculative generation on."""
    cache.setdefault("speculative_generation", False)
    settings = Settings(model=ModelSettings(name="m"), cache=CacheSettings(**cache),
                        semantic=SemanticSettings(enabled=True))
    return CachedLLMService(settings, exact or FakeExact(), backend or FakeBackend(), semantic or FakeSemantic(),
                            chat_formatter=lambda r: "|".join(f"{m.role}:{m.content}" for m in r.messages))


chat = functools.partial(chats.chat, system="Be brief.", model="m")


async def drain(stream) -> list:
    return [chunk async for chunk in stream]


async def test_miss_then_exact_hit() -> None:
    backend, exact = FakeBackend(), FakeExact()
    service = make_service(backend, exact=exact)
    first = await service.generate(chat())
    assert first.text == "The capital is Paris." and first.finish_reason == "stop"
    assert first.cache.layer == "miss" and first.usage.prompt_tokens == 11 and first.usage.completion_tokens == 4
    assert first.kv_cache_reused_blocks == 2 and first.ttft_ms is not None
    second = await service.generate(chat())
    assert second.text == first.text and second.cache.layer == "exact"
    assert second.cache.key == first.cache.key and second.cache.tokens_saved == 15
    assert len(backend.calls) == 1
    assert backend.calls[0] == "system:Be brief.|user:What is the capital of France?"


async def test_semantic_hit_within_the_same_scope_only() -> None:
    backend, semantic = FakeBackend(), FakeSemantic()
    service = make_service(backend, semantic)
    await service.generate(chat())
    await service.semantic.settle()  # the semantic store runs in the background
    paraphrase = await service.generate(chat("Which city is the capital of France?"))
    assert paraphrase.cache.layer == "semantic" and paraphrase.cache.similarity == 0.93
    other_system = await service.generate(chat("Which city is the capital of France?", system="Be verbose."))
    assert other_system.cache.layer == "miss"
    assert len(backend.calls) == 2


class SlowStoreSemantic(FakeSemantic):
    """A store that waits until the test lets it finish (the embedding after an answer takes a while)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def store(self, target, answer, ttl_s):
        await self.release.wait()
        await super().store(target, answer, ttl_s)


async def test_a_paraphrase_waits_for_the_store_of_its_scope_still_running() -> None:
    backend, semantic = FakeBackend(), SlowStoreSemantic()
    service = make_service(backend, semantic)
    await service.generate(chat())
    paraphrase = asyncio.create_task(service.generate(chat("Which city is the capital of France?")))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not paraphrase.done() and semantic.lookups == 1  # the first request's only
    semantic.release.set()
    assert (await paraphrase).cache.layer == "semantic" and len(backend.calls) == 1


async def test_the_wait_for_a_running_store_is_bounded_and_other_scopes_do_not_wait() -> None:
    backend, semantic = FakeBackend(), SlowStoreSemantic()
    service = make_service(backend, semantic)
    service.settings.semantic.store_wait_s = 0.05
    await service.generate(chat())
    other_scope = await asyncio.wait_for(service.generate(chat("Is Paris big?", system="Be verbose.")), 0.04)
    assert other_scope.cache.layer == "miss"
    paraphrase = await asyncio.wait_for(service.generate(chat("Which city is the capital of France?")), 5)
    assert paraphrase.cache.layer == "miss" and len(backend.calls) == 3
    semantic.release.set()
    await service.semantic.settle()


class SlowSemantic(FakeSemantic):
    """A lookup that waits until the test lets it finish (an embedding that takes a while)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def lookup(self, target):
        await self.release.wait()
        return await super().lookup(target)


async def test_speculative_generation_starts_the_backend_during_the_semantic_lookup() -> None:
    backend, semantic = FakeBackend(hold_after=1), SlowSemantic()
    backend.gate = asyncio.Event()
    service = make_service(backend, semantic, speculative_generation=True)
    answer = asyncio.create_task(service.generate(chat()))
    for _ in range(20):
        await asyncio.sleep(0)
    assert len(backend.calls) == 1 and semantic.lookups == 0  # the backend runs before the lookup has answered
    semantic.release.set()
    for _ in range(20):
        await asyncio.sleep(0)
    backend.gate.set()
    result = await answer
    assert result.cache.layer == "miss" and result.text == "The capital is Paris."
    await service.semantic.settle()
    assert len(backend.calls) == 1 and backend.closed_early == 0


async def test_a_semantic_hit_cancels_the_speculative_generation_and_stores_nothing_from_it() -> None:
    backend, semantic, exact = FakeBackend(), SlowSemantic(), FakeExact()
    service = make_service(backend, semantic, exact, speculative_generation=True)
    semantic.release.set()
    await service.generate(chat())
    await service.semantic.settle()
    semantic.release.clear()
    backend.gate = asyncio.Event()  # the speculative call must not finish on its own
    paraphrase = asyncio.create_task(service.generate(chat("Which city is the capital of France?")))
    for _ in range(20):
        await asyncio.sleep(0)
    assert len(backend.calls) == 2
    semantic.release.set()
    result = await paraphrase
    assert result.cache.layer == "semantic" and result.text == "The capital is Paris."
    assert backend.closed_early == 1 and len(exact.entries) == 1


async def test_a_hit_replays_as_a_stream() -> None:
    service = make_service()
    await service.generate(chat())
    chunks = await drain(service.stream(chat()))
    assert len(chunks) == 2
    assert chunks[0].cache.layer == "exact" and chunks[0].text == "The capital is Paris."
    assert chunks[1].finish_reason == "stop" and chunks[1].usage.completion_tokens == 4 and chunks[1].cache is None


async def test_a_miss_streams_tokens_as_they_come() -> None:
    backend = FakeBackend()
    backend.gate = asyncio.Event()
    service = make_service(backend)
    stream = service.stream(chat())
    next_chunk = asyncio.create_task(anext(stream))
    await asyncio.sleep(0.01)
    assert not next_chunk.done()  # nothing before the first token
    backend.gate.set()
    first = await next_chunk
    assert first.text == "The " and first.cache.layer == "miss"
    rest = await drain(stream)
    assert [c.text for c in rest] == ["capital ", "is ", "Paris.", ""]
    assert rest[-1].finish_reason == "stop" and rest[-1].usage.completion_tokens == 4
    assert all(c.cache is None for c in rest)


async def test_identical_concurrent_misses_make_one_backend_call() -> None:
    backend = FakeBackend()
    backend.gate = asyncio.Event()
    service = make_service(backend)
    joined = metrics.SINGLEFLIGHT_JOINED._value.get()
    tasks = [asyncio.create_task(service.generate(chat())) for _ in range(8)]
    streamed = asyncio.create_task(drain(service.stream(chat())))
    await asyncio.sleep(0.01)
    backend.gate.set()
    results = await asyncio.gather(*tasks)
    chunks = await streamed
    assert len(backend.calls) == 1
    assert {r.text for r in results} == {"The capital is Paris."}
    assert "".join(c.text for c in chunks) == "The capital is Paris."
    assert all(r.cache.layer == "miss" for r in results)
    assert metrics.SINGLEFLIGHT_JOINED._value.get() == joined + 8


async def test_no_cache_skips_lookup_but_stores_and_no_store_does_not_store() -> None:
    backend, exact = FakeBackend(), FakeExact()
    service = make_service(backend, exact=exact)
    await service.generate(chat())
    fresh = await service.generate(chat(), CacheControls(no_cache=True))
    assert fresh.cache.layer == "miss" and len(backend.calls) == 2
    exact.entries.clear()
    await service.generate(chat("Another question"), CacheControls(no_store=True))
    assert exact.entries == {}


async def test_ttl_and_namespace_controls() -> None:
    exact = FakeExact()
    service = make_service(exact=exact, ttl_s=100)
    await service.generate(chat(), CacheControls(ttl_s=7, namespace="docs"))
    ((tenant, namespace, _), (_, ttl)), = exact.entries.items()
    assert (tenant, namespace, ttl) == ("acme", "docs", 7)
    assert (await service.generate(chat())).cache.layer != "exact"  # other namespace
    assert (await service.generate(chat(), CacheControls(namespace="docs"))).cache.layer == "exact"


@pytest.mark.parametrize(("policy", "seed", "cached"), [("bypass", 5, False), ("seeded", None, False),
                                                        ("seeded", 5, True), ("cache", None, True)])
async def test_sampled_requests_follow_the_policy(policy: str, seed: int | None, cached: bool) -> None:
    backend, exact = FakeBackend(), FakeExact()
    service = make_service(backend, exact=exact, sampled_requests=policy)
    request = chat(temperature=0.8, seed=seed)
    await asyncio.gather(service.generate(request), service.generate(request))
    third = await service.generate(request)
    assert (third.cache.layer == "exact") == cached
    assert len(backend.calls) == (1 if cached else 3)  # not cached: not shared either


async def test_an_answer_cut_by_max_tokens_is_stored_by_default_under_its_max_tokens() -> None:
    assert CacheSettings().store_truncated
    for store_truncated, expected in ((False, 0), (True, 1)):
        exact = FakeExact()
        service = make_service(exact=exact, store_truncated=store_truncated)
        result = await service.generate(chat(max_tokens=2))
        assert result.finish_reason == "length" and result.text == "The capital "
        assert len(exact.entries) == expected
    # The same request gets the cut answer again; one allowed more tokens does not.
    assert (await service.generate(chat(max_tokens=2))).cache.layer == "exact"
    longer = await service.generate(chat(max_tokens=64))
    assert longer.cache.layer == "miss" and longer.finish_reason == "stop"


async def test_an_answer_over_the_size_cap_is_stored_in_neither_layer() -> None:
    exact, semantic = FakeExact(max_text_chars=5), FakeSemantic()
    service = make_service(exact=exact, semantic=semantic)
    assert (await service.generate(chat())).cache.layer == "miss"
    await service.generate(chat(text="What's France's capital city?"))
    assert (await service.generate(chat())).cache.layer == "miss"
    assert not exact.entries and not semantic.entries


async def test_a_failed_generation_is_not_stored_and_the_error_reaches_the_caller() -> None:
    exact, semantic = FakeExact(), FakeSemantic()
    service = make_service(FakeBackend(fail_after=2), semantic, exact)
    stream = service.stream(chat())
    received = []
    with pytest.raises(BackendUnavailable):
        async for chunk in stream:
            received.append(chunk.text)
    assert received == ["The ", "capital "]
    assert exact.entries == {} and semantic.entries == {}


async def test_closing_a_stream_cancels_the_backend_and_stores_nothing() -> None:
    backend, exact = FakeBackend(hold_after=1), FakeExact()
    backend.gate = asyncio.Event()
    service = make_service(backend, exact=exact)
    stream = service.stream(chat())
    assert (await anext(stream)).text == "The "
    await stream.aclose()
    await asyncio.sleep(0.01)
    assert backend.closed_early == 1 and exact.entries == {}


async def test_a_cancelled_caller_cancels_the_backend() -> None:
    backend = FakeBackend()
    backend.gate = asyncio.Event()
    service = make_service(backend)
    task = asyncio.create_task(service.generate(chat()))
    await asyncio.sleep(0.01)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.01)
    assert backend.closed_early == 1 and len(service.flights) == 0


async def test_redis_down_is_pass_through() -> None:
    client = connect(RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0"))
    backend = FakeBackend()
    # The semantic layer lives on the same Redis: down too.
    service = make_service(backend, FakeSemantic(fail=True), exact=ExactCache(client, retry_after_s=60))
    before = metrics.REDIS_ERRORS.labels("get")._value.get()
    results = [await service.generate(chat()) for _ in range(2)]
    assert all(r.text == "The capital is Paris." and r.cache.layer == "miss" for r in results)
    assert metrics.REDIS_ERRORS.labels("get")._value.get() == before + 1
    assert (await service.readiness()) == {"triton": True, "redis": False}
    await service.aclose()


async def test_semantic_layer_failure_is_pass_through() -> None:
    semantic = FakeSemantic(fail=True)
    service = make_service(semantic=semantic)
    before = metrics.SEMANTIC_ERRORS.labels("lookup")._value.get()
    result = await service.generate(chat())
    assert result.cache.layer == "miss" and result.text
    assert metrics.SEMANTIC_ERRORS.labels("lookup")._value.get() == before + 1
    await service.semantic.settle()
    assert metrics.SEMANTIC_ERRORS.labels("store")._value.get() >= 1


async def test_invalid_requests_fail_before_any_cache_or_backend_work() -> None:
    backend, semantic = FakeBackend(), FakeSemantic()
    service = make_service(backend, semantic)
    bad = dataclasses.replace(chat(), messages=())
    with pytest.raises(InvalidRequest) as raised:
        await service.generate(bad)
    assert raised.value.field == "messages"
    with pytest.raises(InvalidRequest) as raised:
        await service.generate(chat(), CacheControls(ttl_s=-1))
    assert raised.value.field == "ttl"
    with pytest.raises(InvalidRequest):
        await service.invalidate(tenant="a*")
    assert backend.calls == [] and semantic.lookups == 0


async def test_invalidation_reaches_the_semantic_layer_for_tenants_and_all() -> None:
    semantic = FakeSemantic()
    service = make_service(semantic=semantic)
    await service.generate(chat())
    assert await service.invalidate(tenant="acme") == 2
    await service.invalidate(tenant="acme", namespace="docs")
    await service.invalidate()
    assert semantic.invalidated == ["acme", None]


async def test_stats_count_hits_by_layer() -> None:
    service = make_service()
    await service.generate(chat())
    await service.generate(chat())
    stats = await service.stats("acme")
    assert stats["exact_hits"] == 1 and stats["misses"] == 1 and stats["hit_rate"] == 0.5
    assert stats["exact_entries"] == 1


async def test_a_semantic_layer_that_cannot_be_built_at_start_is_built_later() -> None:
    attempts = []
    semantic = FakeSemantic()

    async def build():
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("redis down at start")
        return semantic

    settings = Settings(model=ModelSettings(name="m"), redis=RedisSettings(retry_after_s=0.05))
    service = CachedLLMService(settings, FakeExact(), FakeBackend(), semantic_factory=build,
                               chat_formatter=lambda r: r.messages[-1].content)
    assert (await service.generate(chat())).cache.layer == "miss"
    assert len(attempts) == 1 and service.semantic.layer is None
    await service.generate(chat("Another question"))
    assert len(attempts) == 1  # not retried before retry_after_s
    await asyncio.sleep(0.06)
    await service.generate(chat("A third question"))
    assert len(attempts) == 2 and service.semantic.layer is semantic


@pytest.mark.parametrize(("tokens", "stop", "text", "closed_early"), [
    (("The ", "capital", "\n", "is"), ("\n",), "The capital", 1),  # stop word as its own token
    (("Hello", " EN", "D more"), ("END",), "Hello ", 1),  # stop word spanning tokens
    (("a E", "x", "!"), ("END",), "a Ex!", 0),  # a held-back prefix that is no stop word
    (("one", " two\n"), ("\n", "two"), "one ", 1),  # the earliest of several
])
async def test_stop_sequences_end_the_answer_and_are_not_returned(tokens, stop, text, closed_early) -> None:
    backend, exact = FakeBackend(tokens=tokens), FakeExact()
    service = make_service(backend, exact=exact)
    chunks = [chunk async for chunk in service.stream(chat(stop=stop))]
    assert "".join(c.text for c in chunks) == text
    assert chunks[-1].finish_reason == "stop"
    assert backend.closed_early == closed_early
    ((answer, _),) = exact.entries.values()
    assert answer.text == text and answer.finish_reason == "stop"
