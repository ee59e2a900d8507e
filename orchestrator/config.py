"""The orchestrator's configuration: one `Settings` read from the environment (prefix `ORCH_`).

Sections are nested models; set a field with `ORCH_<SECTION>__<FIELD>`, e.g. `ORCH_REDIS__URL`,
`ORCH_CACHE__TTL_S`, `ORCH_TRITON__URL`. Every value the service needs lives here, with its default and the
reason for it; nothing else reads the environment for the service.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from orchestrator.api.settings import ApiSettings

SampledPolicy = Literal["bypass", "seeded", "cache"]
IndexBackend = Literal["redisearch", "faiss"]


class RedisSettings(BaseModel):
    url: str = "redis://127.0.0.1:6379/0"
    #: Short timeouts: a slow or dead Redis must cost a request milliseconds, never seconds (pass-through).
    socket_timeout_s: float = Field(default=0.25, gt=0)
    connect_timeout_s: float = Field(default=0.25, gt=0)
    #: After a Redis error the cache is skipped for this long instead of paying a timeout on every request.
    retry_after_s: float = Field(default=1.0, ge=0)
    #: Prefix of every key the orchestrator writes (exact entries, stats, the semantic index).
    key_prefix: str = Field(default="llmcache", pattern=r"^[A-Za-z0-9_.-]+$")
    max_connections: int = Field(default=64, ge=1)


class TritonSettings(BaseModel):
    url: str = "127.0.0.1:8001"
    #: The text-in/text-out model: upstream's `tensorrt_llm_bls` or `ensemble` (same inputs and outputs). BLS by
    #: default: Triton 2.51 does not pass a client's cancellation through an ensemble to the engine, so a
    #: client that leaves (or a speculative call that a semantic hit ends) would keep an engine slot busy.
    llm_model: str = "tensorrt_llm_bls"
    embedding_model: str = "embedding"
    #: Retries of a request that could not reach Triton (connection errors only, before any response).
    connect_retries: int = Field(default=2, ge=0)
    retry_backoff_s: float = Field(default=0.05, ge=0)
    #: Deadline for the first response (queueing + prefill); beyond it the request ends with BackendTimeout.
    first_response_timeout_s: float = Field(default=60.0, gt=0)
    #: Deadline for a whole generation.
    request_timeout_s: float = Field(default=300.0, gt=0)
    #: Deadline of unary calls (health, embeddings).
    unary_timeout_s: float = Field(default=10.0, gt=0)


class ModelSettings(BaseModel):
    #: The name clients use in `model`; requests for other names are rejected.
    name: str = "SmolLM2-135M-Instruct"
    #: tokenizer.json + chat_template.jinja of the served model; None: the CPU profile's exported SmolLM2 files.
    tokenizer_dir: Path | None = None
    #: Token ids that end (and pad) a sequence, sent as the ensemble's `end_id`/`pad_id`.
    end_id: int = 2
    pad_id: int = 2
    #: Bounds on request fields (validation).
    max_tokens_limit: int = Field(default=4096, ge=1)
    max_stop_words: int = Field(default=4, ge=0)
    max_stop_word_chars: int = Field(default=64, ge=1)
    max_messages: int = Field(default=256, ge=1)
    max_prompt_chars: int = Field(default=64_000, ge=1)


class CacheSettings(BaseModel):
    enabled: bool = True
    ttl_s: int = Field(default=86_400, ge=1)
    max_ttl_s: int = Field(default=30 * 86_400, ge=1)
    #: Serialized entries larger than this are not stored (a runaway answer must not fill Redis).
    max_entry_bytes: int = Field(default=256 * 1024, ge=256)
    #: Requests with temperature > 0: "bypass" (neither cached nor merged), "seeded" (only those with a seed,
    #: which the engine reproduces), "cache" (all; repeated requests then get one sample).
    sampled_requests: SampledPolicy = "bypass"
    #: Whether an answer cut by max_tokens (finish_reason "length") may be stored.
    store_truncated: bool = False
    #: Start the backend call while the semantic lookup embeds the query, so a miss reaches its first token
    #: without waiting for the embedding; a semantic hit cancels that call (a little prefill is wasted).
    #: Off by default: Triton 2.51 (the CPU build) crashes under a steady stream of such cancellations of
    #: `tensorrt_llm_bls` (docs/reliability.md, "Known gaps"); turn it on only where that is known not to happen.
    speculative_generation: bool = False
    namespace: str = "default"


class SemanticSettings(BaseModel):
    """Read by orchestrator.cache.semantic (config_from_settings); meanings are documented there."""

    enabled: bool = True
    index: IndexBackend = "redisearch"
    #: Cosine similarity of the two questions' MiniLM embeddings from which the nearest entry is a candidate
    #: at all; the near-miss guard then decides. Same default as orchestrator.cache.semantic.DEFAULT_THRESHOLD.
    threshold: float = Field(default=0.80, ge=-1.0, le=1.0)
    #: Nearest entries considered per lookup (the nearest may be a near miss, the next a paraphrase).
    candidates: int = Field(default=3, ge=1)
    #: A lookup first waits up to this long for this replica's semantic stores still running in the same
    #: scope (they embed the question after the answer went out), so an immediate paraphrase finds it.
    store_wait_s: float = Field(default=2.0, ge=0.0)
    guard: bool = True
    hnsw_m: int = Field(default=16, ge=2)
    hnsw_ef_construction: int = Field(default=200, ge=1)
    #: HNSW search beam width (RediSearch's default 10 recalls poorly at 100k entries).
    ef_runtime: int = Field(default=64, ge=1)


class Settings(BaseSettings):
    """All orchestrator settings. The API layer adds its own section (`api`) as a field here."""

    model_config = SettingsConfigDict(env_prefix="ORCH_", env_nested_delimiter="__", extra="ignore")

    redis: RedisSettings = Field(default_factory=RedisSettings)
    triton: TritonSettings = Field(default_factory=TritonSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    semantic: SemanticSettings = Field(default_factory=SemanticSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
