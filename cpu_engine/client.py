"""A streaming call to the LLM models over tritonclient.grpc.aio, with the timings benchmarks and tests need.

One gRPC stream per request (decoupled models answer on the stream); the call ends at the response flagged
final. Used by the integration tests and scripts/bench; the orchestrator has its own backend client.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import numpy as np
import tritonclient.grpc.aio as grpcaio
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from model_assets import llm

KV_OUTPUTS = ("kv_cache_reused_blocks", "kv_cache_alloc_new_blocks", "kv_cache_alloc_total_blocks")


def tensor(name: str, value, datatype: str | None = None, module=grpcaio) -> object:
    """An InferInput for one request: scalars become [1, 1], lists [1, N], strings BYTES."""
    array = np.asarray(value)
    if array.dtype.kind in "USO":
        array = np.array([s.encode() if isinstance(s, str) else s for s in array.reshape(-1)],
                         dtype=np.object_).reshape(array.shape)
    if array.ndim == 0:
        array = array.reshape(1, 1)
    elif array.ndim == 1:
        array = array.reshape(1, -1)
    dtype = datatype or ("BYTES" if array.dtype == np.object_ else np_to_triton_dtype(array.dtype))
    infer_input = module.InferInput(name, list(array.shape), dtype)
    infer_input.set_data_from_numpy(array)
    return infer_input


#: Asked for on every request, as the orchestrator does (model_assets.llm.REPORT_FLAGS). A caller may turn one
#: off with flag=False.
REPORT_FLAGS = dict.fromkeys(llm.REPORT_FLAGS, True)
FLAG_TYPES = dict.fromkeys(llm.REPORT_FLAGS, np.bool_)


def text_inputs(prompt: str, max_tokens: int, stream: bool, **extra) -> list:
    """Ensemble/BLS inputs; extra keys are input names (temperature=0.0, stop_words=["\\n"], ...)."""
    inputs = [tensor("text_input", [prompt]), tensor("max_tokens", np.int32(max_tokens)),
              tensor("stream", np.bool_(stream))]
    types = {"temperature": np.float32, "top_p": np.float32, "top_k": np.int32, "end_id": np.int32,
             "pad_id": np.int32, "random_seed": np.uint64, "exclude_input_in_output": np.bool_,
             "repetition_penalty": np.float32, **FLAG_TYPES}
    for name, value in {**REPORT_FLAGS, **extra}.items():
        if isinstance(value, list):
            inputs.append(tensor(name, value))
        else:
            inputs.append(tensor(name, types[name](value)))
    return inputs


def id_inputs(input_ids: list[int], max_tokens: int, streaming: bool, **extra) -> list:
    """tensorrt_llm inputs on token ids; extra keys are upstream input names."""
    inputs = [tensor("input_ids", np.array(input_ids, dtype=np.int32)),
              tensor("input_lengths", np.int32(len(input_ids))),
              tensor("request_output_len", np.int32(max_tokens)), tensor("streaming", np.bool_(streaming))]
    types = {"temperature": np.float32, "runtime_top_p": np.float32, "runtime_top_k": np.int32,
             "end_id": np.int32, "seed": np.uint64, "exclude_input_in_output": np.bool_, **FLAG_TYPES}
    return inputs + [tensor(name, types[name](value)) for name, value in {**REPORT_FLAGS, **extra}.items()]


@dataclass
class Generation:
    """What came back for one request, with client-side timings (perf_counter seconds)."""

    texts: list[str] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    outputs: dict[str, int] = field(default_factory=dict)
    start: float = 0.0
    first: float | None = None
    end: float | None = None
    responses: int = 0
    error: InferenceServerException | None = None

    @property
    def text(self) -> str:
        return "".join(self.texts)

    @property
    def ttft_s(self) -> float:
        return (self.first or self.end or self.start) - self.start

    @property
    def latency_s(self) -> float:
        return (self.end or self.start) - self.start


async def generate(client: grpcaio.InferenceServerClient, model: str, inputs: list,
                   on_response=None) -> Generation:
    """Send one request on its own stream and collect every response until the final one."""

    async def one_request():
        yield {"model_name": model, "inputs": inputs, "enable_empty_final_response": True}

    generation = Generation(start=time.perf_counter())
    async for result, error in client.stream_infer(one_request()):
        now = time.perf_counter()
        if error is not None:
            generation.error, generation.end = error, now
            break
        response = result.get_response()
        if response.outputs:
            generation.responses += 1
            _collect(generation, result, now)
            if on_response is not None:
                await on_response(generation)
        if response.parameters["triton_final_response"].bool_param:
            generation.end = now
            break
    return generation


def _collect(generation: Generation, result, now: float) -> None:
    names = {output.name for output in result.get_response().outputs}
    new_text = ""
    if "text_output" in names:
        new_text = b"".join(result.as_numpy("text_output").reshape(-1)).decode("utf-8")
        generation.texts.append(new_text)
    new_ids: list[int] = []
    if "output_ids" in names:
        length = int(result.as_numpy("sequence_length").reshape(-1)[0])
        new_ids = result.as_numpy("output_ids").reshape(-1)[:length].tolist()
        generation.ids.extend(new_ids)
    if (new_text or new_ids) and generation.first is None:
        generation.first = now
    for name in names & set(KV_OUTPUTS + ("num_input_tokens", "first_token_time_ns", "last_token_time_ns",
                                          "first_scheduled_time_ns", "arrival_time_ns")):
        generation.outputs[name] = int(result.as_numpy(name).reshape(-1)[0])
    if "num_output_tokens" in names:  # upstream counts per response: the generation's total is the sum
        generation.outputs["num_output_tokens"] = (generation.outputs.get("num_output_tokens", 0)
                                                   + int(result.as_numpy("num_output_tokens").reshape(-1)[0]))


async def model_config(client: grpcaio.InferenceServerClient, model: str) -> dict:
    return (await client.get_model_config(model, as_json=True))["config"]


def with_changes(config: Mapping, max_batch_size: int | None = None, parameters: Mapping[str, object] = (),
                 dynamic_batching: Mapping[str, object] = ()) -> dict:
    """A copy of a model config (as JSON) with parameters / max_batch_size / dynamic batching changed."""
    changed = copy.deepcopy(dict(config))
    if max_batch_size is not None:
        changed["max_batch_size"] = max_batch_size
    for key, value in dict(parameters).items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        changed.setdefault("parameters", {})[key] = {"string_value": text}
    batching = changed.setdefault("dynamic_batching", {})
    for key, value in dict(dynamic_batching).items():
        if key == "max_queue_size":
            batching.setdefault("default_queue_policy", {})["max_queue_size"] = value
        else:
            batching[key] = value
    return changed


@asynccontextmanager
async def config_override(client: grpcaio.InferenceServerClient, model: str, **changes) -> AsyncIterator[None]:
    """The model reloaded with `with_changes(**changes)` (explicit model control), then its config restored:
    after a config override Triton keeps it until told otherwise, even when the files did not change."""
    original = await model_config(client, model)
    await client.load_model(model, config=json.dumps(with_changes(original, **changes)))
    try:
        yield
    finally:
        await client.load_model(model, config=json.dumps(original))
