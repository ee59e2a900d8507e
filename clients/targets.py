"""Where load goes: a Triton model over gRPC (any model whose inputs the client can fill from a prompt), or
the orchestrator (its OpenAI-compatible HTTP API or its orchestrator.v1 gRPC API). Each target turns one WorkItem into one Outcome and never
raises for a failed request: the error becomes the Outcome's kind, so a load run counts errors by kind."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import grpc
import httpx
import numpy as np
import openai
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from clients.chat import chat_turn, grpc_chat_turn, grpc_stub
from clients.report import Outcome
from clients.workload import WorkItem

#: Values for the non-text inputs of upstream's LLM models (ensemble / preprocessing), by input name.
#: `max_tokens`/`request_output_len` come from the target's max_tokens; streaming inputs from whether it streams.
TOKEN_BUDGET_INPUTS = frozenset({"max_tokens", "request_output_len", "REQUEST_OUTPUT_LEN"})
STREAM_INPUTS = frozenset({"stream", "streaming"})
TRITON_DTYPES = {"TYPE_INT32": np.int32, "TYPE_INT64": np.int64, "TYPE_BOOL": np.bool_, "TYPE_FP32": np.float32,
                 "TYPE_UINT32": np.uint32, "TYPE_STRING": np.object_}


class Target(Protocol):
    name: str

    async def open(self) -> None: ...

    async def send(self, item: WorkItem) -> Outcome: ...

    async def close(self) -> None: ...


def triton_error_kind(error: InferenceServerException) -> str:
    message = (error.message() or "").lower()
    if "queue" in message and ("maximum" in message or "exceeds" in message or "full" in message):
        return "queue_full"
    status = (error.status() or "").removeprefix("StatusCode.").lower()
    return "timeout" if status == "deadline_exceeded" else (status or "error")


@dataclass(frozen=True)
class InputSpec:
    """One input of a Triton model and the value a load client sends in it (None: the prompt text)."""

    name: str
    data_type: str
    shape: tuple[int, ...]
    value: int | bool | None

    def array(self, text: str) -> np.ndarray:
        content = text.encode() if self.value is None else self.value
        return np.full(self.shape, content, dtype=TRITON_DTYPES[self.data_type])


def streams(config: dict) -> bool:
    """Decoupled models and models with upstream's `stream` input are called over a gRPC stream."""
    names = {i["name"] for i in config.get("input", [])}
    return bool(config.get("model_transaction_policy", {}).get("decoupled", False)) or bool(names & STREAM_INPUTS)


def input_spec(config: dict, max_tokens: int) -> list[InputSpec]:
    """What to send in each input of a model (Triton's JSON config): the first TYPE_STRING input carries the
    prompt, upstream's token-budget and stream inputs get max_tokens and streams(config), optional inputs are
    left out; any other required input is an error naming it."""
    model, inputs = config.get("name", "?"), config.get("input", [])
    text_input = next((i["name"] for i in inputs if i["data_type"] == "TYPE_STRING"), None)
    if text_input is None:
        raise ValueError(f"model {model!r} has no TYPE_STRING input to carry a prompt")
    specs = []
    for spec in inputs:
        name, dtype = spec["name"], spec["data_type"]
        if name == text_input:
            value = None
        elif name in TOKEN_BUDGET_INPUTS:
            value = max_tokens
        elif name in STREAM_INPUTS:
            value = streams(config)
        elif spec.get("optional", False):
            continue
        else:
            raise ValueError(f"model {model!r} requires input {name!r}, which the load client cannot fill")
        if dtype not in TRITON_DTYPES:
            raise ValueError(f"model {model!r}: input {name!r} has unsupported type {dtype}")
        shape = tuple(1 if int(d) < 0 else int(d) for d in spec.get("dims", [1]))
        specs.append(InputSpec(name, dtype, shape, value))
    return specs


class TritonTarget:
    """One Triton model over gRPC, its inputs filled as input_spec() says. A streaming model (the LLM ensemble,
    a decoupled model) is called over a gRPC stream, which gives TTFT."""

    def __init__(self, url: str, model: str, max_tokens: int = 32, timeout_s: float = 120.0) -> None:
        self.url, self.model, self.max_tokens, self.timeout_s = url, model, max_tokens, timeout_s
        self.name = f"triton:{model}@{url}"
        self.client: grpcclient.InferenceServerClient | None = None
        self.streaming = False
        self._spec: list[InputSpec] = []
        self._batched = False

    async def open(self) -> None:
        self.client = grpcclient.InferenceServerClient(self.url)
        try:
            config = (await self.client.get_model_config(self.model, as_json=True))["config"]
        except InferenceServerException as error:
            raise ValueError(f"model {self.model!r} on {self.url}: {error.message()}") from None
        self._batched = int(config.get("max_batch_size", 0)) > 0
        self.streaming = streams(config)
        self._spec = input_spec(config, self.max_tokens)

    def _inputs(self, item: WorkItem) -> list[grpcclient.InferInput]:
        tensors = []
        for spec in self._spec:
            array = spec.array(item.text())
            if self._batched:
                array = array[np.newaxis]
            tensor = grpcclient.InferInput(spec.name, list(array.shape), np_to_triton_dtype(array.dtype))
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        return tensors

    async def send(self, item: WorkItem) -> Outcome:
        assert self.client is not None, "open() first"
        start = time.perf_counter()
        try:
            if not self.streaming:
                await self.client.infer(self.model, self._inputs(item), client_timeout=self.timeout_s)
                return Outcome(time.perf_counter() - start, item.kind)
            return await self._send_streaming(item, start)
        except InferenceServerException as error:
            return Outcome(time.perf_counter() - start, item.kind, error=triton_error_kind(error))

    async def _send_streaming(self, item: WorkItem, start: float) -> Outcome:
        async def one_request():
            yield {"model_name": self.model, "inputs": self._inputs(item),
                   "parameters": {"triton_enable_empty_final_response": True}}

        ttft = None
        responses = self.client.stream_infer(one_request(), stream_timeout=self.timeout_s)
        try:
            async for result, error in responses:
                if error is not None:
                    return Outcome(time.perf_counter() - start, item.kind, ttft, triton_error_kind(error))
                response = result.get_response()
                if ttft is None and response.outputs:
                    ttft = time.perf_counter() - start
                final = response.parameters.get("triton_final_response")
                if final is not None and final.bool_param:
                    return Outcome(time.perf_counter() - start, item.kind, ttft)
        finally:
            responses.cancel()
        return Outcome(time.perf_counter() - start, item.kind, ttft, "stream_broken")

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()


class OrchestratorHttpTarget:
    """The orchestrator's OpenAI-compatible /v1/chat/completions, streamed over SSE; `x-cache` names the layer."""

    def __init__(self, base_url: str, model: str, max_tokens: int = 32, api_key: str = "none",
                 timeout_s: float = 120.0, http_client: httpx.AsyncClient | None = None) -> None:
        self.name = f"orchestrator-http:{model}@{base_url}"
        self.model, self.max_tokens = model, max_tokens
        self.client = openai.AsyncOpenAI(base_url=base_url.rstrip("/") + "/v1", api_key=api_key,
                                         timeout=timeout_s, max_retries=0, http_client=http_client)

    async def open(self) -> None:
        return None

    async def send(self, item: WorkItem) -> Outcome:
        start = time.perf_counter()
        try:
            reply = await chat_turn(self.client, self.model, item.messages(), self.max_tokens, lambda text: None)
            layer = None if reply.layer == "?" else reply.layer
            return Outcome(reply.total_s, item.kind, reply.ttft_s, None if reply.finished else "stream_broken", layer)
        except openai.APIStatusError as error:
            return Outcome(time.perf_counter() - start, item.kind, error=f"http_{error.status_code}")
        except openai.APITimeoutError:
            return Outcome(time.perf_counter() - start, item.kind, error="timeout")
        except openai.APIConnectionError:
            return Outcome(time.perf_counter() - start, item.kind, error="connection")
        except openai.APIError:  # an `error` event inside the stream (e.g. the deadline passed mid-answer)
            return Outcome(time.perf_counter() - start, item.kind, error="stream_error")

    async def close(self) -> None:
        await self.client.close()


class OrchestratorGrpcTarget:
    """The orchestrator's orchestrator.v1 GenerateStream; the first message names the cache layer."""

    def __init__(self, target: str, model: str, max_tokens: int = 32, api_key: str = "none",
                 timeout_s: float = 120.0) -> None:
        self.name = f"orchestrator-grpc:{model}@{target}"
        self.target, self.model, self.max_tokens, self.api_key, self.timeout_s = (
            target, model, max_tokens, api_key, timeout_s)
        self.channel, self.stub = None, None

    async def open(self) -> None:
        self.channel, self.stub = grpc_stub(self.target)

    async def send(self, item: WorkItem) -> Outcome:
        start = time.perf_counter()
        try:
            reply = await grpc_chat_turn(self.stub, self.api_key, self.model, item.messages(), self.max_tokens,
                                         lambda text: None, self.timeout_s)
        except grpc.aio.AioRpcError as error:
            kind = "timeout" if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED else error.code().name.lower()
            return Outcome(time.perf_counter() - start, item.kind, error=kind)
        layer = None if reply.layer == "?" else reply.layer
        return Outcome(reply.total_s, item.kind, reply.ttft_s, None if reply.finished else "stream_broken", layer)

    async def close(self) -> None:
        if self.channel is not None:
            await self.channel.close()
