"""The orchestrator's configuration: one `Settings` read from the environment (prefix `ORCH_`).

Sections are nested models; set a field with `ORCH_<SECTION>__<FIELD>`, e.g. `ORCH_REDIS__URL`,
`ORCH_CACHE__TTL_S`, `ORCH_TRITON__URL` (or a whole section as JSON, `ORCH_<SECTION>='{...}'`). Every value the
service needs lives here, with its default and the reason for it; nothing else reads the environment for the
service. Nothing is silently ignored either: an `ORCH_*` variable or env-file key that names no setting stops
the start (`UnknownSettingError`, with the nearest valid name), and so does an unknown field in a section.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import urllib.parse
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from orchestrator.api.settings import ApiSettings

ENV_PREFIX = "ORCH_"
ENV_NESTED_DELIMITER = "__"

SampledPolicy = Literal["bypass", "seeded", "cache"]
IndexBackend = Literal["redisearch", "faiss"]
#: The near-miss guard's checks (orchestrator.cache.guard runs them; its CHECKS is this list).
GuardCheck = Literal["numbers", "negation", "antonym", "order", "entity", "unit", "time"]

#: Sections reject fields they do not have (a misspelt key in JSON, a keys file or an env file).
STRICT = ConfigDict(extra="forbid")


class UnknownSettingError(ValueError):
    """An ORCH_* environment variable or env-file key that no setting reads."""


class RedisSettings(BaseModel):
    model_config = STRICT

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
    model_config = STRICT

    #: The Triton the embedding model is called on, and the only LLM replica unless `replicas` or `replicas_dns`
    #: is set. Left unset with either of them, it is the first listed replica or the DNS name (gRPC then picks
    #: one of its addresses), so embeddings need no separate address.
    url: str = "127.0.0.1:8001"
    #: The text-in/text-out model: upstream's `tensorrt_llm_bls` or `ensemble` (same inputs and outputs). BLS by
    #: default: it streams deltas that never split a character; both free the engine slot of a generation the
    #: orchestrator abandons (it is stopped by request id, below).
    llm_model: str = "tensorrt_llm_bls"
    #: The engine model behind it (upstream's `tensorrt_llm`): a generation ended early is stopped there by its
    #: request id (upstream's `stop` input), which both the BLS and the ensemble pass on.
    engine_model: str = "tensorrt_llm"
    #: How long stopping an abandoned generation and reading its stream to the end may take before the call is
    #: cancelled instead.
    abandon_timeout_s: float = Field(default=5.0, gt=0)
    embedding_model: str = "embedding"
    #: The semantic layer's cross-encoder (model_repository/pair_verifier; semantic.verifier decides its use).
    pair_verifier_model: str = "pair_verifier"
    #: Retries of a request that could not reach Triton (connection errors only, before any response).
    connect_retries: int = Field(default=2, ge=0)
    retry_backoff_s: float = Field(default=0.05, ge=0)
    #: Deadline for the first response (queueing + prefill); beyond it the request ends with BackendTimeout.
    first_response_timeout_s: float = Field(default=60.0, gt=0)
    #: Deadline for a whole generation.
    request_timeout_s: float = Field(default=300.0, gt=0)
    #: Deadline of unary calls (health, embeddings).
    unary_timeout_s: float = Field(default=10.0, gt=0)

    # Scale-out: generations routed across Triton replicas (orchestrator/backends/replicated_llm.py). Without
    # `replicas` and `replicas_dns`, `url` is the one replica, with no routing, health checks or discovery.
    #: Triton gRPC addresses ("host:port") to route generations across: a JSON list or comma-separated.
    replicas: Annotated[tuple[str, ...], NoDecode] = ()
    #: "name:port" whose A records are the replicas (a Kubernetes headless Service, e.g. "triton:8001"),
    #: resolved again every `dns_refresh_s`; exclusive with `replicas`.
    replicas_dns: str | None = None
    #: CoreDNS answers for a Service live 5 s by default: a new or departed pod is seen within ~two periods.
    dns_refresh_s: float = Field(default=5.0, gt=0)
    #: "affinity": rendezvous hashing on the prompt's first `routing_prefix_chars` characters (its leading KV
    #: blocks), so a shared prefix is reused on the replica that holds it, with bounded loads; "round_robin":
    #: the next healthy replica (the baseline the routing benchmark compares against).
    routing: Literal["affinity", "round_robin"] = "affinity"
    #: ~256 tokens at ~4 characters per token: eight 32-token KV blocks, past a chat template's header.
    routing_prefix_chars: int = Field(default=1024, ge=1)
    #: Bounded loads' c: a replica already carrying ceil(c x (in flight + 1) / healthy replicas) requests is
    #: passed over for the least-loaded one; null: affinity whatever the load.
    routing_load_factor: float | None = Field(default=1.25, ge=1.0)
    #: Share where each prefix was last computed through Redis (orchestrator/backends/placements.py): a prefix
    #: a replica holds goes back to it, one that none holds to the replica with the fewest blocks among the
    #: least loaded. Off, or while Redis is unavailable: rendezvous hashing with the bound above.
    routing_placements: bool = True
    #: How long a placement is trusted: about as long as a replica keeps unused KV blocks under load.
    routing_placement_ttl_s: float = Field(default=600.0, gt=0)
    #: Requests in flight on one replica from which it also counts as full, whatever the others carry (e.g. the
    #: engine's max batch size); null: only the relative bound.
    replica_max_in_flight: int | None = Field(default=None, ge=1)
    #: Server- and model-readiness probes of every replica: a dead one is marked down within about one interval
    #: (a hung one within interval + timeout), well inside 5 s; a replica that answers ready again is used again.
    health_interval_s: float = Field(default=1.0, gt=0)
    health_timeout_s: float = Field(default=2.0, gt=0)

    @field_validator("replicas", mode="before")
    @classmethod
    def _replica_list(cls, value: object) -> object:
        """A JSON list, or comma-separated addresses (convenient in an environment variable)."""
        if isinstance(value, str):
            text = value.strip()
            return json.loads(text) if text.startswith("[") else [part.strip() for part in text.split(",")
                                                                   if part.strip()]
        return value

    @field_validator("routing_load_factor", mode="before")
    @classmethod
    def _none_from_text(cls, value: object) -> object:
        """`null` or `none` in the environment turns the relative bound off."""
        return None if isinstance(value, str) and value.strip().lower() in ("null", "none") else value

    @field_validator("replicas", "replicas_dns")
    @classmethod
    def _host_port(cls, value: tuple[str, ...] | str | None) -> tuple[str, ...] | str | None:
        for target in (value,) if isinstance(value, str) else value or ():
            host, sep, port = target.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{target!r} is not host:port")
        if isinstance(value, tuple) and len(set(value)) < len(value):
            raise ValueError(f"listed more than once: {', '.join(sorted({v for v in value if value.count(v) > 1}))}")
        return value

    @model_validator(mode="after")
    def _replica_set(self) -> TritonSettings:
        if self.replicas and self.replicas_dns is not None:
            raise ValueError("set replicas or replicas_dns, not both")
        if "url" not in self.model_fields_set and self.replicated:
            self.url = self.replicas[0] if self.replicas else self.replicas_dns
        return self

    @property
    def replicated(self) -> bool:
        """Whether a replica set is configured (a list or a DNS name): routing, health checks, discovery."""
        return bool(self.replicas or self.replicas_dns)


class ModelSettings(BaseModel):
    model_config = STRICT

    #: The name clients use in `model`; requests for other names are rejected.
    name: str = "SmolLM2-135M-Instruct"
    #: The served model's tokenizer folder (its chat template as transformers finds it: model_assets.chat); None:
    #: the CPU profile's exported SmolLM2 files.
    tokenizer_dir: Path | None = None
    #: Token ids that end (and pad) a sequence, sent as the LLM model's `end_id`/`pad_id`. None (the default):
    #: not sent, so the model repository's own apply (the profile's end_token/pad_token, resolved by its tokenizer).
    end_id: int | None = None
    pad_id: int | None = None
    #: Bounds on request fields (validation).
    max_tokens_limit: int = Field(default=4096, ge=1)
    max_stop_words: int = Field(default=4, ge=0)
    max_stop_word_chars: int = Field(default=64, ge=1)
    max_messages: int = Field(default=256, ge=1)
    max_prompt_chars: int = Field(default=64_000, ge=1)


class CacheSettings(BaseModel):
    model_config = STRICT

    enabled: bool = True
    ttl_s: int = Field(default=86_400, ge=1)
    max_ttl_s: int = Field(default=30 * 86_400, ge=1)
    #: Serialized entries larger than this are not stored (a runaway answer must not fill Redis).
    max_entry_bytes: int = Field(default=256 * 1024, ge=256)
    #: Requests with temperature > 0: "bypass" (neither cached nor merged), "seeded" (only those with a seed,
    #: which the engine reproduces), "cache" (all; repeated requests then get one sample).
    sampled_requests: SampledPolicy = "bypass"
    #: Whether an answer cut by max_tokens (finish_reason "length") is stored. It is what the same request gets
    #: again: the exact key and the semantic scope both include max_tokens, so only a request with the same limit
    #: (and, for a greedy one, the same deterministic decoding) is ever answered with it. False stores only
    #: answers that ended on their own (end of sequence or a stop word).
    store_truncated: bool = True
    #: Start the backend call while the semantic lookup embeds the query, so a miss reaches its first token
    #: without waiting for the embedding (about halves the miss overhead here, docs/benchmarks.md); a semantic
    #: hit then stops that generation after its first token (a prefill is spent on every semantic hit, which
    #: matters where the engine, not the cache, is the bottleneck: turn it off there).
    speculative_generation: bool = True
    namespace: str = "default"


class GuardSettings(BaseModel):
    """The near-miss guard (orchestrator.cache.guard): which checks run, and what counts as a rare word."""

    model_config = STRICT

    enabled: bool = True
    #: Which checks the guard runs (orchestrator.cache.guard documents each); all by default.
    checks: tuple[GuardCheck, ...] = get_args(GuardCheck)
    #: Zipf word frequency (log10 per billion words) below which a word counts as specific (the entity check).
    rare_zipf: float = Field(default=3.3, ge=0.0, le=8.0)

    @model_validator(mode="before")
    @classmethod
    def _switch(cls, value: object) -> object:
        """`ORCH_SEMANTIC__GUARD=true|false` (the setting's name before it became a section) turns it on or off."""
        return {"enabled": value} if isinstance(value, bool) else value


class HnswSettings(BaseModel):
    """HNSW parameters shared by both vector-index back-ends (orchestrator.cache.vector_index)."""

    model_config = STRICT

    m: int = Field(default=16, ge=2)
    ef_construction: int = Field(default=200, ge=1)
    #: Search beam width, always sent explicitly: RediSearch's default 10 recalls poorly at 100k entries.
    ef_runtime: int = Field(default=64, ge=1)


class VerifierSettings(BaseModel):
    """The pair verifier (model_assets.pair_verifier, served by Triton's `pair_verifier`): a cross-encoder that
    decides the candidates in the uncertain band; without it (off or unreachable) the layer decides on
    `semantic.threshold` and the guard alone."""

    model_config = STRICT

    #: On by default: on the labelled test sets (questions, statements, and requests made from questions) it
    #: adds paraphrase hits and refuses near misses that cosine and guard alone serve, for ~4 ms per semantic
    #: hit (docs/benchmarks.md). Off, the layer decides on `semantic.threshold` and the guard alone.
    enabled: bool = True
    #: Cosine from which a candidate goes to the verifier (the band's lower bar); below it a lookup is a miss
    #: without a verifier call. Low enough for paraphrases worded apart (0.56-0.80 seen), which the
    #: verifier, not the cosine, then tells from near misses.
    min_similarity: float = Field(default=0.5, ge=-1.0, le=1.0)
    #: τ: the score a candidate in the band (cosine below `semantic.threshold`) needs; null (the default)
    #: derives it from `semantic.max_error_rate` and the model's calibration table (orchestrator.calibration).
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    #: ε: the share of paraphrases above `semantic.threshold` (which cosine and guard alone would serve) that
    #: the verifier's veto may refuse. The veto bar is the highest score that refuses no more than this of
    #: the calibration split's paraphrases there (orchestrator.calibration); a candidate scored below it is
    #: refused: only a confident "different question" overrides the cosine.
    max_veto_loss: float = Field(default=0.01, ge=0.0, lt=1.0)
    #: The veto bar itself; null (the default) derives it from `max_veto_loss` and the calibration table.
    veto_below: float | None = Field(default=None, ge=0.0, le=1.0)
    #: Deadline of one verifier call; past it the lookup falls back to cosine and guard (counted).
    timeout_s: float = Field(default=1.0, gt=0)


class SemanticSettings(BaseModel):
    """The semantic layer (orchestrator.cache.semantic), its near-miss guard and its index."""

    model_config = STRICT

    enabled: bool = True
    #: "redisearch" (shared by all replicas; needs the module) or "faiss" (in-process, rebuilt at start).
    index: IndexBackend = "redisearch"
    #: Cosine similarity of the two questions' MiniLM embeddings from which the nearest entry is served when
    #: the near-miss guard agrees (the rule without the verifier, and its fallback); with the verifier, the
    #: top of its band: above it the verifier can only veto. The default comes from `python -m
    #: orchestrator.eval calibrate-cosine` on labelled pairs (docs/benchmarks.md): below it paraphrases and
    #: different questions overlap too much for any lexical check to sort out.
    threshold: float = Field(default=0.80, ge=-1.0, le=1.0)
    #: Nearest entries considered per lookup: when the nearest is a near miss ("capital of Germany" for
    #: "capital of France"), the next one above the threshold may still be a paraphrase.
    candidates: int = Field(default=3, ge=1)
    #: A lookup first waits up to this long for this replica's semantic stores still running in the same
    #: scope (they embed the question after the answer went out), so an immediate paraphrase finds it.
    store_wait_s: float = Field(default=2.0, ge=0.0)
    guard: GuardSettings = Field(default_factory=GuardSettings)
    hnsw: HnswSettings = Field(default_factory=HnswSettings)
    #: δ: the verifier's threshold is the loosest whose 95 % upper confidence bound of wrong hits per lookup
    #: (lookups served another question's answer) on the calibration split is at most this
    #: (orchestrator.calibration).
    max_error_rate: float = Field(default=0.02, gt=0.0, lt=1.0)
    verifier: VerifierSettings = Field(default_factory=VerifierSettings)

    @model_validator(mode="after")
    def _band_below_threshold(self) -> SemanticSettings:
        if self.verifier.enabled and self.verifier.min_similarity > self.threshold:
            raise ValueError(f"semantic.verifier.min_similarity ({self.verifier.min_similarity}) must not exceed "
                             f"semantic.threshold ({self.threshold}): the band lies below the threshold")
        return self


class Settings(BaseSettings):
    """All orchestrator settings. The API layer adds its own section (`api`) as a field here."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter=ENV_NESTED_DELIMITER,
                                      extra="forbid")

    redis: RedisSettings = Field(default_factory=RedisSettings)
    triton: TritonSettings = Field(default_factory=TritonSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    semantic: SemanticSettings = Field(default_factory=SemanticSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The default sources, after checking that every ORCH_* variable and env-file key names a setting."""
        check_names(getattr(env_settings, "env_vars", {}), "in the environment", only_prefixed=True)
        env_file = getattr(dotenv_settings, "env_file", None)
        check_names(getattr(dotenv_settings, "env_vars", {}), f"in the env file {env_file}", only_prefixed=False)
        return init_settings, env_settings, dotenv_settings, file_secret_settings


def _section(model: type[BaseModel], name: str) -> type[BaseModel] | None:
    """The model of `model`'s field `name` when that field is a nested section (None for a plain value)."""
    field = model.model_fields.get(name)
    annotation = field.annotation if field is not None else None
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def setting_names(model: type[BaseModel] = Settings, prefix: str = ENV_PREFIX) -> list[str]:
    """Every variable name a setting can be given by: ORCH_<SECTION> (the section as JSON) and
    ORCH_<SECTION>__<FIELD>, e.g. ORCH_TRITON__URL, down every nested section (ORCH_SEMANTIC__GUARD__CHECKS)."""
    names = []
    for name in model.model_fields:
        variable = f"{prefix}{name.upper()}"
        names.append(variable)
        section = _section(model, name)
        if section is not None:
            names += setting_names(section, variable + ENV_NESTED_DELIMITER)
    return names


def check_names(names: Iterable[str], where: str, only_prefixed: bool) -> None:
    """Raise UnknownSettingError for the first name that is no setting (ORCH_* names only if `only_prefixed`);
    names compare case-insensitively, as pydantic-settings reads them."""
    valid = setting_names()
    known = set(valid)
    for name in names:
        upper = name.upper()
        if upper in known or (only_prefixed and not upper.startswith(ENV_PREFIX)):
            continue
        close = difflib.get_close_matches(upper, valid, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else "`python -m orchestrator config --format env` lists them"
        raise UnknownSettingError(f"unknown setting {upper} {where}; {hint}")


def env_name(loc: tuple[str | int, ...]) -> str:
    """The variable that sets the value at `loc` (a pydantic error location); deeper parts (a key grant's
    field) follow in brackets, with API keys masked."""
    model: type[BaseModel] | None = Settings
    depth = 0
    while model is not None and depth < len(loc) and str(loc[depth]) in model.model_fields:
        model, depth = _section(model, str(loc[depth])), depth + 1
    head = ENV_PREFIX + ENV_NESTED_DELIMITER.join(str(part).upper() for part in loc[:depth])
    rest = [mask_key(str(part)) if loc[:depth] == ("api", "keys") and index == 0 else str(part)
            for index, part in enumerate(loc[depth:])]
    return f"{head}[{'.'.join(rest)}]" if rest else head


def describe_validation_error(error: ValidationError, section: str | None = None) -> str:
    """One line naming every bad setting by its variable, and what is wrong (values are not echoed: some are
    secrets). `section`: the error comes from validating that section alone."""
    problems = []
    for item in error.errors():
        message = "not a setting" if item["type"] == "extra_forbidden" else item["msg"]
        loc = ((section,) if section else ()) + tuple(item["loc"])
        problems.append(f"{env_name(loc)}: {message}")
    return "; ".join(problems)


MASK = "***"


def mask_key(key: str) -> str:
    """An API key as it may be shown: a fingerprint that tells keys apart without revealing them."""
    return f"{MASK}sha256:{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def mask_url(url: str) -> str:
    """The URL with a password (in its user info or a `password=` query parameter) replaced by ***."""
    parts = urllib.parse.urlsplit(url)
    netloc, query = parts.netloc, parts.query
    if parts.password is not None:
        netloc = f"{parts.username or ''}:{MASK}@{netloc.rpartition('@')[2]}"
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    if any(name.lower() == "password" for name, _ in pairs):
        query = urllib.parse.urlencode([(n, MASK if n.lower() == "password" else v) for n, v in pairs], safe="*")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query)) if (netloc, query) != (
        parts.netloc, parts.query) else url


def masked_settings(settings: Settings) -> dict:
    """The settings as JSON-able data with every secret masked: API keys, the admin key (and any other
    SecretStr), passwords in URLs."""
    def mask(value):
        if isinstance(value, dict):
            return {k: mask(v) for k, v in value.items()}
        if isinstance(value, list):
            return [mask(v) for v in value]
        return mask_url(value) if isinstance(value, str) and "://" in value else value

    data = mask(settings.model_dump(mode="json"))  # json mode already shows SecretStr values as **********
    data["api"]["keys"] = {mask_key(key): grant for key, grant in settings.api.model_dump(mode="json")["keys"].items()}
    return data


def setting_lines(data: dict, model: type[BaseModel] = Settings, prefix: str = ENV_PREFIX) -> list[str]:
    """`masked_settings` output as env-file lines, ORCH_<SECTION>__<FIELD>=value (unset values as comments)."""
    lines = []
    for name, value in data.items():
        variable = f"{prefix}{name.upper()}"
        section = _section(model, name)
        if section is not None:
            lines += setting_lines(value, section, variable + ENV_NESTED_DELIMITER)
        elif value is None:
            lines.append(f"# {variable} unset")
        else:
            lines.append(f"{variable}={value if isinstance(value, str) else json.dumps(value)}")
    return lines
