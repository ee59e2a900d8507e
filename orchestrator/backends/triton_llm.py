"""Streaming text generation through Triton's text-in/text-out LLM model (`tensorrt_llm_bls` by default, or the
`ensemble`: upstream's text interface) over gRPC.

One bidirectional `ModelStreamInfer` call per generation, with `stream=true` so the decoupled engine sends a
response per step; the request stream stays open until the final response (flagged by Triton because we ask
for `triton_enable_empty_final_response`). Closing the generator before the end abandons the generation the
way upstream's `tensorrt_llm` supports: a `stop` request with the same request id, sent straight to the engine
model, then the stream read to its final response in the background. No gRPC cancellation reaches Triton,
whose 2.51 build stalls and crashes under a stream of them (scripts/bench/cancellation_stress.py), and it works
through the ensemble too, which does not pass a cancellation on. Only when that fails is the call cancelled.

Errors become the service's: unreachable → BackendUnavailable (retried, with backoff, only while nothing has
been received), a full queue → Overloaded, a deadline → BackendTimeout, a request the engine refuses
(prompt too long) → InvalidRequest.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import numpy as np
from tritonclient.grpc import InferInput, InferResult
from tritonclient.grpc import aio as grpcclient
from tritonclient.utils import InferenceServerException

from model_assets.llm import REPORT_FLAGS
from orchestrator import metrics
from orchestrator.config import ModelSettings, TritonSettings
from orchestrator.errors import BackendTimeout, BackendUnavailable, InvalidRequest, OrchestratorError, Overloaded
from orchestrator.schemas import SamplingParams

log = logging.getLogger(__name__)

#: Rejections by a full queue: Triton's dynamic batcher, the CPU engine's admission, TensorRT-LLM's executor.
QUEUE_FULL = re.compile(r"queue (is )?full|maximum queue size|max_queue_size", re.IGNORECASE)
TIMED_OUT = re.compile(r"time(d)? ?out|deadline", re.IGNORECASE)
#: The engine refuses what does not fit its context; the message names the input (upstream tensor names).
TOO_LONG = re.compile(r"more than fits|exceeds? the (maximum|context)|too long", re.IGNORECASE)


@dataclass(frozen=True)
class BackendDelta:
    """One streamed response: new text (never a split UTF-8 character) and, when the engine reports them,
    the prompt's token count, the tokens this response adds (upstream counts per response) and KV reuse."""

    text: str
    final: bool = False
    input_tokens: int | None = None
    output_tokens: int | None = None
    kv_cache_reused_blocks: int | None = None


def _scalar(value: object, dtype: type) -> np.ndarray:
    return np.array([[value]], dtype=dtype)


def _tensor(name: str, array: np.ndarray, datatype: str) -> InferInput:
    tensor = InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def ensemble_inputs(prompt: str, params: SamplingParams, model: ModelSettings) -> list[InferInput]:
    """Upstream's ensemble inputs for one streamed request (batch dimension of 1)."""
    if params.greedy:
        # top_k=1 is greedy in every engine (TensorRT-LLM rejects or special-cases temperature 0).
        temperature, top_k, top_p = 1.0, 1, 1.0
    else:
        temperature, top_k, top_p = params.temperature, params.top_k, params.top_p
    inputs = [
        _tensor("text_input", np.array([[prompt.encode()]], dtype=np.object_), "BYTES"),
        _tensor("max_tokens", _scalar(params.max_tokens, np.int32), "INT32"),
        _tensor("temperature", _scalar(temperature, np.float32), "FP32"),
        _tensor("top_k", _scalar(top_k, np.int32), "INT32"),
        _tensor("top_p", _scalar(top_p, np.float32), "FP32"),
        _tensor("exclude_input_in_output", _scalar(True, np.bool_), "BOOL"),
        _tensor("stream", _scalar(True, np.bool_), "BOOL"),
        # KV reuse and token counts; the engine writes each only when asked (cpu_engine/upstream_contract.toml).
        *(_tensor(flag, _scalar(True, np.bool_), "BOOL") for flag in REPORT_FLAGS),
    ]
    # Without them the model repository's own (the profile's end_token/pad_token) apply.
    if model.end_id is not None:
        inputs.append(_tensor("end_id", _scalar(model.end_id, np.int32), "INT32"))
    if model.pad_id is not None:
        inputs.append(_tensor("pad_id", _scalar(model.pad_id, np.int32), "INT32"))
    if params.seed is not None:
        inputs.append(_tensor("random_seed", _scalar(params.seed, np.uint64), "UINT64"))
    if params.stop:
        inputs.append(_tensor("stop_words", np.array([[w.encode() for w in params.stop]], dtype=np.object_),
                              "BYTES"))
    return inputs


#: Put on a call's queue when Triton ends the stream without a final response.
END_OF_STREAM = object()


@dataclass
class Call:
    """One streaming call and the task that reads it. The reader, not the caller, awaits gRPC: grpc.aio cancels
    a call whose pending read is cancelled, so a caller who goes away (its task cancelled) must never be the
    one reading, or every departure would be a gRPC cancellation."""

    responses: object
    queue: asyncio.Queue
    finished: asyncio.Event
    reader: asyncio.Task
    #: Set at the first response: from then on the engine holds the request, so a stop can find it.
    answered: asyncio.Event

    def cancel(self) -> None:
        self.finished.set()
        self.responses.cancel()


async def _read(responses, queue: asyncio.Queue, finished: asyncio.Event, answered: asyncio.Event) -> None:
    """Queue every (result, error) until the final response or an error; then close our side of the stream."""
    try:
        async for item in responses:
            answered.set()
            queue.put_nowait(item)
            result, error = item
            if error is not None or _is_final(result):
                return
        queue.put_nowait(END_OF_STREAM)
    except grpc.aio.AioRpcError as error:
        queue.put_nowait(error)
    finally:
        answered.set()
        finished.set()


def stop_inputs() -> list[InferInput]:
    """Upstream's stop request: `stop` true plus the engine's non-optional inputs, which Triton checks first."""
    return [_tensor("input_ids", _scalar(0, np.int32), "INT32"),
            _tensor("request_output_len", _scalar(1, np.int32), "INT32"),
            _tensor("stop", _scalar(True, np.bool_), "BOOL")]


def _optional_int(result: InferResult, name: str) -> int | None:
    array = result.as_numpy(name)
    return int(array.reshape(-1)[0]) if array is not None and array.size else None


def _is_final(result: InferResult) -> bool:
    parameters = result.get_response().parameters
    return "triton_final_response" in parameters and parameters["triton_final_response"].bool_param


def map_error_message(message: str) -> OrchestratorError:
    """An error Triton reported inside the stream → the service's error."""
    if QUEUE_FULL.search(message):
        return Overloaded(f"the model is overloaded: {message}")
    if TOO_LONG.search(message):
        field = "max_tokens" if "request_output_len" in message else "messages"
        return InvalidRequest(field, message)
    if TIMED_OUT.search(message):
        return BackendTimeout(message)
    return OrchestratorError(f"the model failed: {message}")


def map_rpc_error(error: grpc.aio.AioRpcError) -> OrchestratorError:
    code = error.code()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return BackendTimeout(f"Triton did not finish in time: {error.details()}")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return Overloaded(f"Triton is overloaded: {error.details()}")
    if code == grpc.StatusCode.UNAVAILABLE:
        return BackendUnavailable(f"Triton is unreachable: {error.details()}")
    return map_error_message(error.details() or code.name)


class TritonLLM:
    """The generative model on Triton; one instance (one gRPC channel) per service."""

    def __init__(self, settings: TritonSettings, model: ModelSettings,
                 client: grpcclient.InferenceServerClient | None = None) -> None:
        self.settings = settings
        self.model = model
        self.client = client or grpcclient.InferenceServerClient(settings.url)
        #: Abandoned generations still being stopped and read to their end.
        self._abandoning: set[asyncio.Task] = set()

    async def ready(self) -> bool:
        try:
            return bool(await self.client.is_model_ready(self.settings.llm_model,
                                                         client_timeout=self.settings.unary_timeout_s))
        except (InferenceServerException, grpc.aio.AioRpcError, OSError):
            return False

    async def aclose(self) -> None:
        if self._abandoning:
            await asyncio.wait(self._abandoning, timeout=self.settings.abandon_timeout_s)
        await self.client.close()

    def _open(self, model_name: str, inputs: list[InferInput], request_id: str, timeout_s: float) -> Call:
        """Start one streaming call; its own task reads every response into a queue until the final one."""
        finished = asyncio.Event()

        async def requests():
            yield {"model_name": model_name, "inputs": inputs, "request_id": request_id,
                   "parameters": {"triton_enable_empty_final_response": True}}
            # Keep our side of the stream open until the last response: a half-closed stream may end early.
            await finished.wait()

        responses = self.client.stream_infer(requests(), stream_timeout=timeout_s)
        queue: asyncio.Queue = asyncio.Queue()
        answered = asyncio.Event()
        reader = asyncio.create_task(_read(responses, queue, finished, answered))
        return Call(responses, queue, finished, reader, answered)

    async def _stop(self, request_id: str) -> None:
        """Upstream's stop request for `request_id`, sent straight to the engine model, up to its final response."""
        call = self._open(self.settings.engine_model, stop_inputs(), request_id, self.settings.abandon_timeout_s)
        while True:
            item = await call.queue.get()
            if isinstance(item, BaseException):
                raise item
            result, error = item
            if error is not None:
                raise map_error_message(str(error.message()))
            if _is_final(result):
                return

    async def _abandon(self, call: Call, request_id: str) -> None:
        """Stop the generation by its request id and let its reader take the stream to the final response;
        cancel the call only if that does not finish in time. The stop waits for the generation's first
        response: before it the engine may not hold the request yet, and a stop for an unknown id is a no-op
        (upstream and the CPU engine alike), which would leave the generation running to its end."""
        outcome = "stopped"
        try:
            async with asyncio.timeout(self.settings.first_response_timeout_s):
                await call.answered.wait()
            async with asyncio.timeout(self.settings.abandon_timeout_s):
                if not call.reader.done():
                    await self._stop(request_id)
                await asyncio.shield(call.reader)
        except (TimeoutError, OrchestratorError, grpc.aio.AioRpcError, InferenceServerException) as error:
            outcome = "cancelled"
            call.cancel()
            log.warning("could not stop generation %r (%s: %s); its gRPC stream was cancelled", request_id,
                        type(error).__name__, error)
        finally:
            metrics.BACKEND_ABANDONED.labels(outcome).inc()

    def _end_early(self, call: Call, request_id: str) -> None:
        """The caller left before the final response: stop the generation in the background (by request id),
        or cancel the call when it has none."""
        if not request_id:
            call.cancel()
            return
        task = asyncio.create_task(self._abandon(call, request_id))
        self._abandoning.add(task)
        task.add_done_callback(self._abandoning.discard)

    async def _first(self, prompt: str, params: SamplingParams, request_id: str) -> tuple[Call, object]:
        """Open the stream and wait for its first response, retrying connection failures."""
        for attempt in range(self.settings.connect_retries + 1):
            call = self._open(self.settings.llm_model, ensemble_inputs(prompt, params, self.model), request_id,
                              self.settings.request_timeout_s)
            try:
                first = await asyncio.wait_for(call.queue.get(), self.settings.first_response_timeout_s)
            except BaseException:  # no response in time, or the caller left: the generation may be queued
                self._end_early(call, request_id)
                raise
            if not isinstance(first, grpc.aio.AioRpcError):
                return call, first
            mapped = map_rpc_error(first)
            if not isinstance(mapped, BackendUnavailable) or attempt == self.settings.connect_retries:
                raise mapped from first
            await asyncio.sleep(self.settings.retry_backoff_s * 2**attempt)
        raise AssertionError("unreachable")

    async def stream(self, prompt: str, params: SamplingParams, request_id: str = "") -> AsyncIterator[BackendDelta]:
        """Yield the generation as it comes; the last delta has `final` set. Closing early stops it (by its
        request id, which should be unique; without one the call is cancelled)."""
        started = time.perf_counter()
        try:
            call, first = await self._first(prompt, params, request_id)
        except asyncio.TimeoutError:
            metrics.BACKEND_REQUESTS.labels("BackendTimeout").inc()
            raise BackendTimeout(f"no response from Triton within {self.settings.first_response_timeout_s} s"
                                 ) from None
        except OrchestratorError as error:
            metrics.BACKEND_REQUESTS.labels(type(error).__name__).inc()
            raise
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        first_token_seen = False
        outcome = "cancelled"  # unless it ends otherwise: the caller closed the stream early
        try:
            item = first
            while True:
                if isinstance(item, grpc.aio.AioRpcError):
                    raise map_rpc_error(item) from item
                if item is END_OF_STREAM:
                    raise BackendUnavailable("Triton closed the stream before the final response")
                result, error = item
                if error is not None:
                    raise map_error_message(str(error.message()))
                final = _is_final(result)
                text_output = result.as_numpy("text_output")
                raw = b"".join(text_output.reshape(-1).tolist()) if text_output is not None else b""
                text = decoder.decode(raw, final=final)
                if text and not first_token_seen:
                    first_token_seen = True
                    metrics.BACKEND_TTFT.observe(time.perf_counter() - started)
                if final:  # complete once read, even if the caller closes at this last delta
                    outcome = "ok"
                if text or final or text_output is not None:
                    yield BackendDelta(text=text, final=final,
                                       input_tokens=_optional_int(result, "num_input_tokens"),
                                       output_tokens=_optional_int(result, "num_output_tokens"),
                                       kv_cache_reused_blocks=_optional_int(result, "kv_cache_reused_blocks"))
                if final:
                    return
                item = await call.queue.get()
        except OrchestratorError as error:
            outcome = type(error).__name__
            raise
        finally:
            metrics.BACKEND_REQUESTS.labels(outcome).inc()
            if outcome == "cancelled":
                self._end_early(call, request_id)
