"""The engine's settings, read from the `tensorrt_llm` model config with upstream's parameter meanings.

One source of truth: the profile renders these values into config.pbtxt; the model reads them back from the
config Triton hands to `initialize()`, so the dynamic batcher's queue bound and the engine's are the same value.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cpu_engine.cores import available_cores

INFLIGHT = "inflight_fused_batching"
#: Upstream also accepts the older name; on this engine both mean the same admission policy.
INFLIGHT_ALIASES = frozenset({INFLIGHT, "inflight_batching"})
STATIC = "V1"
SCHEDULER_POLICIES = frozenset({"max_utilization", "guaranteed_no_evict"})


#: llama.cpp's own default.
DEFAULT_POLL = 50
#: libgomp's spins before a waiting thread sleeps (cpu_engine.openmp): 0, sleep at once, which holds up when
#: another process takes a core; libgomp's own default is 300,000 (docs/benchmarks.md, CPU contention).
DEFAULT_SPIN_COUNT = 0


def default_threads() -> int:
    return available_cores()


class ConfigError(ValueError):
    """A parameter value the engine cannot honour; the message names the key."""


@dataclass(frozen=True)
class EngineConfig:
    model_path: str
    tokenizer_dir: str
    gpt_model_type: str
    #: Parallel llama.cpp slots = requests in flight at once (upstream: the engine's max batch size).
    slots: int
    #: KV cache size in tokens over all slots (upstream `max_tokens_in_paged_kv_cache`); llama.cpp's n_ctx.
    kv_cache_tokens: int
    tokens_per_block: int
    enable_kv_cache_reuse: bool
    #: Host memory for KV state kept beyond the slots (upstream `kv_cache_host_memory_bytes`, default 0: none):
    #: llama.cpp's RAM prompt cache, which restores a cached prefix into any free slot.
    host_cache_mib: int
    enable_chunked_context: bool
    exclude_input_in_output: bool
    batch_scheduler_policy: str
    #: Requests that may wait for a slot before new ones are rejected (0: unbounded), from the dynamic batcher.
    max_queue_size: int
    #: llama.cpp threads for decoding (`cpu_threads`) and for prompt batches (`cpu_threads_batch`); by default
    #: derived from the cores this process may use (cpu_engine.cores), never more.
    threads: int
    batch_threads: int
    #: How hard the threads of llama.cpp's own threadpool spin before sleeping (0-100, its `poll`); builds whose
    #: kernels run on OpenMP, as xllamacpp's do, wait as `spin_count` says instead.
    poll: int
    #: How many times an OpenMP thread spins at a barrier before sleeping (libgomp's GOMP_SPINCOUNT,
    #: cpu_engine.openmp).
    spin_count: int
    #: Prompt tokens per llama.cpp batch when chunked context is on.
    chunk_tokens: int
    stats_check_period_ms: int

    @property
    def inflight(self) -> bool:
        return self.gpt_model_type in INFLIGHT_ALIASES

    @property
    def slot_context_tokens(self) -> int:
        """Context of one slot: llama.cpp splits n_ctx evenly across its slots."""
        return self.kv_cache_tokens // self.slots

    @property
    def max_blocks(self) -> int:
        return self.slots * (self.slot_context_tokens // self.tokens_per_block)

    @classmethod
    def from_model_config(cls, model_config: dict, default_model_path: str = "",
                          default_tokenizer_dir: str = "") -> EngineConfig:
        """Build from the parsed model config (the JSON Triton passes as args["model_config"])."""
        raw = {k: v.get("string_value", "") for k, v in model_config.get("parameters", {}).items()}

        def text(key: str, default: str) -> str:
            value = raw.get(key, "").strip()
            return value if value and not value.startswith("${") else default

        def integer(key: str, default: int, minimum: int = 0) -> int:
            value = text(key, str(default))
            try:
                number = int(value)
            except ValueError:
                raise ConfigError(f"parameter {key}={value!r} is not an integer") from None
            if number < minimum:
                raise ConfigError(f"parameter {key}={number} must be >= {minimum}")
            return number

        def boolean(key: str, default: bool) -> bool:
            value = text(key, str(default)).lower()
            if value not in ("true", "false", "1", "0"):
                raise ConfigError(f"parameter {key}={value!r} is not a boolean")
            return value in ("true", "1")

        model_type = text("gpt_model_type", INFLIGHT)
        if model_type not in INFLIGHT_ALIASES and model_type != STATIC:
            raise ConfigError(f"parameter gpt_model_type={model_type!r}: use {INFLIGHT} or {STATIC}")
        policy = text("batch_scheduler_policy", "max_utilization")
        if policy not in SCHEDULER_POLICIES:
            raise ConfigError(f"parameter batch_scheduler_policy={policy!r}: use one of {sorted(SCHEDULER_POLICIES)}")
        if integer("max_beam_width", 1, 1) != 1:
            raise ConfigError("parameter max_beam_width: the CPU engine decodes with beam width 1 only")
        slots = int(model_config.get("max_batch_size", 0))
        if slots < 1:
            raise ConfigError("max_batch_size must be >= 1 (it is the number of parallel engine slots)")
        queue_policy = model_config.get("dynamic_batching", {}).get("default_queue_policy", {})
        threads = integer("cpu_threads", default_threads(), 1)
        config = cls(
            model_path=str(Path(text("gpt_model_path", default_model_path))),
            tokenizer_dir=text("tokenizer_dir", default_tokenizer_dir),
            gpt_model_type=model_type,
            slots=slots,
            kv_cache_tokens=integer("max_tokens_in_paged_kv_cache", 4096 * slots, 1),
            tokens_per_block=integer("cpu_tokens_per_block", 32, 1),
            enable_kv_cache_reuse=boolean("enable_kv_cache_reuse", True),
            host_cache_mib=integer("kv_cache_host_memory_bytes", 0) // 2**20,
            enable_chunked_context=boolean("enable_chunked_context", True),
            exclude_input_in_output=boolean("exclude_input_in_output", False),
            batch_scheduler_policy=policy,
            max_queue_size=int(queue_policy.get("max_queue_size", 0)),
            threads=threads,
            batch_threads=integer("cpu_threads_batch", threads, 1),
            poll=integer("cpu_poll", DEFAULT_POLL, 0),
            spin_count=integer("cpu_spin_count", DEFAULT_SPIN_COUNT, 0),
            chunk_tokens=integer("cpu_chunk_tokens", 512, 1),
            stats_check_period_ms=integer("stats_check_period_ms", 100, 1),
        )
        if config.slot_context_tokens < config.tokens_per_block:
            raise ConfigError(f"max_tokens_in_paged_kv_cache={config.kv_cache_tokens} leaves less than one block "
                              f"per slot ({slots} slots)")
        return config
