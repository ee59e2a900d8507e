"""The Triton LLM client without a server: ensemble inputs, response parsing, error mapping, cancellation."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import numpy as np
import pytest
from tritonclient.grpc import InferResult, service_pb2
from tritonclient.utils import InferenceServerException, serialize_byte_tensor

from orchestrator.backends.triton_llm import TritonLLM, ensemble_inputs, map_error_message
from orchestrator.config import ModelSettings, TritonSettings
from orchestrator.errors import BackendTimeout, BackendUnavailable, InvalidRequest, OrchestratorError, Overloaded
from orchestrator.schemas import SamplingParams


def response(text: bytes | None, final: bool = False, output_tokens: int | None = None) -> InferResult:
    message = service_pb2.ModelInferResponse(model_name="ensemble")
    if text is not None:
        message.outputs.add(name="text_output", datatype="BYTES", shape=[1, 1])
        message.raw_output_contents.append(serialize_byte_tensor(np.array([[text]], dtype=np.object_)).item())
    if output_tokens is not None:
        message.outputs.add(name="num_output_tokens", datatype="INT32", shape=[1, 1])
        message.raw_output_contents.append(np.array([[output_tokens]], dtype=np.int32).tobytes())
    if final:
        message.parameters["triton_final_response"].bool_param = True
    return InferResult(message)


class FakeStream:
    def __init__(self, items, requests) -> None:
        self.items = list(items)
        self.requests = requests
        self.cancelled = False
        self.sent: list[dict] = []

    def __aiter__(self):
        return self

    async def __anext__(self):
        try:
            if not self.sent:
                self.sent.append(await anext(self.requests))
            if not self.items:
                await asyncio.sleep(3600)
            item = self.items.pop(0)
            if isinstance(item, asyncio.Event):  # hold the rest back until the test sets it
                await item.wait()
                item = self.items.pop(0)
        except asyncio.CancelledError:
            self.cancelled = True  # as grpc.aio does when a pending read is cancelled
            raise
        if isinstance(item, BaseException):
            raise item
        return item

    def cancel(self):
        self.cancelled = True


class FakeClient:
    def __init__(self, *scripts) -> None:
        self.scripts = list(scripts)
        self.streams: list[FakeStream] = []

    def stream_infer(self, requests, stream_timeout=None):
        self.streams.append(FakeStream(self.scripts.pop(0), requests))
        return self.streams[-1]

    async def close(self):
        pass


def rpc_error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=f"{code.name} happened")


def llm(*scripts, **settings) -> tuple[TritonLLM, FakeClient]:
    client = FakeClient(*scripts)
    return TritonLLM(TritonSettings(retry_backoff_s=0.001, **settings), ModelSettings(), client=client), client


def values(inputs) -> dict:
    return {i.name(): (i.datatype(), i.shape()) for i in inputs}


def test_greedy_requests_map_to_top_k_1_and_options_are_sent_only_when_set() -> None:
    inputs = values(ensemble_inputs("hi", SamplingParams(max_tokens=5), ModelSettings()))
    assert inputs["text_input"] == ("BYTES", [1, 1]) and inputs["max_tokens"] == ("INT32", [1, 1])
    assert inputs["stream"] == ("BOOL", [1, 1]) and "random_seed" not in inputs and "stop_words" not in inputs
    sampled = ensemble_inputs("hi", SamplingParams(temperature=0.7, top_k=5, seed=3, stop=("a", "b")),
                              ModelSettings())
    assert values(sampled)["stop_words"] == ("BYTES", [1, 2]) and values(sampled)["random_seed"] == ("UINT64", [1, 1])


@pytest.mark.parametrize(("message", "error", "field"), [
    ("tensorrt_llm: request queue full: 64 requests wait for one of 4 busy slots", Overloaded, None),
    ("Exceeds maximum queue size", Overloaded, None),
    ("tensorrt_llm: input_ids: the prompt has 9000 tokens, more than fits the context of one slot", InvalidRequest,
     "messages"),
    ("tensorrt_llm: request_output_len: 100 prompt + 5000 output tokens more than fits", InvalidRequest,
     "max_tokens"),
    ("Request timeout expired", BackendTimeout, None),
    ("something else broke", OrchestratorError, None),
])
def test_error_messages_map_to_service_errors(message: str, error: type, field: str | None) -> None:
    mapped = map_error_message(message)
    assert type(mapped) is error
    if field:
        assert mapped.field == field


async def test_streams_deltas_and_joins_split_utf8() -> None:
    client_llm, client = llm([(response("é".encode()[:1]), None), (response("é".encode()[1:] + b"!"), None),
                              (response(b"", final=True, output_tokens=2), None)])
    deltas = [d async for d in client_llm.stream("p", SamplingParams())]
    assert [d.text for d in deltas] == ["", "é!", ""]
    assert deltas[-1].final and deltas[-1].output_tokens == 2
    assert not client.streams[0].cancelled
    assert client.streams[0].sent[0]["parameters"] == {"triton_enable_empty_final_response": True}


async def test_connection_errors_are_retried_then_reported() -> None:
    unavailable = [rpc_error(grpc.StatusCode.UNAVAILABLE)]
    ok = [(response(b"x"), None), (response(None, final=True), None)]
    client_llm, client = llm(unavailable, unavailable, ok, connect_retries=2)
    assert "".join([d.text async for d in client_llm.stream("p", SamplingParams())]) == "x"
    assert len(client.streams) == 3
    failing, client = llm(unavailable, unavailable, unavailable, connect_retries=2)
    with pytest.raises(BackendUnavailable):
        [d async for d in failing.stream("p", SamplingParams())]
    assert len(client.streams) == 3


async def test_other_errors_are_not_retried() -> None:
    client_llm, client = llm([rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED)], [])
    with pytest.raises(Overloaded):
        [d async for d in client_llm.stream("p", SamplingParams())]
    client_llm, client = llm([(None, InferenceServerException("request queue full"))])
    with pytest.raises(Overloaded):
        [d async for d in client_llm.stream("p", SamplingParams())]
    client_llm, client = llm([(response(b"a"), None), rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED)])
    with pytest.raises(BackendTimeout):
        [d async for d in client_llm.stream("p", SamplingParams())]
    assert len(client.streams) == 1  # not retried (and a stream that ended in an error needs no cancelling)


async def test_no_first_response_in_time_is_a_timeout() -> None:
    client_llm, client = llm([], first_response_timeout_s=0.05)
    with pytest.raises(BackendTimeout):
        [d async for d in client_llm.stream("p", SamplingParams())]
    assert client.streams[0].cancelled


async def test_closing_early_cancels_the_grpc_call() -> None:
    client_llm, client = llm([(response(b"a"), None), (response(b"b"), None)])
    stream = client_llm.stream("p", SamplingParams())
    assert (await anext(stream)).text == "a"
    await stream.aclose()
    assert client.streams[0].cancelled


class StoppingClient(FakeClient):
    """The engine keeps generating until a stop request arrives (the second stream opened), then ends."""

    def __init__(self, generation, stop) -> None:
        self.running = asyncio.Event()
        super().__init__([*generation, self.running, (response(b"", final=True), None)], stop)

    def stream_infer(self, requests, stream_timeout=None):
        if self.streams:
            self.running.set()
        return super().stream_infer(requests, stream_timeout)


async def test_closing_early_stops_the_engine_request_by_id_and_reads_to_the_end() -> None:
    client = StoppingClient([(response(b"a"), None), (response(b"b"), None)], [(response(None, final=True), None)])
    client_llm = TritonLLM(TritonSettings(), ModelSettings(), client=client)
    stream = client_llm.stream("p", SamplingParams(), "gen-1")
    assert (await anext(stream)).text == "a"
    await stream.aclose()
    await client_llm.aclose()  # waits for the abandoned generation
    generation_stream, stop_stream = client.streams
    stop = stop_stream.sent[0]
    assert stop["model_name"] == "tensorrt_llm" and stop["request_id"] == "gen-1"
    assert {i.name() for i in stop["inputs"]} == {"input_ids", "request_output_len", "stop"}
    assert not generation_stream.cancelled and not generation_stream.items  # drained to its final response


async def test_a_caller_cancelled_while_waiting_stops_by_id_once_the_engine_answers() -> None:
    # grpc.aio cancels a call whose pending read is cancelled: the caller never reads the call itself. The stop
    # waits for the first response, before which the engine may not hold the request (a stop would be lost).
    held = asyncio.Event()
    client = StoppingClient([held, (response(b"a"), None)], [(response(None, final=True), None)])
    client_llm = TritonLLM(TritonSettings(), ModelSettings(), client=client)
    task = asyncio.create_task(anext(client_llm.stream("p", SamplingParams(), "gen-3")))
    await asyncio.sleep(0.01)  # the caller is waiting for the first response
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.01)
    assert len(client.streams) == 1  # no stop before the engine answered
    held.set()
    await client_llm.aclose()
    assert client.streams[1].sent[0]["request_id"] == "gen-3"
    assert not client.streams[0].cancelled


async def test_a_stop_that_fails_falls_back_to_cancelling() -> None:
    client_llm, client = llm([(response(b"a"), None)], [rpc_error(grpc.StatusCode.UNAVAILABLE)])
    stream = client_llm.stream("p", SamplingParams(), "gen-2")
    await anext(stream)
    await stream.aclose()
    await client_llm.aclose()
    assert client.streams[0].cancelled
