"""llama.cpp in-process (xllamacpp): one server context with parallel slots, driven one blocking call per request.

xllamacpp always starts llama.cpp's HTTP front end next to the in-process API and has no switch to turn it
off. It is bound to a Unix socket inside a fresh 0700 directory (llama.cpp binds a Unix socket when the host
name ends in `.sock`), so no TCP port is opened, and it requires a random API key that never leaves this
process: only this user could connect, and only with the key. The socket and its directory are removed on close.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cpu_engine.completion import FINISH_CANCELLED, CompletionStream, EngineError
from cpu_engine.config import EngineConfig
from cpu_engine.kv_blocks import KvBlockPool, RequestBlocks
from cpu_engine.openmp import set_spin_count
from cpu_engine.requests import GenerationRequest


class PromptTooLong(ValueError):
    """The prompt (or, under guaranteed_no_evict, prompt + output) does not fit a slot's context."""


@dataclass(frozen=True)
class GenerationOutcome:
    output_ids: list[int]
    prompt_tokens: int
    cached_tokens: int
    blocks: RequestBlocks
    finish_reason: str
    arrival_ns: int
    first_scheduled_ns: int
    first_token_ns: int
    last_token_ns: int


@dataclass
class Progress:
    """What the caller sees per streamed step: the new ids and the request's KV blocks so far."""

    new_ids: list[int]
    blocks: RequestBlocks


def llama_params(config: EngineConfig):
    """llama.cpp's server parameters for the engine's model, slots, context, threads and polling (an
    xllamacpp.CommonParams); the caller adds where its HTTP front end listens. Shared with the benchmark that
    runs llama.cpp's own server on the same settings (scripts/bench/llm_throughput.py). Sets the OpenMP
    threads' spin count first, so call it before anything else imports xllamacpp."""
    set_spin_count(config.spin_count)
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = config.model_path
    params.n_parallel = config.slots
    params.n_ctx = config.kv_cache_tokens
    params.n_batch = config.chunk_tokens if config.enable_chunked_context else config.slot_context_tokens
    params.n_ubatch = min(params.n_batch, 512)
    params.cpuparams.n_threads = config.threads
    params.cpuparams_batch.n_threads = config.batch_threads
    params.cpuparams.poll = config.poll
    params.cpuparams_batch.poll = config.poll
    # llama.cpp's CPU flash-attention kernel sums differently for different batch shapes, so a prompt
    # evaluated in one piece and the same prompt evaluated as cached prefix + suffix could give different
    # greedy tokens; the plain attention path gave identical outputs in every check here.
    params.flash_attn_type = xllamacpp.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_DISABLED
    params.cache_prompt = config.enable_kv_cache_reuse
    params.cache_ram_mib = config.host_cache_mib if config.enable_kv_cache_reuse else 0
    # With a host cache llama.cpp moves an idle slot's KV there when a new task starts; without one that
    # would simply drop it, so idle slots then keep their KV in place (reusable on the same slot).
    params.cache_idle_slots = params.cache_ram_mib != 0
    return params


class LlamaEngine:
    def __init__(self, config: EngineConfig, encode_text: Callable[[str], list[int]]) -> None:
        params = llama_params(config)  # first: it sets libgomp's spin count before xllamacpp loads libgomp
        import xllamacpp

        self.config = config
        self.encode_text = encode_text
        self.kv_pool = KvBlockPool(config.max_blocks, config.tokens_per_block)
        self._socket_dir = Path(tempfile.mkdtemp(prefix="cpu-engine-"))
        os.chmod(self._socket_dir, 0o700)
        params.hostnames = [str(self._socket_dir / "llama.sock")]
        self.api_key = secrets.token_urlsafe(32)
        params.api_keys = [self.api_key]
        params.n_threads_http = 1
        params.endpoint_metrics = False
        params.endpoint_slots = False
        params.endpoint_props = False
        params.verbosity = 0
        self._server = xllamacpp.Server(params)
        self.listening_address = self._server.listening_address

    def check_fits(self, request: GenerationRequest) -> None:
        limit = self.config.slot_context_tokens
        prompt = len(request.input_ids)
        if prompt >= limit:
            raise PromptTooLong(f"input_ids: the prompt has {prompt} tokens, more than fits the context of one "
                                f"engine slot ({limit - 1} tokens = max_tokens_in_paged_kv_cache "
                                f"{self.config.kv_cache_tokens} / {self.config.slots} slots, minus one)")
        if self.config.batch_scheduler_policy == "guaranteed_no_evict" and prompt + request.max_new_tokens > limit:
            raise PromptTooLong(f"request_output_len: {prompt} prompt + {request.max_new_tokens} output tokens "
                                f"exceed one slot's {limit} tokens (batch_scheduler_policy=guaranteed_no_evict)")

    def generate(self, request: GenerationRequest, on_progress: Callable[[Progress], None],
                 cancelled: Callable[[], bool], arrival_ns: int) -> GenerationOutcome:
        """Run one request to its end on a free llama.cpp slot (blocking, without the GIL inside llama.cpp)."""
        self.check_fits(request)
        end_id = request.end_id if request.end_id is not None and request.end_id >= 0 else None
        stream = CompletionStream(self.encode_text, request.stop_words, end_id)
        prompt = len(request.input_ids)
        tokens_per_block = self.config.tokens_per_block
        handle = self.kv_pool.open(prompt)
        times = {"scheduled": time.time_ns(), "first": 0, "last": 0}
        was_cancelled = False

        def on_chunk(chunk: dict) -> bool:
            nonlocal was_cancelled
            if cancelled():
                was_cancelled = True
                return True
            new_ids, stop = stream.feed(chunk)
            if new_ids:
                now = time.time_ns()
                times["first"] = times["first"] or now
                times["last"] = now
                self.kv_pool.update(handle, prompt + len(stream.generated))
                blocks = RequestBlocks.of(prompt, stream.cached_tokens or 0, len(stream.generated), tokens_per_block)
                on_progress(Progress(new_ids, blocks))
            return stop

        try:
            llama_request = request.to_llama(self.config.enable_kv_cache_reuse)
            self._server.handle_completions(llama_request, on_chunk)
        finally:
            self.kv_pool.close(handle)
        if stream.error:
            raise EngineError(stream.error)
        blocks = RequestBlocks.of(prompt, stream.cached_tokens or 0, len(stream.generated), tokens_per_block)
        self.kv_pool.add_reused(blocks.reused)
        return GenerationOutcome(
            output_ids=list(stream.generated),
            prompt_tokens=prompt,
            cached_tokens=stream.cached_tokens or 0,
            blocks=blocks,
            finish_reason=FINISH_CANCELLED if was_cancelled else (stream.finish_reason or "stop"),
            arrival_ns=arrival_ns,
            first_scheduled_ns=times["scheduled"],
            first_token_ns=times["first"],
            last_token_ns=times["last"],
        )

    def close(self) -> None:
        self._server = None
        shutil.rmtree(self._socket_dir, ignore_errors=True)
