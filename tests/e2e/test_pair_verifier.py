"""The pair verifier through the orchestrator, on the real Triton (CPU profile, where `pair_verifier` is
rendered like every model) and Valkey: a near miss that cosine and the guard would serve is refused, and the
same pair with the verifier unloaded is served by the recorded fallback (cosine + guard), counted in the
fallback metric. The verifier is loaded again before the test ends, as the rest of the session expects."""

from __future__ import annotations

import time

import openai
import pytest
from tritonclient.grpc import InferenceServerClient

from clients.prometheus import scrape, total
from model_assets.pair_verifier import OnnxPairVerifier
from orchestrator.cache.guard import NearMissGuard
from orchestrator.cache.semantic import SemanticMatcher
from orchestrator.config import ModelSettings, SemanticSettings, TritonSettings, VerifierSettings
from stack.orchestrator_process import OrchestratorProcess
from stack.triton import TritonServer
from tests.orchestrators import orchestrator_fixture

pytestmark = pytest.mark.integration
MODEL = ModelSettings().name
VERIFIER = TritonSettings().pair_verifier_model
#: A near miss of the kind the guard's rules do not cover (a different goal, no number, name or listed
#: antonym), close enough in embedding space to pass the fallback's cosine bar.
CACHED = "How do I stop my dog from barking at night?"
NEAR_MISS = "How do I teach my dog to bark at night?"

#: An orchestrator of this module's own (the verifier on, as by default): its metrics count only this test's calls.
verified = orchestrator_fixture("verifier", {"sk-verifier-gamma": {"tenant": "gamma"}}, "sk-verifier-admin",
                                fixture_name="verified")


@pytest.fixture(scope="module")
def gamma(verified: OrchestratorProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{verified.http_url}/v1", api_key="sk-verifier-gamma", max_retries=0,
                         timeout=120)


def ask(client: openai.OpenAI, question: str) -> str:
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": question}], max_tokens=8,
        extra_headers={"Cache-Control": "no-store"} if question == NEAR_MISS else None)
    return raw.headers["x-cache"]


def counter(orchestrator: OrchestratorProcess, name: str, **labels: str) -> float:
    return total(scrape(orchestrator.http_url), name, **labels)


def wait_ready(client: InferenceServerClient, ready: bool, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while client.is_model_ready(VERIFIER) != ready:
        assert time.monotonic() < deadline, f"{VERIFIER} ready={not ready} after {timeout_s} s"
        time.sleep(0.1)


def test_the_pair_is_a_near_miss_that_only_the_verifier_refuses() -> None:
    """The premise, checked in-process with the shipped model and the layer's own matcher."""
    from model_assets.minilm import OnnxMiniLM

    cached, query = OnnxMiniLM().encode([CACHED, NEAR_MISS])
    matcher = SemanticMatcher(SemanticSettings(verifier=VerifierSettings(enabled=True)))
    similarity = float(cached @ query)
    assert similarity >= SemanticSettings().threshold and NearMissGuard().agrees(CACHED, NEAR_MISS)
    (score,) = OnnxPairVerifier().score([(CACHED, NEAR_MISS)])
    assert score < matcher.bar(similarity)  # above the threshold: the verifier's veto


def test_refused_with_the_verifier_and_served_by_the_fallback_without_it(
        gamma: openai.OpenAI, verified: OrchestratorProcess, triton: TritonServer) -> None:
    orchestrator = verified
    assert ask(gamma, CACHED) in ("miss", "exact")
    calls = counter(orchestrator, "orchestrator_semantic_verifier_calls_total")
    assert ask(gamma, NEAR_MISS) == "miss"
    assert counter(orchestrator, "orchestrator_semantic_verifier_calls_total") == calls + 1

    client = InferenceServerClient(triton.grpc_url)
    fallbacks = counter(orchestrator, "orchestrator_semantic_verifier_fallbacks_total", reason="error")
    client.unload_model(VERIFIER)
    try:
        wait_ready(client, False)
        assert ask(gamma, NEAR_MISS) == "semantic"  # the recorded fallback: cosine ≥ 0.80 and the guard agrees
        assert counter(orchestrator, "orchestrator_semantic_verifier_fallbacks_total", reason="error") \
            == fallbacks + 1
    finally:
        client.load_model(VERIFIER)
        wait_ready(client, True)
    assert ask(gamma, NEAR_MISS) == "miss"  # back: refused again
