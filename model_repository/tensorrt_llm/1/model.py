"""Triton Python model (decoupled): the CPU reference engine behind TensorRT-LLM's `tensorrt_llm` interface.

Each request becomes one llama.cpp completion on its token ids (cpu_engine); `gpt_model_type` decides when it
may start (cpu_engine.admission). Streaming sends every new group of ids as it comes, then a last response with
the final flag; non-streaming sends one response. Triton custom metrics mirror nv_trt_llm_kv_cache_block_metrics
and nv_trt_llm_request_metrics.

It keeps TensorRT-LLM's backend contract (cpu_engine/upstream_contract.toml) to the letter, so that it can stand
in for `backend: "tensorrtllm"` in a GPU profile: it refuses to load without a required parameter, writes on
each response exactly the outputs upstream writes for that request's flags, and fails a response with an output
the config does not declare as Triton core would (the Python backend itself would drop it silently).
"""

import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import triton_python_backend_utils as pb_utils

from cpu_engine import contract as upstream
from cpu_engine import tokenizer
from cpu_engine.admission import InflightAdmission, QueueFull, StaticBatchAdmission
from cpu_engine.completion import FINISH_CANCELLED, EngineError
from cpu_engine.config import EngineConfig
from cpu_engine.engine import GenerationOutcome, LlamaEngine, PromptTooLong
from cpu_engine.kv_blocks import RequestBlocks
from cpu_engine.requests import GenerationRequest, InvalidRequest
from model_assets import llm

#: Request flags that decide which outputs the backend writes (upstream_contract.toml [outputs]).
FLAGS = ("return_perf_metrics", "return_num_input_tokens", "return_num_output_tokens")
INPUTS = ("input_ids", "input_lengths", "request_output_len", "end_id", "pad_id", "stop_words_list",
          "bad_words_list", "beam_width", "temperature", "runtime_top_k", "runtime_top_p", "repetition_penalty",
          "presence_penalty", "frequency_penalty", "seed", "exclude_input_in_output", "streaming")
#: A request with `stop` true cancels the running request that has the same request id (upstream semantics).
FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


@dataclass
class Job:
    request: GenerationRequest
    sender: object
    arrival_ns: int
    request_id: str
    #: The outputs every response of this request carries (by the contract, from its flags and requested names).
    outputs: tuple[str, ...] = ()
    #: Set by a `stop` request with the same request id (upstream's way to cancel from another caller).
    stopped: threading.Event = field(default_factory=threading.Event)

    def cancelled(self) -> bool:
        return self.stopped.is_set() or self.sender.is_cancelled()


def _int32(value) -> np.ndarray:
    return np.array([[value]], dtype=np.int32)


def _int64(value) -> np.ndarray:
    return np.array([[value]], dtype=np.int64)


def _error(sender, message: str, code) -> None:
    sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code)), flags=FINAL)


class TritonPythonModel:
    def initialize(self, args):
        model_config = json.loads(args["model_config"])
        self.contract = upstream.load()
        missing = self.contract.missing_parameters(model_config.get("parameters", {}))
        if missing:
            raise RuntimeError(missing[0])
        self.model_name = args["model_name"]
        self.declared_outputs = {output["name"] for output in model_config.get("output", [])}
        self.config = EngineConfig.from_model_config(model_config, default_model_path=str(llm.gguf_path()))
        vocabulary = tokenizer.load(self.config.tokenizer_dir)
        self.engine = LlamaEngine(self.config, lambda text: tokenizer.encode(vocabulary, text))
        if self.config.inflight:
            self.admission = InflightAdmission(self.config.slots, self.config.max_queue_size, self._run)
        else:
            self.admission = StaticBatchAdmission(self.config.slots, self.config.max_queue_size, self._run)
        self._jobs: dict[str, Job] = {}
        self._jobs_lock = threading.Lock()
        self._create_metrics(args)
        self._stop = threading.Event()
        #: Answers stop requests off the execute() thread: Triton 2.51's stub stalls (its health check then
        #: fails) when execute() sends while generation threads send too.
        self._control = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stop")
        self._metrics_thread = threading.Thread(target=self._publish_metrics, daemon=True)
        self._metrics_thread.start()

    def execute(self, requests):
        for request in requests:
            arrival_ns = time.time_ns()
            sender = request.get_response_sender()
            stop = pb_utils.get_input_tensor_by_name(request, "stop")
            if stop is not None and bool(stop.as_numpy().reshape(-1)[0]):
                self._control.submit(self._stop_request, request.request_id(), sender)
                continue
            inputs = {name: tensor.as_numpy() for name in (*INPUTS, *FLAGS)
                      if (tensor := pb_utils.get_input_tensor_by_name(request, name)) is not None}
            try:
                generation = GenerationRequest.from_inputs(inputs, self.config.exclude_input_in_output)
                self.engine.check_fits(generation)
            except (InvalidRequest, PromptTooLong) as error:
                _error(sender, f"tensorrt_llm: {error}", pb_utils.TritonError.INVALID_ARG)
                continue
            try:
                outputs = self._outputs(request, inputs)
            except ValueError as error:
                _error(sender, f"Error encountered while populating response: {error}",
                       pb_utils.TritonError.INTERNAL)
                continue
            job = Job(generation, sender, arrival_ns, request.request_id(), outputs)
            if job.request_id:
                with self._jobs_lock:
                    self._jobs[job.request_id] = job
            try:
                self.admission.submit(job)
            except QueueFull as error:
                _error(sender, f"tensorrt_llm: {error}", pb_utils.TritonError.UNAVAILABLE)
        return None

    def _outputs(self, request, inputs) -> tuple[str, ...]:
        """The outputs to put on each response: what upstream writes for this request that the client requested
        (a ValueError with upstream's, or Triton core's, message when that response would fail).

        Triton drops unrequested outputs itself, but Triton 2.51's stub does it inside `send()` with the GIL
        released, so their numpy arrays were freed without the GIL while other generation threads allocated:
        the stub's heap broke and it segfaulted, about once in ten stack starts under 4 concurrent streams.
        Never creating them leaves nothing to drop."""
        flags = {name: bool(np.asarray(inputs[name]).reshape(-1)[0]) for name in FLAGS if name in inputs}
        requested = set(request.requested_output_names())
        for name in ("output_ids", "sequence_length"):
            if name not in requested:
                raise ValueError(f"{name} tensor must be present in list of output tensors")
        written = self.contract.written_outputs(flags, requested)
        for name in written:
            if name not in self.declared_outputs:
                raise ValueError(f"unexpected inference output '{name}' for model '{self.model_name}'")
        return tuple(name for name in written if name in requested)

    def _stop_request(self, request_id: str, sender) -> None:
        with self._jobs_lock:
            job = self._jobs.get(request_id)
        if job is not None:
            job.stopped.set()
        sender.send(flags=FINAL)

    def _run(self, job: Job) -> None:
        try:
            self._generate(job)
        finally:
            with self._jobs_lock:
                if self._jobs.get(job.request_id) is job:
                    del self._jobs[job.request_id]

    def _generate(self, job: Job) -> None:
        request = job.request
        if job.stopped.is_set():  # stopped while queued: upstream ends it with an empty final response
            job.sender.send(self._response(job, [], RequestBlocks(0, 0, 0), None), flags=FINAL)
            return
        if job.cancelled():
            _error(job.sender, "tensorrt_llm: request cancelled", pb_utils.TritonError.CANCELLED)
            return

        def on_progress(progress):
            if request.streaming:
                job.sender.send(self._response(job, progress.new_ids, progress.blocks, None))

        try:
            outcome = self.engine.generate(request, on_progress, job.cancelled, job.arrival_ns)
        except PromptTooLong as error:
            _error(job.sender, f"tensorrt_llm: {error}", pb_utils.TritonError.INVALID_ARG)
            return
        except EngineError as error:
            _error(job.sender, f"tensorrt_llm: llama.cpp refused the request: {error}", pb_utils.TritonError.INTERNAL)
            return
        except Exception as error:  # noqa: BLE001 - a failed request must still get its final response
            _error(job.sender, f"tensorrt_llm: {type(error).__name__}: {error}", pb_utils.TritonError.INTERNAL)
            return
        # A `stop` request ends the generation with its final response, as upstream's executor does; a client
        # that went away gets an error nobody reads.
        if outcome.finish_reason == FINISH_CANCELLED and not job.stopped.is_set():
            _error(job.sender, "tensorrt_llm: request cancelled", pb_utils.TritonError.CANCELLED)
            return
        if request.streaming:
            job.sender.send(self._response(job, [], outcome.blocks, outcome), flags=FINAL)
            return
        ids = outcome.output_ids if request.exclude_input_in_output else request.input_ids + outcome.output_ids
        job.sender.send(self._response(job, ids, outcome.blocks, outcome), flags=FINAL)

    def _response(self, job: Job, ids: list[int], blocks: RequestBlocks, outcome: GenerationOutcome | None):
        now = time.time_ns()
        values = {
            "output_ids": lambda: np.array(ids, dtype=np.int32).reshape(1, 1, len(ids)),
            "sequence_length": lambda: _int32(len(ids)),
            "kv_cache_alloc_new_blocks": lambda: _int32(blocks.new),
            "kv_cache_reused_blocks": lambda: _int32(blocks.reused),
            "kv_cache_alloc_total_blocks": lambda: _int32(blocks.total),
            "arrival_time_ns": lambda: _int64(job.arrival_ns),
            "first_scheduled_time_ns": lambda: _int64(outcome.first_scheduled_ns if outcome else job.arrival_ns),
            "first_token_time_ns": lambda: _int64(outcome.first_token_ns if outcome else now),
            "last_token_time_ns": lambda: _int64(outcome.last_token_ns if outcome else now),
            # No speculative decoding here: upstream reports zeros then too.
            "acceptance_rate": lambda: np.zeros((1, 1), dtype=np.float32),
            "total_accepted_draft_tokens": lambda: _int32(0),
            "total_draft_tokens": lambda: _int32(0),
            "num_input_tokens": lambda: _int32(len(job.request.input_ids)),
            # Upstream counts the tokens of this response (all beams), not the running total.
            "num_output_tokens": lambda: _int32(len(ids)),
        }
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(name, values[name]())
                                                          for name in job.outputs])

    def _create_metrics(self, args):
        """Families and metrics live as long as this instance. While Triton reloads the model, two instances of
        the same model and version exist; Triton shares a metric between identical label sets and frees it with
        the first owner (which crashed the server), so each instance adds its own `instance` label."""
        labels = {"model": args["model_name"], "version": args["model_version"], "instance": uuid.uuid4().hex[:8]}
        self._kv_family = pb_utils.MetricFamily(
            name="nv_trt_llm_kv_cache_block_metrics",
            description="KV cache block metrics (CPU engine: derived from llama.cpp's token counts)",
            kind=pb_utils.MetricFamily.GAUGE)
        self._request_family = pb_utils.MetricFamily(
            name="nv_trt_llm_request_metrics", description="Request counts of the engine",
            kind=pb_utils.MetricFamily.GAUGE)
        self._kv_metrics = {kind: self._kv_family.Metric(labels={"kv_cache_block_type": kind, **labels})
                            for kind in ("max", "free", "used", "tokens_per", "reused", "fraction")}
        self._request_metrics = {kind: self._request_family.Metric(labels={"request_type": kind, **labels})
                                 for kind in ("active", "waiting", "max")}

    def _publish_metrics(self):
        period_s = self.config.stats_check_period_ms / 1000
        while not self._stop.wait(period_s):
            for kind, value in self.engine.kv_pool.snapshot().items():
                self._kv_metrics[kind].set(value)
            self._request_metrics["active"].set(self.admission.active)
            self._request_metrics["waiting"].set(self.admission.waiting)
            self._request_metrics["max"].set(self.config.slots)

    def finalize(self):
        self._stop.set()
        self._control.shutdown()
        self._metrics_thread.join()
        self.admission.close()
        self.engine.close()
        del self._kv_metrics, self._request_metrics, self._kv_family, self._request_family
