"""The semantic layer against the real Valkey + RediSearch, with both index back-ends."""

import asyncio
import time
import uuid

import pytest
import redis.asyncio as aioredis

from orchestrator.backends.embedder import InProcessEmbedder
from orchestrator.cache.semantic import SemanticCache, SemanticMatcher, build_index
from orchestrator.cache.types import CachedAnswer, Scope, SemanticTarget, unpack_answer
from orchestrator.cache.vector_index import FaissIndex, RediSearchIndex
from orchestrator.config import SemanticSettings

pytestmark = pytest.mark.integration

BACKENDS = ["redisearch", "faiss"]


@pytest.fixture(scope="module")
def embedder() -> InProcessEmbedder:
    return InProcessEmbedder()


@pytest.fixture(params=[3, 2], ids=["resp3", "resp2"])
async def client(valkey, request):
    redis = aioredis.Redis.from_url(valkey.url, protocol=request.param)
    yield redis
    await redis.aclose()


def answer(text: str) -> CachedAnswer:
    return CachedAnswer(text=text, model="m", prompt_tokens=5, completion_tokens=7, finish_reason="stop",
                        created_at=time.time(), key="k" * 64)


async def layer(client, embedder, backend: str, prefix: str) -> SemanticCache:
    settings = SemanticSettings(index=backend, candidates=3)
    index = await build_index(settings, client, prefix)
    assert type(index) is (RediSearchIndex if backend == "redisearch" else FaissIndex)
    return SemanticCache(client, embedder, index, prefix, SemanticMatcher(settings))


async def until(read, expected, timeout_s: float = 5.0) -> None:
    """Wait until `await read()` returns `expected` (a condition, not a guessed sleep)."""
    deadline = time.monotonic() + timeout_s
    while (value := await read()) != expected:
        assert time.monotonic() < deadline, f"still {value!r} after {timeout_s} s, expected {expected!r}"
        await asyncio.sleep(0.05)


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


async def cleanup(cache: SemanticCache) -> None:
    await cache.invalidate_all()
    if isinstance(cache.index, RediSearchIndex):
        await cache.index.drop()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_paraphrase_hits_within_scope_only(client, embedder, backend, prefix) -> None:
    cache = await layer(client, embedder, backend, prefix)
    scope, other = Scope("acme", "a" * 64), Scope("acme", "b" * 64)
    await cache.store(SemanticTarget(scope, "How do I reset my password?"), answer("Click 'Forgot password'."),
                      ttl_s=60)
    await cache.store(SemanticTarget(scope, "What is the capital of France?"), answer("Paris."), ttl_s=60)
    hit = await cache.lookup(SemanticTarget(scope, "What's the way to reset my password?"))
    assert hit is not None and hit.answer.text == "Click 'Forgot password'."
    assert hit.cached_query == "How do I reset my password?" and 0.8 <= hit.similarity <= 1.0
    assert await cache.lookup(SemanticTarget(other, "What's the way to reset my password?")) is None
    assert await cache.lookup(SemanticTarget(Scope("other-tenant", "a" * 64), "How do I reset my password?")) is None
    # the guard's entity check
    assert await cache.lookup(SemanticTarget(scope, "What is the capital of Germany?")) is None
    await cleanup(cache)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_entries_expire_from_store_and_index(client, embedder, backend, prefix) -> None:
    cache = await layer(client, embedder, backend, prefix)
    scope = Scope("acme", "c" * 64)
    await cache.store(SemanticTarget(scope, "Why is the sky blue?"), answer("Rayleigh scattering."), ttl_s=1)
    key = cache.entry_key(scope, "Why is the sky blue?")
    assert 0 < await client.ttl(key) <= 1
    assert unpack_answer(await client.hget(key, "answer")).text == "Rayleigh scattering."  # the one stored form
    assert await cache.lookup(SemanticTarget(scope, "What makes the sky look blue?")) is not None
    await until(lambda: client.exists(key), 0)  # Redis expired it: from here on it must be gone everywhere
    assert await cache.lookup(SemanticTarget(scope, "What makes the sky look blue?")) is None
    if isinstance(cache.index, RediSearchIndex):
        assert await cache.index.size() == 0  # Redis dropped the expired hash from the index: no orphan
    else:
        assert len(cache.index) == 0
    await cleanup(cache)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_invalidation_by_tenant_and_all(client, embedder, backend, prefix) -> None:
    cache = await layer(client, embedder, backend, prefix)
    a, b = Scope("tenant-a", "d" * 64), Scope("tenant-b", "d" * 64)
    for scope in (a, b):
        await cache.store(SemanticTarget(scope, "How many legs does a spider have?"), answer("Eight."), ttl_s=60)
    assert await cache.invalidate_tenant("tenant-a") == 1
    assert await cache.lookup(SemanticTarget(a, "How many legs does a spider have?")) is None
    assert await cache.lookup(SemanticTarget(b, "How many legs does a spider have?")) is not None
    assert await cache.invalidate_all() == 1
    assert await cache.lookup(SemanticTarget(b, "How many legs does a spider have?")) is None
    await cleanup(cache)


async def test_faiss_is_rebuilt_from_redis_and_forgets_entries_gone_from_redis(client, embedder, prefix) -> None:
    first = await layer(client, embedder, "faiss", prefix)
    scope = Scope("acme", "e" * 64)
    await first.store(SemanticTarget(scope, "Who wrote Pride and Prejudice?"), answer("Jane Austen."), ttl_s=60)
    await first.store(SemanticTarget(scope, "How do I install numpy?"), answer("pip install numpy"), ttl_s=60)
    restarted = await layer(client, embedder, "faiss", prefix)  # a new process: index rebuilt from Redis
    assert len(restarted.index) == 2
    hit = await restarted.lookup(SemanticTarget(scope, "Who is the author of Pride and Prejudice?"))
    assert hit is not None and hit.answer.text == "Jane Austen."
    # another replica deletes the entry in Redis: this replica's index must not serve it
    await client.delete(first.entry_key(scope, "Who wrote Pride and Prejudice?"))
    assert await restarted.lookup(SemanticTarget(scope, "Who is the author of Pride and Prejudice?")) is None
    assert len(restarted.index) == 1
    await cleanup(first)


async def test_redisearch_entries_are_shared_by_replicas(client, embedder, prefix) -> None:
    writer = await layer(client, embedder, "redisearch", prefix)
    reader = await layer(client, embedder, "redisearch", prefix)
    scope = Scope("acme", "f" * 64)
    await writer.store(SemanticTarget(scope, "How do I cancel my subscription?"), answer("Settings > Billing."),
                       ttl_s=60)
    hit = await reader.lookup(SemanticTarget(scope, "What steps do I take to cancel my subscription?"))
    assert hit is not None and hit.answer.text == "Settings > Billing."
    await cleanup(writer)


async def test_storing_the_same_question_again_replaces_it(client, embedder, prefix) -> None:
    cache = await layer(client, embedder, "faiss", prefix)
    scope = Scope("acme", "0" * 64)
    await cache.store(SemanticTarget(scope, "What is the refund policy?"), answer("30 days."), ttl_s=60)
    await cache.store(SemanticTarget(scope, "What is the refund policy?"), answer("60 days."), ttl_s=60)
    assert len(cache.index) == 1
    hit = await cache.lookup(SemanticTarget(scope, "Can you tell me about your refund policy?"))
    assert hit is not None and hit.answer.text == "60 days."
    await cleanup(cache)


async def test_redisearch_index_lost_with_a_redis_restart_is_recreated(client, embedder, prefix) -> None:
    cache = await layer(client, embedder, "redisearch", prefix)
    scope = Scope("acme", "1" * 64)
    await cache.index.drop()  # what a Redis restart without persistence leaves: no index
    assert await cache.lookup(SemanticTarget(scope, "Why is the sky blue?")) is None
    await cache.store(SemanticTarget(scope, "Why is the sky blue?"), answer("Rayleigh scattering."), ttl_s=60)
    hit = await cache.lookup(SemanticTarget(scope, "What makes the sky look blue?"))
    assert hit is not None and hit.answer.text == "Rayleigh scattering."
    await cleanup(cache)


class CountingEmbedder:
    """The real embedder, counting the texts it was asked to embed."""

    def __init__(self, inner: InProcessEmbedder) -> None:
        self.inner = inner
        self.texts: list[str] = []

    async def embed(self, texts):
        self.texts.extend(texts)
        return await self.inner.embed(texts)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_miss_embeds_its_question_once_and_an_empty_scope_not_at_all(client, embedder, backend,
                                                                              prefix) -> None:
    counting = CountingEmbedder(embedder)
    cache = await layer(client, counting, backend, prefix)
    scope, empty = Scope("acme", "d" * 64), Scope("acme", "e" * 64)
    await cache.store(SemanticTarget(scope, "Is Mont Blanc in France?"), answer("Partly."), ttl_s=60)
    assert counting.texts == ["Is Mont Blanc in France?"]
    assert await cache.index.has_scope("acme", scope.digest)
    assert not await cache.index.has_scope("acme", empty.digest)
    assert not await cache.index.has_scope("beta", scope.digest)
    assert await cache.lookup(SemanticTarget(empty, "How tall is Mont Blanc?")) is None
    assert counting.texts == ["Is Mont Blanc in France?"]  # nothing stored there: nothing embedded

    miss = SemanticTarget(scope, "How tall is Mont Blanc?")
    assert await cache.lookup(miss) is None
    await cache.store(miss, answer("4,806 m."), ttl_s=60)  # with the vector its lookup embedded
    hit = await cache.lookup(SemanticTarget(scope, "What is the height of Mont Blanc?"))
    assert hit is not None and hit.answer.text == "4,806 m."
    assert counting.texts == ["Is Mont Blanc in France?", "How tall is Mont Blanc?",
                              "What is the height of Mont Blanc?"]
    await cleanup(cache)
