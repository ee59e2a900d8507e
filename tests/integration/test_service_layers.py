"""CachedLLMService end to end on the real Valkey (RediSearch) and the real Triton (the LLM model + embedding)."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import uuid

import numpy as np
import pytest
from tritonclient.grpc import aio as grpcclient

from orchestrator.config import CacheSettings, RedisSettings, Settings, TritonSettings
from orchestrator.schemas import CacheControls, SamplingParams
from orchestrator.service import CachedLLMService
from stack.ports import free_port
from tests import chats

pytestmark = pytest.mark.integration


def settings_for(valkey_url: str, triton_url: str, store_truncated: bool = True) -> Settings:
    """A fresh key prefix per test (the session's Valkey is shared). This small model rarely ends an answer
    within a test's few tokens, so answers cut by max_tokens are stored unless a test says otherwise."""
    return Settings(redis=RedisSettings(url=valkey_url, key_prefix=f"t{uuid.uuid4().hex[:10]}"),
                    triton=TritonSettings(url=triton_url), cache=CacheSettings(store_truncated=store_truncated))


@pytest.fixture
async def service(valkey, triton):
    service = await CachedLLMService.create(settings_for(valkey.url, triton.grpc_url))
    yield service
    await service.invalidate()
    await service.aclose()


chat = functools.partial(chats.chat, system="Answer in one short sentence.", max_tokens=16)


async def backend_successes(triton, service: CachedLLMService) -> int:
    """Successful inferences of the Triton model the service generates with (its `triton.llm_model`)."""
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    try:
        stats = await client.get_inference_statistics(service.settings.triton.llm_model, as_json=True)
    finally:
        await client.close()
    return int(stats["model_stats"][0]["inference_stats"]["success"].get("count", 0))


async def test_miss_then_exact_hit_without_touching_triton(service: CachedLLMService, triton) -> None:
    request = chat(f"Name a colour. ({uuid.uuid4().hex[:6]})")
    miss = await service.generate(request)
    assert miss.cache.layer == "miss" and miss.text and miss.usage.prompt_tokens > 10
    assert miss.usage.completion_tokens > 0 and miss.kv_cache_reused_blocks is not None
    calls = await backend_successes(triton, service)
    hit = await service.generate(request)
    assert hit.cache.layer == "exact" and hit.text == miss.text and hit.cache.tokens_saved == miss.usage.total_tokens
    assert await backend_successes(triton, service) == calls
    entry = service.exact.entry_key("acme", "default", miss.cache.key)
    assert int(await service.exact.client.hget(entry, "hits")) == 1
    assert 0 < await service.exact.client.ttl(entry) <= service.settings.cache.ttl_s


async def test_streaming_miss_then_replayed_hit(service: CachedLLMService) -> None:
    request = chat("Say hello to the team.", max_tokens=24)
    chunks = [c async for c in service.stream(request)]
    assert chunks[0].cache.layer == "miss"
    assert len([c for c in chunks if c.text]) > 2
    assert chunks[-1].finish_reason in ("stop", "length") and chunks[-1].usage.completion_tokens > 2
    replay = [c async for c in service.stream(request)]
    assert replay[0].cache.layer == "exact"
    assert "".join(c.text for c in replay) == "".join(c.text for c in chunks)
    assert replay[-1].finish_reason == chunks[-1].finish_reason


async def test_paraphrase_hits_the_semantic_layer_and_a_near_miss_does_not(service: CachedLLMService) -> None:
    original = await service.generate(chat("What is the capital of France?"))
    paraphrase = await service.generate(chat("What's the capital city of France?"))
    assert paraphrase.cache.layer == "semantic" and paraphrase.text == original.text
    assert paraphrase.cache.similarity >= service.settings.semantic.threshold
    near_miss = await service.generate(chat("What is the capital of Germany?"))
    assert near_miss.cache.layer == "miss"
    other_tenant = await service.generate(chat("What's the capital city of France?", tenant="beta"))
    assert other_tenant.cache.layer == "miss"


async def test_identical_concurrent_requests_make_one_backend_call(service: CachedLLMService, triton) -> None:
    request = chat(f"Count to three. ({uuid.uuid4().hex[:6]})")
    before = await backend_successes(triton, service)
    results = await asyncio.gather(*(service.generate(request) for _ in range(4)))
    assert len({r.text for r in results}) == 1
    assert await backend_successes(triton, service) == before + 1


async def test_a_cancelled_stream_stores_nothing(service: CachedLLMService) -> None:
    request = chat("Write a long poem about the sea.", max_tokens=300)
    stream = service.stream(request)
    first = await anext(stream)
    await stream.aclose()
    assert await service.exact.get("acme", "default", first.cache.key) is None
    assert len(service.flights) == 0


async def test_no_store_and_no_cache(service: CachedLLMService) -> None:
    request = chat(f"Name a fruit. ({uuid.uuid4().hex[:6]})")
    await service.generate(request, CacheControls(no_store=True))
    assert (await service.generate(request)).cache.layer == "miss"
    assert (await service.generate(request, CacheControls(no_cache=True))).cache.layer == "miss"
    assert (await service.generate(request)).cache.layer == "exact"


async def test_stats_invalidate_readiness_and_embed(service: CachedLLMService) -> None:
    request = chat(f"Name an animal. ({uuid.uuid4().hex[:6]})")
    await service.generate(request)
    await service.generate(request)
    stats = await service.stats("acme")
    assert stats["exact_hits"] >= 1 and stats["misses"] >= 1 and stats["exact_entries"] >= 1
    assert await service.readiness() == {"triton": True, "redis": True}
    assert await service.invalidate(tenant="acme") >= 1
    assert (await service.generate(request)).cache.layer == "miss"
    vectors = await service.embed(["hello", "world"])
    assert vectors.shape == (2, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-3)


async def test_a_stop_sequence_ends_the_answer_and_is_not_returned(service: CachedLLMService) -> None:
    request = dataclasses.replace(chat("Describe the sea in three sentences.", max_tokens=48),
                                  params=SamplingParams(max_tokens=48, stop=(" ",)))
    result = await service.generate(request)
    assert result.finish_reason == "stop" and result.text and " " not in result.text
    assert result.usage.completion_tokens < 48


async def test_answers_cut_by_max_tokens_are_not_stored_when_turned_off(valkey, triton) -> None:
    service = await CachedLLMService.create(settings_for(valkey.url, triton.grpc_url, store_truncated=False))
    try:
        request = chat("Tell me about the history of Rome.", max_tokens=3)
        cut = await service.generate(request)
        assert cut.finish_reason == "length" and cut.usage.completion_tokens == 3
        assert (await service.generate(request)).cache.layer == "miss"
    finally:
        await service.aclose()


async def test_redis_down_is_pass_through(triton) -> None:
    service = await CachedLLMService.create(settings_for(f"redis://127.0.0.1:{free_port()}/0", triton.grpc_url))
    try:
        result = await service.generate(chat("What is the capital of France?"))
        assert result.cache.layer == "miss" and result.text
        assert (await service.readiness())["redis"] is False
    finally:
        await service.aclose()
